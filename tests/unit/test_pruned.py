"""PRUNED's branch and bound over a fake engine: the top label is FULL's, read exactly;
branches that cannot hold it stay unread, their labels estimated from the first token."""

from __future__ import annotations

import math

import pytest

from labelprob.server.classify import Options
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, LengthNorm
from tests.unit.fake_engine import FakeEngine, answer_table
from tests.unit.paths import classify_one, task

log = math.log
LABELS = task("alarm_set", "alarm_query", "play_music", "play_radio", "weather_query")
# The labels are read as words (" alarm" " set"). " alarm" dominates: once its branch is
# read, no other branch can beat alarm_set.
CLEAR = {
    "": {" alarm": log(0.7), " play": log(0.05), " weather": log(0.1)},
    " alarm": {" set": log(0.9), " query": log(0.05)},
    " play": {" music": log(0.5), " radio": log(0.4)},
    " weather": {" query": log(0.9)},
}


def exact(table: dict, label: str) -> float:
    """A label's log-probability by the chain rule over the table."""
    word, _, rest = label.partition("_")
    return table[""][" " + word] + table[" " + word][" " + rest]


def run(table: dict, mode: Mode, **options: object):
    engine = FakeEngine(answer_table(table))
    opts = Options(mode=mode, calibration=Calibration.NONE)
    opts = Options(**{**opts.__dict__, **options})
    return classify_one(engine, LABELS, "wake me at six", options=opts), engine


def test_pruned_reads_only_the_branch_that_holds_the_top_label() -> None:
    pruned, engine = run(CLEAR, Mode.PRUNED)
    full, _ = run(CLEAR, Mode.FULL)
    assert pruned.mode is Mode.PRUNED
    assert pruned.top_label == full.top_label == "alarm_set"
    # The root, then " alarm": the other branches' bounds (0.05, 0.1) are below
    # alarm_set's 0.7 * 0.9.
    assert pruned.usage.reads == 2 < full.usage.reads == 4
    assert {c.prompt.rpartition("Label:")[2] for c in engine.calls} == {"", " alarm"}
    estimated = {lb.name for lb in pruned.labels if lb.estimated}
    assert estimated == {"play_music", "play_radio", "weather_query"}


def test_unread_labels_share_their_first_token_evenly() -> None:
    pruned, _ = run(CLEAR, Mode.PRUNED)
    by_name = {lb.name: lb for lb in pruned.labels}
    # Two labels start with " play": each gets half of its probability.
    assert by_name["play_music"].logprob == pytest.approx(log(0.05 / 2))
    assert by_name["play_radio"].logprob == pytest.approx(log(0.05 / 2))
    assert by_name["weather_query"].logprob == pytest.approx(log(0.1))
    assert [t.token for t in by_name["play_music"].tokens] == [" play"]
    # Read labels are exact.
    assert by_name["alarm_set"].logprob == pytest.approx(exact(CLEAR, "alarm_set"))
    assert by_name["alarm_query"].logprob == pytest.approx(exact(CLEAR, "alarm_query"))
    assert sum(lb.probability for lb in pruned.labels) == pytest.approx(1.0)


def test_a_close_runner_up_branch_is_read_too() -> None:
    close = {**CLEAR, "": {" alarm": log(0.5), " play": log(0.47), " weather": log(0.01)}}
    pruned, _ = run(close, Mode.PRUNED)
    by_name = {lb.name: lb for lb in pruned.labels}
    # alarm_set is 0.5*0.9 = 0.45 < 0.47, the " play" bound: that branch is read.
    assert not by_name["play_music"].estimated
    assert by_name["play_music"].logprob == pytest.approx(exact(close, "play_music"))
    assert by_name["weather_query"].estimated
    assert pruned.top_label == "alarm_set"


def test_the_second_branch_can_hold_the_top_label() -> None:
    # " alarm" has the best bound, but its labels spread out; play_music wins.
    table = {
        **CLEAR,
        "": {" alarm": log(0.5), " play": log(0.4), " weather": log(0.05)},
        " alarm": {" set": log(0.3), " query": log(0.3)},
        " play": {" music": log(0.95), " radio": log(0.01)},
    }
    pruned, _ = run(table, Mode.PRUNED)
    full, _ = run(table, Mode.FULL)
    assert pruned.top_label == full.top_label == "play_music"
    top = next(lb for lb in pruned.labels if lb.name == "play_music")
    assert top.logprob == pytest.approx(exact(table, "play_music"))


def test_a_single_token_label_known_from_the_root_can_settle_it() -> None:
    labels = task("yes", "alarm_set", "alarm_query")
    table = {"": {" yes": log(0.8), " alarm": log(0.1)}}
    engine = FakeEngine(answer_table(table))
    result = classify_one(
        engine, labels, "t", options=Options(mode=Mode.PRUNED, calibration=Calibration.NONE)
    )
    assert result.top_label == "yes"
    assert result.usage.reads == 1
    assert [lb.estimated for lb in result.labels] == [False, True, True]


def test_the_bound_ranks_by_mean_log_probability_under_mean_normalization() -> None:
    # Summed, "yes" (0.3) beats every alarm label; per token, alarm_set's mean beats it.
    labels = task("yes", "alarm_set", "alarm_query")
    table = {
        "": {" yes": log(0.3), " alarm": log(0.45)},
        " alarm": {" set": log(0.5), " query": log(0.01)},
    }
    engine = FakeEngine(answer_table(table))
    opts = Options(mode=Mode.PRUNED, length_norm=LengthNorm.MEAN, calibration=Calibration.NONE)
    result = classify_one(engine, labels, "t", options=opts)
    mean_alarm_set = (log(0.45) + log(0.5)) / 2
    assert mean_alarm_set > log(0.3) > log(0.45 * 0.5)
    assert result.top_label == "alarm_set"
    summed = classify_one(
        FakeEngine(answer_table(table)), labels, "t",
        options=Options(mode=Mode.PRUNED, calibration=Calibration.NONE),
    )  # fmt: skip
    assert summed.top_label == "yes"


