"""`labelprob eval`: accuracy and calibration of scoring configurations on labeled JSONL files.

Every file is classified once per configuration (`mode:calibration[:normalization]`), and
each (file, configuration) gets accuracy, macro-F1, expected calibration error, mean label
mass and entropy, a confusion matrix, RPC error counts and throughput. The first row is
always the peer method, `first_token:none` (read the labels' first tokens, no calibration:
what a plain logprob classifier does), so every other row reads as a delta against it.

Configs run one after another on the same texts, so the server's prefix cache, filled by
the first config, serves most of the prompt to the later ones: their texts/s is higher
than a cold run's, and compares configs only roughly. On CPU, cached and recomputed
prompts can also differ in the last bits of a bf16 model, which may flip near-ties.

The metrics are small pure functions that test without a server; `evaluate(...)` is the
async API and `format_markdown(report)` renders the table the README quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from labelprob.client.client import (
    CALIBRATIONS,
    DEFAULT_TARGET,
    MODES,
    AsyncClient,
    ClassifyParams,
)
from labelprob.v1 import classifier_pb2 as pb

EXIT_OK = 0
EXIT_RPC_ERRORS = 1  # the run finished, but some texts got no answer (or no server)
EXIT_USAGE = 2  # as argparse: bad arguments, configs or input files

NORMALIZATIONS = {
    "default": pb.LENGTH_NORMALIZATION_UNSPECIFIED,
    "sum": pb.LENGTH_NORMALIZATION_SUM,
    "mean": pb.LENGTH_NORMALIZATION_MEAN,
}
ECE_BINS = 10
DEFAULT_CONFIGS = "first_token:none,auto:default"
DEFAULT_TIMEOUT_S = 120.0


# --- scoring configurations -------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringConfig:
    """One way of scoring: mode, calibration and (optional) length normalization.

    `calibration="default"` sends CALIBRATION_UNSPECIFIED: whatever the server defaults to.
    """

    mode: str
    calibration: str
    normalization: str | None = None

    @property
    def name(self) -> str:
        parts = [self.mode, self.calibration]
        if self.normalization is not None:
            parts.append(self.normalization)
        return ":".join(parts)

    @property
    def is_peer(self) -> bool:
        # A first-token read has one token per label, so the normalization cannot matter.
        return self.mode == "first_token" and self.calibration == "none"

    def options(self, template: str = "") -> pb.ScoringOptions:
        return pb.ScoringOptions(
            mode=MODES[self.mode],
            calibration=CALIBRATIONS[self.calibration],
            length_normalization=NORMALIZATIONS[self.normalization or "default"],
            template=template,
        )


PEER = ScoringConfig("first_token", "none")


def parse_config(text: str) -> ScoringConfig:
    """`mode:calibration[:normalization]`, e.g. `full:contextual:mean`."""
    parts = [p.strip().lower() for p in text.strip().split(":")]
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"config {text!r}: expected mode:calibration[:normalization]")
    mode, calibration = parts[0], parts[1]
    normalization = parts[2] if len(parts) == 3 else None
    if mode not in MODES:
        raise ValueError(f"config {text!r}: mode must be one of {', '.join(sorted(MODES))}")
    if calibration not in CALIBRATIONS:
        raise ValueError(
            f"config {text!r}: calibration must be one of {', '.join(sorted(CALIBRATIONS))}"
        )
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ValueError(
            f"config {text!r}: normalization must be one of {', '.join(sorted(NORMALIZATIONS))}"
        )
    return ScoringConfig(mode, calibration, normalization)


def parse_configs(spec: str | Sequence[str], batch_size: int = 1) -> list[ScoringConfig]:
    """A comma list (or a sequence) of configs, duplicates removed, the peer method first:
    moved to the front when given, prepended when not."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    configs: list[ScoringConfig] = []
    for item in items:
        if not item.strip():
            continue
        config = parse_config(item)
        if config not in configs:
            configs.append(config)
    peers = [c for c in configs if c.is_peer]
    peer = peers[0] if peers else PEER
    configs = [peer, *(c for c in configs if c != peer)]
    for config in configs:
        # The server answers Classify with BATCH calibration by INVALID_ARGUMENT: a batch
        # is what it calibrates against.
        if config.calibration == "batch" and batch_size <= 1:
            raise ValueError(f"config {config.name!r}: batch calibration needs --batch-size > 1")
    return configs


