"""`labelprob loadtest`: closed- or open-loop load against a labelprob server, with an SLO verdict.

Closed loop: N callers, each sends its next request when the previous one answers.
Open loop: requests leave on a schedule (constant or Poisson arrivals) whether or not
earlier ones answered, and latency counts from the *scheduled* send time, so a slow
server cannot hide its queueing delay by slowing the sender (coordinated omission).

The pieces are small and pure where they can be (`schedule`, `workload`, the `recorder`,
SLO evaluation and report building in `report`) so they test without a server;
`runner.run_load(LoadConfig) -> LoadReport` is the async API the benchmark reuses.
"""

from labelprob.tools.loadtest.command import main

__all__ = ["main"]
