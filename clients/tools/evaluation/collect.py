"""Collection of selection rows: every per-label score a pool is made of, read once per
text from a running server and kept as JSONL (see selection.py for the scan)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labelprob.client import AsyncClient, ClassifyParams
from labelprob.server import scoring
from labelprob.tools.evaluation.configs import PEER
from labelprob.tools.evaluation.datasets import load_dataset
from labelprob.v1 import classifier_pb2 as pb


@dataclass(frozen=True)
class Row:
    """One selection text: its truth and every per-label score a pool is made of."""

    dataset: str
    text: str
    truth: str
    labels: list[str]
    tokens: int  # the text's tokens: what the channel's log-prob sums over
    peer: list[float]
    direct: list[float]  # raw log-probs
    calibrated: list[float]  # contextually calibrated
    channel: list[float]
    # Per prompt layout (a server template name): the direct read, "raw" and "calibrated".
    layouts: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # Calibrated online: computed from the rows before it (online_calibrated), not collected.
    online: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Collection:
    """Which rows to collect, and how: the selection rows of each data set."""

    target: str
    paths: Sequence[Path]
    count_tokens: Callable[[str], int]
    limit: int
    skip: int
    max_chars: int
    concurrency: int
    layouts: Sequence[str] = ()  # server template names whose direct reads are collected too
    reversed_order: bool = False  # also read the labels listed in reverse (layouts below)


# The direct read calibrated (its label results carry the raw log-prob and the calibrated
# score), and the channel alone.
DIRECT = pb.ScoringOptions(calibration=pb.CALIBRATION_CONTEXTUAL, method=pb.SCORING_METHOD_DIRECT)
CHANNEL = pb.ScoringOptions(calibration=pb.CALIBRATION_NONE, method=pb.SCORING_METHOD_CHANNEL)
# With --reversed: the direct read with the label list reversed, and the mean of both orders.
REVERSED, BOTH_ORDERS = "labels reversed", "both label orders"


def direct_scores(result: pb.Classification, labels: Sequence[str]) -> dict[str, list[float]]:
    """A direct read's raw and calibrated scores, in the order of ``labels``."""
    by_name = {lb.name: lb for lb in result.labels}
    return {
        "raw": [by_name[name].logprob for name in labels],
        "calibrated": [by_name[name].score for name in labels],
    }


async def read_layouts(
    client: AsyncClient,
    spec: Collection,
    text: str,
    labels: list[str],
    forward: dict[str, list[float]],
) -> dict[str, dict[str, list[float]]]:
    """The direct reads of the other layouts (and label orders) asked for."""
    layouts = {}
    for layout in spec.layouts:
        options = pb.ScoringOptions(
            calibration=pb.CALIBRATION_CONTEXTUAL, method=pb.SCORING_METHOD_DIRECT, template=layout
        )
        read = await client.classify(text, ClassifyParams(labels, options=options))
        layouts[layout] = direct_scores(read, labels)
    if spec.reversed_order:
        backward = await client.classify(text, ClassifyParams(labels[::-1], options=DIRECT))
        layouts[REVERSED] = direct_scores(backward, labels)
        layouts[BOTH_ORDERS] = {
            kind: scoring.mean_of_orders(scores, layouts[REVERSED][kind])
            for kind, scores in forward.items()
        }
    return layouts


async def collect_rows(spec: Collection) -> list[Row]:
    """Three requests a text (the peer's, the direct read, the channel), and one more for
    each other layout or label order asked for."""
    gate = asyncio.Semaphore(spec.concurrency)
    async with AsyncClient(spec.target, timeout=900) as client:

        async def one(name: str, text: str, truth: str, labels: list[str]) -> Row:
            async with gate:
                peer = await client.classify(text, ClassifyParams(labels, options=PEER.options()))
                direct = await client.classify(text, ClassifyParams(labels, options=DIRECT))
                channel = await client.classify(text, ClassifyParams(labels, options=CHANNEL))
                forward = direct_scores(direct, labels)
                layouts = await read_layouts(client, spec, text, labels, forward)
            return Row(
                name,
                text,
                truth,
                labels,
                tokens=spec.count_tokens(text),
                peer=[lb.logprob for lb in peer.labels],
                direct=forward["raw"],
                calibrated=forward["calibrated"],
                channel=[lb.channel_logprob for lb in channel.labels],
                layouts=layouts,
            )

        jobs = []
        for path in spec.paths:
            data = load_dataset(path, limit=spec.limit, skip=spec.skip, max_chars=spec.max_chars)
            rows = zip(data.texts, data.truths, strict=True)
            jobs += [one(data.name, text, truth, data.labels) for text, truth in rows]
        return list(await asyncio.gather(*jobs))


def read_rows(path: Path) -> dict[str, list[Row]]:
    by_set: dict[str, list[Row]] = {}
    for line in path.read_text().splitlines():
        row = Row(**json.loads(line))
        by_set.setdefault(row.dataset, []).append(row)
    return by_set


def rows_by_set(paths: Sequence[Path], keep: Callable[[Row], bool]) -> dict[str, list[Row]]:
    """The rows of the files that ``keep`` accepts, by data set (sets with none left out)."""
    by_set: dict[str, list[Row]] = {}
    for path in paths:
        for name, rows in read_rows(path).items():
            kept = [r for r in rows if keep(r)]
            if kept:
                by_set.setdefault(name, []).extend(kept)
    return by_set