# --- datasets ---------------------------------------------------------------------------------


@dataclass
class Dataset:
    """The sampled rows of one labeled file and its label set."""

    name: str
    source: str
    texts: list[str]
    truths: list[str]
    labels: list[str]
    total_rows: int
    indices: list[int] = field(default_factory=list)  # row numbers in the file, 0-based
    sample: dict[str, Any] = field(default_factory=dict)  # limit, seed, max_chars

    def describe(self) -> dict[str, Any]:
        counts = Counter(self.truths)
        return {
            "name": self.name,
            "source": self.source,
            "rows": len(self.texts),
            "file_rows": self.total_rows,
            "sample": self.sample,
            # The order of every per-text list in the report (`per_text`).
            "row_indices": self.indices,
            "labels": self.labels,
            "label_counts": {label: counts[label] for label in self.labels},
        }


def sample_indices(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """A seeded random order of `range(n)`, cut to `limit`.

    The rows are shuffled even without a limit: data files are often sorted by label, and
    batch calibration must not see batches of a single label. A smaller limit with the
    same seed gives a prefix of a larger one, so samples nest.
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order if limit is None else order[: max(limit, 0)]


def parse_dataset(
    lines: Iterable[str],
    *,
    name: str,
    source: str = "<jsonl>",
    labels: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    max_chars: int | None = None,
) -> Dataset:
    """Rows `{"text": ..., "label": ...}`. The label set is the file's sorted distinct labels
    unless `labels` is given; then every row's label must be one of them."""
    texts: list[str] = []
    truths: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{number}: not JSON: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f'{source}:{number}: expected an object with a "text" string')
        if row.get("label") is None:
            raise ValueError(f'{source}:{number}: no "label"')
        texts.append(row["text"])
        truths.append(str(row["label"]))
    if not texts:
        raise ValueError(f"{source}: no rows")
    label_set = list(dict.fromkeys(labels)) if labels else sorted(set(truths))
    unknown = sorted(set(truths) - set(label_set))
    if unknown:
        # Such a row could never be right: better refuse than report a skewed accuracy.
        raise ValueError(f"{source}: labels not in --labels: {', '.join(unknown[:5])}")
    if len(label_set) < 2:
        raise ValueError(f"{source}: need at least 2 labels, got {label_set}")
    indices = sample_indices(len(texts), limit, seed)
    cut = slice(None) if max_chars is None else slice(0, max_chars)
    return Dataset(
        name=name,
        source=source,
        texts=[texts[i][cut] for i in indices],
        truths=[truths[i] for i in indices],
        labels=label_set,
        total_rows=len(texts),
        indices=indices,
        sample={"limit": limit, "seed": seed, "max_chars": max_chars},
    )


def load_dataset(
    path: Path,
    *,
    name: str | None = None,
    labels: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    max_chars: int | None = None,
) -> Dataset:
    with path.open(encoding="utf-8") as stream:
        return parse_dataset(
            stream,
            name=name or path.stem,
            source=str(path),
            labels=labels,
            limit=limit,
            seed=seed,
            max_chars=max_chars,
        )


def unique_names(paths: Sequence[Path]) -> list[str]:
    """File stems, suffixed `-2`, `-3`... when two files share one (rows and plots are keyed
    by name)."""
    seen: Counter[str] = Counter()
    names = []
    for path in paths:
        seen[path.stem] += 1
        names.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return names


# --- metrics (pure) ---------------------------------------------------------------------------


