"""ScoreCompletion's path over a fake engine: per-token log-probabilities after a prompt."""

from __future__ import annotations

import asyncio
import math

import pytest

from labelprob.server.classify import CompletionRequest, ScoredCompletion
from labelprob.server.errors import InvalidArgument
from tests.unit.fake_engine import UNLIKELY, FakeEngine
from tests.unit.harness import classifier_for

# log P(token | the context's last word)
NEXT = {
    ("for", " seven"): math.log(0.4),
    ("seven", " in"): math.log(0.5),
    ("in", " the"): math.log(0.9),
    ("the", " morning"): math.log(0.3),
    ("the", " evening"): math.log(0.6),
    ("for", " six"): math.log(0.5),
}


def script(context: str, token: str) -> float:
    words = context.split()
    return NEXT.get((words[-1] if words else "", token), UNLIKELY)


script.tokens = tuple(token for _, token in NEXT)  # type: ignore[attr-defined]


def score(engine: FakeEngine, request: CompletionRequest) -> ScoredCompletion:
    return asyncio.run(classifier_for(engine).score_completion(request))


def test_completion_tokens_get_their_log_probabilities_after_the_prompt() -> None:
    engine = FakeEngine(script)
    request = CompletionRequest(" seven in the morning", prompt="Set an alarm for")
    scored = score(engine, request)
    want = [math.log(0.4), math.log(0.5), math.log(0.9), math.log(0.3)]
    assert [t.token for t in scored.tokens] == [" seven", " in", " the", " morning"]
    assert [t.logprob for t in scored.tokens] == pytest.approx(want)
    assert scored.sum_logprob == pytest.approx(sum(want))
    assert scored.mean_logprob == pytest.approx(sum(want) / 4)
    # BOS + 4 prompt tokens + 4 completion tokens, in one read.
    assert scored.usage.prompt_tokens == 9
    assert scored.usage.reads == 1


def test_alternatives_are_the_top_k_at_each_position() -> None:
    engine = FakeEngine(script)
    scored = score(
        engine,
        CompletionRequest(" seven in the morning", prompt="Set an alarm for", top_alternatives=2),
    )
    first = [(a.token, a.logprob) for a in scored.alternatives[0]]
    assert [t for t, _ in first] == [" six", " seven"]
    assert [lp for _, lp in first] == pytest.approx([math.log(0.5), math.log(0.4)])
    last = scored.alternatives[3]
    assert [a.token for a in last] == [" evening", " morning"]
    assert all(len(alts) == 2 for alts in scored.alternatives)


def test_no_alternatives_unless_asked() -> None:
    scored = score(FakeEngine(script), CompletionRequest(" seven", prompt="Set an alarm for"))
    assert scored.alternatives == ((),)


def test_chat_messages_are_rendered_with_the_chat_template() -> None:
    engine = FakeEngine(script, chat=True)
    request = CompletionRequest(
        " seven", messages=({"role": "user", "content": "Set an alarm for"},)
    )
    scored = score(engine, request)
    (call,) = engine.calls
    assert call.prompt == "<|user|>Set an alarm for<|end|><|assistant|> seven"
    # The chat template writes its own special tokens: no BOS is added.
    assert scored.usage.prompt_tokens == call.prompt_len == len(engine.encode(call.prompt))


def test_chat_messages_need_a_chat_template() -> None:
    request = CompletionRequest(" x", messages=({"role": "user", "content": "hi"},))
    with pytest.raises(InvalidArgument) as err:
        score(FakeEngine(script), request)
    assert err.value.field == "messages"


def test_a_completion_past_the_context_names_the_completion() -> None:
    engine = FakeEngine(script, max_model_len=16)
    with pytest.raises(InvalidArgument) as err:
        score(engine, CompletionRequest(" word" * 20, prompt="Set an alarm for"))
    assert err.value.field == "completion"
    assert engine.calls == []


def test_a_whitespace_completion_that_merges_away_names_the_completion() -> None:
    # The completion is read as the continuation of the prompt; the salt reaches the engine.
    engine = FakeEngine(script)
    scored = score(engine, CompletionRequest(" in", prompt="seven", cache_salt="t1"))
    assert [t.token for t in scored.tokens] == [" in"]
    assert engine.calls[0].cache_salt == "t1"
