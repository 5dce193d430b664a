"""`labelprob eval`: metrics and config parsing without a server, then short real runs."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
from pathlib import Path

import pytest

from labelprob.client import ClassifyParams, Client
from labelprob.server import cli
from labelprob.tools.evaluation import command as cmd
from labelprob.tools.evaluation import configs as cf
from labelprob.tools.evaluation import datasets as ds
from labelprob.tools.evaluation import metrics as mt
from labelprob.tools.evaluation import plots as pl
from labelprob.tools.evaluation import report as rp
from labelprob.tools.evaluation import results as rs
from labelprob.tools.evaluation import runner as rn
from labelprob.v1 import classifier_pb2 as pb
from tests.conftest import SHARED_DATA, ServerProcess, free_port


def prediction(label: str, confidence: float = 0.9) -> rs.Prediction:
    return rs.Prediction(label=label, confidence=confidence, label_mass=0.5, entropy=0.3)


# --- metrics -----------------------------------------------------------------------------------

LABELS = ["a", "b", "c"]
TRUTHS = ["a", "a", "b", "b", "c", "c"]
PREDICTED = ["a", "b", "b", "b", "a", "a"]  # "c" is never predicted


def test_confusion_matrix_rows_are_truths_columns_predictions() -> None:
    assert mt.confusion_matrix(TRUTHS, PREDICTED, LABELS) == [
        [1, 1, 0],
        [0, 2, 0],
        [2, 0, 0],
    ]
    with pytest.raises(KeyError):
        mt.confusion_matrix(["a"], ["z"], LABELS)


def test_accuracy_and_macro_f1_by_hand() -> None:
    matrix = mt.confusion_matrix(TRUTHS, PREDICTED, LABELS)
    assert mt.accuracy(matrix) == pytest.approx(3 / 6)
    # a: tp 1, fp 2, fn 1 -> 2/5; b: tp 2, fp 1, fn 0 -> 4/5; c: never predicted -> 0.
    assert mt.macro_f1(matrix) == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    scores = mt.per_label_scores(matrix, LABELS)
    assert scores["a"] == {"precision": 1 / 3, "recall": 0.5, "f1": 0.4, "support": 2}
    assert scores["c"] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 2}


def test_macro_f1_leaves_out_labels_absent_from_truths_and_predictions() -> None:
    matrix = mt.confusion_matrix(["a", "b"], ["a", "b"], ["a", "b", "z"])
    assert mt.macro_f1(matrix) == 1.0
    # A label predicted but never true counts, as 0.
    matrix = mt.confusion_matrix(["a", "a", "b"], ["a", "z", "b"], ["a", "b", "z"])
    assert mt.macro_f1(matrix) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_metrics_of_nothing_are_none() -> None:
    matrix = mt.confusion_matrix([], [], LABELS)
    assert mt.accuracy(matrix) is None
    assert mt.macro_f1(matrix) is None
    assert mt.expected_calibration_error([], []) is None


def test_ece_is_zero_when_confidence_matches_accuracy() -> None:
    confidences = [0.75] * 4 + [0.95] * 20 + [1.0] * 3
    correct = [True, True, True, False] + [True] * 19 + [False] + [True] * 3
    assert mt.expected_calibration_error(confidences, correct) == pytest.approx(0.0)


def test_ece_of_overconfident_predictions() -> None:
    # 90% sure, 60% right: off by 0.3 everywhere.
    assert mt.expected_calibration_error([0.9] * 10, [True] * 6 + [False] * 4) == pytest.approx(0.3)
    # Half the texts in bin [0.9, 1): gap 0.3; half in [0.5, 0.6): 55% sure, 50% right.
    confidences = [0.9] * 10 + [0.55] * 10
    correct = [True] * 6 + [False] * 4 + [True] * 5 + [False] * 5
    assert mt.expected_calibration_error(confidences, correct) == pytest.approx(
        0.5 * 0.3 + 0.5 * 0.05
    )


def test_calibrated_ece_of_one_text_is_its_expected_gap() -> None:
    # Right with probability c: the gap is 1 - c then, c otherwise.
    for c in (0.5, 0.7, 0.95):
        assert mt.calibrated_ece([c]) == pytest.approx(2 * c * (1 - c))
    assert mt.calibrated_ece([]) is None
    assert mt.calibrated_ece([1.0, 1.0]) == pytest.approx(0.0)


def test_calibrated_ece_by_enumerating_every_outcome() -> None:
    # Mixed confidences within a bin and across bins: the mean of the ECE over all 2^n
    # outcomes, each weighted by its probability.
    confidences = [0.52, 0.58, 0.55, 0.81, 0.86, 0.93, 0.97]
    want = 0.0
    for outcome in itertools.product([True, False], repeat=len(confidences)):
        weight = math.prod(c if ok else 1 - c for c, ok in zip(confidences, outcome, strict=True))
        want += weight * mt.expected_calibration_error(confidences, list(outcome))
    assert mt.calibrated_ece(confidences) == pytest.approx(want)


def test_calibrated_ece_falls_with_the_square_root_of_the_count() -> None:
    rng = random.Random(7)
    confidences = [0.4 + 0.6 * rng.random() for _ in range(60)]
    draws = [
        mt.expected_calibration_error(confidences, [rng.random() < c for c in confidences])
        for _ in range(3000)
    ]
    assert mt.calibrated_ece(confidences) == pytest.approx(sum(draws) / len(draws), rel=0.05)
    assert 0.06 < mt.calibrated_ece(confidences) < 0.13  # the README's "about 0.1"
    quadrupled = mt.calibrated_ece(confidences * 4)
    assert quadrupled == pytest.approx(mt.calibrated_ece(confidences) / 2, rel=0.15)


def test_reliability_bins_are_equal_width_and_count_every_text() -> None:
    confidences = [0.0, 0.05, 0.1, 0.55, 0.7, 0.999, 1.0]
    bins = mt.reliability_bins(confidences, [True] * len(confidences))
    assert len(bins) == 10
    assert [b["lo"] for b in bins] == pytest.approx([i / 10 for i in range(10)])
    assert sum(b["count"] for b in bins) == len(confidences)
    assert [b["count"] for b in bins] == [2, 1, 0, 0, 0, 1, 0, 1, 0, 2]
    assert bins[2]["accuracy"] is None and bins[2]["confidence"] is None


def test_summarize_counts_errors_and_keeps_them_out_of_accuracy() -> None:
    truths = ["a", "b", "a", "b"]
    predictions = [prediction("a", 0.8), prediction("a", 0.6), None, prediction("b", 0.9)]
    r = rs.summarize("d", "auto:none", ["a", "b"], truths, predictions, {"UNAVAILABLE": 1})
    assert (r.rows, r.answered, r.errors) == (4, 3, 1)
    assert r.accuracy == pytest.approx(2 / 3)
    assert r.confusion == [[1, 0], [1, 1]]
    assert r.mean_confidence == pytest.approx((0.8 + 0.6 + 0.9) / 3)
    out = r.to_dict()
    assert out["accuracy_counting_errors_as_wrong"] == pytest.approx(2 / 4)
    assert out["error_codes"] == {"UNAVAILABLE": 1}
    assert out["per_text"]["predicted"] == ["a", "a", None, "b"]
    assert out["per_text"]["confidence"] == [0.8, 0.6, None, 0.9]


# --- configs -----------------------------------------------------------------------------------


def test_peer_config_is_prepended_or_moved_first() -> None:
    names = [c.name for c in cf.parse_configs("auto:contextual,full:contextual:mean")]
    assert names == ["peer", "auto:contextual", "full:contextual:mean"]
    names = [c.name for c in cf.parse_configs("auto:default, peer ,auto:default")]
    assert names == ["peer", "auto:default"]
    # labelprob's own first-token read is a config of its own, not the peer.
    names = [c.name for c in cf.parse_configs("direct/first_token:none,combined/auto:none@plain")]
    assert names == ["peer", "direct/first_token:none", "combined/auto:none@plain"]
    peer = cf.parse_config("peer")
    assert (peer.mode, peer.calibration, peer.method, peer.template) == (
        "first_token", "none", "direct", "minimal",
    )  # fmt: skip
    config = cf.parse_config("FULL:Contextual:mean")
    assert (config.mode, config.calibration, config.normalization) == ("full", "contextual", "mean")
    options = cf.parse_config("auto:default").options("plain")
    assert options.calibration == 0 and options.length_normalization == 0
    assert options.template == "plain"
    shortlisted = cf.parse_config("auto:default~8^1*4")
    assert (shortlisted.channel_shortlist, shortlisted.label_orders, shortlisted.batch_size) == (
        8, 1, 4,
    )  # fmt: skip
    assert shortlisted.name == "auto:default~8^1*4"
    options = shortlisted.options()
    assert (options.channel_shortlist, options.label_orders) == (8, 1)
    with_prior = cf.parse_config("auto:default^2+prior*8")
    assert (with_prior.label_prior, with_prior.label_orders, with_prior.batch_size) == (True, 2, 8)
    assert with_prior.name == "auto:default^2+prior*8"
    assert cf.parse_config(with_prior.name) == with_prior
    assert not cf.parse_config("auto:default").label_prior


def test_a_prior_config_sends_the_files_label_shares(tmp_path: Path) -> None:
    """+prior sends each label's share of the whole file (add-one smoothed) as the label
    prior, whatever rows the sample took; other configs send none."""
    rows = [{"text": f"t{i}", "label": "ham" if i % 4 else "spam"} for i in range(8)]
    data = ds.load_dataset(write_jsonl(tmp_path / "sms.jsonl", rows), limit=3)
    assert data.labels == ["ham", "spam"]
    assert data.file_shares == pytest.approx([(6 + 1) / 10, (2 + 1) / 10])
    assert data.describe()["file_shares"] == pytest.approx({"ham": 0.7, "spam": 0.3})

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[list[float]] = []

        async def classify(self, text: str, params: ClassifyParams) -> pb.Classification:
            self.sent.append(list(params.options.label_prior))
            return pb.Classification(top_label="ham")

    for spec, want in (("auto:default+prior", [0.7, 0.3]), ("auto:default", [])):
        recorder = Recorder()
        settings = rn.EvalSettings(configs=cf.parse_configs(spec))
        result = asyncio.run(rn.run_config(recorder, data, cf.parse_config(spec), settings))
        assert result.answered == 3
        assert [sent == pytest.approx(want) for sent in recorder.sent] == [True] * 3


def test_a_dataset_built_by_hand_has_its_rows_label_shares() -> None:
    """Without a file behind it, +prior's base rates are the rows' own (add-one smoothed),
    not nothing: 3 ham and 1 spam of 4 rows over 2 labels give 4/6 and 2/6."""
    data = ds.Dataset(
        name="by-hand", source="memory", texts=["a", "b", "c", "d"],
        truths=["ham", "ham", "spam", "ham"], labels=["ham", "spam"], total_rows=4,
    )  # fmt: skip
    assert data.file_shares == pytest.approx([4 / 6, 2 / 6])
    given = ds.Dataset("f", "f", ["a"], ["ham"], ["ham", "spam"], 1, file_shares=[0.9, 0.1])
    assert given.file_shares == [0.9, 0.1]


@pytest.mark.parametrize(
    "spec",
    [
        "auto",
        "auto:contextual:sum:x",
        "fast:none",
        "auto:magic",
        "full:none:median",
        ":",
        "auto:none*",
        "auto:none*0",
        "auto:none*x",
        "auto:none~0",
        "auto:none^3",
        "auto:none+posterior",
    ],
)
def test_bad_configs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError):
        cf.parse_configs(spec)


def test_batch_calibration_needs_a_batch_size() -> None:
    with pytest.raises(ValueError, match="batch-size"):
        cf.parse_configs("auto:batch", batch_size=1)
    assert [c.name for c in cf.parse_configs("auto:batch", batch_size=4)][-1] == "auto:batch"
    # A config's own *K is its batch size, whatever --batch-size says.
    assert [c.name for c in cf.parse_configs("auto:batch*8", batch_size=1)][-1] == "auto:batch*8"


def test_a_config_can_carry_its_own_batch_size() -> None:
    configs = cf.parse_configs("auto:default,auto:default*8,combined/auto:none@plain*4")
    assert [c.name for c in configs] == [
        "peer", "auto:default", "auto:default*8", "combined/auto:none@plain*4",
    ]  # fmt: skip
    assert [c.texts_per_request(1) for c in configs] == [1, 1, 8, 4]
    assert configs[3].template == "plain" and configs[3].method == "combined"


def test_chunks_are_near_equal_and_cover_every_row() -> None:
    parts = rn.chunks(21, 8)
    assert [len(p) for p in parts] == [7, 7, 7]
    assert [i for p in parts for i in p] == list(range(21))
    assert [len(p) for p in rn.chunks(5, 1)] == [1] * 5
    assert rn.chunks(0, 4) == []


# --- datasets ----------------------------------------------------------------------------------


def test_seeded_sample_is_deterministic_and_nested() -> None:
    a = ds.sample_indices(100, 10, seed=0)
    assert a == ds.sample_indices(100, 10, seed=0)
    assert a != ds.sample_indices(100, 10, seed=1)
    assert len(set(a)) == 10
    assert ds.sample_indices(100, 20, seed=0)[:10] == a
    assert sorted(ds.sample_indices(5, 50, seed=3)) == list(range(5))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_dataset_label_set_sampling_and_cut(tmp_path: Path) -> None:
    rows = [{"text": f"text number {i}", "label": ["yes", "no", "maybe"][i % 3]} for i in range(9)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    data = ds.load_dataset(path, limit=4, seed=5, max_chars=6)
    assert data.name == "d" and data.labels == ["maybe", "no", "yes"]
    assert len(data.texts) == 4 and all(len(t) <= 6 for t in data.texts)
    assert data.indices == ds.sample_indices(9, 4, seed=5)
    assert data.truths == [rows[i]["label"] for i in data.indices]
    assert data.describe()["file_rows"] == 9
    assert ds.load_dataset(path, labels=["yes", "no", "maybe", "other"]).labels[-1] == "other"
    with pytest.raises(ValueError, match="not in --labels"):
        ds.load_dataset(path, labels=["yes", "no"])
    with pytest.raises(ValueError, match="not JSON"):
        ds.parse_dataset(["{"], name="x")
    with pytest.raises(ValueError, match="label"):
        ds.parse_dataset(['{"text": "t"}'], name="x")
    assert ds.unique_names([Path("a/x.jsonl"), Path("b/x.jsonl"), Path("y.jsonl")]) == [
        "x",
        "x-2",
        "y",
    ]


# --- report and table --------------------------------------------------------------------------


def synthetic_report() -> rp.EvalReport:
    """Two datasets x two configs, built without a server."""
    results = []
    # (dataset, config, predictions) with truths a, b, a, b.
    plan = [
        ("one", "first_token:none", ["a", "a", "a", "a"]),  # 50%
        ("one", "auto:contextual", ["a", "b", "a", "b"]),  # 100%
        ("two", "first_token:none", ["a", "b", "b", "b"]),  # 75%
        ("two", "auto:contextual", ["a", "b", "b", "a"]),  # 50%
    ]
    for dataset, config, labels in plan:
        results.append(
            rs.summarize(
                dataset,
                config,
                ["a", "b"],
                ["a", "b", "a", "b"],
                [prediction(label) for label in labels],
                elapsed_s=2.0,
            )
        )
    report = rp.EvalReport(
        configs=["first_token:none", "auto:contextual"],
        datasets=[{"name": "one"}, {"name": "two"}],
        results=results,
    )
    report.fill_deltas()
    return report


def test_markdown_table_rows_deltas_and_means() -> None:
    report = synthetic_report()
    lines = rp.format_markdown(report).splitlines()
    assert lines[0].startswith("| dataset | config | texts | accuracy %")
    assert set(lines[1].replace("|", "").split()) == {"---"}
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[:2] for row in body] == [
        ["one", "first_token:none"],
        ["one", "auto:contextual"],
        ["two", "first_token:none"],
        ["two", "auto:contextual"],
        ["**mean of 2**", "first_token:none"],
        ["**mean of 2**", "auto:contextual"],
    ]
    assert [row[3] for row in body] == ["50.0", "100.0", "75.0", "50.0", "62.5", "75.0"]
    assert [row[4] for row in body] == ["peer", "+50.0", "peer", "-25.0", "peer", "+12.5"]
    assert body[0][-1] == "2.0"  # 4 texts in 2 s
    summary = report.summary()
    assert summary[1]["delta_vs_peer_pts"] == pytest.approx(12.5)
    assert report.best_config("one").config == "auto:contextual"
    assert report.best_config("two").config == "first_token:none"
    # Equal accuracies must not read as a loss after float rounding.
    assert rp._delta(0.475 * 100 - 47.50000000001, is_peer=False) == "+0.0"
    # One dataset: no mean rows.
    report.datasets = report.datasets[:1]
    assert "mean of" not in rp.format_markdown(report)


def test_plots_from_a_synthetic_report(tmp_path: Path) -> None:
    paths = pl.write_plots(synthetic_report(), tmp_path / "plots")
    assert sorted(p.name for p in paths) == [
        "one_confusion.png",
        "one_reliability.png",
        "two_confusion.png",
        "two_reliability.png",
    ]
    assert all(p.stat().st_size > 0 for p in paths)


TWO_ROWS = [{"text": "t", "label": "x"}, {"text": "u", "label": "y"}]


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", TWO_ROWS)
    assert cmd.main([str(path), "--configs", "auto:batch", "--quiet"]) == 2
    assert "batch-size" in capsys.readouterr().err
    assert cmd.main([str(path), "--configs", "auto:nope", "--quiet"]) == 2
    assert cmd.main([str(tmp_path / "missing.jsonl"), "--quiet"]) == 2


def test_command_arguments() -> None:
    args = cmd.build_parser().parse_args(
        ["a.jsonl", "b.jsonl", "--batch-size", "4", "--limit", "9"]
    )
    assert args.inputs == [Path("a.jsonl"), Path("b.jsonl")]
    assert (args.batch_size, args.limit, args.configs) == (4, 9, cf.DEFAULT_CONFIGS)


def test_labelprob_eval_runs_the_evaluator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", TWO_ROWS)
    assert cli.main(["eval", str(path), "--configs", "auto:batch", "--quiet"]) == 2
    assert "labelprob eval: error:" in capsys.readouterr().err


def test_no_server_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", TWO_ROWS)
    code = cmd.main([str(path), "--target", f"127.0.0.1:{free_port()}", "--timeout", "3", "-q"])
    assert code == 1
    assert "GetModelInfo failed" in capsys.readouterr().err


# --- against the real servers ------------------------------------------------------------------

engine = pytest.mark.engine


def yes_no_file(tmp_path: Path, rows: int = 12) -> Path:
    data = [
        {"text": f"Statement number {i} is {'so' if i % 2 else 'not so'}.",
         "label": "yes" if i % 2 else "no"}
        for i in range(rows)
    ]  # fmt: skip
    return write_jsonl(tmp_path / "yesno.jsonl", data)


def rows_in_report_order(path: Path, report: dict) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [rows[i] for i in report["datasets"][0]["row_indices"]]


def expected_metrics(
    truths: list[str], predicted: list[str], confidences: list[float], labels: list[str]
) -> dict[str, float]:
    """Accuracy, macro-F1, 10-bin ECE, AUROC (every right/wrong pair) and accuracy on the
    more confident half (a threshold at the k-th confidence) from their definitions."""
    n = len(truths)
    right = [t == p for t, p in zip(truths, predicted, strict=True)]
    f1s = []
    for label in labels:
        tp = sum(t == p == label for t, p in zip(truths, predicted, strict=True))
        fp = sum(p == label != t for t, p in zip(truths, predicted, strict=True))
        fn = sum(t == label != p for t, p in zip(truths, predicted, strict=True))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    ece = 0.0
    for b in range(10):
        members = [i for i, c in enumerate(confidences) if min(int(c * 10), 9) == b]
        if members:
            gap = sum(right[i] for i in members) - sum(confidences[i] for i in members)
            ece += abs(gap) / n
    rights = [c for c, ok in zip(confidences, right, strict=True) if ok]
    wrongs = [c for c, ok in zip(confidences, right, strict=True) if not ok]
    pairs = [(r > w) + (r == w) / 2 for r in rights for w in wrongs]
    keep = -(-n // 2)
    threshold = sorted(confidences, reverse=True)[keep - 1]
    above = [ok for c, ok in zip(confidences, right, strict=True) if c > threshold]
    at = [ok for c, ok in zip(confidences, right, strict=True) if c == threshold]
    at_half = (sum(above) + (keep - len(above)) * sum(at) / len(at)) / keep
    return {
        "accuracy": sum(right) / n, "macro_f1": sum(f1s) / len(f1s), "ece": ece,
        "auroc": sum(pairs) / len(pairs) if pairs else None, "at_half": at_half,
    }  # fmt: skip


# The configs of the end-to-end run, as the wire options a caller would send by hand.
WIRE_OPTIONS = {
    "peer": pb.ScoringOptions(
        mode=pb.SCORING_MODE_FIRST_TOKEN,
        calibration=pb.CALIBRATION_NONE,
        method=pb.SCORING_METHOD_DIRECT,
        template="minimal",
    ),
    "auto:contextual": pb.ScoringOptions(
        mode=pb.SCORING_MODE_AUTO, calibration=pb.CALIBRATION_CONTEXTUAL
    ),
    "full:none:mean": pb.ScoringOptions(
        mode=pb.SCORING_MODE_FULL,
        calibration=pb.CALIBRATION_NONE,
        length_normalization=pb.LENGTH_NORMALIZATION_MEAN,
    ),
}


@engine
def test_end_to_end_on_the_tiny_server(
    tiny_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yes_no_file(tmp_path)
    report_path, plots = tmp_path / "out" / "report.json", tmp_path / "plots"
    code = cmd.main([
        str(data), "--target", tiny_server.target, "--configs", "auto:contextual,full:none:mean",
        "--timeout", "120", "--concurrency", "4", "--report", str(report_path),
        "--plots", str(plots), "--quiet",
    ])  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith("| yesno | peer | 12 |")
    assert len(table) == 2 + 3

    report = json.loads(report_path.read_text())
    assert set(report) >= {"server", "settings", "peer", "configs", "datasets", "results"}
    assert report["configs"] == ["peer", "auto:contextual", "full:none:mean"]
    assert report["peer"] == "peer" and report["errors"] == 0
    assert report["server"]["model"]
    assert report["datasets"][0]["label_counts"] == {"no": 6, "yes": 6}
    assert [r["config"] for r in report["results"]] == report["configs"]
    rows = rows_in_report_order(data, report)
    truths = [row["label"] for row in rows]
    with Client(tiny_server.target, timeout=120) as client:
        for r in report["results"]:
            params = ClassifyParams(["no", "yes"], options=WIRE_OPTIONS[r["config"]])
            direct = [client.classify(row["text"], params) for row in rows]
            predicted = [c.top_label for c in direct]
            confidences = [
                next(lb.probability for lb in c.labels if lb.name == c.top_label) for c in direct
            ]
            assert r["rows"] == r["answered"] == 12 and r["errors"] == 0
            assert r["per_text"]["predicted"] == predicted
            assert r["per_text"]["confidence"] == pytest.approx(confidences, abs=1e-4)
            want = expected_metrics(truths, predicted, confidences, ["no", "yes"])
            assert r["accuracy"] == pytest.approx(want["accuracy"])
            assert r["macro_f1"] == pytest.approx(want["macro_f1"])
            assert r["ece"] == pytest.approx(want["ece"], abs=1e-4)
            assert r["confidence_auroc"] == pytest.approx(want["auroc"])
            assert r["accuracy_at_half_coverage"] == pytest.approx(want["at_half"])
            assert r["mean_confidence"] == pytest.approx(sum(confidences) / 12, abs=1e-4)
            assert r["mean_label_mass"] == pytest.approx(
                sum(c.label_mass for c in direct) / 12, abs=1e-4
            )
            assert r["confusion"]["labels"] == ["no", "yes"]
            assert r["confusion"]["matrix"] == [
                [sum(t == a and p == b for t, p in zip(truths, predicted, strict=True))
                 for b in ["no", "yes"]]
                for a in ["no", "yes"]
            ]  # fmt: skip
            assert r["usage"]["prompt_tokens"] > 0
    first, contextual, full = report["results"]
    assert first["resolved_modes"] == {"first_token": 12}
    assert first["applied_calibrations"] == {"none": 12}
    assert first["delta_vs_peer_pts"] == 0
    assert contextual["applied_calibrations"] == {"contextual": 12}
    assert full["resolved_modes"] == {"full": 12}
    for name in ["yesno_reliability.png", "yesno_confusion.png"]:
        assert (plots / name).stat().st_size > 0


@engine
def test_a_fitted_temperature_is_the_log_loss_minimum_and_is_sent_back(
    tiny_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--fit-temperature prints each config's temperature of lowest log-loss, recomputed
    here from the server's own answers; a `%T` config sends it, and each text's confidence
    becomes its probabilities to the power 1 / T, renormalized."""
    # The tiny model's weights are random: label 9 of 12 texts as it answers them and 3 the
    # other way, so that its answers carry signal and the fit lands inside its range.
    texts = [f"Statement number {i} is {'so' if i % 2 else 'not so'}." for i in range(12)]
    options = WIRE_OPTIONS["full:none:mean"]
    with Client(tiny_server.target, timeout=120) as client:
        tops = [client.classify(t, ClassifyParams(["no", "yes"], options=options)).top_label
                for t in texts]  # fmt: skip
    flip = {"no": "yes", "yes": "no"}
    data = write_jsonl(
        tmp_path / "yesno.jsonl",
        [{"text": t, "label": flip[top] if i % 4 == 0 else top}
         for i, (t, top) in enumerate(zip(texts, tops, strict=True))],
    )  # fmt: skip
    report_path = tmp_path / "report.json"
    code = cmd.main([
        str(data), "--target", tiny_server.target, "--configs", "full:none:mean,full:none:mean%2.5",
        "--timeout", "120", "--concurrency", "4", "--report", str(report_path), "--quiet",
        "--fit-temperature",
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "| dataset | config | texts | fitted T |" in out
    report = json.loads(report_path.read_text())
    rows = rows_in_report_order(data, report)
    with Client(tiny_server.target, timeout=120) as client:
        answers = [client.classify(row["text"], ClassifyParams(["no", "yes"], options=options))
                   for row in rows]  # fmt: skip
    probabilities = [[lb.probability for lb in a.labels] for a in answers]
    truths = [["no", "yes"].index(row["label"]) for row in rows]

    def loss(t: float) -> float:
        return sum(
            -math.log(p[k] ** (1 / t) / sum(q ** (1 / t) for q in p))
            for p, k in zip(probabilities, truths, strict=True)
        )

    best = min((0.05 + 0.005 * i for i in range(3990)), key=loss)
    assert 0.1 < best < 19  # inside the fit's range
    plain, tempered = report["results"][1], report["results"][2]
    assert plain["temperature_fit"]["texts"] == 12
    assert plain["temperature_fit"]["temperature"] == pytest.approx(best, abs=0.01)
    assert f"| yesno | full:none:mean | 12 | {plain['temperature_fit']['temperature']:.2f} |" in out
    assert tempered["config"] == "full:none:mean%2.5"
    want = [max(q ** (1 / 2.5) for q in p) / sum(q ** (1 / 2.5) for q in p) for p in probabilities]
    assert tempered["per_text"]["confidence"] == pytest.approx(want, abs=1e-4)


@engine
def test_batch_calibration_through_the_api(tiny_server: ServerProcess, tmp_path: Path) -> None:
    """`auto:batch*4` sends ClassifyBatch requests of 4 while --batch-size stays 1 (a single
    Classify with batch calibration would be refused)."""
    data = ds.load_dataset(yes_no_file(tmp_path, rows=10))
    settings = rn.EvalSettings(
        target=tiny_server.target, configs=cf.parse_configs("auto:batch*4"), timeout_s=120
    )
    report = asyncio.run(rn.evaluate([data], settings))
    assert report.configs == ["peer", "auto:batch*4"]
    assert report.errors == 0 and report.exit_code == 0
    batch = report.result("yesno", "auto:batch*4")
    assert batch is not None and batch.answered == 10
    assert batch.applied_calibrations == {"batch": 10}
    # The same batches sent by hand: 10 texts in near-equal parts of at most 4.
    params = ClassifyParams(
        ["no", "yes"],
        options=pb.ScoringOptions(mode=pb.SCORING_MODE_AUTO, calibration=pb.CALIBRATION_BATCH),
    )
    with Client(tiny_server.target, timeout=120) as client:
        predicted = [
            c.top_label
            for part in [data.texts[0:3], data.texts[3:7], data.texts[7:10]]
            for c in client.classify_batch(part, params).results
        ]
    assert batch.predicted == predicted
    right = sum(p == t for p, t in zip(predicted, data.truths, strict=True))
    assert batch.accuracy == pytest.approx(right / 10)


@engine
def test_failed_requests_are_counted_not_dropped(
    tiny_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "report.json"
    code = cmd.main([
        str(yes_no_file(tmp_path, rows=4)), "--target", tiny_server.target,
        "--template", "no-such-template", "--report", str(report_path), "-q",
    ])  # fmt: skip
    assert code == 1
    assert "8 classifications got no answer" in capsys.readouterr().err
    report = json.loads(report_path.read_text())
    # The peer row names its own template; the two default configs take --template's.
    assert report["errors"] == 2 * 4
    assert report["configs"] == ["peer", "direct/first_token:none", "auto:default"]
    peer, *failed = report["results"]
    assert peer["answered"] == 4 and not peer["error_codes"]
    for r in failed:
        assert r["error_codes"] == {"INVALID_ARGUMENT": 4}
        assert r["answered"] == 0 and r["accuracy"] is None


def eval_two_servers(
    tmp_path: Path, first: str, second: str, *, rows: int, timeout: float = 120
) -> tuple[int, Path]:
    """`labelprob eval` of a yes/no file against two servers in one run: its exit code and
    the path of its JSON report."""
    data, report_path = yes_no_file(tmp_path, rows=rows), tmp_path / "report.json"
    code = cmd.main([
        str(data), "--target", first, "--target", second, "--configs", "auto:none",
        "--timeout", str(timeout), "--report", str(report_path), "-q",
    ])  # fmt: skip
    return code, report_path


@engine
def test_several_servers_in_one_run_get_a_table_each(
    tiny_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report_path = eval_two_servers(tmp_path, tiny_server.target, tiny_server.target, rows=4)
    assert code == 0
    out = capsys.readouterr().out
    runs = json.loads(report_path.read_text())["runs"]
    assert len(runs) == 2
    model = runs[0]["server"]["model"]
    assert out.count(f"**{model}** ({tiny_server.target})") == 2
    assert out.count("| yesno | peer | 4 |") == 2
    # The same server twice: the same answers.
    assert runs[0]["results"][1]["per_text"] == runs[1]["results"][1]["per_text"]


@engine
def test_a_server_that_fails_later_in_the_run_keeps_the_earlier_results(
    tiny_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    code, report_path = eval_two_servers(tmp_path, tiny_server.target, dead, rows=2, timeout=3)
    assert code == 1
    captured = capsys.readouterr()
    assert "GetModelInfo failed" in captured.err
    assert captured.out.count("| yesno | peer | 2 |") == 1
    (first,) = json.loads(report_path.read_text())["runs"]  # the first server's run
    assert first["server"]["model"] and first["results"][1]["answered"] == 2


@pytest.mark.embedded
def test_embedded_model_on_movie_reviews(
    embedded_server: ServerProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    code = cmd.main([
        str(SHARED_DATA / "mr_sentences.jsonl"), "--limit", "20", "--target",
        embedded_server.target, "--configs", "auto:contextual", "--timeout", "300",
        "--report", str(report_path), "-q",
    ])  # fmt: skip
    assert code == 0
    assert "| mr_sentences | peer | 20 |" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["datasets"][0]["labels"] == ["negative", "positive"]
    truths = [
        row["label"] for row in rows_in_report_order(SHARED_DATA / "mr_sentences.jsonl", report)
    ]
    for r in report["results"]:
        assert r["answered"] == 20
        right = sum(p == t for p, t in zip(r["per_text"]["predicted"], truths, strict=True))
        assert r["accuracy"] == pytest.approx(right / 20)
        assert sum(map(sum, r["confusion"]["matrix"])) == 20
