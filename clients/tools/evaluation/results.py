"""The result of one scoring configuration on one dataset."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labelprob.tools.evaluation.metrics import (
    accuracy,
    calibrated_ece,
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    mean,
    per_label_scores,
    reliability_bins,
    tempered_log_loss,
    tempered_log_probs,
)
from labelprob.tools.evaluation.selective import HALF, accuracy_at_coverage, confidence_auroc
from labelprob.tools.server_info import enum_name
from labelprob.v1 import classifier_pb2 as pb


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
    probabilities: tuple[float, ...] = ()  # every label's, in the labels' order


def prediction_from(result: pb.Classification) -> Prediction:
    top = next((lb for lb in result.labels if lb.name == result.top_label), None)
    return Prediction(
        probabilities=tuple(lb.probability for lb in result.labels),
        label=result.top_label,
        confidence=top.probability if top is not None else 0.0,
        label_mass=result.label_mass,
        entropy=result.entropy,
        truncated=result.truncated,
        mode=enum_name(pb.ScoringMode, result.mode, "SCORING_MODE_"),
        calibration=enum_name(pb.Calibration, result.calibration, "CALIBRATION_"),
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
    ece_floor: float | None  # a calibrated model's ECE on these confidences: sampling noise
    # How well the confidences rank the answers (selective.py): for abstention and cascades.
    confidence_auroc: float | None
    accuracy_at_half: float | None  # on the more confident half of the answered texts
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
    # The `temperature` of lowest log-loss on these texts (in sample), for a caller to
    # send on its own traffic; None where it cannot be fitted.
    temperature_fit: TemperatureFit | None = None

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
            "ece_floor": self.ece_floor,
            "confidence_auroc": self.confidence_auroc,
            "accuracy_at_half_coverage": self.accuracy_at_half,
            "temperature_fit": None
            if self.temperature_fit is None
            else dataclasses.asdict(self.temperature_fit),
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
        ece_floor=calibrated_ece(confidences),
        confidence_auroc=confidence_auroc(confidences, correct),
        accuracy_at_half=accuracy_at_coverage(confidences, correct, HALF),
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
        temperature_fit=temperature_fit(labels, pairs),
    )


@dataclass(frozen=True)
class TemperatureFit:
    """The temperature of lowest log-loss on a config's answered texts, and what it does to
    their log-loss and ECE (in sample: judge it on other rows, sent as ``%T``)."""

    temperature: float
    texts: int
    log_loss: float  # as answered (T 1)
    fitted_log_loss: float
    ece: float
    fitted_ece: float


def temperature_fit(
    labels: Sequence[str], pairs: Sequence[tuple[str, Prediction]]
) -> TemperatureFit | None:
    """The fit over the answered texts that carry every label's probability."""
    rows = [
        (p.probabilities, labels.index(t))
        for t, p in pairs
        if t in labels and len(p.probabilities) == len(labels)
    ]
    probabilities, truths = [r for r, _ in rows], [i for _, i in rows]
    temperature = fit_temperature(probabilities, truths)
    if temperature is None:
        return None

    # A temperature keeps each text's top label: which texts are right does not change.
    correct = [row.index(max(row)) == truth for row, truth in rows]

    def ece_at(t: float) -> float:
        tops = [math.exp(max(tempered_log_probs(row, t))) for row in probabilities]
        return expected_calibration_error(tops, correct) or 0.0

    return TemperatureFit(
        temperature=temperature,
        texts=len(rows),
        log_loss=tempered_log_loss(probabilities, truths, 1.0),
        fitted_log_loss=tempered_log_loss(probabilities, truths, temperature),
        ece=ece_at(1.0),
        fitted_ece=ece_at(temperature),
    )
