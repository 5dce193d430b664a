"""The cgroup CPU quota, read from fake cgroup v1 and v2 trees, and the thread plan it gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelprob.server.cpu_quota import (
    CgroupFiles,
    CpuBudget,
    cgroup_quota,
    parse_cfs,
    parse_cpu_max,
)


def v2_tree(tmp_path: Path, limits: dict[str, str], own: str = "/") -> CgroupFiles:
    """A unified hierarchy: `limits` maps a cgroup path to its cpu.max content."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for path, cpu_max in limits.items():
        folder = root / path.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(cpu_max + "\n")
    membership = tmp_path / "self-cgroup"
    membership.write_text(f"0::{own}\n")
    return CgroupFiles(root, membership)


def v1_tree(
    tmp_path: Path,
    limits: dict[str, tuple[int, int]],
    own: str = "/",
    controllers: str = "cpu,cpuacct",
) -> CgroupFiles:
    """A v1 hierarchy: `limits` maps a cgroup path to (cfs_quota_us, cfs_period_us)."""
    root = tmp_path / "cgroup"
    mount = root / controllers
    mount.mkdir(parents=True)
    for path, (quota, period) in limits.items():
        folder = mount / path.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    membership = tmp_path / "self-cgroup"
    membership.write_text(
        f"12:memory:/elsewhere\n4:{controllers}:{own}\n1:name=systemd:{own}\n0::{own}\n"
    )
    return CgroupFiles(root, membership)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("200000 100000", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5), ("max 100000", None)],
)
def test_parse_cpu_max(text: str, cpus: float | None) -> None:
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [("400000", "100000", 4.0), ("25000", "50000", 0.5), ("-1", "100000", None)],
)
def test_parse_cfs(quota: str, period: str, cpus: float | None) -> None:
    assert parse_cfs(quota, period) == cpus


def test_v2_container_limit(tmp_path: Path) -> None:
    # A pod with limits.cpu "2" in its own cgroup namespace: /proc/self/cgroup says "0::/".
    assert cgroup_quota(v2_tree(tmp_path, {"/": "200000 100000"})) == 2.0


def test_v2_no_quota(tmp_path: Path) -> None:
    assert cgroup_quota(v2_tree(tmp_path, {"/": "max 100000"})) is None


def test_v2_tightest_of_own_group_and_ancestors(tmp_path: Path) -> None:
    files = v2_tree(
        tmp_path,
        {"/kubepods": "max 100000", "/kubepods/pod1": "150000 100000", "/kubepods/pod1/c": "max"},
        own="/kubepods/pod1/c",
    )
    assert cgroup_quota(files) == 1.5


def test_v2_host_path_not_visible_reads_the_mount(tmp_path: Path) -> None:
    # No cgroup namespace: the path is the host's view, the mount is the container's group.
    files = v2_tree(tmp_path, {"/": "300000 100000"}, own="/kubepods/burstable/pod9/abc")
    assert cgroup_quota(files) == 3.0


def test_v1_quota(tmp_path: Path) -> None:
    assert cgroup_quota(v1_tree(tmp_path, {"/": (250000, 100000)})) == 2.5


def test_v1_no_quota(tmp_path: Path) -> None:
    assert cgroup_quota(v1_tree(tmp_path, {"/": (-1, 100000)})) is None


def test_v1_separate_cpu_mount_and_nested_groups(tmp_path: Path) -> None:
    files = v1_tree(
        tmp_path,
        {"/": (-1, 100000), "/docker": (-1, 100000), "/docker/abc": (100000, 100000)},
        own="/docker/abc",
        controllers="cpu",
    )
    assert cgroup_quota(files) == 1.0


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    files = CgroupFiles(tmp_path / "missing", tmp_path / "missing-self-cgroup")
    assert cgroup_quota(files) is None


@pytest.mark.parametrize(
    ("cores", "quota", "threads", "pin"),
    [
        (4, None, 4, True),  # no quota: one pinned thread per core
        (64, 2.0, 2, False),  # limit 2 on a 64-core node: 2 threads, unpinned
        (4, 1.5, 1, False),  # fractional quota: whole CPUs only, never oversubscribed
        (4, 0.5, 1, False),  # below one CPU: still one thread
        (2, 8.0, 2, True),  # quota above the affinity mask: the cores decide
        (4, 4.0, 4, True),
    ],
)
def test_budget(cores: int, quota: float | None, threads: int, pin: bool) -> None:
    budget = CpuBudget(tuple(range(cores)), quota)
    assert (budget.threads, budget.pin) == (threads, pin)
