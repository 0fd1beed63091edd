"""available_cpus(): the affinity mask capped by the cgroup CPU quota, read from fake cgroup
trees laid out as the kernel does (v2 and v1), and from this machine's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.cpus import available_cpus, cgroup_cpu_quota
from service.settings import Settings

AFFINITY = len(os.sched_getaffinity(0))


def v2(tmp_path: Path, cpu_max: dict[str, str], own: str = "/") -> tuple[Path, Path]:
    """A cgroup v2 mount with `cpu.max` in the named directories; the process sits in `own`."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / own.strip("/")).mkdir(parents=True, exist_ok=True)
    for directory, value in cpu_max.items():
        (root / directory.strip("/")).mkdir(parents=True, exist_ok=True)
        (root / directory.strip("/") / "cpu.max").write_text(value + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def v1(tmp_path: Path, quota: int, period: int, own: str = "/", controllers: str = "cpu,cpuacct") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    directory = root / controllers / own.strip("/")
    directory.mkdir(parents=True)
    (directory / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (directory / "cpu.cfs_period_us").write_text(f"{period}\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"12:memory:{own}\n4:{controllers}:{own}\n0::/\n")
    return root, proc


@pytest.mark.parametrize(
    ("cpu_max", "quota"),
    [("max 100000", None), ("200000 100000", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5)],
)
def test_cgroup_v2_quota(tmp_path: Path, cpu_max: str, quota: float | None) -> None:
    root, proc = v2(tmp_path, {"/": cpu_max})
    assert cgroup_cpu_quota(root, proc) == quota
    expected = AFFINITY if quota is None else min(AFFINITY, max(1, -(-quota // 1)))
    assert available_cpus(root, proc) == expected


def test_cgroup_v2_the_smallest_quota_on_the_path_counts(tmp_path: Path) -> None:
    root, proc = v2(
        tmp_path, {"/system.slice": "100000 100000", "/system.slice/app": "max 100000"}, own="/system.slice/app"
    )
    assert cgroup_cpu_quota(root, proc) == 1.0
    assert available_cpus(root, proc) == 1


@pytest.mark.parametrize(
    ("quota", "period", "expected"), [(-1, 100000, None), (300000, 100000, 3.0), (25000, 50000, 0.5)]
)
def test_cgroup_v1_quota(tmp_path: Path, quota: int, period: int, expected: float | None) -> None:
    root, proc = v1(tmp_path, quota, period)
    assert cgroup_cpu_quota(root, proc) == expected


def test_cgroup_v1_host_path_missing_in_the_container_reads_the_mount(tmp_path: Path) -> None:
    """Without a cgroup namespace /proc/self/cgroup names the host's path, which the container's
    mount does not have: the mount's own files are the container's."""
    root, proc = v1(tmp_path, 100000, 100000)
    proc.write_text("4:cpu,cpuacct:/docker/0123abcd\n")
    assert cgroup_cpu_quota(root, proc) == 1.0
    assert available_cpus(root, proc) == 1


def test_no_cgroup_files_leaves_the_affinity(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "none", tmp_path / "none") is None
    assert available_cpus(tmp_path / "none", tmp_path / "none") == AFFINITY


def test_this_machine_and_a_narrowed_affinity() -> None:
    quota = cgroup_cpu_quota()
    assert available_cpus() == (AFFINITY if quota is None else min(AFFINITY, max(1, -(-quota // 1))))
    # A process pinned to one core (taskset, --cpuset-cpus) gets 1, whatever the host has.
    one = min(os.sched_getaffinity(0))
    code = f"import os; os.sched_setaffinity(0, {{{one}}}); from service.cpus import available_cpus; print(available_cpus())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "1"


def test_settings_share_out_the_available_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.settings.available_cpus", lambda: 6)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.inference_jobs == 6 and settings.onnx_threads == 1
    settings = Settings(_env_file=None, inference_threads=2)  # type: ignore[call-arg]
    assert settings.inference_jobs == 2 and settings.onnx_threads == 3
