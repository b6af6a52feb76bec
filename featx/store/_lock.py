"""The one-writer lock of a feature store: ``<store>.lock``, an OS lock a killed process releases.

On POSIX the lock is ``flock`` on the lock file, and the file is removed on release (so
no ``.lock`` files are left behind, even after a full disk). Removing a lock file is safe
only with the inode check: a process that opened the old file and locked it after the
holder removed it sees that the path now names another file (or none) and tries again.
The holder's pid is written into the file, so ``featx info`` can say who writes.
Elsewhere :mod:`filelock` does the work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import StoreInUseError
from ..core.io import disk_errors

__all__ = ["writer_lock", "lock_path", "lock_holder"]


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _in_use(path: Path) -> StoreInUseError:
    holder = lock_holder(path)
    who = f" (pid {holder})" if holder else ""
    return StoreInUseError(
        f"feature store {path} is in use: another featx process{who} is writing it (wait for it, or use another --out)"
    )


def lock_holder(path: Path) -> int | None:
    """The pid recorded by the process holding the store's lock, if any."""
    try:
        text = lock_path(path).read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` for the duration of a write; fail at once if another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield from _filelock(path)
        return
    lock = lock_path(path)
    with disk_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, fcntl)
    try:
        yield
    finally:
        # Remove while still holding the lock, then close: see the module docstring.
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _acquire(lock: Path, fcntl) -> int:
    while True:
        with disk_errors(lock, lock):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _in_use(lock.with_name(lock.name[: -len(".lock")])) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed it after we opened it: lock the new one
            os.close(fd)
            continue
        try:
            with disk_errors(lock, lock):
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
        except BaseException:
            os.close(fd)
            raise
        return fd


def _filelock(path: Path) -> Iterator[None]:  # pragma: no cover - not POSIX
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path(path)), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise _in_use(path) from None
    try:
        yield
    finally:
        lock.release()
