"""How much CPU the process may really use: its affinity mask and its cgroup CPU quota.

A container with a CPU limit of 2 on a 64-core node has all 64 cores in its affinity mask
but 2 CPUs' worth of time per scheduling period (CFS quota). One pinned OpenMP thread per
core would then be throttled most of every period, so the quota decides the thread count.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class CgroupFiles:
    """Where to read cgroups from (injectable so tests can use fake trees)."""

    root: Path = CGROUP_ROOT
    membership: Path = PROC_SELF_CGROUP


SYSTEM = CgroupFiles()


@dataclass(frozen=True)
class CpuBudget:
    cores: tuple[int, ...]  # the affinity mask
    quota: float | None  # CPUs' worth of cgroup quota; None: no quota

    @property
    def threads(self) -> int:
        """Compute threads: the cores, or the whole CPUs of a smaller quota (at least one)."""
        if self.quota is None:
            return len(self.cores)
        return max(1, min(len(self.cores), math.floor(self.quota)))

    @property
    def pin(self) -> bool:
        """Pin one thread per core only when the quota covers every core."""
        return self.quota is None or self.quota >= len(self.cores)


def cpu_budget(files: CgroupFiles = SYSTEM) -> CpuBudget:
    return CpuBudget(tuple(sorted(os.sched_getaffinity(0))), cgroup_quota(files))


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max`: "<quota> <period>" in microseconds, quota "max" for none."""
    quota, _, period = text.strip().partition(" ")
    if quota == "max":
        return None
    return int(quota) / int(period or 100_000)


def parse_cfs(quota_us: str, period_us: str) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; a negative quota means none."""
    quota = int(quota_us.strip())
    if quota < 0:
        return None
    return quota / int(period_us.strip())


def memberships(files: CgroupFiles) -> dict[str, str]:
    """Controller list -> cgroup path, from /proc/self/cgroup ("" is the v2 hierarchy)."""
    try:
        lines = files.membership.read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        found[controllers] = path
    return found


def own_and_ancestors(mount: Path, path: str) -> list[Path]:
    """The process's cgroup folder and its parents up to the mount; a limit on any applies.

    Inside a container the mount often is the container's own cgroup while the path names
    it from the host's view: then only the mount itself exists, and it is the one to read.
    """
    folders = [mount]
    relative = Path(path.lstrip("/"))
    if ".." in relative.parts:  # outside this cgroup namespace: only the mount is ours
        relative = Path(".")
    while relative != Path("."):
        folders.append(mount / relative)
        relative = relative.parent
    return [folder for folder in folders if folder.is_dir()]


def read_limits(folders: list[Path], names: tuple[str, ...]) -> list[tuple[str, ...]]:
    found = []
    for folder in folders:
        try:
            found.append(tuple((folder / name).read_text() for name in names))
        except OSError:
            continue
    return found


def cgroup_quota(files: CgroupFiles = SYSTEM) -> float | None:
    """The tightest CPU quota on the process's cgroup and its ancestors, in CPUs, or None."""
    groups = memberships(files)
    quotas: list[float | None]
    if (files.root / "cgroup.controllers").is_file():  # unified (v2) hierarchy
        folders = own_and_ancestors(files.root, groups.get("", "/"))
        quotas = [parse_cpu_max(text) for (text,) in read_limits(folders, ("cpu.max",))]
    else:  # v1: the cpu controller's own mount, named after its controller list
        controllers = next((c for c in groups if "cpu" in c.split(",")), "cpu")
        mount = files.root / controllers
        if not mount.is_dir():
            mount = files.root / "cpu"
        folders = own_and_ancestors(mount, groups.get(controllers, "/"))
        names = ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        quotas = [parse_cfs(quota, period) for quota, period in read_limits(folders, names)]
    limits = [q for q in quotas if q is not None]
    return min(limits) if limits else None
