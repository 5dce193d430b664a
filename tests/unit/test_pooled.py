"""Pooling eval reports: texts matched to their rows' truths, one ECE over all of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelprob.tools.evaluation import pooled
from labelprob.tools.evaluation.datasets import load_dataset


def truth(row: int) -> str:
    return "a" if row % 2 == 0 else "b"


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"t{i}", "label": truth(i)}) + "\n" for i in range(10))
    )
    return path


def report(path: Path, skip: int, limit: int, right: list[bool], confidence: float) -> dict:
    """A report of one config over rows skip..skip+limit of the seeded order: the i-th text
    answered right or not as ``right[i]`` says, all at one confidence."""
    rows = load_dataset(path, limit=limit, skip=skip).indices
    other = {"a": "b", "b": "a"}
    predicted = [truth(r) if ok else other[truth(r)] for r, ok in zip(rows, right, strict=True)]
    sample = {"limit": limit, "seed": 0, "max_chars": None, "skip": skip}
    return {
        "server": {"model": "m"},
        "datasets": [{"name": "set", "source": str(path), "sample": sample, "row_indices": rows}],
        "results": [
            {
                "dataset": "set",
                "config": "auto:default",
                "per_text": {"predicted": predicted, "confidence": [confidence] * limit},
            }
        ],
    }


def test_two_reports_pool_into_one_ece(data_file: Path) -> None:
    """Two texts at 0.95, both right, and two at 0.55, one right: each bin is 0.05 off, so
    the pooled ECE is 0.05 and the accuracy 75 %; each report alone is 0.05 off too, but a
    pool that took either report's texts twice, or dropped one, would not be 4 texts."""
    first = report(data_file, 0, 2, [True, True], 0.95)
    second = report(data_file, 2, 2, [True, False], 0.55)
    pools = pooled.pool_reports([first, second])
    pool = pools[("m", "set", "auto:default")]
    assert len(pool.correct) == 4 and sum(pool.correct) == 3
    [row] = pooled.pooled_table(pools)
    assert row[3:] == ["4", "75.0", "0.750", "0.050", row[7]]
    assert float(row[7]) > 0  # the floor of four texts


def test_pooled_ece_is_not_the_mean_of_the_reports(data_file: Path) -> None:
    """0.55 confidence: all right in one report (gap 0.45), all wrong in the other (0.55);
    pooled, one bin of 50 % accuracy at 0.55: 0.05."""
    pools = pooled.pool_reports(
        [report(data_file, 0, 2, [True, True], 0.55), report(data_file, 2, 2, [False, False], 0.55)]
    )
    [row] = pooled.pooled_table(pools)
    assert row[6] == "0.050"


def test_a_row_in_two_reports_is_an_error(data_file: Path) -> None:
    with pytest.raises(ValueError, match="more than one report"):
        pooled.pool_reports(
            [report(data_file, 0, 3, [True] * 3, 0.9), report(data_file, 2, 2, [True] * 2, 0.9)]
        )


def test_a_changed_data_file_is_an_error(data_file: Path) -> None:
    stale = report(data_file, 0, 2, [True, True], 0.9)
    stale["datasets"][0]["row_indices"] = [100, 101]  # not rows of a 10-row file
    with pytest.raises(ValueError, match="no longer holds"):
        pooled.pool_reports([stale])


def test_the_command_prints_the_pooled_table(data_file: Path, tmp_path: Path, capsys) -> None:
    paths = []
    for i, (skip, right, conf) in enumerate([(0, [True, True], 0.95), (2, [True, False], 0.55)]):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps({"runs": [report(data_file, skip, 2, right, conf)]}))
    assert pooled.main([str(p) for p in paths]) == 0
    line = capsys.readouterr().out.splitlines()[-1].split()
    assert line[:4] == ["m", "set", "auto:default", "4"] and line[6] == "0.050"
