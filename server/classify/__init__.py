"""The classification path between the wire layer and the engine: prompt, reads, scores."""

from labelprob.server.classify.classifier import Classifier
from labelprob.server.classify.prepare import FittedText, PreparedTask
from labelprob.server.classify.types import (
    Classification,
    CompletionRequest,
    LabelResult,
    Options,
    ReadEngine,
    ScoredCompletion,
    Task,
    TokenScore,
    Usage,
)

__all__ = [
    "Classification",
    "Classifier",
    "CompletionRequest",
    "FittedText",
    "LabelResult",
    "Options",
    "PreparedTask",
    "ReadEngine",
    "ScoredCompletion",
    "Task",
    "TokenScore",
    "Usage",
]
