"""What a classification request carries besides its text(s): labels, instruction, examples,
scoring options; and the flag spellings of the scoring enums."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from labelprob.v1 import classifier_pb2 as pb

LabelLike = str | tuple[str, str] | pb.Label
MODES = {
    "auto": pb.SCORING_MODE_AUTO,
    "first_token": pb.SCORING_MODE_FIRST_TOKEN,
    "full": pb.SCORING_MODE_FULL,
    "pruned": pb.SCORING_MODE_PRUNED,
}
CALIBRATIONS = {
    "default": pb.CALIBRATION_UNSPECIFIED,
    "none": pb.CALIBRATION_NONE,
    "contextual": pb.CALIBRATION_CONTEXTUAL,
    "domain_pmi": pb.CALIBRATION_DOMAIN_PMI,
    "batch": pb.CALIBRATION_BATCH,
    "auto": pb.CALIBRATION_AUTO,
    "online": pb.CALIBRATION_ONLINE,
}

METHODS = {
    "default": pb.SCORING_METHOD_UNSPECIFIED,
    "direct": pb.SCORING_METHOD_DIRECT,
    "channel": pb.SCORING_METHOD_CHANNEL,
    "combined": pb.SCORING_METHOD_COMBINED,
}


def to_label(label: LabelLike) -> pb.Label:
    """A label from a name, a (name, description) pair, or a pb.Label."""
    if isinstance(label, pb.Label):
        return label
    if isinstance(label, tuple):
        return pb.Label(name=label[0], description=label[1])
    return pb.Label(name=label)


@dataclass
class ClassifyParams:
    """Everything of a request but its text(s)."""

    labels: Sequence[LabelLike]
    instruction: str = ""
    examples: Sequence[tuple[str, str]] = ()
    options: pb.ScoringOptions = field(default_factory=pb.ScoringOptions)

    def request(self, text: str) -> pb.ClassifyRequest:
        return pb.ClassifyRequest(
            text=text,
            labels=[to_label(lb) for lb in self.labels],
            instruction=self.instruction,
            examples=[pb.Example(text=t, label=lb) for t, lb in self.examples],
            options=self.options,
        )

    def batch_request(self, texts: Iterable[str]) -> pb.ClassifyBatchRequest:
        return pb.ClassifyBatchRequest(
            texts=list(texts),
            labels=[to_label(lb) for lb in self.labels],
            instruction=self.instruction,
            examples=[pb.Example(text=t, label=lb) for t, lb in self.examples],
            options=self.options,
        )
