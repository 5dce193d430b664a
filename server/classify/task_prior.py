"""The online prior: each task's mean log-normalized label scores over the texts scored so far.

Online calibration (``Calibration.ONLINE``) moves a text's contextually calibrated scores
towards its own scores minus this prior: the label bias the model shows on the task's real
texts. A prior is kept per task, read mode, length normalization, tenant (cache salt) and
caller-chosen scope, so tenants never see each other's traffic and callers can keep streams
apart. It lives in this process only: a restarted or another replica starts from nothing,
which is where contextual calibration alone applies.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from labelprob.server import scoring
from labelprob.server.classify.types import Task
from labelprob.server.labels import Mode
from labelprob.server.scoring import LengthNorm

# Tasks whose priors are kept; the least recently used go first.
MAX_TASK_PRIORS = 4096
# A running mean over the first WINDOW texts, then an exponential moving average with the
# same weight for a new text: a prior keeps following traffic that drifts.
WINDOW = 1024


@dataclass(frozen=True)
class PriorKey:
    task: Task
    mode: Mode  # the exact read mode (PRUNED shares FULL's)
    length_norm: LengthNorm
    cache_salt: str | None
    scope: str


@dataclass(frozen=True)
class PriorSnapshot:
    """The prior as a request found it: what its texts are calibrated against."""

    mean: tuple[float, ...] | None
    seen: int

    def calibrated(
        self,
        scores: Sequence[float],
        contextual: Sequence[float],
        strength: float = scoring.ONLINE_PRIOR_STRENGTH,
    ) -> list[float]:
        return scoring.online_calibrated(scores, contextual, self.mean, self.seen, strength)

    def log_prior(self, content_free_log_prior: Sequence[float]) -> list[float]:
        return scoring.online_log_prior(content_free_log_prior, self.mean, self.seen)


EMPTY = PriorSnapshot(None, 0)


class TaskPriors:
    """Per-task priors, bounded in number; single-threaded (the server's event loop)."""

    def __init__(self, max_tasks: int = MAX_TASK_PRIORS, window: int = WINDOW) -> None:
        self.max_tasks = max_tasks
        self.window = window
        self._priors: OrderedDict[PriorKey, PriorSnapshot] = OrderedDict()

    def __len__(self) -> int:
        return len(self._priors)

    def snapshot(self, key: PriorKey) -> PriorSnapshot:
        prior = self._priors.get(key)
        if prior is None:
            return EMPTY
        self._priors.move_to_end(key)
        return prior

    def record(self, key: PriorKey, label_scores: Iterable[Sequence[float]]) -> None:
        """Adds texts' label scores (any scale: they are log-normalized here)."""
        prior = self._priors.get(key, EMPTY)
        mean = list(prior.mean) if prior.mean is not None else None
        seen = prior.seen
        for scores in label_scores:
            own = scoring.log_normalize(scores)
            seen += 1
            if mean is None:
                mean = own
                continue
            step = 1.0 / min(seen, self.window)
            mean = [m + step * (x - m) for m, x in zip(mean, own, strict=True)]
        if mean is None:
            return
        self._priors[key] = PriorSnapshot(tuple(mean), seen)
        self._priors.move_to_end(key)
        while len(self._priors) > self.max_tasks:
            self._priors.popitem(last=False)
