"""`labelprob bench`: its pure pieces, its plan on the tiny model, and the plan against the
tiny server's own prompt accounting."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from labelprob.client import ClassifyParams, Client
from labelprob.server import cli
from labelprob.server.config import add_serve_arguments, settings_from_args
from labelprob.server.dtype import cpu_has_native_bf16
from labelprob.server.labels import Mode, Read
from labelprob.server.scoring import Calibration, Method
from labelprob.tools.bench import accounting, breakdown, command, contenders, processes
from labelprob.tools.bench.cpu import Cpu
from labelprob.tools.bench.plan import PromptBuilder, TokenizerEngine, build_plan
from labelprob.tools.bench.results import Result, median_result, throughput_table
from labelprob.tools.loadtest.workload import Workload
from labelprob.tools.reports import text_table
from labelprob.v1 import classifier_pb2 as pb


def test_median_round_row() -> None:
    rounds = [
        Result("labelprob gRPC", 100, 10.0, 50.0, 90.0, 0, "closed loop", Cpu(1.0, 4.0, 0.5)),
        Result("labelprob gRPC", 100, 2.5, 20.0, 70.0, 1, "closed loop", Cpu(2.0, 5.0, 0.25)),
        Result("labelprob gRPC", 100, 5.0, 30.0, 80.0, 0, "closed loop", Cpu(3.0, 6.0, 0.75)),
    ]
    row = median_result(rounds)  # rates 10, 40 and 20 texts/s: the median round is 20
    assert row.texts == 300
    assert row.per_s == pytest.approx(20.0)
    assert (row.p50_ms, row.p99_ms) == (30.0, 80.0)
    assert row.errors == 1
    assert (row.cpu.front_s, row.cpu.engine_s) == (6.0, 15.0)  # type: ignore[union-attr]
    assert row.note == "closed loop; rounds/s: 10.0, 40.0, 20.0"
    assert row.cpu_ms_per_text("engine") == pytest.approx(15.0 * 1000 / 300)
    assert row.cpu_ms_per_text("caller") == pytest.approx(1.5 * 1000 / 300)


def test_a_contender_without_a_caller_of_its_own_shows_none() -> None:
    """LLM.generate is its own caller: no caller CPU, in its rounds or in their row."""
    rounds = [Result("vLLM offline", 100, 1.0, cpu=Cpu(0.5, 9.0)) for _ in range(3)]
    row = median_result(rounds)
    assert row.cpu_ms_per_text("front") == pytest.approx(5.0)
    assert row.cpu_ms_per_text("caller") is None
    cells = throughput_table([row]).splitlines()[2].split()[2:]  # after the two-word name
    assert cells[6:9] == ["5.0", "90.0", "-"]  # front, engine and caller CPU ms/text


def test_throughput_table_compares_with_labelprob() -> None:
    rows = [Result("labelprob gRPC", 40, 2.0), Result("vLLM offline", 60, 2.0, note="ceiling")]
    lines = throughput_table(rows).splitlines()
    assert lines[0].split()[:3] == ["contender", "texts", "seconds"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "1.00x" in lines[2] and "1.50x" in lines[3]
    assert lines[3].endswith("ceiling")


def test_text_table_pads_numbers_right_and_names_left() -> None:
    table = text_table(["name", "n", "note"], [["a", "1", "x"], ["bbb", "100", "yy"]])
    assert table.splitlines() == [
        "name    n  note",
        "----  ---  ----",
        "a       1  x",
        "bbb   100  yy",
    ]


def test_equal_length_groups() -> None:
    texts = ["aa", "b", "cc", "d", "eee", "ff", "g"]
    groups = accounting.equal_length_groups(texts, len, k=2, size=3)
    assert groups == [("aa", "cc", "ff"), ("b", "d", "g")]  # in the order they fill
    assert accounting.equal_length_groups(texts, len, k=1, size=2) == [("aa", "cc")]


def test_generative_scoring_body_splits_the_task_prefix_off() -> None:
    plan = build_plan_stub(prefix_len=2)
    body = contenders.read_body(plan, [[1, 2, 3, 4], [1, 2, 5]], Read((7,), (8, 9)))
    assert body["query"] == [1, 2]
    assert body["items"] == [[3, 4, 7], [5, 7]]
    assert body["label_token_ids"] == [8, 9]
    assert plan.prompt_tokens([[1, 2, 3]]) == (3 + 0) + (3 + 1)  # root read, then one deeper


def build_plan_stub(prefix_len: int):  # a Plan without a tokenizer
    from labelprob.tools.bench.plan import Plan

    return Plan(
        dataset="d",
        model_path="m",
        labels=["a", "b"],
        mode=Mode.FULL,
        label_ids=[(8,), (7, 9)],
        prefix_len=prefix_len,
        reads=[Read((), (8, 7)), Read((7,), (9,))],
        prompts=[],
        warmup=[],
    )


def test_arguments_and_worker_command(tmp_path: Path) -> None:
    args = command.parse_args(["--dataset", "hwu", "--texts", "8", "--batch-size", "4"])
    assert (args.dataset, args.texts, args.batch_size, args.mode) == ("hwu", 8, 4, "auto")
    with pytest.raises(SystemExit):
        command.parse_args(["--texts", "10", "--batch-size", "4"])
    with pytest.raises(SystemExit):
        command.parse_args(["--mode", "pruned"])
    worker = processes.worker_command("offline", tmp_path / "s.json", tmp_path / "o.json")
    assert worker[1:5] == ["-m", "labelprob.tools.bench", "--worker", "offline"]


def test_the_labelprob_contender_does_the_others_work(tmp_path: Path) -> None:
    """The bench's server reads labels directly, uncalibrated, as the other contenders do:
    its command parses, through the server's own flags, to those settings."""
    child, _ = processes.labelprob_server(tmp_path)
    serve = child.command.index("serve")
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    settings = settings_from_args(parser.parse_args(child.command[serve + 1 :]))
    assert settings.classify.default_method is Method.DIRECT
    assert settings.classify.default_calibration is Calibration.NONE
    assert settings.classify.full_reads == "trie"
    # The breakdown's second server reads FULL by label paths.
    child, _ = processes.labelprob_server(tmp_path, ("--full-reads", "paths"), tag="paths")
    serve = child.command.index("serve")
    settings = settings_from_args(parser.parse_args(child.command[serve + 1 :]))
    assert settings.classify.full_reads == "paths"
    assert child.log_path.name == "labelprob-paths.log"


