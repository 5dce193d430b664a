"""CPU time of process groups (psutil), peak memory of a process, and waiting for a quiet
machine."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from labelprob.tools.bench.settings import log

SETTLED_BUSY_SHARE = 0.15


@dataclass
class Cpu:
    """CPU seconds (user + system) a process group spent while measured. CPU time is
    less skewed by other load than wall time, and it shows where the work went."""

    front_s: float = 0.0  # the group's leader: the server's own process, or LLM's
    engine_s: float = 0.0  # the rest of the group: vLLM's EngineCore and worker
    # The bench's own process sending the requests (gRPC or HTTP callers), on the same
    # cores; None where the contender's front end is its own caller (LLM.generate).
    caller_s: float | None = None


def group_cpu_s(pgid: int) -> dict[int, float]:
    """CPU seconds of every live process of a process group, by pid."""
    cpu = {}
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid:
                times = process.cpu_times()
                cpu[process.pid] = times.user + times.system
        except (psutil.Error, OSError):
            continue  # exited meanwhile
    return cpu


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident set size so far (Linux's VmHWM), in MiB; psutil does
    not report the peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # reported in kB
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def own_cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


@contextlib.contextmanager
def cpu_meter(pgid: int, *, caller: bool = False) -> Iterator[Cpu]:
    """CPU the process group spends inside the block; with ``caller``, also this process's
    own (the load it generates)."""
    cpu = Cpu()
    before = group_cpu_s(pgid)
    caller_before = own_cpu_s()
    yield cpu
    spent = {pid: s - before.get(pid, 0.0) for pid, s in group_cpu_s(pgid).items()}
    cpu.front_s = spent.pop(pgid, 0.0)
    cpu.engine_s = sum(spent.values())
    if caller:
        cpu.caller_s = own_cpu_s() - caller_before


def settle(timeout_s: float = 120.0, sample_s: float = 3.0) -> None:
    """Waits (up to a bound) for the engines' start-up compilation storm to die down: the
    one-minute load average lags, so the busy share is sampled over a few seconds."""
    deadline = time.monotonic() + timeout_s
    # cpu_percent counts idle and iowait time as not busy.
    while (busy := psutil.cpu_percent(interval=sample_s) / 100) > SETTLED_BUSY_SHARE:
        if time.monotonic() >= deadline:
            break
        log(f"waiting for the machine to settle: {busy:.0%} busy")
