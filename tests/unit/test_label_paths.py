"""FULL by label paths (--full-reads paths): one request per label over prompt + label,
its prompt log-probs giving every token after the first. The same numbers as the trie's
reads, in fewer requests when labels are long and share little."""

from __future__ import annotations

import dataclasses
import math

import pytest

from labelprob.server.classify import Classifier, Options
from labelprob.server.labels import Mode, label_paths, path_logprobs
from labelprob.server.scoring import Calibration
from tests.unit.fake_engine import FakeEngine, answer_table
from tests.unit.harness import TEST_SETTINGS, classifier_for
from tests.unit.paths import classify_one, task

log = math.log
FULL = Options(mode=Mode.FULL, calibration=Calibration.NONE)
# Long labels that share little: the trie needs a read per word, paths one per label.
LONG = task("set an alarm now", "play some music now", "check the weather now")
TABLE = {
    "": {" set": log(0.5), " play": log(0.3), " check": log(0.2)},
    " set": {" an": log(0.9)},
    " set an": {" alarm": log(0.8)},
    " set an alarm": {" now": log(0.7)},
    " play": {" some": log(0.6)},
    " play some": {" music": log(0.9)},
    " play some music": {" now": log(0.5)},
    " check": {" the": log(0.95)},
    " check the": {" weather": log(0.9)},
    " check the weather": {" now": log(0.4)},
}


def classifier(engine: FakeEngine, full_reads: str) -> Classifier:
    settings = dataclasses.replace(
        TEST_SETTINGS, classify=dataclasses.replace(TEST_SETTINGS.classify, full_reads=full_reads)
    )
    return classifier_for(engine, settings)


def test_paths_are_the_labels_no_longer_label_extends() -> None:
    a, b, c, d = (1, 2), (1, 2, 3), (4,), (5, 6)
    assert label_paths([a, b, c, d]) == (b, d)
    assert label_paths([c]) == ()


def test_path_rows_key_each_token_by_the_tokens_before_it() -> None:
    rows = [{2: -0.1, 9: -3.0}, {3: -0.2}]
    assert path_logprobs((1, 2, 3), rows) == {(1,): {2: -0.1}, (1, 2): {3: -0.2}}


def test_paths_give_the_trie_numbers_in_fewer_requests() -> None:
    by_trie = FakeEngine(answer_table(TABLE))
    by_paths = FakeEngine(answer_table(TABLE))
    trie = classify_one(
        by_trie, LONG, "wake me", options=FULL, classifier=classifier(by_trie, "trie")
    )
    paths = classify_one(
        by_paths, LONG, "wake me", options=FULL, classifier=classifier(by_paths, "paths")
    )
    # The chain rule over the table, written out.
    want = {
        "set an alarm now": 0.5 * 0.9 * 0.8 * 0.7,
        "play some music now": 0.3 * 0.6 * 0.9 * 0.5,
        "check the weather now": 0.2 * 0.95 * 0.9 * 0.4,
    }
    for result in (trie, paths):
        got = {lb.name: lb.logprob for lb in result.labels}
        assert got == pytest.approx({k: log(v) for k, v in want.items()})
    # The root and three paths, against the root and nine trie nodes.
    assert (paths.usage.reads, trie.usage.reads) == (4, 10)
    path_calls = [c for c in by_paths.calls if not c.candidates]
    assert {c.prompt.rpartition("Label:")[2] for c in path_calls} == set(
        " " + name for name in want
    )


def test_the_default_reads_full_by_trie_nodes() -> None:
    engine = FakeEngine(answer_table(TABLE))
    result = classify_one(engine, LONG, "wake me", options=FULL)
    assert result.usage.reads == 10
    assert all(c.candidates for c in engine.calls)


def test_paths_leave_first_token_reads_alone() -> None:
    engine = FakeEngine(answer_table(TABLE))
    first = Options(mode=Mode.FIRST_TOKEN, calibration=Calibration.NONE)
    result = classify_one(engine, LONG, "x", options=first, classifier=classifier(engine, "paths"))
    assert result.usage.reads == 1