def test_the_http_contenders_run_at_pinned_settings_or_at_vllms_own(tmp_path: Path) -> None:
    """Parsed by vLLM's own server parser: vllm-http gets labelprob's engine settings and
    dtype; vllm-http-defaults leaves every engine setting unset, bar the log-prob limit."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    def parsed(pinned: bool) -> argparse.Namespace:
        child, _ = processes.vllm_http_server("/model", tmp_path, pinned)
        start = child.command.index("--model")
        return make_arg_parser(FlexibleArgumentParser()).parse_args(child.command[start:])

    pinned, own = parsed(True), parsed(False)
    assert (pinned.block_size, pinned.max_num_seqs, pinned.enable_prefix_caching) == (32, 256, True)
    # labelprob's server: float32 on a CPU without native bf16, else vLLM's own choice.
    assert pinned.dtype == ("auto" if cpu_has_native_bf16() else "float32")
    assert (own.dtype, own.block_size, own.max_num_seqs, own.enable_prefix_caching) == (
        "auto",
        None,
        None,
        None,
    )
    assert own.max_logprobs == pinned.max_logprobs == -1
    assert "vllm-http-defaults" not in command.parse_args([]).contenders


def test_many_intents_extend_the_data_sets_own() -> None:
    own = ["alarm_query", "alarm_set", "music_play", "weather_query", "qa_factoid"]
    labels = breakdown.many_intents(own, 12)
    assert labels[:5] == own and len(set(labels)) == 12
    scenarios = {"alarm", "music", "weather", "qa"}
    actions = {"query", "set", "play", "factoid"}
    for label in labels[5:]:
        scenario, _, action = label.partition("_")
        assert scenario in scenarios and action in actions
    with pytest.raises(ValueError, match="only 16"):
        breakdown.many_intents(own, 17)


def test_breakdown_rows_divide_by_texts_and_reads() -> None:
    first = breakdown.Tally(10, 10, 5000, 4500, 0.01, 2.0, [8.0, 10.0, 9.0], [100, 120, 110])
    full = breakdown.Tally(10, 400, 9000, 7000, 0.4, 20.0, [2.0, 3.0, 2.5], [900, 800, 1000])
    table = breakdown.breakdown_table({"FIRST_TOKEN": first, "FULL": full})
    first_row, full_row = table.splitlines()[-2:]
    # 9 texts/s median; 50 computed tokens a text; 1 ms front and 200 ms engine a read.
    assert first_row.split()[1:3] == ["9.00", "(8.0,"] and "1.00x" in first_row
    assert first_row.split()[-3:] == ["1000", "200000", "110"]
    # 2.5 against 9 texts/s: 1/3.6; 40 reads and 200 computed tokens a text.
    assert full_row.split()[-6:-3] == ["1/3.6", "40.0", "200.0"]
    assert full_row.split()[-3:] == ["1000", "50000", "900"]


def test_labelprob_bench_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    assert "usage: labelprob bench" in capsys.readouterr().out


LABELS = ["positive", "negative", "sports"]
TEXTS = ["The movie was wonderful.", "A dull, boring film.", "The team won the match."]


@pytest.fixture(scope="module")
def tiny_builder(tiny_model_dir: Path) -> PromptBuilder:
    return PromptBuilder(TokenizerEngine(str(tiny_model_dir)))


def test_plan_on_the_tiny_tokenizer(tiny_builder: PromptBuilder) -> None:
    data = Workload(TEXTS, ["positive", "negative", "sports"], LABELS, "inline")
    plan, measured, warm = build_plan(
        tiny_builder, data, dataset="inline", n=2, n_warmup=1, mode=Mode.FULL
    )
    assert measured.texts == TEXTS[:2] and warm.texts == TEXTS[2:]
    assert len(plan.prompts) == 2 and len(plan.warmup) == 1
    tokenizer = tiny_builder.classifier.engine.tokenizer  # type: ignore[attr-defined]
    for prompt, text in zip(plan.prompts, TEXTS, strict=False):
        assert prompt[: plan.prefix_len] == plan.prompts[0][: plan.prefix_len]
        assert text in tokenizer.decode(prompt[plan.prefix_len :])
        assert len(prompt) % 32 == 0  # FULL prompts end on a KV block
    # Every label is a path of the reads: each token a candidate after the ones before it.
    reads = {r.prefix: set(r.candidates) for r in plan.reads}
    for ids in plan.label_ids:
        for i, token in enumerate(ids):
            assert token in reads[tuple(ids[:i])]


@pytest.mark.engine
@pytest.mark.parametrize("mode", [Mode.FIRST_TOKEN, Mode.FULL])
def test_plan_matches_the_servers_prompt_tokens(
    tiny_builder: PromptBuilder, tiny_client: Client, mode: Mode
) -> None:
    """What the benchmark checks on every run (a note PROMPTS DIFFER otherwise)."""
    data = Workload(TEXTS, [None] * 3, LABELS, "inline")
    plan, _, _ = build_plan(tiny_builder, data, dataset="inline", n=3, n_warmup=0, mode=mode)
    options = pb.ScoringOptions(
        mode=pb.SCORING_MODE_FIRST_TOKEN if mode is Mode.FIRST_TOKEN else pb.SCORING_MODE_FULL,
        calibration=pb.CALIBRATION_NONE,
    )
    for text, prompt in zip(TEXTS, plan.prompts, strict=True):
        usage = tiny_client.classify(text, ClassifyParams(LABELS, options=options)).usage
        assert usage.engine_reads == len(plan.reads)
        assert usage.prompt_tokens == plan.prompt_tokens([prompt])
