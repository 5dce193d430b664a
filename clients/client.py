"""Python clients of labelprob.v1.ClassifierService: blocking and asyncio, with deadlines.

Both are thin shells over `calls`, where each RPC is defined once: a shell only says how a
call is sent (blocking or awaited). Every call has a deadline (`timeout` seconds, the
client's default when None).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import ModuleType
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc
import grpc.aio

from labelprob.client import calls
from labelprob.client.calls import Stream, StreamResult, Unary
from labelprob.client.channel import DEFAULT_TARGET, channel_options, open_channel
from labelprob.client.params import CALIBRATIONS, MODES, ClassifyParams, LabelLike, to_label
from labelprob.v1 import classifier_pb2_grpc as pb_grpc

__all__ = [
    "CALIBRATIONS",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT_S",
    "MODES",
    "AsyncClient",
    "ClassifyParams",
    "Client",
    "LabelLike",
    "StreamResult",
    "channel_options",
    "to_label",
]

DEFAULT_TIMEOUT_S = 30.0

P = ParamSpec("P")
R = TypeVar("R")


class _Shell:
    """A channel, its stub and the default deadline; `api` is grpc or grpc.aio."""

    api: ModuleType

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        retries: bool = True,
    ) -> None:
        self.timeout = timeout
        self.channel = open_channel(self.api, target, credentials, retries)
        self.stub = pb_grpc.ClassifierServiceStub(self.channel)

    def _send(self, call: Unary[Any] | Stream[Any]) -> Any:
        """Starts the RPC: the reply (blocking), an awaitable (aio) or the reply stream."""
        method = getattr(self.stub, call.method)
        payload = call.request if isinstance(call, Unary) else call.requests
        return method(payload, timeout=call.timeout or self.timeout)


def _adopt(method: Callable[..., Any], build: Callable[..., Any], wrap: str) -> None:
    """Gives a shell method the name, docstring and parameters of its call's definition,
    returning what the call reads (wrapped in `wrap`, e.g. Awaitable, when not empty)."""
    functools.update_wrapper(method, build)
    del method.__wrapped__  # help() shows the signature below, not the definition's
    signature = inspect.signature(build)
    read = str(signature.return_annotation).partition("[")[2].removesuffix("]")
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[this, *signature.parameters.values()],
        return_annotation=f"{wrap}[{read}]" if wrap else read,
    )


def _blocking(build: Callable[P, Unary[R]]) -> Callable[Concatenate[Client, P], R]:
    def method(self: Client, *args: P.args, **kwargs: P.kwargs) -> R:
        call = build(*args, **kwargs)
        return call.read(self._send(call))

    _adopt(method, build, "")
    return method


def _blocking_stream(
    build: Callable[P, Stream[R]],
) -> Callable[Concatenate[Client, P], Iterator[R]]:
    def method(self: Client, *args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        call = build(*args, **kwargs)
        return map(call.read, self._send(call))

    _adopt(method, build, "Iterator")
    return method


def _awaited(build: Callable[P, Unary[R]]) -> Callable[Concatenate[AsyncClient, P], Awaitable[R]]:
    async def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> R:
        call = build(*args, **kwargs)
        return call.read(await self._send(call))

    _adopt(method, build, "Awaitable")
    return method


def _async_stream(
    build: Callable[P, Stream[R]],
) -> Callable[Concatenate[AsyncClient, P], AsyncIterator[R]]:
    async def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[R]:
        call = build(*args, **kwargs)
        async for reply in self._send(call):
            yield call.read(reply)

    _adopt(method, build, "AsyncIterator")
    return method


class Client(_Shell):
    """Blocking client."""

    api = grpc

    classify = _blocking(calls.classify)
    classify_batch = _blocking(calls.classify_batch)
    classify_stream = _blocking_stream(calls.classify_stream)
    score_completion = _blocking(calls.score_completion)
    model_info = _blocking(calls.model_info)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Shell):
    """asyncio client."""

    api = grpc.aio

    classify = _awaited(calls.classify)
    classify_batch = _awaited(calls.classify_batch)
    classify_stream = _async_stream(calls.classify_stream)
    score_completion = _awaited(calls.score_completion)
    model_info = _awaited(calls.model_info)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