TEXT_TRIE = {
    "": {" alarm": log(0.5), " play": log(0.2)},
    " alarm": {" set": log(0.6), " query": log(0.2)},
    " play": {" music": log(0.7)},
}
# Content-free label distribution: alarm_set 0.45, alarm_query 0.45, play_music 0.1.
CF_TRIE = {
    "": {" alarm": log(0.9), " play": log(0.1)},
    " alarm": {" set": log(0.5), " query": log(0.5)},
    " play": {" music": 0.0},
}


def calibrated_engine() -> FakeEngine:
    text, cf = answer_table(TEXT_TRIE), answer_table(CF_TRIE)
    return FakeEngine(
        lambda context, token: (cf if "Text: N/A\n" in context else text)(context, token)
    )


@pytest.mark.parametrize(
    ("calibration", "top"),
    [(Calibration.NONE, "alarm_set"), (Calibration.CONTEXTUAL, "play_music")],
)
def test_the_bound_allows_for_calibration_offsets(calibration: Calibration, top: str) -> None:
    """Uncalibrated, " play" (0.2) cannot beat alarm_set (0.3). Contextual calibration divides
    by the prior (0.45, 0.45, 0.1): play_music's 0.14 / 0.1 beats alarm_set's 0.3 / 0.45, so
    the bound must let the " play" branch be read."""
    labels = task("alarm_set", "alarm_query", "play_music")
    opts = Options(mode=Mode.PRUNED, calibration=calibration, content_free_inputs=("N/A",))
    result = classify_one(calibrated_engine(), labels, "t", options=opts)
    full = classify_one(
        calibrated_engine(), labels, "t", options=Options(**{**opts.__dict__, "mode": Mode.FULL})
    )
    assert result.top_label == full.top_label == top
    assert result.calibration is full.calibration is calibration
    by_name = {lb.name: lb for lb in result.labels}
    assert by_name["play_music"].estimated is (calibration is Calibration.NONE)
    assert not by_name[top].estimated


DEEP_LABELS = task("set_alarm_now", "set_alarm_later", "set_timer_now", "play_music")
DEEP = {
    "": {" set": log(0.8), " play": log(0.1)},
    " set": {" alarm": log(0.9), " timer": log(0.05)},
    " set alarm": {" now": log(0.7), " later": log(0.2)},
    " set timer": {" now": log(0.9)},
    " play": {" music": log(0.9)},
}


def test_pruned_leaves_unread_the_nodes_of_a_branch_that_cannot_win() -> None:
    """After " set" is read, " set timer" is bounded by 0.8 * 0.05: below set_alarm_now's
    0.8 * 0.9 * 0.7, so that node of the best branch stays unread (a branch is not read
    whole), as does the " play" branch (0.1)."""
    engine = FakeEngine(answer_table(DEEP))
    opts = Options(mode=Mode.PRUNED, calibration=Calibration.NONE)
    pruned = classify_one(engine, DEEP_LABELS, "wake me at six", options=opts)
    full = classify_one(
        FakeEngine(answer_table(DEEP)), DEEP_LABELS, "wake me at six",
        options=Options(mode=Mode.FULL, calibration=Calibration.NONE),
    )  # fmt: skip
    assert pruned.top_label == full.top_label == "set_alarm_now"
    assert {c.prompt.rpartition("Label:")[2] for c in engine.calls} == {"", " set", " set alarm"}
    assert pruned.usage.reads == 3 < full.usage.reads == 5
    by_name = {lb.name: lb for lb in pruned.labels}
    assert by_name["set_alarm_now"].logprob == pytest.approx(log(0.8 * 0.9 * 0.7))
    assert by_name["set_alarm_later"].logprob == pytest.approx(log(0.8 * 0.9 * 0.2))
    # Estimated from the tokens read: " set" " timer" (alone under its node), " play".
    assert by_name["set_timer_now"].estimated
    assert by_name["set_timer_now"].logprob == pytest.approx(log(0.8 * 0.05))
    assert [t.token for t in by_name["set_timer_now"].tokens] == [" set", " timer"]
    assert by_name["play_music"].logprob == pytest.approx(log(0.1))
    assert sum(lb.probability for lb in pruned.labels) == pytest.approx(1.0)


def test_a_tie_between_a_bound_and_the_best_exact_label_is_read_out() -> None:
    """ " account" and " text" have the same log-probability (bf16's coarse values make such
    ties common). Unread, account_blocked would be estimated at the tie and, listed first,
    come out on top; FULL's top label is text (0.3 against 0.3 * 0.6)."""
    labels = task("account_blocked", "text")
    table = {"": {" account": log(0.3), " text": log(0.3)}, " account": {" blocked": log(0.6)}}
    opts = Options(mode=Mode.PRUNED, calibration=Calibration.NONE)
    pruned = classify_one(FakeEngine(answer_table(table)), labels, "t", options=opts)
    full = classify_one(
        FakeEngine(answer_table(table)), labels, "t",
        options=Options(mode=Mode.FULL, calibration=Calibration.NONE),
    )  # fmt: skip
    assert pruned.top_label == full.top_label == "text"
    assert not any(lb.estimated for lb in pruned.labels)
