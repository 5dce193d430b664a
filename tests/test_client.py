"""The Python client: every RPC, blocking and asyncio, against the real tiny-model server;
what it and `labelprob serve` import."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
import torch

from labelprob.client import AsyncClient, ClassifyParams, Client, StreamResult, calls
from labelprob.v1 import classifier_pb2 as pb
from tests.conftest import ServerProcess

TOOL_MODULES = ["labelprob.tools", "hdrh", "tqdm", "matplotlib", "aiohttp", "psutil"]


def loaded_modules(code: str) -> list[str]:
    """Which of TOOL_MODULES a fresh interpreter has loaded after running `code`."""
    report = f"print(json.dumps([m for m in {TOOL_MODULES!r} if m in sys.modules]))"
    probe = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_the_client_library_imports_no_tool() -> None:
    code = "import labelprob.client\nlabelprob.client.Client('127.0.0.1:1').close()"
    assert loaded_modules(code) == []
    # The probe sees them when they are loaded.
    assert loaded_modules("import labelprob.tools.loadtest") == ["labelprob.tools", "hdrh"]


def test_serve_imports_no_tool() -> None:
    code = """
from labelprob.server import cli
args = cli.build_parser().parse_args(["serve", "--port", "0"])
assert args.run is cli.run_serve
from labelprob.server import app  # what run_serve imports
try:
    cli.main(["serve", "--help"])
except SystemExit:
    pass