def confusion_matrix(
    truths: Sequence[str], predictions: Sequence[str], labels: Sequence[str]
) -> list[list[int]]:
    """Counts, rows = true label, columns = predicted label, both in `labels` order."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for truth, predicted in zip(truths, predictions, strict=True):
        matrix[index[truth]][index[predicted]] += 1
    return matrix


def accuracy(matrix: Sequence[Sequence[int]]) -> float | None:
    total = sum(map(sum, matrix))
    return sum(matrix[i][i] for i in range(len(matrix))) / total if total else None


def per_label_scores(
    matrix: Sequence[Sequence[int]], labels: Sequence[str]
) -> dict[str, dict[str, float | int | None]]:
    """Precision, recall, F1 and support of each label; None where undefined (0/0)."""
    scores: dict[str, dict[str, float | int | None]] = {}
    for i, label in enumerate(labels):
        tp = matrix[i][i]
        support = sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        denominator = support + predicted  # = 2tp + fp + fn
        scores[label] = {
            "precision": tp / predicted if predicted else None,
            "recall": tp / support if support else None,
            "f1": 2 * tp / denominator if denominator else None,
            "support": support,
        }
    return scores


def macro_f1(matrix: Sequence[Sequence[int]]) -> float | None:
    """Unweighted mean F1 over the labels that are true or predicted at least once.

    A label that is true but never predicted scores 0 and counts. A label absent from both
    (possible with a --limit sample or a wider --labels) has no F1 and is left out, as in
    scikit-learn's default; counting it as 0 would keep a perfect classifier below 1.
    """
    f1s = []
    for i in range(len(matrix)):
        denominator = sum(matrix[i]) + sum(row[i] for row in matrix)
        if denominator:
            f1s.append(2 * matrix[i][i] / denominator)
    return sum(f1s) / len(f1s) if f1s else None


def reliability_bins(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Equal-width confidence bins [i/bins, (i+1)/bins), the last one closed at 1: count,
    mean confidence and accuracy of each (None for an empty bin)."""
    counts = [0] * bins
    confidence_sums = [0.0] * bins
    hits = [0] * bins
    for confidence, ok in zip(confidences, correct, strict=True):
        b = min(max(math.floor(confidence * bins), 0), bins - 1)
        counts[b] += 1
        confidence_sums[b] += confidence
        hits[b] += bool(ok)
    return [
        {
            "lo": b / bins,
            "hi": (b + 1) / bins,
            "count": counts[b],
            "confidence": confidence_sums[b] / counts[b] if counts[b] else None,
            "accuracy": hits[b] / counts[b] if counts[b] else None,
        }
        for b in range(bins)
    ]


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> float | None:
    """ECE (Guo et al. 2017): sum over bins of (bin share) x |accuracy - mean confidence|,
    on the top label's probability."""
    total = len(confidences)
    if total == 0:
        return None
    return sum(
        row["count"] / total * abs(row["accuracy"] - row["confidence"])
        for row in reliability_bins(confidences, correct, bins)
        if row["count"]
    )


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def mean_of_all(values: Sequence[float | None]) -> float | None:
    """The mean, or None when a value is missing: a mean over some datasets only would not
    compare with the other configs' means."""
    known = [v for v in values if v is not None]
    return mean(known) if len(known) == len(values) else None


# --- per-(dataset, config) result -------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """What the evaluation keeps of one Classification."""

    label: str
    confidence: float  # normalized probability of the top label
    label_mass: float
    entropy: float
    truncated: bool = False
    mode: str = ""
    calibration: str = ""


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def prediction_from(result: pb.Classification) -> Prediction:
    top = next((lb for lb in result.labels if lb.name == result.top_label), None)
    return Prediction(
        label=result.top_label,
        confidence=top.probability if top is not None else 0.0,
        label_mass=result.label_mass,
        entropy=result.entropy,
        truncated=result.truncated,
        mode=_enum_name(pb.ScoringMode, result.mode, "SCORING_MODE_"),
        calibration=_enum_name(pb.Calibration, result.calibration, "CALIBRATION_"),
    )


