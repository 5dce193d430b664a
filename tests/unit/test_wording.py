"""How labels are shown and read: identifier names as words, the minimal template, and
labels that begin another label closed by the end-of-answer token (no engine for most)."""

from __future__ import annotations

import math

import pytest

from labelprob.server.classify import Options, Task
from labelprob.server.labels import Mode, close_prefix_labels
from labelprob.server.prompts import (
    CHAT_TEMPLATE,
    MINIMAL_TEMPLATE,
    PLAIN_TEMPLATE,
    ExampleSpec,
    LabelSpec,
    label_words,
    render_prompt_parts,
    shown_labels,
)
from labelprob.server.scoring import Calibration, Method
from tests.unit.fake_engine import FakeEngine, answer_table
from tests.unit.paths import classify_one, probabilities, task

log = math.log
DIRECT = Options(calibration=Calibration.NONE, method=Method.DIRECT)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("alarm_set", "alarm set"),
        ("playMusic", "play music"),
        ("play-music", "play music"),
        ("news-and_weather", "news and weather"),
        ("alarm__set", "alarm set"),
        ("Alarm_Set", "alarm set"),
        ("turnOnTheLights", "turn on the lights"),
    ],
)
def test_identifier_names_read_as_words(name: str, words: str) -> None:
    assert label_words(name) == words


@pytest.mark.parametrize("name", ["positive", "IoT", "USA", "GPT4", "HTTPServer", "play music"])
def test_plain_words_and_acronyms_stay_as_sent(name: str) -> None:
    assert label_words(name) == name


def test_shown_labels_word_the_names_and_keep_the_descriptions() -> None:
    labels = [LabelSpec("alarm_set", "set an alarm"), LabelSpec("playMusic"), LabelSpec("IoT")]
    shown = shown_labels(CHAT_TEMPLATE, labels)
    assert [lb.name for lb in shown] == ["alarm set", "play music", "IoT"]
    assert [lb.description for lb in shown] == ["set an alarm", "", ""]


@pytest.mark.parametrize(
    "names", [("alarm_set", "alarm set"), ("play-music", "play_music"), ("aBc", "a_bc", "c_d")]
)
def test_names_stay_as_sent_when_wording_would_make_two_alike(names: tuple[str, ...]) -> None:
    labels = [LabelSpec(n) for n in names]
    assert [lb.name for lb in shown_labels(PLAIN_TEMPLATE, labels)] == list(names)


def test_an_as_is_template_shows_the_names_as_sent() -> None:
    labels = [LabelSpec("alarm_set"), LabelSpec("playMusic")]
    assert [lb.name for lb in shown_labels(MINIMAL_TEMPLATE, labels)] == ["alarm_set", "playMusic"]


def test_the_prompt_shows_and_reads_the_words_and_the_result_keeps_the_names() -> None:
    table = {"": {" alarm": log(0.6), " play": log(0.2)}, " play": {" music": log(0.5)}}
    engine = FakeEngine(answer_table(table))
    the_task = Task(
        (LabelSpec("alarm"), LabelSpec("play_music")),
        examples=(ExampleSpec("sing a song", "play_music"),),
        template="plain",
    )
    full = Options(mode=Mode.FULL, calibration=Calibration.NONE, method=Method.DIRECT)
    result = classify_one(engine, the_task, "put on a song", options=full)
    prompt = engine.calls[0].prompt
    assert "Labels:\n- alarm\n- play music\n" in prompt
    assert "Text: sing a song\nLabel: play music\n" in prompt
    assert [lb.name for lb in result.labels] == ["alarm", "play_music"]
    assert [t.token for t in result.labels[1].tokens] == [" play", " music"]
    p_alarm, p_play = 0.6, 0.2 * 0.5
    assert probabilities(result) == pytest.approx(
        {"alarm": p_alarm / (p_alarm + p_play), "play_music": p_play / (p_alarm + p_play)}
    )


def test_labels_that_would_read_alike_are_shown_as_sent() -> None:
    table = {"": {" alarm": log(0.5)}, " alarm": {"_": log(0.3), " set": log(0.1)}}
    engine = FakeEngine(answer_table(table))
    full = Options(mode=Mode.FULL, calibration=Calibration.NONE, method=Method.DIRECT)
    result = classify_one(engine, task("alarm_set", "alarm set"), "x", options=full)
    assert "- alarm_set\n- alarm set\n" in engine.calls[0].prompt
    assert [[t.token for t in lb.tokens] for lb in result.labels] == [
        [" alarm", "_", "set"],
        [" alarm", " set"],
    ]


