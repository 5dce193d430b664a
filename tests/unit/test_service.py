"""The real servicer in process over a fake engine: statuses, details, tenant salts, logs,
spans and metrics, the same for every RPC."""

from __future__ import annotations

import hashlib
import math

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from labelprob.server.errors import EngineUnavailable
from labelprob.v1 import classifier_pb2 as pb
from tests.unit.fake_engine import FakeEngine, answer_table
from tests.unit.harness import run, serving, with_limits

AB = [pb.Label(name="alpha"), pb.Label(name="beta")]
PLAIN = pb.ScoringOptions(template="plain", calibration=pb.CALIBRATION_NONE)
TABLE = {"": {" alpha": math.log(0.6), " beta": math.log(0.2)}}
TENANTS = with_limits(tenant_header="x-tenant", cache_salt_secret="s3cret")


def request(text: str = "some text", **fields: object) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(text=text, labels=AB, options=PLAIN, **fields)


def detail(err: grpc.aio.AioRpcError, kind: type) -> object | None:
    status = rpc_status.from_call(err)
    assert status is not None
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            message = kind()
            packed.Unpack(message)
            return message
    return None


def test_classify_returns_the_scripted_distribution() -> None:
    async def scenario() -> pb.ClassifyResponse:
        async with serving(FakeEngine(answer_table(TABLE))) as server:
            return await server.stub.Classify(request())

    result = run(scenario).result
    assert [lb.name for lb in result.labels] == ["alpha", "beta"]
    assert [lb.probability for lb in result.labels] == pytest.approx([0.75, 0.25])
    assert result.top_label == "alpha"
    assert result.mode == pb.SCORING_MODE_FIRST_TOKEN
    assert result.calibration == pb.CALIBRATION_NONE
    assert result.usage.engine_reads == 1


def test_batch_results_keep_order_and_sum_their_usage() -> None:
    def script(context: str, token: str) -> float:
        lean = " alpha" if "Text: A" in context else " beta"
        return math.log(0.7) if token == lean else math.log(0.1)

    async def scenario() -> pb.ClassifyBatchResponse:
        async with serving(FakeEngine(script)) as server:
            batch = pb.ClassifyBatchRequest(texts=["A1", "B2", "A3"], labels=AB, options=PLAIN)
            return await server.stub.ClassifyBatch(batch)

    reply = run(scenario)
    assert [r.top_label for r in reply.results] == ["alpha", "beta", "alpha"]
    assert reply.usage.engine_reads == 3
    assert reply.usage.prompt_tokens == sum(r.usage.prompt_tokens for r in reply.results)


def test_model_info_reports_the_settings_and_the_engine() -> None:
    async def scenario() -> pb.GetModelInfoResponse:
        async with serving(FakeEngine(max_model_len=777)) as server:
            return await server.stub.GetModelInfo(pb.GetModelInfoRequest())

    info = run(scenario)
    assert info.model == "fake-model" and info.engine_version == "fake-engine"
    assert info.max_context_tokens == 777
    assert (info.max_labels, info.max_batch_texts) == (512, 1024)
    assert info.default_calibration == pb.CALIBRATION_AUTO
    assert set(info.templates) == {"chat", "listed", "plain", "minimal", "bare"}
    assert info.chat_template is False
    assert info.vocab_size == 1000


def salt_of(tenant: str, secret: str) -> str:
    return hashlib.sha256(f"{secret}\0{tenant}".encode()).hexdigest()


@pytest.mark.parametrize("rpc", ["Classify", "ClassifyBatch", "ScoreCompletion", "ClassifyStream"])
def test_each_tenant_reads_under_its_own_cache_salt(rpc: str) -> None:
    messages = {
        "Classify": request(),
        "ClassifyBatch": pb.ClassifyBatchRequest(texts=["t"], labels=AB, options=PLAIN),
        "ScoreCompletion": pb.ScoreCompletionRequest(prompt="p", completion=" q"),
    }

    async def call(server, tenant: str | None) -> None:
        metadata = (("x-tenant", tenant),) if tenant else ()
        if rpc == "ClassifyStream":

            async def items():
                yield pb.ClassifyStreamRequest(id="1", request=request())

            async for _ in server.stub.ClassifyStream(items(), metadata=metadata):
                pass
        else:
            await getattr(server.stub, rpc)(messages[rpc], metadata=metadata)

    async def scenario() -> list[str | None]:
        async with serving(FakeEngine(answer_table(TABLE)), TENANTS) as server:
            for tenant in ("tenant-a", "tenant-b", None):
                await call(server, tenant)
            return [c.cache_salt for c in server.engine.calls]

    salts = run(scenario)
    assert salts == [salt_of("tenant-a", "s3cret"), salt_of("tenant-b", "s3cret"), None]