@dataclass
class ConfigResult:
    """The metrics of one configuration on one dataset."""

    dataset: str
    config: str
    labels: list[str]
    rows: int
    answered: int
    error_codes: dict[str, int]
    accuracy: float | None
    macro_f1: float | None
    ece: float | None
    mean_confidence: float | None
    mean_label_mass: float | None
    mean_entropy: float | None
    confusion: list[list[int]]
    per_label: dict[str, dict[str, float | int | None]]
    reliability: list[dict[str, Any]]
    truncated: int
    resolved_modes: dict[str, int]
    applied_calibrations: dict[str, int]
    elapsed_s: float
    usage: dict[str, int] = field(default_factory=dict)
    # Per text, in dataset order (None: no answer): for paired comparisons between configs.
    predicted: list[str | None] = field(default_factory=list)
    confidence: list[float | None] = field(default_factory=list)
    delta_vs_peer_pts: float | None = None

    @property
    def errors(self) -> int:
        return sum(self.error_codes.values())

    @property
    def texts_per_s(self) -> float:
        return self.answered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "config": self.config,
            "rows": self.rows,
            "answered": self.answered,
            "errors": self.errors,
            "error_codes": self.error_codes,
            "accuracy": self.accuracy,
            # Failed texts counted as wrong: a lower bound that errors cannot inflate.
            "accuracy_counting_errors_as_wrong": None
            if self.accuracy is None
            else self.accuracy * self.answered / self.rows,
            "delta_vs_peer_pts": self.delta_vs_peer_pts,
            "macro_f1": self.macro_f1,
            "ece": self.ece,
            "mean_confidence": self.mean_confidence,
            "mean_label_mass": self.mean_label_mass,
            "mean_entropy": self.mean_entropy,
            "truncated": self.truncated,
            "resolved_modes": self.resolved_modes,
            "applied_calibrations": self.applied_calibrations,
            "elapsed_s": self.elapsed_s,
            "texts_per_s": self.texts_per_s,
            "usage": self.usage,
            "per_label": self.per_label,
            "reliability": self.reliability,
            "confusion": {"labels": self.labels, "matrix": self.confusion},
            "per_text": {
                "predicted": self.predicted,
                "confidence": [None if c is None else round(c, 5) for c in self.confidence],
            },
        }


def summarize(
    dataset: str,
    config: str,
    labels: Sequence[str],
    truths: Sequence[str],
    predictions: Sequence[Prediction | None],
    error_codes: dict[str, int] | None = None,
    *,
    elapsed_s: float = 0.0,
    usage: dict[str, int] | None = None,
) -> ConfigResult:
    """Metrics over the answered texts (`None` predictions are the failed ones, counted in
    `error_codes`). No abstention thresholds are sent, so every answer counts."""
    pairs = [(t, p) for t, p in zip(truths, predictions, strict=True) if p is not None]
    answered = [p for _, p in pairs]
    matrix = confusion_matrix([t for t, _ in pairs], [p.label for p in answered], labels)
    confidences = [p.confidence for p in answered]
    correct = [p.label == t for t, p in pairs]
    return ConfigResult(
        dataset=dataset,
        config=config,
        labels=list(labels),
        rows=len(truths),
        answered=len(answered),
        error_codes=dict(error_codes or {}),
        accuracy=accuracy(matrix),
        macro_f1=macro_f1(matrix),
        ece=expected_calibration_error(confidences, correct),
        mean_confidence=mean(confidences),
        mean_label_mass=mean([p.label_mass for p in answered]),
        mean_entropy=mean([p.entropy for p in answered]),
        confusion=matrix,
        per_label=per_label_scores(matrix, labels),
        reliability=reliability_bins(confidences, correct),
        truncated=sum(p.truncated for p in answered),
        resolved_modes=dict(Counter(p.mode for p in answered if p.mode)),
        applied_calibrations=dict(Counter(p.calibration for p in answered if p.calibration)),
        elapsed_s=elapsed_s,
        usage=dict(usage or {}),
        predicted=[None if p is None else p.label for p in predictions],
        confidence=[None if p is None else p.confidence for p in predictions],
    )


