"""Errors to gRPC statuses: google.rpc details (BadRequest, RetryInfo, ErrorInfo) and codes."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from labelprob.server.errors import EngineUnavailable, InvalidArgument, Overloaded

ERROR_DOMAIN = "labelprob.v1"
# Errors that are the request's or the moment's, not the server's: answered, not logged as bugs.
REQUEST_ERRORS = (InvalidArgument, Overloaded, EngineUnavailable)


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_for(exc: Exception) -> status_pb2.Status:
    """google.rpc.Status with details (BadRequest, ErrorInfo, RetryInfo) for a request error."""
    if isinstance(exc, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=exc.description
        )
        info = error_details_pb2.ErrorInfo(
            reason="INVALID_FIELD", domain=ERROR_DOMAIN, metadata={"field": exc.field}
        )
        return status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message=str(exc),
            details=[
                _packed(error_details_pb2.BadRequest(field_violations=[violation])),
                _packed(info),
            ],
        )
    if isinstance(exc, Overloaded):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after_s * 1000))
        return status_pb2.Status(
            code=code_pb2.RESOURCE_EXHAUSTED,
            message=str(exc),
            details=[
                _packed(error_details_pb2.RetryInfo(retry_delay=delay)),
                _packed(error_details_pb2.ErrorInfo(reason="OVERLOADED", domain=ERROR_DOMAIN)),
            ],
        )
    if isinstance(exc, EngineUnavailable):
        info = error_details_pb2.ErrorInfo(reason="ENGINE_UNAVAILABLE", domain=ERROR_DOMAIN)
        return status_pb2.Status(
            code=code_pb2.UNAVAILABLE, message=str(exc), details=[_packed(info)]
        )
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error: {type(exc).__name__}"
    )


def grpc_status(status: status_pb2.Status, exc: Exception) -> grpc.Status:
    """The status for abort, with gRPC's retry pushback when the server is overloaded:
    clients with a retry policy then wait as long as the RetryInfo detail says."""
    converted = rpc_status.to_status(status)
    if isinstance(exc, Overloaded):
        pushback = (("grpc-retry-pushback-ms", str(int(exc.retry_after_s * 1000))),)
        converted = converted._replace(trailing_metadata=converted.trailing_metadata + pushback)
    return converted


def grpc_code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