def test_tenants_do_not_share_prefix_cache_blocks() -> None:
    async def scenario() -> list[int]:
        async with serving(FakeEngine(answer_table(TABLE)), TENANTS) as server:
            cached = []
            for tenant in ("a", "a", "b"):
                reply = await server.stub.Classify(
                    request("same text"), metadata=(("x-tenant", tenant),)
                )
                cached.append(reply.result.usage.cached_prompt_tokens)
            return cached

    first_a, second_a, first_b = run(scenario)
    assert first_a == 0 and second_a > 0
    assert first_b == 0


def test_without_a_tenant_header_setting_no_salt_is_used() -> None:
    async def scenario() -> list[str | None]:
        async with serving(FakeEngine(answer_table(TABLE))) as server:
            await server.stub.Classify(request(), metadata=(("x-tenant", "a"),))
            return [c.cache_salt for c in server.engine.calls]

    assert run(scenario) == [None]


@pytest.mark.parametrize(
    ("ready", "reason", "message"),
    [(False, None, "the model is loading"), (True, "draining", "draining")],
)
def test_a_loading_or_draining_server_answers_unavailable(
    ready: bool, reason, message: str
) -> None:
    async def scenario() -> grpc.aio.AioRpcError:
        async with serving(FakeEngine(), ready=ready) as server:
            server.service.unavailable_reason = reason
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await server.stub.Classify(request())
            return err.value

    err = run(scenario)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert message in err.details()
    info = detail(err, error_details_pb2.ErrorInfo)
    assert info is not None and info.reason == "ENGINE_UNAVAILABLE"


def test_a_dead_engine_answers_unavailable() -> None:
    async def scenario() -> grpc.StatusCode:
        engine = FakeEngine(failure=EngineUnavailable("engine process has died"))
        async with serving(engine) as server:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await server.stub.ScoreCompletion(
                    pb.ScoreCompletionRequest(prompt="p", completion=" q")
                )
            return err.value.code()

    assert run(scenario) == grpc.StatusCode.UNAVAILABLE


def test_a_bug_is_internal_without_its_message_and_the_server_keeps_serving() -> None:
    async def scenario() -> tuple[grpc.aio.AioRpcError, pb.ClassifyResponse]:
        engine = FakeEngine(answer_table(TABLE), failure=RuntimeError("secret detail"))
        async with serving(engine) as server:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await server.stub.Classify(request())
            engine.failure = None
            return err.value, await server.stub.Classify(request())

    err, ok = run(scenario)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error: RuntimeError"
    assert ok.result.top_label == "alpha"


def test_overload_is_resource_exhausted_with_retry_info_and_pushback() -> None:
    import asyncio

    async def scenario() -> grpc.aio.AioRpcError:
        engine = FakeEngine(answer_table(TABLE), gate=asyncio.Event())
        async with serving(engine, with_limits()) as server:
            server.service.classifier.budget.limit = 1  # type: ignore[union-attr]
            held = asyncio.ensure_future(server.stub.Classify(request("held")))
            while not engine.calls:
                await asyncio.sleep(0.001)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await server.stub.Classify(request("rejected"))
            engine.gate.set()  # type: ignore[union-attr]
            assert (await held).result.top_label == "alpha"
            return err.value

    err = run(scenario)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = detail(err, error_details_pb2.RetryInfo)
    assert retry is not None and retry.retry_delay.ToMilliseconds() == 1000
    assert ("grpc-retry-pushback-ms", "1000") in tuple(err.trailing_metadata())


METHODS = ["Classify", "ClassifyBatch", "ScoreCompletion", "GetModelInfo", "ClassifyStream"]


