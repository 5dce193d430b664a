"""What a report records about the server it measured (GetModelInfo)."""

from __future__ import annotations

from typing import Any

from labelprob.v1 import classifier_pb2 as pb


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """`CALIBRATION_NONE` -> `none`: a proto enum value as the tools' flags spell it."""
    return enum.Name(value).removeprefix(prefix).lower()


def describe_server(info: pb.GetModelInfoResponse) -> dict[str, Any]:
    return {
        "model": info.model,
        "server_version": info.server_version,
        "engine_version": info.engine_version,
        "chat_template": info.chat_template,
        "default_calibration": enum_name(pb.Calibration, info.default_calibration, "CALIBRATION_"),
    }
