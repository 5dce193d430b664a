"""The request context: one classification request as it moves through the stages."""

from __future__ import annotations

from dataclasses import dataclass

from labelprob.server.classify.prepare import PreparedTask
from labelprob.server.classify.task_prior import EMPTY, PriorKey, PriorSnapshot
from labelprob.server.classify.types import Options, Task
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, Method


@dataclass(frozen=True)
class RequestContext:
    task: Task
    prepared: PreparedTask
    options: Options
    mode: Mode  # concrete: AUTO resolved for these labels
    calibration: Calibration  # resolved for this request (AUTO by batch size and mode)
    method: Method = Method.DIRECT  # resolved: the request's, else the server default
    # ONLINE calibration: where the task's prior is kept, and the prior as the request found it.
    prior_key: PriorKey | None = None
    prior: PriorSnapshot = EMPTY
    label_orders: int = 1  # resolved: the direct read's label orders (2: as sent and reversed)
    # options.label_prior's log shares, added to the final scores; (): labels equally likely.
    log_label_prior: tuple[float, ...] = ()
