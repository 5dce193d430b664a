"""One load test's settings and their validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labelprob.client.params import CALIBRATIONS, METHODS, MODES
from labelprob.tools.loadtest.schedule import ARRIVALS
from labelprob.tools.loadtest.workload import Workload


@dataclass
class LoadConfig:
    """One load test. Closed loop unless `rate` is set; stops after `duration_s` or
    `requests` measured requests, whichever comes first (at least one is required)."""

    target: str
    workload: Workload
    concurrency: int = 1
    rate: float | None = None
    arrival: str = "constant"
    max_outstanding: int = 1000
    warmup_s: float = 0.0
    duration_s: float | None = None
    requests: int | None = None
    batch_size: int = 1
    mode: str = "auto"
    calibration: str = "default"
    method: str = "default"
    channel_shortlist: int = 0  # 0: the server's default
    instruction: str = ""
    template: str = ""
    timeout_s: float = 30.0
    channels: int = 1
    seed: int = 0
    progress: bool = False
    slo_p99_ms: float | None = None
    slo_error_rate: float | None = None

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        checks = [
            (len(set(self.workload.labels)) >= 2, "need at least 2 distinct labels"),
            (self.workload.texts != [], "the workload has no texts"),
            (self.concurrency >= 1, "--concurrency must be >= 1"),
            (self.rate is None or self.rate > 0, "--rate must be > 0"),
            (self.arrival in ARRIVALS, f"--arrival must be one of {', '.join(ARRIVALS)}"),
            (self.max_outstanding >= 1, "--max-outstanding must be >= 1"),
            (self.warmup_s >= 0, "--warmup must be >= 0"),
            (self.duration_s is not None or self.requests is not None,
             "give --duration or --requests"),
            (self.duration_s is None or self.duration_s > 0, "--duration must be > 0"),
            (self.requests is None or self.requests >= 1, "--requests must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.mode in MODES, f"--mode must be one of {', '.join(sorted(MODES))}"),
            (self.calibration in CALIBRATIONS,
             f"--calibration must be one of {', '.join(sorted(CALIBRATIONS))}"),
            (self.method in METHODS, f"--method must be one of {', '.join(sorted(METHODS))}"),
            (self.channel_shortlist >= 0, "--channel-shortlist must be >= 0"),
            (self.timeout_s > 0, "--timeout must be > 0"),
            (self.channels >= 1, "--channels must be >= 1"),
            (self.slo_p99_ms is None or self.slo_p99_ms > 0, "--slo-p99-ms must be > 0"),
            (self.slo_error_rate is None or 0 <= self.slo_error_rate <= 1,
             "--slo-error-rate must be in [0, 1]"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "loop": "open" if self.open_loop else "closed",
            "concurrency": None if self.open_loop else self.concurrency,
            "rate": self.rate,
            "arrival": self.arrival if self.open_loop else None,
            "max_outstanding": self.max_outstanding if self.open_loop else None,
            "warmup_s": self.warmup_s,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "batch_size": self.batch_size,
            "mode": self.mode,
            "calibration": self.calibration,
            "method": self.method,
            "channel_shortlist": self.channel_shortlist,
            "instruction": self.instruction,
            "template": self.template,
            "timeout_s": self.timeout_s,
            "channels": self.channels,
            "seed": self.seed,
            "slo_p99_ms": self.slo_p99_ms,
            "slo_error_rate": self.slo_error_rate,
            "workload": self.workload.describe(),
        }
