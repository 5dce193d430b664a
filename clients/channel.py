"""gRPC channels to a labelprob server: message limits and gRPC's own retries."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import grpc

DEFAULT_TARGET = "localhost:50051"

# gRPC's own retries: an overloaded (RESOURCE_EXHAUSTED) or briefly unreachable server is
# tried again with backoff; the server's pushback (grpc-retry-pushback-ms) sets the wait.
RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "labelprob.v1.ClassifierService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
)


def channel_options(
    max_message_bytes: int = 16 * 1024 * 1024, retries: bool = True
) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", int(retries)),
    ]
    if retries:
        options.append(("grpc.service_config", RETRY_SERVICE_CONFIG))
    return options


def open_channel(
    api: ModuleType,
    target: str,
    credentials: grpc.ChannelCredentials | None = None,
    retries: bool = True,
) -> Any:
    """A channel from `api`: `grpc` (blocking) or `grpc.aio` (asyncio), which share these
    two constructors."""
    options = channel_options(retries=retries)
    if credentials is None:
        return api.insecure_channel(target, options=options)
    return api.secure_channel(target, credentials, options=options)
