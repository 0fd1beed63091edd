"""How many CPUs this process may use.

`os.cpu_count()` counts the host's cores. In a container limited with `--cpus` (or
Compose's `cpus:`), the kernel enforces a CFS quota instead, and threads sized to the
host's cores queue behind it. This reads the quota of the process's cgroup (v2
`cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, the smallest along the
path up to the root) and the affinity mask (`--cpuset-cpus`, `taskset`), and returns
the smaller.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """CPUs this process can keep busy: the affinity mask, capped by the cgroup CPU quota (at least 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_self_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The CPU quota in CPUs (1.5 for `--cpus 1.5`), or None when there is none or no cgroup to read."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            quotas += [_v2_quota(d) for d in _directories(cgroup_root, path)]
        elif "cpu" in controllers.split(","):  # v1: "4:cpu,cpuacct:/path"
            mount = next((m for m in (cgroup_root / controllers, cgroup_root / "cpu") if m.is_dir()), None)
            if mount is not None:
                quotas += [_v1_quota(d) for d in _directories(mount, path)]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _directories(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory and its parents up to the mount. In a container with its own cgroup
    namespace the path is "/" and the mount is the container's cgroup; without one the host's path
    may not exist under the container's mount, and then the mount itself is the container's."""
    parts = [p for p in path.split("/") if p]
    dirs = [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
