"""Running the configurations against a server: `evaluate(datasets, settings)`."""

from __future__ import annotations

import asyncio
import itertools
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from tqdm import tqdm

from labelprob.client.client import DEFAULT_TARGET, AsyncClient, ClassifyParams
from labelprob.tools.evaluation.configs import DEFAULT_CONFIGS, ScoringConfig, parse_configs
from labelprob.tools.evaluation.datasets import Dataset
from labelprob.tools.evaluation.metrics import ECE_BINS
from labelprob.tools.evaluation.report import EvalReport
from labelprob.tools.evaluation.results import (
    ConfigResult,
    Prediction,
    prediction_from,
    summarize,
)
from labelprob.tools.server_info import describe_server

DEFAULT_TIMEOUT_S = 120.0


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
    options = config.options(settings.template)
    # Online calibration learns from what it scores: each (run, dataset, config) starts fresh.
    options.prior_scope = f"labelprob-eval/{uuid.uuid4().hex[:12]}/{dataset.name}/{config.name}"
    if config.label_prior:
        options.label_prior.extend(dataset.file_shares)
    params = ClassifyParams(
        labels=dataset.labels, instruction=settings.instruction, options=options
    )
    per_request = config.texts_per_request(settings.batch_size)
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
                if per_request > 1:
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
        await asyncio.gather(*(one(p) for p in chunks(len(dataset.texts), per_request)))
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
        server=describe_server(info),
        started_at=started_at,
    )
    report.fill_deltas()
    return report
