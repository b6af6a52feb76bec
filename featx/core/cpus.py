"""How many CPU cores this process may really use: affinity and the cgroup CPU quota.

``os.cpu_count()`` counts the host's cores; in a container limited by a cgroup quota
or a CPU set it overstates what the process gets, and sizing loader workers from it
oversubscribes the cores (on 2 cores, two torch processes with 2 threads each ran ~7x
slower than one at a time). ``--workers auto`` is sized from :func:`usable_cpus`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cpus", "cgroup_cpu_limit", "auto_workers", "IN_PROCESS_MAX_CORES"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path | str = CGROUP_ROOT) -> float | None:
    """The CPU quota in cores from cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``; None when unlimited."""
    root = Path(root)
    v2 = _read(root / "cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max":
            try:
                return int(quota) / int(period or 100000)
            except (ValueError, ZeroDivisionError):
                return None
        return None
    for base in (root / "cpu", root / "cpu,cpuacct", root):
        quota, period = _read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us")
        if quota is None or period is None:
            continue
        try:
            q, p = int(quota), int(period)
        except ValueError:
            return None
        return q / p if q > 0 and p > 0 else None
    return None


def usable_cpus(root: Path | str = CGROUP_ROOT) -> int:
    """Cores this process may run on: its affinity set, capped by the cgroup quota (rounded up), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


# At or below this many usable cores a CPU run decodes in the model's own process: a
# worker would take a core from the forward pass. Measured on 2 cores (`featx bench
# extract --workers 0` vs `--workers 1`): in-process decoding was the faster end to end.
IN_PROCESS_MAX_CORES = 2


def auto_workers(root: Path | str = CGROUP_ROOT, device_type: str = "cpu") -> int:
    """Loader workers for ``--workers auto``.

    0 (decode in the main process) when the model runs on the CPU with at most
    ``IN_PROCESS_MAX_CORES`` usable cores; otherwise the usable cores less one for the
    main process, at least 1 (a GPU model leaves the cores to the decoders).
    """
    cores = usable_cpus(root)
    if device_type == "cpu" and cores <= IN_PROCESS_MAX_CORES:
        return 0
    return max(1, cores - 1)
