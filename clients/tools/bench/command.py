"""`labelprob bench`: arguments, the report, main."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from labelprob.server.labels import Mode
from labelprob.server.model_source import default_cache_dir, ensure_embedded_model
from labelprob.tools.bench.accounting import ModeUsage, accounting_table
from labelprob.tools.bench.breakdown import breakdown_table, run_breakdown
from labelprob.tools.bench.plan import PromptBuilder, TokenizerEngine, build_plan, load_texts
from labelprob.tools.bench.results import Result, throughput_table
from labelprob.tools.bench.rounds import Run, engine_rounds, transformers_phase
from labelprob.tools.bench.settings import CONTENDERS, DATASETS, DEFAULT_DATA_DIR, log
from labelprob.tools.bench.workers import WORKERS
from labelprob.tools.reports import write_json

DESCRIPTION = """\
Throughput of labelprob beside the engine under it, vLLM's own HTTP route, and transformers.

Run at a quiet time (on 2 cores anything else running skews it):

    labelprob bench --dataset mr --texts 400 --concurrency 8 --json out.json

Every contender gets the same model (the embedded SmolLM2), the exact same prompt token
ids (built by labelprob's own Classifier) and the same label reads (FIRST_TOKEN for mr and
bbc, the FULL trie for hwu: what AUTO resolves to). The three vLLM contenders are started
together and measured in interleaved rounds on new texts each round (one at a time, the
others idle); each one's row is its median round. transformers runs after them. Then
labelprob's prompt-token accounting for HWU64 (64 multi-token labels): FIRST_TOKEN vs FULL
vs PRUNED vs one full prompt per label.
"""


def to_json(value: Any) -> Any:
    if isinstance(value, ModeUsage):
        return asdict(value) | {"computed": value.computed, "cached_share": value.cached_share}
    if isinstance(value, Result):
        return asdict(value) | {"per_s": value.per_s}
    if is_dataclass(value) and not isinstance(value, type):
        return to_json(asdict(value))
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="labelprob bench",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mr")
    p.add_argument("--texts", type=int, default=200, help="measured texts per contender and round")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds, each on new texts; a contender's row is its median round",
    )
    p.add_argument("--concurrency", type=int, default=8, help="callers for the servers")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="texts per call: ClassifyBatch for labelprob, items per request for vLLM HTTP",
    )
    p.add_argument(
        "--mode",
        # PRUNED picks its reads per text from the root read: no fixed plan to hand the others.
        choices=[m.value for m in Mode if m is not Mode.PRUNED],
        default="auto",
        help="label reads (auto: first_token for mr and bbc, full for hwu)",
    )
    p.add_argument(
        "--contenders",
        nargs="+",
        choices=CONTENDERS,
        # vllm-http-defaults is opt-in: at vLLM's own dtype it can be many times slower here.
        default=[c for c in CONTENDERS if c != "vllm-http-defaults"],
        help="vllm-http runs vLLM's server at labelprob's engine settings and dtype; "
        "vllm-http-defaults (opt-in) at vLLM's own defaults, as `vllm serve` starts",
    )
    p.add_argument(
        "--warmup-texts",
        type=int,
        default=None,
        help="other texts sent first (default max(8, 2 x concurrency))",
    )
    p.add_argument(
        "--hf-texts",
        type=int,
        default=None,
        help="transformers subset (default: about 100 forward passes' worth)",
    )
    p.add_argument("--hf-dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument(
        "--accounting-texts",
        type=int,
        default=20,
        help="HWU64 texts per mode for the token accounting; 0 skips it",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="instead of the contenders: labelprob's per-read cost of each read mode on HWU64, "
        "a many-intent task and long support intents (--texts per mode and round)",
    )
    p.add_argument(
        "--many-labels", type=int, default=150, help="labels of the breakdown's many-intent task"
    )
    p.add_argument("--seed", type=int, default=0, help="shuffle of the data set")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"folder of {', '.join(DATASETS.values())} (default {DEFAULT_DATA_DIR})",
    )
    p.add_argument("--log-dir", type=Path, help="server and worker logs (default: a temp dir)")
    # Internal: the measurement of one subprocess contender.
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.texts, args.concurrency, args.batch_size, args.rounds) < 1:
        p.error("--texts, --concurrency, --batch-size and --rounds must be >= 1")
    if args.texts % args.batch_size:
        p.error("--texts must be a multiple of --batch-size (every text is sent once)")
    return args


def print_report(run: Run) -> None:
    plan = run.plan.describe()
    print(
        f"\n== throughput: {plan['dataset']} ({plan['labels']} labels, mode {plan['mode']}, "
        f"{plan['reads_per_text']} read(s)/text, mean prompt {plan['mean_prompt_tokens']:.0f} "
        f"tokens, shared prefix {plan['shared_prefix_tokens']}), concurrency "
        f"{run.args.concurrency} x {run.args.batch_size} text(s), "
        f"{run.args.rounds} round(s) of {run.args.texts} texts, "
        f"load average {run.load_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end =="
    )
    print(throughput_table(run.results))
    if run.accounting is not None:
        acc = run.accounting
        print(f"\n== prompt-token accounting: {acc['dataset']} ({acc['labels']} labels), "
              f"labelprob, {acc['texts_per_mode']} texts per mode, one at a time ==")  # fmt: skip
        print(accounting_table(acc))


def main(argv: list[str] | None = None) -> int:
    """`labelprob bench`; argv are the command's arguments."""
    args = parse_args(argv)
    return run_worker_mode(args) if args.worker else run_bench(args)


