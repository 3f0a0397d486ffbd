"""What this machine really offers a job: the CPUs it may use.

``os.cpu_count()`` counts the host's CPUs, not the ones this process may run on: in a
container with a CPU quota, or under ``taskset``, it overstates them, and pools sized from it
(torch's intra-op threads x study workers x prepare workers) oversubscribe the cores, which
costs about twice the CPU time for the same work on a 2-core machine. Every pool in ferwild
is sized from :func:`available_cpus` instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit", "limit_threads_to_available_cpus"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when unlimited/unknown.

    Reads cgroup v2 ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"), else cgroup v1
    ``cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` (quota -1: unlimited).
    """
    try:
        text = (root / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max" and float(text[1]) > 0:
            return float(text[0]) / float(text[1])
        if text:
            return None
    except (OSError, ValueError):
        pass
    try:
        quota = float((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = float((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota; at least 1.

    A fractional quota is rounded down (1.5 CPUs -> 1): a second busy thread on half a CPU is
    throttled, not faster.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS / Windows
        count = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        count = min(count, math.floor(quota))
    return max(1, count)


def limit_threads_to_available_cpus() -> int:
    """Cap OpenMP/MKL thread pools (torch, numpy) at :func:`available_cpus` unless the user set them.

    Works through the environment (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``), so it must run
    before torch is imported; worker processes inherit it. Returns the thread count in force.
    """
    cpus = available_cpus()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(cpus))
    return int(os.environ["OMP_NUM_THREADS"]) if os.environ["OMP_NUM_THREADS"].isdigit() else cpus
