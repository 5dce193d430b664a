"""`labelprob loadtest`: pure pieces without a server, then short runs against the tiny server."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
from pathlib import Path

import pytest

from labelprob.client import ClassifyParams, Client
from labelprob.tools import latency as lat
from labelprob.tools.loadtest import command as cmd
from labelprob.tools.loadtest import config as cfg
from labelprob.tools.loadtest import plots as lt_plots
from labelprob.tools.loadtest import recorder as rec
from labelprob.tools.loadtest import report as rp
from labelprob.tools.loadtest import runner as run
from labelprob.tools.loadtest import schedule as sc
from labelprob.tools.loadtest import workload as wl
from tests.conftest import SHARED_DATA, ServerProcess, free_port

# --- schedules -----------------------------------------------------------------------------


def test_constant_schedule_is_evenly_spaced() -> None:
    times = sc.schedule(50, "constant", count=100)
    assert len(times) == 100
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(99 / 50)
    assert {round(b - a, 9) for a, b in itertools.pairwise(times)} == {0.02}


def test_schedule_stops_at_the_horizon() -> None:
    times = sc.schedule(50, "constant", horizon_s=2.0)
    assert len(times) == 100
    assert max(times) < 2.0
    assert len(sc.schedule(50, "constant", count=10, horizon_s=2.0)) == 10


def test_poisson_schedule_has_the_mean_rate_and_exponential_gaps() -> None:
    rate = 200.0
    times = sc.schedule(rate, "poisson", seed=7, count=5000)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 5000
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.05)
    # Exponential gaps: standard deviation equals the mean (coefficient of variation 1).
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.1)
    # Over a horizon, the count is rate x time.
    assert len(sc.schedule(rate, "poisson", seed=7, horizon_s=10.0)) == pytest.approx(
        2000, rel=0.05
    )


def test_poisson_schedule_is_reproducible_from_its_seed() -> None:
    a = sc.schedule(100, "poisson", seed=1, count=50)
    assert a == sc.schedule(100, "poisson", seed=1, count=50)
    assert a != sc.schedule(100, "poisson", seed=2, count=50)


def test_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        sc.schedule(0, count=1)
    with pytest.raises(ValueError):
        sc.schedule(10, "bursty", count=1)
    with pytest.raises(ValueError):
        sc.schedule(10)


# --- statistics ----------------------------------------------------------------------------


def test_percentiles_from_the_hdr_histogram() -> None:
    histogram = lat.new_histogram()
    for ms in range(1, 1001):  # 1..1000 ms, uniformly
        histogram.record_value(lat.to_us(ms / 1000))
    summary = lat.latency_summary_ms(histogram)
    # 3 significant digits: values are exact to 0.1%.
    assert summary["p50"] == pytest.approx(500, rel=1e-3)
    assert summary["p90"] == pytest.approx(900, rel=1e-3)
    assert summary["p99"] == pytest.approx(990, rel=1e-3)
    assert summary["p99.9"] == pytest.approx(999, rel=1e-3)
    assert summary["max"] == pytest.approx(1000, rel=1e-3)
    assert summary["mean"] == pytest.approx(500.5, rel=1e-3)
    points = lat.percentile_distribution(histogram)
    assert points[-1]["percentile"] == 100.0
    latencies = [p["latency_ms"] for p in points]
    assert latencies == sorted(latencies)


def test_empty_histogram_has_no_percentiles() -> None:
    summary = lat.latency_summary_ms(lat.new_histogram())
    assert set(summary) >= {"p50", "p90", "p99", "p99.9", "max", "mean"}
    assert all(v is None for v in summary.values())
    assert lat.percentile_distribution(lat.new_histogram()) == []


def test_to_us_clamps_to_the_histogram_range() -> None:
    assert lat.to_us(0.0) == 1
    assert lat.to_us(0.0125) == 12_500
    assert lat.to_us(10_000.0) == lat.HIGHEST_US


def test_recorder_counts_statuses_drops_and_seconds() -> None:
    recorder = rec.Recorder()
    recorder.record(0.1, 0.010, "OK", correct=1, labeled=1, prompt_tokens=30)
    recorder.record(0.2, 0.500, "UNAVAILABLE")  # errors are counted, not timed
    recorder.record(2.5, 0.030, "OK", texts=4, prompt_tokens=120, cached_prompt_tokens=100)
    recorder.record_drop(2.6)
    series = recorder.finish()
    assert recorder.status_codes == {"OK": 2, "UNAVAILABLE": 1}
    assert (recorder.completed, recorder.ok, recorder.dropped) == (3, 2, 1)
    assert recorder.texts_ok == 5
    assert (recorder.prompt_tokens, recorder.cached_prompt_tokens) == (150, 100)
    assert recorder.latency.get_total_count() == 2
    assert [row["t_s"] for row in series] == [0, 1, 2]
    first = {k: series[0][k] for k in ["requests", "ok", "errors", "dropped"]}
    assert first == {"requests": 2, "ok": 1, "errors": 1, "dropped": 0}
    assert series[0]["p99_ms"] == pytest.approx(10, rel=0.01)
    assert series[1]["requests"] == 0 and series[1]["p50_ms"] is None
    assert series[2]["dropped"] == 1 and series[2]["max_ms"] == pytest.approx(30, rel=0.01)


# --- SLOs and the report -------------------------------------------------------------------


def test_slo_evaluation() -> None:
    assert rp.evaluate_slos(12.0, 0.0) == []
    held = rp.evaluate_slos(12.0, 0.01, slo_p99_ms=20, slo_error_rate=0.05)
    assert [c.passed for c in held] == [True, True]
    failed = rp.evaluate_slos(25.0, 0.01, slo_p99_ms=20, slo_error_rate=0.05)
    assert [(c.name, c.passed) for c in failed] == [("p99_ms", False), ("error_rate", True)]
    # Nothing measured: the SLO cannot be said to hold.
    assert not rp.evaluate_slos(None, None, slo_p99_ms=20)[0].passed


def test_exit_codes() -> None:
    held = rp.evaluate_slos(12.0, 0.0, slo_p99_ms=20)
    failed = rp.evaluate_slos(12.0, 0.0, slo_p99_ms=5)
    ok = {"OK": 10, "DEADLINE_EXCEEDED": 1}
    assert rp.exit_code_for(ok, []) == rp.EXIT_OK == 0
    assert rp.exit_code_for(ok, held) == 0
    assert rp.exit_code_for(ok, failed) == rp.EXIT_SLO_FAILED == 2
    # Nothing succeeded: unreachable or rejected is an error, whatever the SLOs...
    assert rp.exit_code_for({"UNAVAILABLE": 5}, held) == rp.EXIT_ERROR == 1
    assert rp.exit_code_for({"INVALID_ARGUMENT": 5}, []) == 1
    assert rp.exit_code_for({}, []) == 1
    # ...but a server that only timed out or shed load failed its SLOs, when there are some.
    timed_out = rp.evaluate_slos(None, 1.0, slo_p99_ms=20)
    assert rp.exit_code_for({"DEADLINE_EXCEEDED": 5}, timed_out) == 2
    assert rp.exit_code_for({"RESOURCE_EXHAUSTED": 5}, []) == 1


def synthetic_report(slo_p99_ms: float | None = None) -> rp.LoadReport:
    config = cfg.LoadConfig(
        "127.0.0.1:1",
        wl.generate_workload(4, ["yes", "no"]),
        requests=100,
        slo_p99_ms=slo_p99_ms,
        slo_error_rate=0.05,
    )
    recorder = rec.Recorder()
    for i in range(100):
        status = "OK" if i % 25 else "DEADLINE_EXCEEDED"
        recorder.record(i / 50, 0.010 + i / 10_000, status, correct=i % 2, labeled=1)
    return rp.build_report(config, recorder, started_at="2026-01-01T00:00:00+00:00")


def test_report_aggregates_and_evaluates_slos() -> None:
    report = synthetic_report(slo_p99_ms=1000)
    assert report.completed == 100 and report.ok == 96
    assert report.error_rate == pytest.approx(0.04)
    assert report.requests_per_s == pytest.approx(100 / 1.98)
    assert report.accuracy == pytest.approx(48 / 96)
    assert report.exit_code == 0
    assert synthetic_report(slo_p99_ms=5).exit_code == 2
    document = json.loads(json.dumps(report.to_dict()))
    assert document["status_codes"] == {"OK": 96, "DEADLINE_EXCEEDED": 4}
    assert document["slo"]["passed"] is True
    assert document["config"]["workload"]["labels"] == ["yes", "no"]
    assert len(document["time_series"]) == 2
    assert "OK 96" in rp.format_summary(report)


def test_plots_from_a_report(tmp_path: Path) -> None:
    paths = lt_plots.write_plots(synthetic_report(), tmp_path / "plots")
    assert [p.name for p in paths] == ["latency_over_time.png", "latency_percentiles.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


# --- workloads -----------------------------------------------------------------------------


def test_jsonl_workload_derives_the_sorted_label_set() -> None:
    lines = [
        '{"text": "great film", "label": "positive"}',
        "",
        '{"text": "dull", "label": "negative"}',
        '{"text": "fine", "label": "positive"}',
    ]
    workload = wl.parse_jsonl_workload(lines)
    assert workload.labels == ["negative", "positive"]
    assert workload.texts == ["great film", "dull", "fine"]
    assert workload.truths == ["positive", "negative", "positive"]
    assert workload.labeled
    assert wl.parse_jsonl_workload(lines, ["positive", "negative", "neutral"]).labels == [
        "positive", "negative", "neutral",
    ]  # fmt: skip


def test_jsonl_workload_errors() -> None:
    with pytest.raises(ValueError, match=":2: not JSON"):
        wl.parse_jsonl_workload(['{"text": "a", "label": "x"}', "{oops"])
    with pytest.raises(ValueError, match="give --labels"):
        wl.parse_jsonl_workload(['{"text": "no label here"}'])
    with pytest.raises(ValueError, match='"text"'):
        wl.parse_jsonl_workload(['{"label": "x"}'])
    unlabeled = wl.parse_jsonl_workload(['{"text": "a"}'], ["yes", "no"])
    assert not unlabeled.labeled


def test_shared_data_file_labels() -> None:
    path = SHARED_DATA / "mr_sentences.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    workload = wl.load_jsonl_workload(path)
    assert workload.labels == ["negative", "positive"]
    assert len(workload.texts) == 4000


def test_generated_workload_is_reproducible() -> None:
    a = wl.generate_workload(20, ["yes", "no"], seed=3)
    assert a.texts == wl.generate_workload(20, ["yes", "no"], seed=3).texts
    assert len(set(a.texts)) == 20
    assert not a.labeled


def test_batches_cycle_through_the_texts() -> None:
    workload = wl.parse_jsonl_workload(
        [json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) for i in range(5)]
    )
    config = cfg.LoadConfig("x", workload, requests=1, batch_size=2)
    prepared = run.prepare_requests(config)
    assert len(prepared) == 5  # 5 / gcd(5, 2) batches before the texts repeat
    assert [list(p.message.texts) for p in prepared[:3]] == [
        ["t0", "t1"],
        ["t2", "t3"],
        ["t4", "t0"],
    ]
    assert prepared[2].truths == ("a", "a")
    single = run.prepare_requests(cfg.LoadConfig("x", workload, requests=1))
    assert [p.message.text for p in single] == [f"t{i}" for i in range(5)]


# --- command line without a server ---------------------------------------------------------


def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cmd.main(["--generate", "3", "--labels", "a", "b", "--no-such-flag"])
    assert exc.value.code == 1
    with pytest.raises(SystemExit) as exc:
        cmd.main(["--generate", "3", "--concurrency", "2", "--rate", "5"])
    assert exc.value.code == 1
    assert cmd.main(["--generate", "3"]) == 1  # no --labels
    assert cmd.main(["--generate", "3", "--labels", "a", "b", "--duration", "0"]) == 1
    assert cmd.main(["--generate", "3", "--labels", "only-one", "--requests", "1"]) == 1
    assert "error" in capsys.readouterr().err


def test_config_defaults_to_a_bounded_run() -> None:
    args = cmd.build_parser().parse_args(["--generate", "2", "--labels", "a", "b"])
    config = cmd.config_from_args(args)
    assert config.duration_s == cmd.DEFAULT_DURATION_S
    assert not config.open_loop


def test_the_channel_shortlist_reaches_every_request() -> None:
    args = cmd.build_parser().parse_args(
        ["--generate", "2", "--labels", "a", "b", "c", "--channel-shortlist", "2"]
    )
    prepared = run.prepare_requests(cmd.config_from_args(args))
    assert [p.message.options.channel_shortlist for p in prepared] == [2, 2]
    with pytest.raises(SystemExit):
        cmd.build_parser().parse_args(["--generate", "2", "--channel-shortlist", "-1"])


# --- against the tiny server ---------------------------------------------------------------

engine = pytest.mark.engine


@engine
def test_closed_loop_run_writes_report_and_plots(
    tiny_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path, plots = tmp_path / "report.json", tmp_path / "plots"
    code = cmd.main([
        "--target", tiny_server.target, "--generate", "40", "--labels", "yes", "no",
        "--concurrency", "4", "--requests", "40", "--timeout", "60",
        "--report", str(report_path), "--plots", str(plots),
    ])  # fmt: skip
    assert code == 0
    assert "p99" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert set(report) >= {
        "config", "elapsed_s", "requests", "status_codes", "throughput", "latency_ms",
        "latency_distribution", "accuracy", "usage", "time_series", "slo", "exit_code",
    }  # fmt: skip
    assert report["status_codes"] == {"OK": 40}
    assert report["requests"]["completed"] == 40
    assert report["requests"]["error_rate"] == 0
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert report["throughput"]["requests_per_s"] > 0
    assert report["throughput"]["texts_per_s"] == pytest.approx(
        report["throughput"]["requests_per_s"]
    )
    assert report["usage"]["prompt_tokens"] > 0
    assert report["accuracy"] is None  # generated texts have no true labels
    assert report["server"]["model"]
    assert sum(row["requests"] for row in report["time_series"]) == 40
    for name in ["latency_over_time.png", "latency_percentiles.png"]:
        assert (plots / name).stat().st_size > 0


@engine
def test_open_loop_run_keeps_the_schedule(tiny_server: ServerProcess) -> None:
    config = cfg.LoadConfig(
        tiny_server.target,
        wl.generate_workload(30, ["yes", "no"], seed=1),
        rate=10,
        arrival="poisson",
        warmup_s=0.5,
        duration_s=2.5,
        timeout_s=60,
        channels=2,
    )
    report = asyncio.run(run.run_load(config))
    assert report.ok == report.completed > 0
    assert report.dropped == 0
    assert report.warmup_requests >= 1
    # The measured requests are those the seeded schedule puts in [0.5 s, 3.0 s).
    expected = [t for t in sc.schedule(10, "poisson", seed=0, horizon_s=3.0) if t >= 0.5]
    assert report.completed == len(expected)
    assert report.latency_ms["p50"] <= report.latency_ms["p99"]
    assert report.exit_code == 0


@engine
def test_batches_from_a_labeled_file(tiny_server: ServerProcess, tmp_path: Path) -> None:
    rows = [
        {"text": f"review number {i}", "label": ["negative", "positive"][i % 2]} for i in range(8)
    ]
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = cfg.LoadConfig(
        tiny_server.target,
        wl.load_jsonl_workload(data),
        concurrency=2,
        requests=6,
        batch_size=4,
        timeout_s=60,
    )
    report = asyncio.run(run.run_load(config))
    assert report.status_codes == {"OK": 6}
    assert report.texts_ok == 24
    # 8 texts in batches of 4: the 6 requests send each of the two batches 3 times.
    params = ClassifyParams(["negative", "positive"])
    with Client(tiny_server.target, timeout=60) as client:
        right = sum(
            c.top_label == row["label"]
            for part in (rows[:4], rows[4:])
            for c, row in zip(
                client.classify_batch([r["text"] for r in part], params).results, part, strict=True
            )
        )
    assert report.labeled == 24
    assert report.correct == 3 * right
    assert report.accuracy == pytest.approx(right / 8)


@engine
def test_impossible_slo_exits_2(tiny_server: ServerProcess) -> None:
    code = cmd.main([
        "--target", tiny_server.target, "--generate", "10", "--labels", "yes", "no",
        "--requests", "8", "--concurrency", "2", "--timeout", "60", "--slo-p99-ms", "0.001",
    ])  # fmt: skip
    assert code == 2


def test_no_server_counts_unavailable_and_fails(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    code = cmd.main([
        "--target", f"127.0.0.1:{free_port()}", "--generate", "5", "--labels", "yes", "no",
        "--requests", "5", "--timeout", "5", "--report", str(report_path),
    ])  # fmt: skip
    assert code != 0
    report = json.loads(report_path.read_text())
    assert report["status_codes"] == {"UNAVAILABLE": 5}
    assert report["requests"]["ok"] == 0
    assert report["exit_code"] == 1
