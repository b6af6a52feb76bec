"""The memory budget of the heads: ``--max-memory SIZE``, and in-memory versus streaming.

A head holds its features in memory when the in-memory path's peak fits the budget,
and otherwise streams them from the store in bounded batches. The in-memory estimate is
:data:`IN_MEMORY_FACTOR` times the float32 feature bytes: ``featx train --heads logreg``
on a 200,000 x 1,280 sharded store (1.1 GB of float32) peaked at 0.73 GiB + 4.45 x the
feature bytes (the store's whole array, the done rows, the split slices, the scaler's
copies). The fixed ~0.7 GiB of Python, torch and scikit-learn is not part of the budget.

The default budget is :data:`DEFAULT_FRACTION` of the memory the kernel reports as
available (``MemAvailable`` in ``/proc/meminfo``; elsewhere the physical memory).
"""

from __future__ import annotations

import os
import re

from .errors import FeatxUsageError

__all__ = ["parse_size", "format_size", "available_memory", "default_max_memory", "memory_plan", "IN_MEMORY_FACTOR",
           "DEFAULT_FRACTION"]

IN_MEMORY_FACTOR = 4.5
DEFAULT_FRACTION = 0.5
# Bytes of one streamed batch as a share of the budget: the batch, the one prefetched
# behind it, the block read before masking, and the float32 copies a head makes of it.
_BATCH_SHARE = 16
_MIN_BATCH_ROWS, _MAX_BATCH_ROWS = 256, 262144

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """``"256MB"``, ``"1.5GiB"``, ``"2g"`` or a byte count -> bytes; a usage error otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise FeatxUsageError(f"--max-memory {text!r}: expected a size such as 256MB, 1.5GB or 2GiB")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise FeatxUsageError(f"--max-memory must be a positive size; got {text!r}")
    return value


def format_size(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def available_memory() -> int:
    """Bytes the kernel says a new allocation can have (MemAvailable), else physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def default_max_memory() -> int:
    return int(available_memory() * DEFAULT_FRACTION)


def memory_plan(n_rows: int, dim: int, max_memory: int | str | None = None) -> dict:
    """How a head holds ``n_rows x dim`` features under the budget: in memory or streamed.

    Returns ``memory_path`` (``in_memory`` / ``streaming``), ``max_memory`` (bytes),
    ``feature_bytes`` (float32), ``estimated_in_memory_bytes`` and, for streaming,
    ``batch_rows`` (rows per streamed batch).
    """
    budget = default_max_memory() if max_memory is None else parse_size(max_memory)
    feature_bytes = int(n_rows) * int(dim) * 4
    estimate = int(IN_MEMORY_FACTOR * feature_bytes)
    plan = {"memory_path": "in_memory" if estimate <= budget else "streaming", "max_memory": budget,
            "feature_bytes": feature_bytes, "estimated_in_memory_bytes": estimate}
    rows = budget // (_BATCH_SHARE * 4 * max(1, int(dim)))
    plan["batch_rows"] = int(min(_MAX_BATCH_ROWS, max(_MIN_BATCH_ROWS, rows)))
    return plan
