"""ClassifyStream in process: ids, per-item errors, completion order, the window."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest

from labelprob.server.errors import EngineUnavailable
from labelprob.server.stream import STREAM_WINDOW
from labelprob.v1 import classifier_pb2 as pb
from tests.unit.fake_engine import FakeEngine, answer_table
from tests.unit.harness import run, serving

AB = [pb.Label(name="alpha"), pb.Label(name="beta")]
PLAIN = pb.ScoringOptions(template="plain", calibration=pb.CALIBRATION_NONE)
TABLE = {"": {" alpha": math.log(0.6), " beta": math.log(0.2)}}
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def item(item_id: str, text: str = "some text", labels=AB) -> pb.ClassifyStreamRequest:
    return pb.ClassifyStreamRequest(
        id=item_id, request=pb.ClassifyRequest(text=text, labels=labels, options=PLAIN)
    )


async def stream_of(items):
    for one in items:
        yield one


def collect(engine: FakeEngine, items) -> list[pb.ClassifyStreamResponse]:
    async def scenario() -> list[pb.ClassifyStreamResponse]:
        async with serving(engine) as server:
            return [r async for r in server.stub.ClassifyStream(stream_of(items))]

    return run(scenario)


def test_every_item_is_answered_under_its_id() -> None:
    replies = collect(
        FakeEngine(answer_table(TABLE)), [item(f"n{i}", f"text {i}") for i in range(20)]
    )
    assert sorted(r.id for r in replies) == sorted(f"n{i}" for i in range(20))
    for reply in replies:
        assert reply.status_code == 0 and reply.error_message == ""
        assert [lb.probability for lb in reply.result.labels] == pytest.approx([0.75, 0.25])


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (item("bad", text=""), "text"),
        (item("bad", labels=AB[:1]), "labels"),
        (
            pb.ClassifyStreamRequest(
                id="bad",
                request=pb.ClassifyRequest(
                    text="t", labels=AB, options=pb.ScoringOptions(calibration=pb.CALIBRATION_BATCH)
                ),
            ),
            "options.calibration",
        ),
    ],
    ids=["empty text", "one label", "batch calibration"],
)
def test_a_bad_item_gets_its_own_error_and_the_stream_goes_on(bad, field: str) -> None:
    replies = collect(FakeEngine(answer_table(TABLE)), [item("a"), bad, item("b")])
    by_id = {r.id: r for r in replies}
    assert set(by_id) == {"a", "bad", "b"}
    assert by_id["bad"].status_code == INVALID
    assert by_id["bad"].error_message.startswith(f"{field}:")
    assert by_id["a"].status_code == by_id["b"].status_code == 0


def test_an_empty_id_is_rejected() -> None:
    replies = collect(FakeEngine(answer_table(TABLE)), [item(""), item("ok")])
    by_id = {r.id: r for r in replies}
    assert by_id[""].status_code == INVALID and by_id[""].error_message == "id: id is empty"
    assert by_id["ok"].status_code == 0


def test_a_duplicate_id_in_flight_is_rejected_and_free_again_after() -> None:
    async def scenario() -> list[pb.ClassifyStreamResponse]:
        engine = FakeEngine(answer_table(TABLE), gates={"first": asyncio.Event()})
        async with serving(engine) as server:
            budget = server.service.classifier.budget  # type: ignore[union-attr]

            async def items():
                yield item("x", "first")
                yield item("x", "second")
                while not engine.calls:  # "first" is in flight, held at the engine
                    await asyncio.sleep(0.005)
                engine.gates["first"].set()
                while budget.in_flight:
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.01)
                yield item("x", "third")

            return [r async for r in server.stub.ClassifyStream(items())]

    replies = run(scenario)
    assert [(r.id, r.status_code) for r in replies] == [("x", INVALID), ("x", 0), ("x", 0)]
    assert replies[0].error_message == "id: id is already in flight"


def test_results_come_in_completion_order() -> None:
    async def scenario() -> list[str]:
        engine = FakeEngine(answer_table(TABLE), gates={"slow": asyncio.Event()})
        async with serving(engine) as server:
            out = []
            async for reply in server.stub.ClassifyStream(
                stream_of([item("slow", "slow"), item("fast", "fast")])
            ):
                out.append(reply.id)
                engine.gates["slow"].set()
            return out

    assert run(scenario) == ["fast", "slow"]


def test_the_window_holds_at_most_64_items_in_flight() -> None:
    total = STREAM_WINDOW + 36

    async def scenario() -> tuple[int, int, int]:
        engine = FakeEngine(answer_table(TABLE), gate=asyncio.Event())
        async with serving(engine) as server:
            call = server.stub.ClassifyStream(
                stream_of([item(f"n{i}", f"text {i}") for i in range(total)])
            )
            replies = []

            async def read() -> None:
                async for reply in call:
                    replies.append(reply)

            reader = asyncio.create_task(read())
            for _ in range(2000):  # the server reads items until its window is full
                if len(engine.calls) >= STREAM_WINDOW:
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.2)  # and no further, however long it is given
            started_while_held = len(engine.calls)
            budget = server.service.classifier.budget.in_flight  # type: ignore[union-attr]
            engine.gate.set()  # type: ignore[union-attr]
            await reader
            return started_while_held, budget, len(replies)

    started, in_flight, answered = run(scenario)
    assert started == STREAM_WINDOW
    assert in_flight == STREAM_WINDOW  # one read an item, admitted
    assert answered == total


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (EngineUnavailable("engine process has died"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL),
    ],
)
def test_item_errors_map_to_the_same_statuses_as_unary_calls(failure: Exception, code) -> None:
    replies = collect(FakeEngine(answer_table(TABLE), failure=failure), [item("a")])
    (reply,) = replies
    assert reply.status_code == code.value[0]
    assert not reply.HasField("result")


def test_an_overloaded_item_is_resource_exhausted() -> None:
    async def scenario() -> dict[str, pb.ClassifyStreamResponse]:
        engine = FakeEngine(answer_table(TABLE), gates={"held": asyncio.Event()})
        async with serving(engine) as server:
            server.service.classifier.budget.limit = 1  # type: ignore[union-attr]

            async def items():
                yield item("held", "held")
                while not engine.calls:
                    await asyncio.sleep(0.001)
                yield item("over", "over")

            out = {}
            async for reply in server.stub.ClassifyStream(items()):
                out[reply.id] = reply
                engine.gates["held"].set()
            return out

    replies = run(scenario)
    assert replies["over"].status_code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert replies["held"].status_code == 0


def test_cancelling_the_stream_releases_its_reads() -> None:
    async def scenario() -> int:
        engine = FakeEngine(answer_table(TABLE), gate=asyncio.Event())
        async with serving(engine) as server:
            call = server.stub.ClassifyStream(stream_of([item(f"n{i}") for i in range(5)]))
            while len(engine.calls) < 5:
                await asyncio.sleep(0.005)
            call.cancel()
            budget = server.service.classifier.budget  # type: ignore[union-attr]
            for _ in range(200):
                if budget.in_flight == 0:
                    break
                await asyncio.sleep(0.005)
            return budget.in_flight

    assert run(scenario) == 0