def run_worker_mode(args: argparse.Namespace) -> int:
    spec = json.loads(args.spec.read_text()) | {"spec_path": str(args.spec)}
    result = WORKERS[args.worker](spec)
    args.out.write_text(json.dumps(result))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    # SIGTERM unwinds like Ctrl-C, so every started server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="labelprob-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]  # above the core count: the run was not alone
    log(f"load average {load_start:.2f} at the start; logs in {log_dir}")
    model_path = str(ensure_embedded_model(default_cache_dir()))
    builder = PromptBuilder(TokenizerEngine(model_path))
    if args.breakdown:
        return run_breakdown_command(args, builder, log_dir)
    n_warmup = args.warmup_texts if args.warmup_texts is not None else max(8, 2 * args.concurrency)
    plan, measured, warm = build_plan(
        builder,
        load_texts(args.data_dir, args.dataset, args.seed),
        dataset=args.dataset,
        n=args.texts * args.rounds,
        n_warmup=n_warmup,
        mode=Mode(args.mode),
    )
    run = Run(args, plan, measured, warm, builder, log_dir, load_start)
    try:
        engine_rounds(run)
    except Exception as exc:  # keep what was measured
        log(f"engine rounds: FAILED: {exc}")
    if "transformers" in args.contenders:
        transformers_phase(run)
    print_report(run)
    if args.json is not None:
        write_json(args.json, to_json(json_report(run)))
    return 0


def run_breakdown_command(args: argparse.Namespace, builder: PromptBuilder, log_dir: Path) -> int:
    result = run_breakdown(
        builder,
        load_texts(args.data_dir, "hwu", args.seed),
        labels_many=args.many_labels,
        texts=args.texts,
        rounds=args.rounds,
        concurrency=args.concurrency,
        log_dir=log_dir,
    )
    for name, tallies in result.tasks.items():
        print(
            f"\n== read modes: {name}, direct and uncalibrated but the server defaults' row, "
            f"concurrency {args.concurrency}, "
            f"{args.rounds} round(s) of {args.texts} texts per mode, "
            f"load average {os.getloadavg()[0]:.2f} at the end =="
        )
        print(breakdown_table(tallies))
    print("\npeak RSS of the server's own process (MiB): " + ", ".join(
        f"{k}: {v:.0f}" for k, v in result.peak_rss_mib.items()))  # fmt: skip
    if args.json is not None:
        write_json(args.json, to_json(vars(result)))
    return 0


def json_report(run: Run) -> dict[str, Any]:
    hidden = {"worker", "spec", "out"}
    options = {k: v for k, v in vars(run.args).items() if k not in hidden}
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
        "load_average": {"start": run.load_start, "end": os.getloadavg()[0]},
        "cores": len(os.sched_getaffinity(0)),
        "plan": run.plan.describe(),
        "results": run.results,
        "accounting": run.accounting,
    }