def points_delta(value: float | None, peer: float | None) -> float | None:
    """Difference in percentage points, None when either side is unknown."""
    return None if value is None or peer is None else (value - peer) * 100


# --- the report -------------------------------------------------------------------------------


@dataclass
class EvalReport:
    configs: list[str]  # peer first
    datasets: list[dict[str, Any]]
    results: list[ConfigResult]
    settings: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] | None = None
    started_at: str = ""

    @property
    def peer(self) -> str:
        return self.configs[0]

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.results)

    @property
    def exit_code(self) -> int:
        return EXIT_RPC_ERRORS if self.errors else EXIT_OK

    def result(self, dataset: str, config: str) -> ConfigResult | None:
        return next((r for r in self.results if r.dataset == dataset and r.config == config), None)

    def fill_deltas(self) -> None:
        for r in self.results:
            peer = self.result(r.dataset, self.peer)
            r.delta_vs_peer_pts = points_delta(r.accuracy, peer.accuracy if peer else None)

    def summary(self) -> list[dict[str, Any]]:
        """Per config: unweighted means over the datasets (each dataset counts once, however
        many rows it has), None when a dataset has no answer for the config."""
        rows = []
        for config in self.configs:
            mine = [r for r in self.results if r.config == config]
            rows.append(
                {
                    "config": config,
                    "datasets": len(mine),
                    "rows": sum(r.rows for r in mine),
                    "errors": sum(r.errors for r in mine),
                    "mean_accuracy": mean_of_all([r.accuracy for r in mine]),
                    "mean_macro_f1": mean_of_all([r.macro_f1 for r in mine]),
                    "mean_ece": mean_of_all([r.ece for r in mine]),
                }
            )
        peer_accuracy = rows[0]["mean_accuracy"] if rows else None
        for row in rows:
            row["delta_vs_peer_pts"] = points_delta(row["mean_accuracy"], peer_accuracy)
        return rows

    def best_config(self, dataset: str) -> ConfigResult | None:
        """Highest accuracy on the dataset; the earlier config wins a tie."""
        scored = [r for r in self.results if r.dataset == dataset and r.accuracy is not None]
        return max(scored, key=lambda r: r.accuracy or 0.0, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "server": self.server,
            "settings": self.settings,
            "peer": self.peer,
            "configs": self.configs,
            "datasets": self.datasets,
            "results": [r.to_dict() for r in self.results],
            "summary": self.summary(),
            "errors": self.errors,
            "exit_code": self.exit_code,
        }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delta(value: float | None, is_peer: bool) -> str:
    if is_peer:
        return "peer"
    # `or 0.0` turns a rounded -0.0 into +0.0: equal accuracies must not read as a loss.
    return "-" if value is None else f"{round(value, 1) or 0.0:+.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


TABLE_COLUMNS = [
    "dataset", "config", "texts", "accuracy %", "Δ vs peer (pts)", "macro-F1 %", "ECE",
    "label mass", "entropy (nats)", "errors", "texts/s",
]  # fmt: skip


def _table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def format_markdown(report: EvalReport) -> str:
    """One row per dataset x config (peer first within each dataset), then, with two or more
    datasets, one mean row per config. Accuracy is over the answered texts at full coverage
    (no abstention); `errors` counts the texts whose RPC failed."""
    lines = [_table_row(TABLE_COLUMNS), _table_row(["---"] * len(TABLE_COLUMNS))]
    for info in report.datasets:
        for config in report.configs:
            r = report.result(info["name"], config)
            if r is None:
                continue
            cells = [
                _cell(r.dataset), _cell(r.config), str(r.rows), _pct(r.accuracy),
                _delta(r.delta_vs_peer_pts, config == report.peer), _pct(r.macro_f1),
                _num(r.ece), _num(r.mean_label_mass), _num(r.mean_entropy), str(r.errors),
                f"{r.texts_per_s:.1f}",
            ]  # fmt: skip
            lines.append(_table_row(cells))
    if len(report.datasets) >= 2:
        for row in report.summary():
            cells = [
                f"**mean of {row['datasets']}**", _cell(row["config"]), str(row["rows"]),
                _pct(row["mean_accuracy"]),
                _delta(row["delta_vs_peer_pts"], row["config"] == report.peer),
                _pct(row["mean_macro_f1"]), _num(row["mean_ece"]), "", "",
                str(row["errors"]), "",
            ]  # fmt: skip
            lines.append(_table_row(cells))
    return "\n".join(lines)


