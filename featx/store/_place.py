"""Where a store may be written, and how one is replaced.

featx writes into, replaces (``--overwrite``) and removes only its own stores, recognised
by their own files: a single-file store is an HDF5 file carrying ``featx_format``; a
sharded store is a directory holding nothing but the files a sharded writer makes
(``manifest.json``, ``items.h5``, ``part-NNNNN.h5`` and their temporary names). A store
is never written over its source, inside it, or around it. A replacement is built beside
the old store (``OUT.new``) and swapped in only once complete, so a killed ``--overwrite``
leaves the old store as it was (the swap is one step on Linux; elsewhere a kill between
its two renames is undone by the next run, see :func:`featx.core.io.recover_dir`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..core.errors import FeatxUsageError
from ..core.io import fsync_dir, recover_dir, remove_path, replace_dir

__all__ = ["is_featx_store", "check_apart", "build_target", "swap_in", "remove_temporaries", "NEW_SUFFIX"]

NEW_SUFFIX = ".new"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# Every name a sharded writer creates inside its directory, temporary ones included.
_FILES = r"(manifest\.json|items\.h5|part-\d{5,}\.h5)"
_TEMPORARY = re.compile(rf"^\.{_FILES}\..*tmp$")
_SHARDED_NAMES = re.compile(rf"^{_FILES}$|{_TEMPORARY.pattern}")


def _foreign_entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not (_SHARDED_NAMES.match(p.name) and p.is_file()))


def _is_featx_file(path: Path) -> bool:
    import h5py

    try:
        with open(path, "rb") as handle:
            if handle.read(len(_HDF5_MAGIC)) != _HDF5_MAGIC:
                return False
    except OSError:
        return False
    try:
        with h5py.File(path, "r") as h5:
            return h5.attrs.get("featx_format") is not None
    except OSError:
        pass  # a damaged or truncated file: look for featx's own attribute name in its bytes
    with open(path, "rb") as handle:
        tail = b""
        while block := handle.read(1 << 22):
            if b"featx_format" in tail + block:
                return True
            tail = block[-16:]
    return False


def is_featx_store(path: str | os.PathLike) -> bool:
    """True for a featx store (either layout, complete or not, damaged included) and nothing else."""
    path = Path(path)
    if path.is_symlink():
        return False
    if path.is_dir():
        return any(path.iterdir()) and not _foreign_entries(path)
    return path.is_file() and _is_featx_file(path)


def _not_ours(path: Path) -> FeatxUsageError:
    detail = ""
    if path.is_dir() and not path.is_symlink():
        foreign = _foreign_entries(path)
        detail = f" (it holds {foreign[0]!r}{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''})"
    return FeatxUsageError(f"{path} exists and is not a featx feature store{detail}; featx writes into, and with "
                           "--overwrite replaces, only its own stores: use another --out")


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check_apart(out: str | os.PathLike, locations: Iterable[str | os.PathLike], around: Iterable = (),
                what: str = "--out") -> None:
    """Refuse an ``out`` equal to or inside one of ``locations`` (a source's folder or files), or
    one with a location, or one of the folders ``around`` (its items' folders), inside it (one
    line, exit 2)."""
    target = _resolved(Path(out))
    for folder in around:
        place = _resolved(Path(folder))
        if target == place or target in place.parents:
            raise FeatxUsageError(f"{what} {out} contains images of the source (in {folder}); "
                                  "write the store somewhere else")
    for location in locations:
        place = _resolved(Path(location))
        if target == place or place in target.parents:
            raise FeatxUsageError(f"{what} {out} is {'the' if target == place else 'inside the'} source {location}; "
                                  "write the store somewhere else")
        if target in place.parents:
            raise FeatxUsageError(f"{what} {out} contains the source {location}; write the store somewhere else")


def remove_temporaries(directory: Path) -> None:
    """Remove the temporary files of a killed sharded writer (``.part-NNNNN.h5.<pid>.<hex>.tmp``, ...).

    Called under the writer lock, so no live writer of this store owns them.
    """
    if directory.is_dir() and not directory.is_symlink():
        for entry in directory.iterdir():
            if _TEMPORARY.match(entry.name):
                entry.unlink(missing_ok=True)


def build_target(path: Path, overwrite: bool) -> Path:
    """Under the writer lock: where the store for ``path`` is built, ``path`` itself or ``OUT.new``.

    Refuses a ``path`` that exists and is not a featx store (an empty directory is fine),
    and a ``path.new`` in the way that is not one. Without ``overwrite`` a ``.new`` left
    by a killed ``--overwrite`` is removed (the old store stays); with it, the ``.new``
    is where the replacement is built or resumed.
    """
    recover_dir(path)
    new = path.with_name(path.name + NEW_SUFFIX)
    exists = path.exists() and not (path.is_dir() and not path.is_symlink() and not any(path.iterdir()))
    if exists and not is_featx_store(path):
        raise _not_ours(path)
    if new.exists() and not is_featx_store(new) and not (new.is_dir() and not any(new.iterdir())):
        raise FeatxUsageError(f"{new} is in the way of the store {path} and is not a featx store: move it away")
    if not (overwrite and exists):
        remove_path(new)
        return path
    return new


def swap_in(new: Path, path: Path) -> None:
    """Replace the store at ``path`` by the complete one at ``new`` (either layout), then drop the old one."""
    if new.is_dir() or path.is_dir():
        replace_dir(new, path)  # exchanges the two names (Linux), whatever their kinds
    else:
        os.replace(new, path)
    fsync_dir(path.parent)
