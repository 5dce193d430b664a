"""Read admission: a bound on the engine reads in flight, so overload is refused, not queued."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from labelprob.server.errors import Overloaded


class ReadBudget:
    """Counts engine reads admitted and not finished, against ``limit`` (0: unbounded)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def _admit(self, n_reads: int) -> None:
        """Admits ``n_reads``, or raises Overloaded when the bound would be passed.

        A request larger than the whole bound still runs when nothing else is in flight.
        """
        if n_reads and self.in_flight + n_reads > self.limit > 0 < self.in_flight:
            raise Overloaded(f"{self.in_flight} engine reads in flight; limit {self.limit}")
        self.in_flight += n_reads

    @contextlib.contextmanager
    def hold(self, n_reads: int) -> Iterator[None]:
        """Holds ``n_reads`` places in the bounded queue of engine reads while inside."""
        self._admit(n_reads)
        try:
            yield
        finally:
            self.in_flight -= n_reads
