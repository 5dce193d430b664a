"""Every RPC of labelprob.v1.ClassifierService, defined once: the request it sends and how
its reply is read. `Client` sends these blocking and `AsyncClient` awaited; neither
repeats what a call is."""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from labelprob.client.params import ClassifyParams
from labelprob.v1 import classifier_pb2 as pb

R = TypeVar("R")
ChatLike = tuple[str, str] | Mapping[str, str] | pb.ChatMessage
StreamItems = Iterable[tuple[str, str]] | AsyncIterable[tuple[str, str]]
STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}


@dataclass(frozen=True)
class Unary(Generic[R]):
    """One request, one reply. `timeout` None: the client's default deadline."""

    method: str  # the attribute of ClassifierServiceStub
    request: Message
    read: Callable[[Any], R]
    timeout: float | None = None


@dataclass(frozen=True)
class Stream(Generic[R]):
    """Requests in, replies out as they finish; `timeout` bounds the whole stream."""

    method: str
    requests: Iterator[Message] | AsyncIterator[Message]
    read: Callable[[Any], R]
    timeout: float | None = None


@dataclass(frozen=True)
class StreamResult:
    """One item of ClassifyStream: its id and either its result or why it failed."""

    id: str
    result: pb.Classification | None
    code: grpc.StatusCode
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK


def _same(reply: R) -> R:
    return reply


def classify(
    text: str, params: ClassifyParams, timeout: float | None = None
) -> Unary[pb.Classification]:
    """The classification of one text."""
    return Unary("Classify", params.request(text), lambda reply: reply.result, timeout)


def classify_batch(
    texts: Sequence[str], params: ClassifyParams, timeout: float | None = None
) -> Unary[pb.ClassifyBatchResponse]:
    """Many texts against one label set: results in input order, and the batch's usage."""
    return Unary("ClassifyBatch", params.batch_request(texts), _same, timeout)


def classify_stream(
    items: StreamItems, params: ClassifyParams, timeout: float | None = None
) -> Stream[StreamResult]:
    """`(id, text)` pairs (an iterable, or an async iterable for AsyncClient) in; one
    StreamResult per id out, in the order they finish. A failed item fails alone."""
    return Stream("ClassifyStream", stream_requests(items, params), stream_result, timeout)


def score_completion(
    prompt: str | Sequence[ChatLike],
    completion: str,
    top_alternatives: int = 0,
    timeout: float | None = None,
) -> Unary[pb.ScoreCompletionResponse]:
    """Per-token log-probabilities of `completion` after `prompt`: a raw text, or chat
    messages ((role, content) pairs, {"role", "content"} dicts or pb.ChatMessage) that the
    server renders with the model's chat template."""
    request = pb.ScoreCompletionRequest(completion=completion, top_alternatives=top_alternatives)
    if isinstance(prompt, str):
        request.prompt = prompt
    else:
        request.messages.extend(to_chat_message(m) for m in prompt)
    return Unary("ScoreCompletion", request, _same, timeout)


def model_info(timeout: float | None = None) -> Unary[pb.GetModelInfoResponse]:
    """The served model and the server's limits."""
    return Unary("GetModelInfo", pb.GetModelInfoRequest(), _same, timeout)


def to_chat_message(message: ChatLike) -> pb.ChatMessage:
    if isinstance(message, pb.ChatMessage):
        return message
    if isinstance(message, tuple):
        return pb.ChatMessage(role=message[0], content=message[1])
    return pb.ChatMessage(role=message["role"], content=message["content"])


def stream_requests(
    items: StreamItems, params: ClassifyParams
) -> Iterator[pb.ClassifyStreamRequest] | AsyncIterator[pb.ClassifyStreamRequest]:
    """The request messages, built as the items come (a long job is never all in memory)."""

    def message(id_: str, text: str) -> pb.ClassifyStreamRequest:
        return pb.ClassifyStreamRequest(id=id_, request=params.request(text))

    if isinstance(items, AsyncIterable):

        async def messages() -> AsyncIterator[pb.ClassifyStreamRequest]:
            async for id_, text in items:
                yield message(id_, text)

        return messages()
    return (message(id_, text) for id_, text in items)


def stream_result(reply: pb.ClassifyStreamResponse) -> StreamResult:
    code = STATUS_BY_CODE.get(reply.status_code, grpc.StatusCode.UNKNOWN)
    result = reply.result if reply.HasField("result") else None
    return StreamResult(reply.id, result, code, reply.error_message)
