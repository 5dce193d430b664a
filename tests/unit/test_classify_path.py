"""The classification path over a fake engine: prompts, label reads, chain rule, signals.

Expected values are computed here by hand from the scripted probabilities."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from labelprob.server.classify import Options
from labelprob.server.errors import InvalidArgument
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, Decision, LengthNorm, Thresholds
from tests.unit.fake_engine import FakeEngine, answer_table
from tests.unit.paths import NO_CALIBRATION, classify, classify_one, probabilities, task

log = math.log

# Three labels read as words ("alarm set"), with a shared first piece:
# " alarm" " set" | " alarm" " query" | " play" " music".
TRIE = {
    "": {" alarm": log(0.5), " play": log(0.3)},
    " alarm": {" set": log(0.6), " query": log(0.2)},
    " play": {" music": log(0.7)},
}
TRIE_LABELS = ("alarm_set", "alarm_query", "play_music")
# P(label) by the chain rule, by hand.
TRIE_EXACT = {
    "alarm_set": 0.5 * 0.6,
    "alarm_query": 0.5 * 0.2,
    "play_music": 0.3 * 0.7,
}


@pytest.mark.parametrize(
    "first", [(0.6, 0.2), (0.1, 0.1), (0.01, 0.5), (0.7, 0.29)], ids=["lean", "tie", "flip", "sure"]
)
def test_first_token_probabilities_are_normalized_over_the_labels(first) -> None:
    p_pos, p_neg = first
    engine = FakeEngine(answer_table({"": {" positive": log(p_pos), " negative": log(p_neg)}}))
    result = classify_one(engine, task("positive", "negative"), "a fine film")
    assert result.mode is Mode.FIRST_TOKEN
    assert probabilities(result) == pytest.approx(
        {"positive": p_pos / (p_pos + p_neg), "negative": p_neg / (p_pos + p_neg)}
    )
    assert [lb.logprob for lb in result.labels] == pytest.approx([log(p_pos), log(p_neg)])
    assert result.label_mass == pytest.approx(p_pos + p_neg)
    assert result.usage.reads == 1


def test_signals_by_hand() -> None:
    p = {" red": 0.5, " green": 0.3, " blue": 0.1}
    engine = FakeEngine(answer_table({"": {k: log(v) for k, v in p.items()}}))
    result = classify_one(engine, task("red", "green", "blue"), "a colour")
    q = [v / 0.9 for v in p.values()]
    assert result.top_label == "red"
    assert result.entropy == pytest.approx(-sum(x * log(x) for x in q))
    assert result.margin == pytest.approx(q[0] - q[1])
    assert result.label_mass == pytest.approx(0.9)
    assert result.decision is Decision.NONE


def test_full_mode_reads_the_trie_and_chains_the_tokens() -> None:
    engine = FakeEngine(answer_table(TRIE))
    result = classify_one(
        engine,
        task(*TRIE_LABELS),
        "wake me at six",
        options=replace(NO_CALIBRATION, mode=Mode.FULL),
    )
    assert result.mode is Mode.FULL
    for label in result.labels:
        assert label.logprob == pytest.approx(log(TRIE_EXACT[label.name]))
        assert not label.estimated
    alarm_set = result.labels[0]
    assert [t.token for t in alarm_set.tokens] == [" alarm", " set"]
    assert [t.logprob for t in alarm_set.tokens] == pytest.approx([log(0.5), log(0.6)])
    total = sum(TRIE_EXACT.values())
    assert probabilities(result) == pytest.approx({k: v / total for k, v in TRIE_EXACT.items()})
    # The trie's internal nodes: root, " alarm", " play".
    assert result.usage.reads == 3
    assert sorted(sorted(c.candidates) for c in engine.calls) == sorted(
        [[" alarm", " play"], [" query", " set"], [" music"]]
    )


def test_auto_reads_first_tokens_when_they_are_unique() -> None:
    engine = FakeEngine(answer_table({"": {" sports": log(0.4), " tech_news": log(0.2)}}))
    result = classify_one(
        engine,
        task("sports", "tech_news"),
        "a goal",
        options=Options(mode=Mode.AUTO, calibration=Calibration.NONE),
    )
    assert result.mode is Mode.FIRST_TOKEN
    assert result.usage.reads == 1
    # The first token stands for the whole label.
    assert [len(lb.tokens) for lb in result.labels] == [1, 1]


def test_auto_reads_the_whole_trie_when_first_tokens_are_shared() -> None:
    engine = FakeEngine(answer_table(TRIE))
    result = classify_one(engine, task(*TRIE_LABELS), "wake me up")
    assert result.mode is Mode.FULL
    assert result.labels[1].logprob == pytest.approx(log(TRIE_EXACT["alarm_query"]))


def test_first_token_mode_on_shared_first_tokens_ties_them() -> None:
    engine = FakeEngine(answer_table(TRIE))
    result = classify_one(
        engine, task(*TRIE_LABELS), "x", options=replace(NO_CALIBRATION, mode=Mode.FIRST_TOKEN)
    )
    p = probabilities(result)
    assert (
        p["alarm_set"] == pytest.approx(p["alarm_query"]) == pytest.approx(0.5 / (0.5 + 0.5 + 0.3))
    )


def test_mean_length_normalization_divides_by_the_label_length() -> None:
    engine = FakeEngine(answer_table(TRIE))
    options = Options(mode=Mode.FULL, length_norm=LengthNorm.MEAN, calibration=Calibration.NONE)
    result = classify_one(engine, task(*TRIE_LABELS), "x", options=options)
    means = {k: log(v) / 2 for k, v in TRIE_EXACT.items()}  # every label is 2 pieces
    z = sum(math.exp(v) for v in means.values())
    assert probabilities(result) == pytest.approx({k: math.exp(v) / z for k, v in means.items()})
    assert [lb.score for lb in result.labels] == pytest.approx(list(means.values()))
    # The raw log-probability stays the sum.
    assert result.labels[0].logprob == pytest.approx(log(TRIE_EXACT["alarm_set"]))


def test_prompt_puts_the_task_before_the_text_and_the_cue_after() -> None:
    engine = FakeEngine(answer_table({"": {" yes": -1.0, " no": -2.0}}))
    classify_one(engine, task("yes", "no", instruction="Is it kind?"), "You are great.")
    (call,) = engine.calls
    assert call.prompt == "Is it kind?\n\nLabels:\n- yes\n- no\n\nText: You are great.\nLabel:"
    assert sorted(call.candidates) == [" no", " yes"]


def test_labels_are_read_as_the_continuation_of_the_cue() -> None:
    # With a dummy prefix, " yes" alone would be "▁yes": the label must be read in context.
    table = {"": {" yes": log(0.7), " no": log(0.1), "\u2581yes": log(0.01), "\u2581no": log(0.5)}}
    engine = FakeEngine(answer_table(table), dummy_prefix=True)
    result = classify_one(engine, task("yes", "no"), "sure")
    (call,) = engine.calls
    assert sorted(call.candidates) == [" no", " yes"]
    assert probabilities(result)["yes"] == pytest.approx(0.7 / 0.8)
    assert [t.token for t in result.labels[0].tokens] == [" yes"]


def test_examples_and_descriptions_go_into_the_shared_prefix() -> None:
    from labelprob.server.classify import Task
    from labelprob.server.prompts import ExampleSpec, LabelSpec

    engine = FakeEngine(answer_table({"": {" up": -1.0, " down": -1.0}}))
    the_task = Task(
        (LabelSpec("up", "rising"), LabelSpec("down")),
        examples=(ExampleSpec("it rose", "up"),),
        template="plain",
    )
    classify_one(engine, the_task, "it fell")
    (call,) = engine.calls
    prefix, _, rest = call.prompt.partition("Text: it fell")
    assert "- up: rising\n- down" in prefix
    assert "Examples:\nText: it rose\nLabel: up" in prefix
    assert rest == "\nLabel:"


def test_full_prompts_end_on_a_block_boundary_first_token_prompts_do_not() -> None:
    engine = FakeEngine(answer_table(TRIE))
    full = replace(NO_CALIBRATION, mode=Mode.FULL)
    classify_one(engine, task(*TRIE_LABELS), "wake me up now", options=full, align_block=8)
    root = next(c for c in engine.calls if set(c.candidates) == {" alarm", " play"})
    assert root.prompt_len % 8 == 0
    assert "wake me up now\n" in root.prompt  # padded with newlines after the text
    # A deeper read is the aligned prompt plus the label prefix.
    deeper = next(c for c in engine.calls if set(c.candidates) == {" query", " set"})
    assert deeper.prompt_len == root.prompt_len + 1
    engine.calls.clear()
    first = replace(NO_CALIBRATION, mode=Mode.FIRST_TOKEN)
    classify_one(engine, task(*TRIE_LABELS), "wake me up now", options=first, align_block=8)
    assert "wake me up now\nLabel:" in engine.calls[0].prompt


def test_a_long_text_is_cut_to_fit_the_context() -> None:
    engine = FakeEngine(answer_table({"": {" a": -1.0, " b": -2.0}}), max_model_len=64)
    result = classify_one(engine, task("a", "b"), "word " * 100)
    assert result.truncated
    assert engine.calls[0].prompt_len <= 64 - 1


def test_a_long_text_is_rejected_under_the_reject_policy() -> None:
    engine = FakeEngine(max_model_len=64)
    with pytest.raises(InvalidArgument) as err:
        classify_one(
            engine, task("a", "b"), "word " * 100, options=replace(NO_CALIBRATION, truncate=False)
        )
    assert err.value.field == "text"


def test_a_short_text_is_not_marked_truncated() -> None:
    engine = FakeEngine(max_model_len=64)
    assert not classify_one(engine, task("a", "b"), "short").truncated


def test_a_task_larger_than_the_context_names_the_labels() -> None:
    engine = FakeEngine(max_model_len=32)
    with pytest.raises(InvalidArgument) as err:
        classify_one(engine, task(*[f"label{i}" for i in range(40)]), "text")
    assert err.value.field == "labels"


def test_unknown_template_names_the_option() -> None:
    with pytest.raises(InvalidArgument) as err:
        classify_one(FakeEngine(), task("a", "b", template="nope"), "text")
    assert err.value.field == "options.template"


@pytest.mark.parametrize("k", [2, 3, 5])
def test_top_alternatives_are_the_most_likely_tokens_and_cost_one_read(k: int) -> None:
    table = {"": {" a": log(0.2), " b": log(0.1), " maybe": log(0.4), " never": log(0.15)}}
    engine = FakeEngine(answer_table(table))
    options = replace(NO_CALIBRATION, top_alternatives=k)
    result = classify_one(engine, task("a", "b"), "text", options=options)
    ranked = sorted(table[""].items(), key=lambda kv: kv[1], reverse=True)[:k]
    got = result.top_alternatives[: len(ranked)]
    assert len(result.top_alternatives) == k
    assert [t.token for t in got] == [t for t, _ in ranked]
    assert [t.logprob for t in got] == pytest.approx([lp for _, lp in ranked])
    assert result.usage.reads == 2  # the label read, and the top-k read


def test_the_first_alternative_comes_free_with_the_label_read() -> None:
    engine = FakeEngine(answer_table({"": {" a": log(0.2), " b": log(0.1), " c": log(0.6)}}))
    result = classify_one(
        engine, task("a", "b"), "text", options=replace(NO_CALIBRATION, top_alternatives=1)
    )
    (top,) = result.top_alternatives
    assert top.token == " c" and top.logprob == pytest.approx(log(0.6))
    assert result.usage.reads == 1


@pytest.mark.parametrize(
    ("thresholds", "decision"),
    [
        (Thresholds(min_top_probability=0.7), Decision.ACCEPT),
        (Thresholds(min_top_probability=0.8), Decision.ABSTAIN),
        (Thresholds(min_margin=0.49), Decision.ACCEPT),
        (Thresholds(min_margin=0.6), Decision.ABSTAIN),
        (Thresholds(min_label_mass=0.79), Decision.ACCEPT),
        (Thresholds(min_label_mass=0.81), Decision.ABSTAIN),
    ],
)
def test_decision_thresholds(thresholds: Thresholds, decision: Decision) -> None:
    # P = (0.75, 0.25): margin 0.5, label mass 0.8.
    engine = FakeEngine(answer_table({"": {" a": log(0.6), " b": log(0.2)}}))
    options = replace(NO_CALIBRATION, thresholds=thresholds)
    assert classify_one(engine, task("a", "b"), "t", options=options).decision is decision


def test_a_batch_keeps_the_order_of_its_texts() -> None:
    def script(context: str, token: str) -> float:
        leaning = " a" if "first" in context else " b"
        return log(0.8) if token == leaning else log(0.1)

    results = classify(FakeEngine(script), task("a", "b"), ["first", "second", "first again"])
    assert [r.top_label for r in results] == ["a", "b", "a"]


def test_usage_sums_the_reads_of_a_text() -> None:
    engine = FakeEngine(answer_table(TRIE))
    result = classify_one(
        engine, task(*TRIE_LABELS), "x", options=replace(NO_CALIBRATION, mode=Mode.FULL)
    )
    assert result.usage.reads == len(engine.calls)
    assert result.usage.prompt_tokens == sum(c.prompt_len for c in engine.calls)
    # The root read fills the fake prefix cache; the deeper reads find whole blocks of it.
    assert 0 < result.usage.cached_tokens < result.usage.prompt_tokens


def test_more_than_128_first_tokens_are_split_across_reads() -> None:
    names = [f"w{i}" for i in range(150)]
    scores = {f" w{i}": -1.0 - i / 100 for i in range(150)}
    engine = FakeEngine(answer_table({"": scores}))
    result = classify_one(engine, task(*names), "text")
    assert [len(c.candidates) for c in engine.calls] == [128, 22]
    z = sum(math.exp(v) for v in scores.values())
    assert [lb.probability for lb in result.labels] == pytest.approx(
        [math.exp(v) / z for v in scores.values()]
    )


def test_a_prepared_task_is_reused() -> None:
    from tests.unit.harness import classifier_for

    engine = FakeEngine(answer_table({"": {" a": -1.0, " b": -1.0}}))
    classifier = classifier_for(engine)
    the_task = task("a", "b")
    assert classifier.prepare(the_task) is classifier.prepare(task("a", "b"))
    classify(engine, the_task, ["one"], classifier=classifier)
    classify(engine, the_task, ["two"], classifier=classifier)
    assert classifier.preparer.prepare.cache_info().misses == 1  # type: ignore[attr-defined]
