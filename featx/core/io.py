"""Atomic file writes, disk-error reporting and the JSON encoding featx uses for every
file it writes.

Every file featx writes goes through one of two mechanisms, so a full disk or an I/O
error anywhere behaves the same way: the temporary file is removed, the earlier file
(if any) is untouched, and the user sees one line naming what was being written
(``no space left on device while writing X``), exit code 1.

- :func:`write_atomic` for whole small files (JSON, CSV, Markdown, HTML): written to a
  temporary name in the same folder, flushed and fsynced, then renamed into place.
- :func:`disk_errors` around any other write (HDF5 stores, model files): it turns
  ``OSError`` with a disk errno into :class:`~featx.core.errors.DiskError`.
- :func:`atomic_dir` for a directory that must change as a whole (a saved head): it is
  built under a temporary sibling name, fsynced, then swapped into place, so a kill at
  any point leaves the previous directory or the new one, complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import DiskError, FeatxError

__all__ = ["file_sha256", "write_atomic", "write_durably", "json_default", "json_text", "write_json_atomic", "disk_errors", "is_disk_error",
           "fsync_dir", "DISK_ERRNOS", "atomic_dir", "recover_dir", "replace_dir", "remove_path", "folder_lock",
           "remove_stale_temps"]

# errno values that mean "the storage failed us", not "the user asked for something odd".
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})
_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EIO: "input/output error", errno.EROFS: "read-only file system", errno.EFBIG: "file too large"}


def is_disk_error(exc: BaseException) -> bool:
    """True for an OSError (or an h5py error wrapping one) caused by the storage itself."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return True
    # h5py reports a failed write as OSError/RuntimeError without errno; its text names the cause.
    text = str(exc).lower()
    return isinstance(exc, (OSError, RuntimeError)) and any(
        phrase in text for phrase in ("no space left", "disk quota", "errno = 28", "errno = 5,", "file write failed")
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return "no space left on device" if "space" in str(exc).lower() else f"write failed ({str(exc).splitlines()[0]})"


@contextlib.contextmanager
def disk_errors(what: str | os.PathLike, *cleanup: str | os.PathLike) -> Iterator[None]:
    """Turn a disk failure inside the block into one :class:`DiskError` line naming ``what``.

    ``cleanup`` paths (temporary files or folders) are removed on any failure, so a full
    disk is not filled further by half-written leftovers.
    """
    try:
        yield
    except BaseException as exc:
        for path in cleanup:
            _remove(Path(path))
        if isinstance(exc, PermissionError):
            where = Path(exc.filename).parent if exc.filename else Path(what).parent
            raise FeatxError(f"permission denied while writing {what}: make {where} writable, "
                             "or write somewhere else (--out)") from None
        if isinstance(exc, DiskError) or not is_disk_error(exc):
            raise
        raise DiskError(f"{_reason(exc)} while writing {what}") from exc


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file or a folder tree if it is there (a link itself, never what it points to)."""
    _remove(Path(path))


def replace_dir(new: str | os.PathLike, path: str | os.PathLike) -> None:
    """Swap the complete ``new`` (a folder or file) in at ``path`` and remove what was there.

    One step where the OS can exchange two names; else the old one is moved aside first
    and :func:`recover_dir` puts it back if a kill strikes between the two renames.
    """
    _swap_in(Path(new), Path(path))


def _remove(path: Path) -> None:
    import shutil

    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# featx's own temporary names: ``.NAME.PID.tmp`` (write_atomic) and ``.NAME.PID.new`` (atomic_dir).
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<kind>tmp|new)$")


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary files and folders that killed featx processes left in ``folder``.

    Only names of featx's own patterns (``.NAME.PID.tmp`` files, ``.NAME.PID.new`` folders)
    whose process is gone are removed; with ``name``, only those of that one file. A live
    writer's temporary, and anything else, stays. Returns what was removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        # A name ending in ``.DIGITS`` may be another writer's ``.NAME.PID.HEX.tmp`` (shards): not ours to judge.
        if (not match or re.search(r"\.\d+$", match.group("name")) or (name is not None and match.group("name") != name)
                or _alive(int(match.group("pid")))):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if (match.group("kind") == "new") == is_dir:
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write a file under a temporary name, fsync it and rename it into place.

    A failure (full disk, I/O error, interrupt) removes the temporary file and leaves any
    earlier file at ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)  # a killed writer's temporary of this file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_durably(path, tmp, data.encode("utf-8") if isinstance(data, str) else data)
    return path


def write_durably(path: Path, tmp: Path, payload: bytes) -> None:
    """Write ``payload`` to ``tmp``, fsync it, rename it to ``path`` and fsync the folder.

    The one durable write under every featx file commit; the caller names the temporary
    (:func:`write_atomic` its own pattern, shard files theirs). A failure is one
    :class:`~featx.core.errors.DiskError` line and removes ``tmp``.
    """
    with disk_errors(path, tmp):
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_default(value):
    """JSON encoder fallback for NumPy scalars and arrays (and paths, as strings)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def json_text(data) -> str:
    return json.dumps(data, indent=2, default=json_default)


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    return write_atomic(path, json_text(data))


# -- whole directories ------------------------------------------------------------


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path``; fill it, and on success it replaces ``path`` whole.

    The files are fsynced, then the folder is swapped into place: in one step where the
    OS can exchange two names (Linux ``renameat2(RENAME_EXCHANGE)``), else by moving the
    old folder aside first; a kill between those two renames leaves the old folder under
    ``.NAME.PID.old``, which :func:`recover_dir` (called by every later save and load)
    puts back. A failure or interrupt removes the temporary folder and leaves ``path``
    as it was; a full disk becomes one :class:`DiskError` line.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    _remove_leftovers(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    _remove(tmp)
    with disk_errors(path, tmp):
        tmp.mkdir()
        yield tmp
        for child in tmp.iterdir():
            _fsync_file(child)
        fsync_dir(tmp)
        _swap_in(tmp, path)
    fsync_dir(path.parent)


def recover_dir(path: str | os.PathLike) -> bool:
    """Put back the previous folder that a save killed between its two renames moved aside.

    True when something was restored. Only ``.old`` folders are candidates: they are
    complete by construction (the previous, finished directory), unlike ``.new`` ones.
    """
    path = Path(path)
    if path.exists():
        return False
    backups = sorted(_siblings(path, "old"), key=lambda p: p.stat().st_mtime_ns)
    if not backups:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.replace(backups[-1], path)
        fsync_dir(path.parent)
        return True
    return False


def _siblings(path: Path, kind: str) -> list[Path]:
    import glob

    return [Path(p) for p in glob.glob(str(path.parent / f".{glob.escape(path.name)}.*.{kind}"))]


def _remove_leftovers(path: Path) -> None:
    """Remove temporary folders of killed saves (never those of a live process)."""
    for leftover in _siblings(path, "new") + _siblings(path, "old"):
        pid = leftover.name[len(path.name) + 2:].rsplit(".", 1)[0]
        if not pid.isdigit() or not _alive(int(pid)):
            _remove(leftover)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover from an earlier, failed save in this process
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate it on Windows: keep the leftover
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _swap_in(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):
        _remove(tmp)  # it now holds the previous folder
        return
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    _remove(old)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing names (Linux); False where the OS or file system cannot."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` for the block, leaving no lock file behind.

    On POSIX the folder itself is locked (``flock`` on a descriptor of the directory; the
    OS drops it when the process dies), so nothing is created that a full disk could
    refuse or a kill could leave. Elsewhere a ``.featx.lock`` file is used and removed.
    """
    folder = Path(folder)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        from filelock import FileLock

        marker = folder / ".featx.lock"
        try:
            with FileLock(str(marker)):
                yield
        finally:
            with contextlib.suppress(OSError):
                marker.unlink()
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
