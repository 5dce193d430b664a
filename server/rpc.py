"""What every RPC gets, streams and their items included: a trace span, log context
(request_id, method), metrics, one "request done" log line, and errors mapped to statuses."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
import structlog
from google.rpc import status_pb2
from opentelemetry import trace

from labelprob.server import metrics as m
from labelprob.server.wire.status import REQUEST_ERRORS, grpc_code, grpc_status, status_for
from labelprob.v1 import classifier_pb2 as pb

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("labelprob.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ClassifierService"].full_name
REQUEST_ID_KEY = "x-request-id"

T = TypeVar("T")


@dataclass
class Outcome:
    """The status an RPC (or stream item) ends with, set by whoever handles its error."""

    code: grpc.StatusCode = grpc.StatusCode.OK


def request_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's x-request-id, else a generated one."""
    metadata = dict(context.invocation_metadata() or ())
    return metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex[:16]


@contextlib.contextmanager
def observed(method: str, **log_context: str) -> Iterator[Outcome]:
    """A span, bound log context, metrics and the closing log line of one unit of work."""
    start = time.perf_counter()
    outcome = Outcome()
    structlog.contextvars.bind_contextvars(method=method, **log_context)
    with tracer.start_as_current_span(f"{SERVICE_NAME}/{method}") as span:
        try:
            yield outcome
        except asyncio.CancelledError:
            # Deadline or client cancel: the awaiting engine reads were aborted.
            outcome.code = grpc.StatusCode.CANCELLED
            raise
        finally:
            elapsed = time.perf_counter() - start
            span.set_attribute("rpc.grpc.status_code", outcome.code.value[0])
            m.observe_request(method, outcome.code.name, elapsed)
            log.info("request done", code=outcome.code.name, seconds=round(elapsed, 4))


@contextlib.contextmanager
def rpc_scope(method: str, context: grpc.aio.ServicerContext) -> Iterator[Outcome]:
    """``observed`` for a whole RPC; its log context ends with it."""
    try:
        with observed(method, request_id=request_id(context)) as outcome:
            yield outcome
    finally:
        structlog.contextvars.clear_contextvars()


def failure_status(exc: Exception, outcome: Outcome) -> status_pb2.Status:
    """The status an error is answered with, logged once: a request error as a rejection,
    anything else as a failure with its traceback."""
    status = status_for(exc)
    outcome.code = grpc_code(status.code)
    if isinstance(exc, REQUEST_ERRORS):
        log.info("request rejected", code=outcome.code.name, error=str(exc))
    else:
        log.exception("request failed")
    return status


async def unary(
    method: str, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]
) -> T:
    """Runs a unary RPC's body in its scope; an error aborts the RPC with a rich status."""
    with rpc_scope(method, context) as outcome:
        try:
            return await call()
        except Exception as exc:
            status = failure_status(exc, outcome)
            await context.abort_with_status(grpc_status(status, exc))
            raise  # unreachable: abort raises