# --- running ----------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    target: str = DEFAULT_TARGET
    configs: list[ScoringConfig] = field(default_factory=lambda: parse_configs(DEFAULT_CONFIGS))
    instruction: str = ""
    template: str = ""
    concurrency: int = 8
    timeout_s: float = DEFAULT_TIMEOUT_S
    batch_size: int = 1
    progress: bool = False

    def validate(self) -> None:
        checks = [
            (bool(self.configs), "no configs"),
            (self.concurrency >= 1, "--concurrency must be >= 1"),
            (self.timeout_s > 0, "--timeout must be > 0"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        parse_configs([c.name for c in self.configs], self.batch_size)

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "configs": [c.name for c in self.configs],
            "instruction": self.instruction,
            "template": self.template,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "batch_size": self.batch_size,
            "ece_bins": ECE_BINS,
            # No decision thresholds are sent: every answered text is scored.
            "abstain_free": True,
        }


class ServerUnreachable(RuntimeError):
    pass


def chunks(n: int, size: int) -> list[range]:
    """`range(n)` in ceil(n/size) near-equal consecutive parts of at most `size`: no tiny
    last batch, which batch calibration would calibrate against itself."""
    if n == 0:
        return []
    parts = math.ceil(n / size)
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


async def run_config(
    client: AsyncClient,
    dataset: Dataset,
    config: ScoringConfig,
    settings: EvalSettings,
) -> ConfigResult:
    """Classifies every text of the dataset with one config; failures are counted by status."""
    params = ClassifyParams(
        labels=dataset.labels,
        instruction=settings.instruction,
        options=config.options(settings.template),
    )
    predictions: list[Prediction | None] = [None] * len(dataset.texts)
    errors: Counter[str] = Counter()
    usage: Counter[str] = Counter()
    semaphore = asyncio.Semaphore(settings.concurrency)
    bar = tqdm(
        total=len(dataset.texts),
        desc=f"{dataset.name} {config.name}",
        unit="text",
        file=sys.stderr,
        disable=not settings.progress,
        leave=True,
    )

    async def one(part: range) -> None:
        texts = [dataset.texts[i] for i in part]
        async with semaphore:
            try:
                if settings.batch_size > 1:
                    response = await client.classify_batch(texts, params)
                    results = list(response.results)
                else:
                    results = [await client.classify(texts[0], params)]
            except grpc.aio.AioRpcError as err:
                errors[err.code().name] += len(part)
                bar.update(len(part))
                return
        if len(results) != len(part):
            errors["BAD_RESPONSE"] += len(part)
        else:
            for i, result in zip(part, results, strict=True):
                if result.top_label in dataset.labels:
                    predictions[i] = prediction_from(result)
                    for key in ("prompt_tokens", "cached_prompt_tokens", "engine_reads"):
                        usage[key] += getattr(result.usage, key)
                else:
                    errors["UNKNOWN_LABEL"] += 1
        bar.update(len(part))

    start = time.perf_counter()
    try:
        await asyncio.gather(*(one(p) for p in chunks(len(dataset.texts), settings.batch_size)))
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    return summarize(
        dataset.name,
        config.name,
        dataset.labels,
        dataset.truths,
        predictions,
        dict(errors),
        elapsed_s=elapsed,
        usage=dict(usage),
    )


async def evaluate(datasets: Sequence[Dataset], settings: EvalSettings) -> EvalReport:
    """Runs every config on every dataset, one (dataset, config) at a time so throughput is
    per config, and returns the report. Raises ValueError on bad settings (also when the
    server's limits rule them out) and ServerUnreachable when GetModelInfo fails; RPC
    failures of classifications are counted, never raised."""
    settings.validate()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    results: list[ConfigResult] = []
    async with AsyncClient(settings.target, timeout=settings.timeout_s) as client:
        try:
            info = await client.model_info(timeout=min(settings.timeout_s, 30.0))
        except grpc.aio.AioRpcError as err:
            raise ServerUnreachable(
                f"{settings.target}: GetModelInfo failed: {err.code().name}: {err.details()}"
            ) from err
        if info.max_batch_texts and settings.batch_size > info.max_batch_texts:
            raise ValueError(f"--batch-size above the server's limit {info.max_batch_texts}")
        for dataset in datasets:
            if info.max_labels and len(dataset.labels) > info.max_labels:
                raise ValueError(f"{dataset.name}: more labels than the server's limit")
        for dataset in datasets:
            for config in settings.configs:
                results.append(await run_config(client, dataset, config, settings))
    report = EvalReport(
        configs=[c.name for c in settings.configs],
        datasets=[d.describe() for d in datasets],
        results=results,
        settings=settings.describe(),
        server={
            "model": info.model,
            "server_version": info.server_version,
            "engine_version": info.engine_version,
            "chat_template": info.chat_template,
            "default_calibration": _enum_name(
                pb.Calibration, info.default_calibration, "CALIBRATION_"
            ),
        },
        started_at=started_at,
    )
    report.fill_deltas()
    return report


# --- plots ------------------------------------------------------------------------------------


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "dataset"


def write_plots(report: EvalReport, directory: Path) -> list[Path]:
    """Per dataset: `<name>_reliability.png` (accuracy against confidence per bin, one line
    per config, the diagonal, bin counts below) and `<name>_confusion.png` for the best
    config. Needs matplotlib (the `plots` extra); no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for info in report.datasets:
        name = info["name"]
        mine = [r for c in report.configs if (r := report.result(name, c)) is not None]

        figure = Figure(figsize=(7.5, 7))
        FigureCanvasAgg(figure)
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
        width = 1 / ECE_BINS / (len(mine) + 1)
        for k, r in enumerate(mine):
            filled = [b for b in r.reliability if b["count"]]
            ece = "-" if r.ece is None else f"{r.ece:.3f}"
            (line,) = top.plot(
                [b["confidence"] for b in filled],
                [b["accuracy"] for b in filled],
                marker="o",
                label=f"{r.config} (acc {_pct(r.accuracy)}%, ECE {ece})",
            )
            bottom.bar(
                [b["lo"] + (k + 1) * width for b in r.reliability],
                [b["count"] for b in r.reliability],
                width=width,
                color=line.get_color(),
            )
        top.set(
            ylabel="accuracy",
            title=f"{name}: reliability ({ECE_BINS} bins on the top-label probability)",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        top.grid(alpha=0.3)
        top.legend(loc="upper left", fontsize="small")
        bottom.set(xlabel="confidence (top-label probability)", ylabel="texts")
        bottom.grid(alpha=0.3)
        path = directory / f"{_file_stem(name)}_reliability.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        written.append(path)

        best = report.best_config(name)
        if best is None:
            continue
        labels = best.labels
        n = len(labels)
        side = min(max(5.0, 0.22 * n + 3), 20.0)
        figure = Figure(figsize=(side + 1, side))
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        # Colour is the share of each true label (rows sum to 1), so rare labels show as
        # clearly as common ones; the numbers are counts.
        shares = [[c / (sum(row) or 1) for c in row] for row in best.confusion]
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true label")
        font = 8 if n <= 20 else 6
        upright = n <= 8 and max(map(len, labels)) <= 10
        ax.set_xticks(range(n), labels, rotation=0 if upright else 90, fontsize=font)
        ax.set_yticks(range(n), labels, fontsize=font)
        if n <= 15:
            for i, row in enumerate(best.confusion):
                for j, count in enumerate(row):
                    ax.text(
                        j,
                        i,
                        str(count),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if shares[i][j] > 0.5 else "black",
                    )
        ax.set(
            xlabel="predicted",
            ylabel="true",
            title=f"{name}: {best.config} (accuracy {_pct(best.accuracy)}%)",
        )
        path = directory / f"{_file_stem(name)}_confusion.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        written.append(path)
    return written


# --- command line -----------------------------------------------------------------------------


DESCRIPTION = (
    "Accuracy, macro-F1 and calibration (ECE) of scoring configurations on labeled JSONL "
    'files ({"text": ..., "label": ...} a line), against the peer method first_token:none. '
    "Prints a Markdown table. Exit 0 when every text was answered, 1 when some RPC failed "
    "or the server is unreachable, 2 on bad arguments or input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="FILE.jsonl")
    parser.add_argument("--target", default=DEFAULT_TARGET, help="server address host:port")
    parser.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help="comma list of mode:calibration[:normalization] "
        f"(modes {', '.join(sorted(MODES))}; calibrations {', '.join(sorted(CALIBRATIONS))}; "
        f"normalizations {', '.join(sorted(NORMALIZATIONS))}); first_token:none is always "
        f"the first row (default {DEFAULT_CONFIGS})",
    )
    parser.add_argument(
        "--labels", "-l", nargs="+", help="label set (default: each file's sorted labels)"
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="rows per file: a seeded random sample"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and row order")
    parser.add_argument(
        "--max-chars",
        type=int,
        metavar="C",
        help="cut each text to C characters, for speed (the server truncates to its context "
        "anyway)",
    )
    parser.add_argument("--instruction", "-i", default="", help="task instruction")
    parser.add_argument("--template", default="", help="server prompt template name")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline per request (s)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="K",
        help="texts per request; K > 1 uses ClassifyBatch (needed by batch calibration)",
    )
    parser.add_argument("--report", type=Path, metavar="FILE.json", help="write a JSON report")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def add_command(commands: argparse._SubParsersAction) -> None:
    """Registers `eval` on the `labelprob` command's subparsers."""
    parser = commands.add_parser(
        "eval",
        help="accuracy and calibration of scoring configs on labeled JSONL files",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(run=run_eval)


def _error(message: str) -> None:
    print(f"labelprob eval: error: {message}", file=sys.stderr)


def run_eval(args: argparse.Namespace) -> int:
    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError("--limit must be >= 1")
        if args.max_chars is not None and args.max_chars < 1:
            raise ValueError("--max-chars must be >= 1")
        settings = EvalSettings(
            target=args.target,
            configs=parse_configs(args.configs, args.batch_size),
            instruction=args.instruction,
            template=args.template,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
        settings.validate()
        datasets = [
            load_dataset(
                path,
                name=name,
                labels=args.labels,
                limit=args.limit,
                seed=args.seed,
                max_chars=args.max_chars,
            )
            for path, name in zip(args.inputs, unique_names(args.inputs), strict=True)
        ]
    except (OSError, ValueError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    try:
        report = asyncio.run(evaluate(datasets, settings))
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ServerUnreachable as exc:
        _error(str(exc))
        return EXIT_RPC_ERRORS
    print(format_markdown(report))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if args.plots is not None:
        write_plots(report, args.plots)
    if report.errors:
        codes = Counter[str]()
        for r in report.results:
            codes.update(r.error_codes)
        _error(
            f"{report.errors} classifications got no answer ("
            + ", ".join(f"{k} {v}" for k, v in codes.most_common())
            + "); accuracy is over the answered ones"
        )
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """`labelprob eval` on its own; argv are the command's arguments."""
    parser = argparse.ArgumentParser(prog="labelprob eval", description=DESCRIPTION)
    add_arguments(parser)
    return run_eval(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
