"""The run: every engine contender up at once, measured in interleaved rounds."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelprob.tools.bench.accounting import token_accounting
from labelprob.tools.bench.contenders import (
    VLLM_HTTP,
    OfflineEngine,
    bench_labelprob,
    bench_transformers,
    bench_vllm_http,
    http_load,
    labelprob_load,
)
from labelprob.tools.bench.cpu import settle
from labelprob.tools.bench.plan import Plan, PromptBuilder, load_texts
from labelprob.tools.bench.processes import (
    entered,
    grpc_serving,
    http_ok,
    labelprob_server,
    vllm_http_server,
)
from labelprob.tools.bench.results import Result, median_result
from labelprob.tools.bench.settings import (
    ACCOUNTING_DATASET,
    HTTP_CONTENDERS,
    TRANSFORMERS_READ_BUDGET,
    log,
)
from labelprob.tools.loadtest.runner import run_load
from labelprob.tools.loadtest.workload import Workload


@dataclass
class Run:
    """One benchmark run: its arguments, the plan and its texts, and what was measured."""

    args: argparse.Namespace
    plan: Plan
    measured: Workload
    warm: Workload
    builder: PromptBuilder
    log_dir: Path
    load_start: float
    results: list[Result] = field(default_factory=list)
    accounting: dict[str, Any] | None = None

    def used_texts(self) -> set[str]:
        return set(self.measured.texts) | set(self.warm.texts)

    def round_slice(self, r: int) -> tuple[Workload, list[list[int]]]:
        """Round ``r``'s texts: new ones every round, so no round finds its prompts cached."""
        n = self.args.texts
        lo, hi = r * n, (r + 1) * n
        m = self.measured
        workload = Workload(m.texts[lo:hi], m.truths[lo:hi], m.labels, m.source)
        return workload, self.plan.prompts[lo:hi]


Measure = Callable[[Workload, list[list[int]], str], Result]


def engine_rounds(run: Run) -> None:
    """Every engine contender up at once, warmed, then measured in interleaved rounds.

    The machine's speed drifts by tens of percent over minutes (other tenants, clocks), so
    contenders measured one after another would compare different machines. Here each
    round measures every contender back to back on new texts, the order rotating from round
    to round, and each contender's row is its median round. An idle engine costs a few
    percent of one core, the same for each contender.
    """
    args, plan = run.args, run.plan
    http_wanted = [c for c in HTTP_CONTENDERS if c in args.contenders]
    wanted = [c for c in ("labelprob", "offline", *HTTP_CONTENDERS) if c in args.contenders]
    measures: dict[str, Measure] = {}
    with contextlib.ExitStack() as stack:
        if "labelprob" in wanted or args.accounting_texts > 0:
            child, target = stack.enter_context(entered(labelprob_server(run.log_dir)))
            log("labelprob: starting")
        servers = {}
        for name in http_wanted:
            pinned = name == "vllm-http"
            servers[name] = stack.enter_context(
                entered(vllm_http_server(plan.model_path, run.log_dir, pinned))
            )
            log(f"{name}: starting")
        if "offline" in wanted:
            offline = stack.enter_context(OfflineEngine(plan, run.log_dir))
            log("offline: starting")
        if "labelprob" in wanted or args.accounting_texts > 0:
            child.wait_ready(lambda: grpc_serving(target))
            asyncio.run(
                run_load(labelprob_load(target, plan, run.warm, args.concurrency, args.batch_size))
            )
            measures["labelprob"] = lambda w, p, tag: bench_labelprob(
                target, child.pid, plan, w, p, args.concurrency, args.batch_size
            )
        for name, (http, base_url) in servers.items():
            http.wait_ready(lambda url=base_url: http_ok(f"{url}/health"))
            asyncio.run(http_load(base_url, plan, plan.warmup, args.concurrency, args.batch_size))
            title = VLLM_HTTP if name == "vllm-http" else f"{VLLM_HTTP} at vLLM's defaults"
            measures[name] = lambda w, p, tag, url=base_url, pid=http.pid, title=title: (
                bench_vllm_http(url, pid, plan, p, args.concurrency, args.batch_size, title)
            )
        if "offline" in wanted:
            offline.wait_ready()
            measures["offline"] = lambda w, p, tag: offline.measure(p, tag)
        settle()
        log(f"all ready; {args.rounds} round(s) of {args.texts} texts")
        rounds: dict[str, list[Result]] = {c: [] for c in wanted}
        for r in range(args.rounds):
            workload, prompts = run.round_slice(r)
            order = wanted[r % len(wanted) :] + wanted[: r % len(wanted)]
            for name in order:
                log(f"round {r + 1}: {name}")
                try:
                    rounds[name].append(measures[name](workload, prompts, f"round{r}"))
                except Exception as exc:  # one contender failing keeps the others' numbers
                    log(f"{name}: FAILED: {exc}")
                    rounds[name].append(Result(name, 0, 0.0, errors=1, note=f"failed: {exc}"[:200]))
        run.results.extend(median_result(rounds[c]) for c in wanted if rounds[c])
        if args.accounting_texts > 0:
            log(f"labelprob: prompt-token accounting on {ACCOUNTING_DATASET}")
            exclude = run.used_texts() if plan.dataset == ACCOUNTING_DATASET else set()
            data = load_texts(args.data_dir, ACCOUNTING_DATASET, args.seed)
            run.accounting = token_accounting(
                target, run.builder, data, args.accounting_texts, exclude
            )


def transformers_phase(run: Run) -> None:
    n = run.args.hf_texts or min(
        len(run.plan.prompts), max(2, TRANSFORMERS_READ_BUDGET // len(run.plan.reads))
    )
    log("transformers: measuring")
    run.results.append(bench_transformers(run.plan, n, run.args.hf_dtype, run.log_dir))