"""
    assert loaded_modules(code) == []


# --- request building, without a server ---------------------------------------------------------

PARAMS = ClassifyParams(["yes", ("no", "not so")], instruction="Is it so?")


def test_score_completion_request_from_a_prompt_or_messages() -> None:
    raw = calls.score_completion("Set an alarm", " now.", top_alternatives=2).request
    assert raw == pb.ScoreCompletionRequest(
        prompt="Set an alarm", completion=" now.", top_alternatives=2
    )
    chat = calls.score_completion(
        [("system", "Be brief."), {"role": "user", "content": "Hi"}], "Hello"
    ).request
    assert list(chat.messages) == [
        pb.ChatMessage(role="system", content="Be brief."),
        pb.ChatMessage(role="user", content="Hi"),
    ]
    assert chat.prompt == "" and chat.completion == "Hello"


def test_stream_requests_carry_ids_and_the_shared_params() -> None:
    call = calls.classify_stream([("a", "first"), ("b", "second")], PARAMS)
    messages = list(call.requests)  # type: ignore[arg-type]
    assert [m.id for m in messages] == ["a", "b"]
    assert [m.request.text for m in messages] == ["first", "second"]
    assert [(lb.name, lb.description) for lb in messages[1].request.labels] == [
        ("yes", ""),
        ("no", "not so"),
    ]
    assert messages[0].request.instruction == "Is it so?"


def test_stream_results_name_their_status() -> None:
    ok = calls.stream_result(pb.ClassifyStreamResponse(id="a", result=pb.Classification()))
    assert ok == StreamResult("a", pb.Classification(), grpc.StatusCode.OK)
    assert ok.ok
    failed = calls.stream_result(
        pb.ClassifyStreamResponse(id="b", status_code=3, error_message="text: empty")
    )
    assert (failed.result, failed.code, failed.ok) == (
        None,
        grpc.StatusCode.INVALID_ARGUMENT,
        False,
    )


# --- against the tiny server ---------------------------------------------------------------------

engine = pytest.mark.engine
LABELS = ["positive", "negative", "sports"]
TEXTS = ["The movie was wonderful.", "A dull, boring film.", "The team won the match."]
NO_CALIBRATION = ClassifyParams(LABELS, options=pb.ScoringOptions(calibration=pb.CALIBRATION_NONE))
PROMPT, COMPLETION = "Set an alarm for seven", " in the morning."


def reference_completion(tiny_reference: tuple, prompt: str, completion: str) -> tuple:
    """(completion token ids, their log-probabilities) from a transformers forward pass."""
    tokenizer, model = tiny_reference
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=True)
    ids = tokenizer.encode(prompt + completion, add_special_tokens=True)
    assert ids[: len(prompt_ids)] == prompt_ids  # this pair splits cleanly at the boundary
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    positions = range(len(prompt_ids), len(ids))
    return ids[len(prompt_ids) :], [logprobs[i - 1, ids[i]].item() for i in positions]


def check_completion(reply: pb.ScoreCompletionResponse, ids: list[int], want: list[float]) -> None:
    assert [t.token.token_id for t in reply.tokens] == ids
    assert [t.token.logprob for t in reply.tokens] == pytest.approx(want, abs=1e-3)
    assert all(len(t.alternatives) == 2 for t in reply.tokens)
    assert reply.sum_logprob == pytest.approx(sum(want), abs=1e-3)


@engine
def test_score_completion_blocking_and_async(tiny_server: ServerProcess, tiny_reference) -> None:
    ids, want = reference_completion(tiny_reference, PROMPT, COMPLETION)
    with Client(tiny_server.target, timeout=120) as client:
        check_completion(client.score_completion(PROMPT, COMPLETION, top_alternatives=2), ids, want)

    async def run() -> pb.ScoreCompletionResponse:
        async with AsyncClient(tiny_server.target, timeout=120) as client:
            return await client.score_completion(PROMPT, COMPLETION, top_alternatives=2)

    check_completion(asyncio.run(run()), ids, want)


@engine
def test_score_completion_sends_chat_messages(tiny_client: Client) -> None:
    # The tiny model has no chat template: only a request with messages is refused.
    with pytest.raises(grpc.RpcError) as err:
        tiny_client.score_completion([("user", PROMPT)], COMPLETION)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages" in err.value.details()


def stream_items() -> list[tuple[str, str]]:
    return [*((f"item-{i}", t) for i, t in enumerate(TEXTS * 2)), ("bad", "")]


def check_stream(results: list[StreamResult], client: Client) -> None:
    by_id = {r.id: r for r in results}
    assert len(results) == len(by_id) == 7
    assert by_id["bad"].code == grpc.StatusCode.INVALID_ARGUMENT
    assert by_id["bad"].result is None and "text" in by_id["bad"].message
    for id_, text in stream_items()[:-1]:
        assert by_id[id_].ok
        single = client.classify(text, NO_CALIBRATION)
        got = by_id[id_].result
        assert got is not None and got.top_label == single.top_label
        assert [lb.logprob for lb in got.labels] == pytest.approx(
            [lb.logprob for lb in single.labels], abs=1e-4
        )


@engine
def test_classify_stream_blocking(tiny_client: Client) -> None:
    results = list(tiny_client.classify_stream(stream_items(), NO_CALIBRATION, timeout=120))
    check_stream(results, tiny_client)


@engine
def test_classify_stream_async_from_an_async_source(
    tiny_server: ServerProcess, tiny_client: Client
) -> None:
    async def source() -> AsyncIterator[tuple[str, str]]:
        for item in stream_items():
            await asyncio.sleep(0)  # items arrive while results flow back
            yield item

    async def run() -> list[StreamResult]:
        async with AsyncClient(tiny_server.target, timeout=120) as client:
            return [r async for r in client.classify_stream(source(), NO_CALIBRATION)]

    check_stream(asyncio.run(run()), tiny_client)


@engine
def test_async_client_agrees_with_the_blocking_one(
    tiny_server: ServerProcess, tiny_client: Client
) -> None:
    async def run() -> tuple:
        async with AsyncClient(tiny_server.target, timeout=120) as client:
            single = await client.classify(TEXTS[0], NO_CALIBRATION)
            batch = await client.classify_batch(TEXTS, NO_CALIBRATION)
            info = await client.model_info()
            return single, batch, info

    single, batch, info = asyncio.run(run())
    assert info == tiny_client.model_info()
    assert single.top_label == tiny_client.classify(TEXTS[0], NO_CALIBRATION).top_label
    blocking = tiny_client.classify_batch(TEXTS, NO_CALIBRATION)
    assert [r.top_label for r in batch.results] == [r.top_label for r in blocking.results]
    assert batch.usage.prompt_tokens == blocking.usage.prompt_tokens


@pytest.mark.embedded
def test_score_completion_of_chat_messages_on_the_embedded_model(embedded_client: Client) -> None:
    messages = [("system", "Answer briefly."), {"role": "user", "content": "Capital of France?"}]
    got = embedded_client.score_completion(messages, "Paris.", top_alternatives=1)
    raw = embedded_client.stub.ScoreCompletion(
        pb.ScoreCompletionRequest(
            messages=[
                pb.ChatMessage(role="system", content="Answer briefly."),
                pb.ChatMessage(role="user", content="Capital of France?"),
            ],
            completion="Paris.",
            top_alternatives=1,
        ),
        timeout=300,
    )
    assert got == raw
    assert got.sum_logprob == pytest.approx(sum(t.token.logprob for t in got.tokens), abs=1e-6)