# -- the minimal template: the plain prompt a vLLM user writes ---------------------------

MINIMAL_USER = (
    "Classify the text into one of these labels: a, b, c.\nAnswer with the label only.\n\n"
    "Text: {text}"
)


def fake_chat(messages: list[dict[str, str]]) -> str:
    return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages) + "<|assistant|>"


def test_minimal_renders_one_user_message_and_reads_at_the_turn_start() -> None:
    labels = [LabelSpec("a"), LabelSpec("b"), LabelSpec("c")]
    parts = render_prompt_parts(MINIMAL_TEMPLATE, "", labels, [], fake_chat)
    assert parts.prefix + "hello" + parts.suffix == (
        "<|user|>" + MINIMAL_USER.format(text="hello") + "<|end|><|assistant|>"
    )
    assert parts.label_lead == ""


def test_minimal_through_the_classify_path() -> None:
    p = {"a": 0.5, "b": 0.2, "c": 0.1}
    engine = FakeEngine(answer_table({"": p_logs(p)}, cue="<|assistant|>"), chat=True)
    result = classify_one(engine, task("a", "b", "c", template="minimal"), "hello", options=DIRECT)
    (call,) = engine.calls
    assert call.prompt == "<|user|>" + MINIMAL_USER.format(text="hello") + "<|end|><|assistant|>"
    # No lead: the labels are the first tokens of the assistant turn.
    assert sorted(call.candidates) == ["a", "b", "c"]
    total = sum(p.values())
    assert probabilities(result) == pytest.approx({k: v / total for k, v in p.items()})


def p_logs(p: dict[str, float]) -> dict[str, float]:
    return {k: log(v) for k, v in p.items()}


# -- labels that begin another label ------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "closed"),
    [
        (((1,), (1, 2), (3,)), ((1, 9), (1, 2), (3,))),
        (((1,), (1, 2), (1, 2, 3)), ((1, 9), (1, 2, 9), (1, 2, 3))),
        (((1, 2), (1, 3), (4,)), ((1, 2), (1, 3), (4,))),
        (((5, 6, 7), (5,)), ((5, 6, 7), (5, 9))),
    ],
)
def test_a_label_that_begins_another_is_closed(labels, closed) -> None:
    assert close_prefix_labels(labels, 9) == closed


PREFIX_TABLE = {
    "": {" alarm": log(0.6), " play": log(0.3)},
    " alarm": {" set": log(0.7)},
    " play": {" music": log(0.4)},
}


@pytest.mark.parametrize(
    ("chat", "template", "end", "cue"),
    [(False, "plain", "\n", "Label:"), (True, "chat", "<|end|>", "<|assistant|>Label:")],
)
def test_a_prefix_label_is_scored_as_the_complete_answer(
    chat: bool, template: str, end: str, cue: str
) -> None:
    """P(alarm) = P(" alarm") * P(end | " alarm"); the end token is read with " set"."""
    table = {**PREFIX_TABLE, " alarm": {**PREFIX_TABLE[" alarm"], end: log(0.2)}}
    engine = FakeEngine(answer_table(table, cue=cue), chat=chat)
    the_task = task("alarm", "alarm_set", "play_music", template=template)
    options = Options(mode=Mode.FULL, calibration=Calibration.NONE, method=Method.DIRECT)
    result = classify_one(engine, the_task, "wake me", options=options)
    expected = {"alarm": 0.6 * 0.2, "alarm_set": 0.6 * 0.7, "play_music": 0.3 * 0.4}
    assert [lb.logprob for lb in result.labels] == pytest.approx(
        [log(v) for v in expected.values()]
    )
    total = sum(expected.values())
    assert probabilities(result) == pytest.approx({k: v / total for k, v in expected.items()})
    assert [t.token for t in result.labels[0].tokens] == [" alarm", end]
    # The root, " alarm" (its end token and " set" in one read), " play": no extra read.
    assert result.usage.reads == len(engine.calls) == 3
    deeper = {c.prompt.rpartition(cue)[2]: sorted(c.candidates) for c in engine.calls}
    assert deeper[" alarm"] == sorted([end, " set"])