async def call_every_rpc(server, metadata=()) -> None:
    await server.stub.Classify(request(), metadata=metadata)
    await server.stub.ClassifyBatch(
        pb.ClassifyBatchRequest(texts=["t"], labels=AB, options=PLAIN), metadata=metadata
    )
    await server.stub.ScoreCompletion(
        pb.ScoreCompletionRequest(prompt="p", completion=" q"), metadata=metadata
    )
    await server.stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata)

    async def items():
        yield pb.ClassifyStreamRequest(id="one", request=request())
        yield pb.ClassifyStreamRequest(id="two", request=pb.ClassifyRequest(text="", labels=AB))

    async for _ in server.stub.ClassifyStream(items(), metadata=metadata):
        pass


def test_every_rpc_gets_a_span_and_stream_items_get_child_spans(spans) -> None:
    async def scenario() -> None:
        async with serving(FakeEngine(answer_table(TABLE))) as server:
            await call_every_rpc(server)

    run(scenario)
    finished = spans.get_finished_spans()
    names = [s.name.removeprefix("labelprob.v1.ClassifierService/") for s in finished]
    assert set(METHODS) | {"ClassifyStream.item"} == set(names)
    stream = next(s for s in finished if s.name.endswith("/ClassifyStream"))
    items = [s for s in finished if s.name.endswith("/ClassifyStream.item")]
    assert len(items) == 2
    assert all(s.parent is not None and s.parent.span_id == stream.context.span_id for s in items)
    codes = sorted(s.attributes["rpc.grpc.status_code"] for s in items)
    assert codes == [grpc.StatusCode.OK.value[0], grpc.StatusCode.INVALID_ARGUMENT.value[0]]


def test_every_rpc_logs_its_request_id_method_and_code(log_events) -> None:
    async def scenario() -> None:
        async with serving(FakeEngine(answer_table(TABLE))) as server:
            await call_every_rpc(server, metadata=(("x-request-id", "req-42"),))

    run(scenario)
    done = [e for e in log_events if e["event"] == "request done"]
    assert {e["method"] for e in done} == set(METHODS) | {"ClassifyStream.item"}
    assert all(e["request_id"] == "req-42" and e["code"] for e in done)
    rejected = [e for e in log_events if e["event"] == "request rejected"]
    assert [(e["method"], e.get("item_id"), e["code"]) for e in rejected] == [
        ("ClassifyStream.item", "two", "INVALID_ARGUMENT")
    ]


def test_a_generated_request_id_when_the_caller_sends_none(log_events) -> None:
    async def scenario() -> None:
        async with serving(FakeEngine(answer_table(TABLE))) as server:
            await server.stub.Classify(request())
            await server.stub.Classify(request())

    run(scenario)
    ids = [e["request_id"] for e in log_events if e["event"] == "request done"]
    assert len(ids) == 2 and ids[0] != ids[1] and all(len(i) == 16 for i in ids)


def test_request_texts_are_logged_only_when_asked(log_events) -> None:
    secret = "a very private sentence"

    async def scenario(settings) -> None:
        async with serving(FakeEngine(answer_table(TABLE)), settings) as server:
            await server.stub.Classify(request(secret))

    run(lambda: scenario(with_limits()))
    assert secret not in repr(log_events)
    run(lambda: scenario(with_limits(log_text=True)))
    assert secret in repr(log_events)


def count(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("labelprob_requests_total", {"method": method, "code": code})
    return value or 0.0


def test_metrics_count_rpcs_and_stream_items_by_code() -> None:
    before = {
        (m, c): count(m, c)
        for m in [*METHODS, "ClassifyStream.item"]
        for c in ("OK", "INVALID_ARGUMENT")
    }

    async def scenario() -> None:
        async with serving(FakeEngine(answer_table(TABLE))) as server:
            await call_every_rpc(server)

    run(scenario)
    for method in METHODS:
        assert count(method, "OK") == before[(method, "OK")] + 1
    assert count("ClassifyStream.item", "OK") == before[("ClassifyStream.item", "OK")] + 1
    assert (
        count("ClassifyStream.item", "INVALID_ARGUMENT")
        == before[("ClassifyStream.item", "INVALID_ARGUMENT")] + 1
    )
