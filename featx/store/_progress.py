"""A read-only view of a running extraction: ``<store>.progress.json``.

HDF5 keeps a file open for writing locked against readers, so ``featx info`` cannot open
a store while ``featx extract`` writes it. The writer instead replaces a small JSON
sidecar (atomically, via :func:`~featx.core.io.write_atomic`) at most every
:data:`INTERVAL_S` seconds and removes it when it stops; readers never touch the store
or its lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from ..core.io import json_text, write_atomic

__all__ = ["ProgressFile", "progress_path", "read_progress", "INTERVAL_S"]

INTERVAL_S = 2.0


def progress_path(path: Path) -> Path:
    return path.with_name(path.name + ".progress.json")


class ProgressFile:
    """Throttled writer of the sidecar; call it with (rows finished, rows in all) after every batch."""

    def __init__(self, path: Path, interval_s: float = INTERVAL_S):
        self.path = progress_path(path)
        self.store = path
        self.interval_s = interval_s
        self.started = time.time()
        self.first_done: int | None = None
        self._last = 0.0
        # A writer killed inside write_atomic leaves its hidden temp file; we hold the
        # store's lock, so no other process is writing one now.
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def __call__(self, done: int, total: int, force: bool = False) -> None:
        now = time.time()
        if self.first_done is None:
            self.first_done = done
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-9)
        rate = (done - self.first_done) / elapsed
        write_atomic(self.path, json_text({
            "store": str(self.store), "pid": os.getpid(), "done": done, "total": total,
            "images_per_second": round(rate, 2), "eta_seconds": round((total - done) / rate, 1) if rate > 0 else None,
            "started": self.started, "updated": now,
        }))

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def read_progress(path: Path) -> dict | None:
    """The last progress a writer of ``path`` recorded, or None (none, or unreadable)."""
    try:
        data = json.loads(progress_path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
