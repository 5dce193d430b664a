"""ClassifyStream's flow: a window of items in flight, per-item results and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from labelprob.server.errors import InvalidArgument
from labelprob.server.rpc import failure_status, observed
from labelprob.server.wire import outbound
from labelprob.v1 import classifier_pb2 as pb

# Items of one ClassifyStream in flight at once; past it the server stops reading the
# stream, and gRPC flow control pushes back on the caller.
STREAM_WINDOW = 64
ITEM_METHOD = "ClassifyStream.item"

ClassifyOne = Callable[[pb.ClassifyRequest], Awaitable[pb.Classification]]


def _id_error(item: pb.ClassifyStreamRequest, in_flight: set[str]) -> InvalidArgument | None:
    if not item.id:
        return InvalidArgument("id", "id is empty")
    if item.id in in_flight:
        return InvalidArgument("id", "id is already in flight")
    return None


async def classify_stream(
    requests: AsyncIterator[pb.ClassifyStreamRequest],
    classify: ClassifyOne,
    window_size: int = STREAM_WINDOW,
) -> AsyncIterator[pb.ClassifyStreamResponse]:
    """Results in completion order, each tagged with its request's id; errors per item."""
    results: asyncio.Queue[pb.ClassifyStreamResponse | None] = asyncio.Queue()
    window = asyncio.Semaphore(window_size)
    in_flight: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def run(item: pb.ClassifyStreamRequest) -> None:
        with observed(ITEM_METHOD, item_id=item.id) as outcome:
            try:
                response = outbound.stream_result(item.id, await classify(item.request))
            except Exception as exc:
                response = outbound.stream_error(item.id, failure_status(exc, outcome))
            finally:
                in_flight.discard(item.id)
                window.release()
            await results.put(response)

    async def read_requests() -> None:
        try:
            async for item in requests:
                await window.acquire()
                if (error := _id_error(item, in_flight)) is not None:
                    window.release()
                    with observed(ITEM_METHOD, item_id=item.id) as outcome:
                        await results.put(
                            outbound.stream_error(item.id, failure_status(error, outcome))
                        )
                    continue
                in_flight.add(item.id)
                task = asyncio.create_task(run(item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*list(tasks))
        finally:
            await results.put(None)

    reader = asyncio.create_task(read_requests())
    try:
        while (response := await results.get()) is not None:
            yield response
        await reader
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()
