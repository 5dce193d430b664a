"""Where a many-label classification's time goes: per-read cost through labelprob.

FIRST_TOKEN, FULL read by trie nodes, FULL as the server reads it by default (label paths
where they take fewer requests) and PRUNED, on HWU64 (64 intents) and on a many-intent
task (HWU64's intents and new ones made of their own words). Every variant is measured
under load, in interleaved rounds, on texts of the same prompt lengths: per text its
throughput, engine reads and computed prompt tokens, and the CPU time each read costs in
the server's own process ("front": gRPC, prompts, vLLM's async client) and in vLLM's
engine processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labelprob.tools.bench.accounting import equal_length_groups
from labelprob.tools.bench.cpu import cpu_meter, settle
from labelprob.tools.bench.plan import PromptBuilder
from labelprob.tools.bench.processes import entered, grpc_serving, labelprob_server
from labelprob.tools.bench.settings import REQUEST_TIMEOUT_S, log
from labelprob.tools.loadtest.config import LoadConfig
from labelprob.tools.loadtest.runner import run_load
from labelprob.tools.loadtest.workload import Workload
from labelprob.tools.reports import number, text_table


@dataclass(frozen=True)
class Variant:
    name: str
    mode: str
    server: str  # the --full-reads of the server it runs on


VARIANTS = (
    Variant("FIRST_TOKEN", "first_token", "auto"),
    Variant("FULL by trie nodes", "full", "trie"),
    Variant("FULL (default: label paths when fewer)", "full", "auto"),
    Variant("PRUNED", "pruned", "auto"),
)


@dataclass
class Tally:
    """One variant's measurements on one task, summed over rounds."""

    texts: int = 0
    reads: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    front_s: float = 0.0
    engine_s: float = 0.0
    rates: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)

    def per_text(self, value: float) -> float:
        return value / self.texts if self.texts else 0.0

    def per_read_us(self, seconds: float) -> float:
        return seconds / self.reads * 1e6 if self.reads else 0.0


def many_intents(labels: Sequence[str], n: int) -> list[str]:
    """The data set's own intents, then new scenario_action pairs made of their words, to n
    labels: a realistic many-intent label set (multi-token snake_case names)."""
    scenarios = sorted({label.partition("_")[0] for label in labels})
    actions = sorted({label.partition("_")[2] for label in labels if "_" in label})
    extra = (f"{s}_{a}" for a in actions for s in scenarios)
    out = list(dict.fromkeys([*labels, *extra]))
    if len(out) < n:
        raise ValueError(f"only {len(out)} intents can be made from these labels")
    return out[:n]


def variant_texts(
    builder: PromptBuilder, labels: Sequence[str], texts: Sequence[str], groups: int
) -> list[list[str]]:
    """Per variant, one text of each of ``groups`` equal-prompt-length groups: every variant
    reads cold prompts of the same lengths (none finds another's prompt in the cache)."""
    prepared = builder.prepare(labels)
    found = equal_length_groups(
        texts, lambda t: len(builder.prompt_ids(prepared, t)), groups, len(VARIANTS)
    )
    if len(found) < groups:
        raise ValueError(f"only {len(found)} equal-length groups of texts; asked {groups}")
    return [list(column) for column in zip(*found, strict=True)]


def measure(target: str, pgid: int, labels: list[str], texts: list[str], mode: str,
            concurrency: int, tally: Tally) -> None:  # fmt: skip
    workload = Workload(texts, [None] * len(texts), labels, "breakdown")
    config = LoadConfig(
        target=target,
        workload=workload,
        concurrency=concurrency,
        requests=len(texts),
        mode=mode,
        calibration="none",
        timeout_s=REQUEST_TIMEOUT_S,
    )
    with cpu_meter(pgid) as cpu:
        report = asyncio.run(run_load(config))
    if report.ok != report.completed:
        raise RuntimeError(f"{report.completed - report.ok} requests failed: {report.status_codes}")
    tally.texts += report.texts_ok
    tally.reads += report.engine_reads
    tally.prompt_tokens += report.prompt_tokens
    tally.cached_tokens += report.cached_prompt_tokens
    tally.front_s += cpu.front_s
    tally.engine_s += cpu.engine_s
    tally.rates.append(report.texts_per_s)
    tally.p99_ms.append(report.latency_ms["p99"] or 0.0)


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Breakdown:
    tasks: dict[str, dict[str, Tally]]
    peak_rss_mib: dict[str, float]


def run_breakdown(builder: PromptBuilder, data: Workload, *, labels_many: int, texts: int,
                  rounds: int, concurrency: int, log_dir: Path) -> Breakdown:  # fmt: skip
    tasks = {
        f"HWU64 ({len(data.labels)} intents)": list(data.labels),
        f"many intents ({labels_many})": many_intents(data.labels, labels_many),
    }
    columns = {
        name: variant_texts(builder, labels, data.texts, texts * rounds)
        for name, labels in tasks.items()
    }
    tallies = {name: {v.name: Tally() for v in VARIANTS} for name in tasks}
    with contextlib.ExitStack() as stack:
        # Both engines start together; the one not measured sits idle (about 4 % of a core).
        children = {
            kind: stack.enter_context(
                entered(labelprob_server(log_dir, ("--full-reads", kind), tag=kind))
            )
            for kind in ("auto", "trie")
        }
        for child, target in children.values():
            child.wait_ready(lambda t=target: grpc_serving(t))
        settle()
        for r in range(rounds):
            for name, labels in tasks.items():
                order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
                for variant in order:
                    child, target = children[variant.server]
                    chunk = columns[name][VARIANTS.index(variant)][r * texts : (r + 1) * texts]
                    # The first round's first text per variant warms the task's prefix.
                    measure(target, child.pid, labels, chunk, variant.mode, concurrency,
                            tallies[name][variant.name])  # fmt: skip
                    log(f"round {r + 1} {name} {variant.name}: "
                        f"{tallies[name][variant.name].rates[-1]:.2f} texts/s")  # fmt: skip
        rss = {kind: peak_rss_mib(child.pid) for kind, (child, _) in children.items()}
    return Breakdown(tallies, {f"--full-reads {k}": v for k, v in rss.items()})


def breakdown_table(tallies: dict[str, Tally]) -> str:
    first = statistics.median(tallies[VARIANTS[0].name].rates)
    rows = []
    for name, t in tallies.items():
        rate = statistics.median(t.rates)
        rows.append([
            name,
            f"{rate:.2f} ({', '.join(f'{x:.1f}' for x in t.rates)})",
            f"1/{first / rate:.1f}" if rate < first else f"{rate / first:.2f}x",
            number(t.per_text(t.reads)),
            number(t.per_text(t.prompt_tokens - t.cached_tokens)),
            f"{t.per_read_us(t.front_s):.0f}",
            f"{t.per_read_us(t.engine_s):.0f}",
            f"{statistics.median(t.p99_ms):.0f}",
        ])  # fmt: skip
    headers = ["reads", "texts/s (rounds)", "vs FIRST_TOKEN", "reads/text",
               "computed tok/text", "front us/read", "engine us/read", "p99 ms"]  # fmt: skip
    return text_table(headers, rows)
