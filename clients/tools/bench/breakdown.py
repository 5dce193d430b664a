"""Where a many-label classification's time goes: per-read cost through labelprob.

FIRST_TOKEN, FULL read by trie nodes (the default) and by label paths (``--full-reads
paths``), PRUNED and the server's defaults (also with a channel shortlist of 8), on HWU64
(64 intents) and on a many-intent task (HWU64's intents and new ones made of their own
words) and on long support intents (labels that differ from their first words on). Every
variant is measured under load, in interleaved rounds, on texts of the same prompt lengths:
per text its throughput, engine reads and computed prompt tokens, and the CPU time each
read costs in the server's own process ("front": gRPC, prompts, vLLM's async client) and in
vLLM's engine processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labelprob.tools.bench.accounting import equal_length_groups
from labelprob.tools.bench.cpu import cpu_meter, peak_rss_mib, settle
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
    method: str = "direct"
    calibration: str = "none"
    channel_shortlist: int = 0


VARIANTS = (
    Variant("FIRST_TOKEN", "first_token", "trie"),
    Variant("FULL by trie nodes (default)", "full", "trie"),
    Variant("FULL by label paths", "full", "paths"),
    Variant("PRUNED", "pruned", "trie"),
    # What a request that sets no option gets: the direct read (AUTO mode) pooled with the
    # noisy channel (a read per label), contextually calibrated.
    Variant("server defaults (COMBINED, AUTO)", "auto", "trie", "combined", "auto"),
    # The same with the channel read for the direct read's 8 best labels only.
    Variant("defaults, channel shortlist 8", "auto", "trie", "combined", "auto", 8),
)
# Long support intents that mostly differ from their first word on: the label paths' case
# (a read per label against one per trie node). Written for this benchmark.
SUPPORT_INTENTS = (
    "activate_my_card", "age_limit", "apple_pay_or_google_pay", "atm_support",
    "automatic_top_up", "balance_not_updated_after_bank_transfer",
    "beneficiary_not_allowed", "cancel_transfer", "card_about_to_expire", "card_acceptance",
    "card_arrival", "card_delivery_estimate", "card_linking", "card_not_working",
    "card_payment_fee_charged", "card_payment_not_recognised", "card_swallowed",
    "cash_withdrawal_charge", "change_pin", "compromised_card", "contactless_not_working",
    "country_support", "declined_card_payment", "declined_cash_withdrawal",
    "declined_transfer", "direct_debit_payment_not_recognised", "disposable_card_limits",
    "edit_personal_details", "exchange_charge", "exchange_rate", "exchange_via_app",
    "extra_charge_on_statement", "failed_transfer", "fiat_currency_support",
    "get_disposable_virtual_card", "get_physical_card", "getting_spare_card",
    "getting_virtual_card", "lost_or_stolen_card", "lost_or_stolen_phone", "order_physical_card",
    "passcode_forgotten", "pending_card_payment", "pending_cash_withdrawal", "pending_top_up",
    "pending_transfer", "pin_blocked", "receiving_money", "refund_not_showing_up",
    "request_refund", "reverted_card_payment", "supported_cards_and_currencies",
    "terminate_account", "top_up_by_bank_transfer_charge", "top_up_by_card_charge",
    "top_up_by_cash_or_cheque", "top_up_failed", "top_up_limits", "top_up_reverted",
    "topping_up_by_card", "transaction_charged_twice", "transfer_fee_charged",
    "transfer_into_account", "transfer_not_received_by_recipient", "transfer_timing",
    "unable_to_verify_identity", "verify_my_identity", "verify_source_of_funds",
    "verify_top_up", "virtual_card_not_working", "visa_or_mastercard", "why_verify_identity",
    "wrong_amount_of_cash_received", "wrong_exchange_rate_for_cash_withdrawal",
    "account_frozen_after_travel", "statement_download_request", "close_joint_account",
)  # fmt: skip
# Equal-length text groups kept out of the rounds to warm each variant's task prefix.
WARMUP_GROUPS = 2


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


def measure(target: str, pgid: int, labels: list[str], texts: list[str], variant: Variant,
            concurrency: int, tally: Tally) -> None:  # fmt: skip
    workload = Workload(texts, [None] * len(texts), labels, "breakdown")
    config = LoadConfig(
        target=target,
        workload=workload,
        concurrency=concurrency,
        requests=len(texts),
        mode=variant.mode,
        calibration=variant.calibration,
        method=variant.method,
        channel_shortlist=variant.channel_shortlist,
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


@dataclass
class Breakdown:
    tasks: dict[str, dict[str, Tally]]
    peak_rss_mib: dict[str, float]


def run_breakdown(builder: PromptBuilder, data: Workload, *, labels_many: int, texts: int,
                  rounds: int, concurrency: int, log_dir: Path) -> Breakdown:  # fmt: skip
    tasks = {
        f"HWU64 ({len(data.labels)} intents)": list(data.labels),
        f"many intents ({labels_many})": many_intents(data.labels, labels_many),
        # HWU64's texts stand in: a read's cost does not depend on the labels fitting them.
        f"long support intents ({len(SUPPORT_INTENTS)})": list(SUPPORT_INTENTS),
    }
    columns = {
        name: variant_texts(builder, labels, data.texts, WARMUP_GROUPS + texts * rounds)
        for name, labels in tasks.items()
    }
    tallies = {name: {v.name: Tally() for v in VARIANTS} for name in tasks}
    with contextlib.ExitStack() as stack:
        # Both engines start together; the one not measured sits idle (about 4 % of a core).
        children = {
            kind: stack.enter_context(
                entered(labelprob_server(log_dir, ("--full-reads", kind), tag=kind))
            )
            for kind in ("trie", "paths")
        }
        for child, target in children.values():
            child.wait_ready(lambda t=target: grpc_serving(t))
        for name, labels in tasks.items():
            for i, variant in enumerate(VARIANTS):
                child, target = children[variant.server]
                warm = columns[name][i][:WARMUP_GROUPS]
                measure(target, child.pid, labels, warm, variant, concurrency, Tally())
        settle()
        for r in range(rounds):
            for name, labels in tasks.items():
                order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
                for variant in order:
                    child, target = children[variant.server]
                    start = WARMUP_GROUPS + r * texts
                    chunk = columns[name][VARIANTS.index(variant)][start : start + texts]
                    measure(target, child.pid, labels, chunk, variant, concurrency,
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
