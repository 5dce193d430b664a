"""Builders of Classify requests for the bad-input catalogues, and the fields a rejection
names: shared by the in-process catalogue (tests/unit) and the end-to-end one."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from labelprob.v1 import classifier_pb2 as pb


def labels(*names: str) -> list[pb.Label]:
    return [pb.Label(name=n) for n in names]


AB = labels("alpha", "beta")


def classify(**fields: object) -> pb.ClassifyRequest:
    base: dict[str, object] = {"text": "some text", "labels": AB}
    return pb.ClassifyRequest(**(base | fields))


def opts(**fields: object) -> pb.ScoringOptions:
    return pb.ScoringOptions(**fields)


def violations(err: grpc.RpcError) -> list[str]:
    """The fields a rich INVALID_ARGUMENT status names (its BadRequest detail)."""
    status = rpc_status.from_call(err)
    assert status is not None, "no rich status"
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [fv.field for fv in bad.field_violations]
    return out
