"""Per-item content fingerprints: what tells a cached feature row from a stale one.

At extraction every file item's bytes are read once: the reader takes the file's stat
data (size, mtime_ns, ctime_ns) from the open descriptor and hashes the bytes it decodes
(BLAKE2b-256). The store keeps both per row. On reuse, :func:`check_items` stats every
file (no open) and re-hashes only the files whose stat data differ:

* same stat data: unchanged, nothing read;
* new stat data, same hash: touched but unchanged (``touch``, a copy that kept the
  bytes); the row stays valid and the new stat data are recorded;
* new hash: the content changed; the row is stale and is extracted again.

ctime cannot be set from user space, so an edit that restores size and mtime
(``touch -r``) still changes the stat data and is caught by the hash.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ItemRecord", "NO_STAT", "HASH_BYTES", "UNREAD", "file_stat", "content_hash", "read_item_file", "check_items",
           "ItemCheck", "digest_of_hashes"]

NO_STAT = (-1, -1, -1)
# The digest of an item whose bytes do not matter (its extension is not an image's):
# its stat data are kept, but a touch or an edit can never make it usable.
UNREAD = "-"
HASH_BYTES = 64  # hex characters of a BLAKE2b-256 digest


@dataclass(frozen=True)
class ItemRecord:
    """What was read for one item: its stat data and the hash of its bytes ('' when unreadable)."""

    stat: tuple[int, int, int] = NO_STAT
    digest: str = ""


def _stat_tuple(st: os.stat_result) -> tuple[int, int, int]:
    return int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns)


def file_stat(path: str | os.PathLike) -> tuple[int, int, int]:
    """(size, mtime_ns, ctime_ns) of the file a path leads to, or :data:`NO_STAT` if it cannot be stat'ed."""
    try:
        return _stat_tuple(os.stat(path))
    except OSError:
        return NO_STAT


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def read_item_file(path: str | os.PathLike) -> tuple[bytes, ItemRecord]:
    """Read a file once: its bytes and the record (stat from the open descriptor, then the hash)."""
    with open(path, "rb") as handle:
        stat = _stat_tuple(os.fstat(handle.fileno()))
        data = handle.read()
    return data, ItemRecord(stat, content_hash(data))


def _hash_file(path: Path) -> str:
    try:
        return read_item_file(path)[1].digest
    except OSError:
        return ""


@dataclass
class ItemCheck:
    """The outcome of :func:`check_items`: rows touched but unchanged (with new stat data) and rows changed."""

    touched: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    changed: list[int] = field(default_factory=list)


def check_items(paths: Sequence[Path], stats: np.ndarray, hashes: Sequence[str], rows: Sequence[int] | None = None) -> ItemCheck:
    """Compare files with their recorded (N, 3) stat data and hashes; re-hash only where stat data differ.

    ``rows`` limits the check (e.g. to rows already extracted); a row whose recorded hash is
    empty was never read and is counted as changed only if it now has content to read.
    """
    result = ItemCheck()
    for i in range(len(paths)) if rows is None else rows:
        now = file_stat(paths[i])
        if now == tuple(int(v) for v in stats[i]):
            continue
        if hashes[i] == UNREAD:
            result.touched[i] = now
            continue
        digest = _hash_file(paths[i]) if now != NO_STAT else ""
        if digest == hashes[i]:
            result.touched[i] = now
        else:
            result.changed.append(int(i))
    return result


def digest_of_hashes(hashes: Sequence[str]) -> str:
    """One digest over every item's hash, in order: changes whenever any item's content does."""
    digest = hashlib.blake2b(digest_size=16)
    for h in hashes:
        digest.update(h.encode("ascii", "replace") + b"\n")
    return digest.hexdigest()
