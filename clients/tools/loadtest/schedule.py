"""Open-loop arrival schedules: constant or Poisson send times."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

ARRIVALS = ("constant", "poisson")


def arrival_offsets(rate: float, arrival: str = "constant", seed: int = 0) -> Iterator[float]:
    """Endless send times in seconds from the start: first at 0, then every 1/rate
    (constant) or after exponential gaps of mean 1/rate (poisson, seeded)."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    if arrival == "constant":
        for i in itertools.count():
            yield i / rate
    elif arrival == "poisson":
        rng = random.Random(seed)
        t = 0.0
        while True:
            yield t
            t += rng.expovariate(rate)
    else:
        raise ValueError(f"unknown arrival {arrival!r}; one of {', '.join(ARRIVALS)}")


def schedule(
    rate: float,
    arrival: str = "constant",
    seed: int = 0,
    *,
    count: int | None = None,
    horizon_s: float | None = None,
) -> list[float]:
    """The first send times: at most `count`, all before `horizon_s`. One bound is required."""
    if count is None and horizon_s is None:
        raise ValueError("schedule needs a count or a horizon")
    times: list[float] = []
    for t in arrival_offsets(rate, arrival, seed):
        if (count is not None and len(times) >= count) or (
            horizon_s is not None and t >= horizon_s
        ):
            break
        times.append(t)
    return times
