"""Streaming reads: memory-bounded batches of a store's rows, split by split.

:class:`BatchReader` walks a store block by block (a sharded store shard by shard, a
single-file store in row ranges of its ``/features`` dataset) and yields ``(X, y)`` of
the selected done rows, ``X`` in the stored dtype (float16 stays float16), at most
``batch_rows`` rows at a time. A background thread reads the next block while the
caller works on the current one (one block ahead, so at most three are alive: the one
in use, the one queued, the one being read). Blocks without a selected row are never
read. Every pass yields the same rows in the same order (store order).

Verification: a shard is first read through the store's one verified read
(:func:`read_shard_fields`: sha256 against the manifest, ids against ``items.h5``, shape),
which holds that one shard in memory; later passes of the same reader read only the row
ranges they need, straight from the file, while it is still the file that was checked
(same inode, size and mtime; anything else is checked again). A single-file store's
chunks carry Fletcher-32 checksums that HDF5 checks on every read.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ._store import FeatureStore, _first_line, _open_h5, damaged_error, read_shard_fields

__all__ = ["BatchReader", "verified_shard"]

_END = object()


def _stamp(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def verified_shard(store: FeatureStore, entry: dict, seen: dict) -> np.ndarray | None:
    """A shard's features on its first visit, checked by the store's one verified read
    (:func:`read_shard_fields`: sha256 against the manifest, ids against ``items.h5``,
    shape); ``None`` on a later visit when the file is still the one checked (same inode,
    size and mtime), so the caller reads the rows it needs from the verified file.
    """
    shard = store.path / entry["name"]
    stamp = _stamp(shard)
    if stamp is not None and seen.get(entry["name"]) == stamp:
        return None
    fields = read_shard_fields(store.path, entry, store.all_ids, store.dim, ["features"])
    seen[entry["name"]] = stamp
    return fields["features"]


class BatchReader:
    """Batches ``(X, y)`` of the done rows selected by ``rows`` (a mask aligned with ``store.features``).

    >>> reader = BatchReader(store, split == "train", batch_rows=65536)   # doctest: +SKIP
    >>> for X, y in reader: ...                                           # doctest: +SKIP
    """

    def __init__(self, store: FeatureStore, rows: np.ndarray | None = None, *, batch_rows: int = 65536,
                 prefetch: bool = True):
        self.store = store
        done = store.done_mask
        self.rows = np.ones(int(done.sum()), bool) if rows is None else np.asarray(rows, bool)
        if len(self.rows) != int(done.sum()):
            raise ValueError(f"rows has {len(self.rows)} entries for {int(done.sum())} usable rows")
        self.batch_rows = max(1, int(batch_rows))
        self.prefetch = prefetch
        self.dim, self.dtype = store.dim, np.dtype(store.feature_dtype)
        self.n_rows = int(self.rows.sum())
        # Selected rows per source item (aligned with all_ids), and the done-row offset of each item.
        self._selected = np.zeros(store.n_items, bool)
        self._selected[np.flatnonzero(done)[self.rows]] = True
        self._seen: dict = {}
        self.labels = store.labels[self.rows]

    def _blocks(self) -> list[tuple[str | None, dict | None, int, int]]:
        """(shard name or None, manifest entry, start, stop) in item indices, at most batch_rows each."""
        out = []
        spans = [(e, e["start"], e["stop"]) for e in self.store.shards] if hasattr(self.store, "shards") \
            else [(None, 0, self.store.n_items)]
        for entry, lo, hi in spans:
            for start in range(lo, hi, self.batch_rows):
                stop = min(hi, start + self.batch_rows)
                if self._selected[start:stop].any():
                    out.append((entry, start, stop))
        return out

    def _read(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        store, labels = self.store, self.store.all_labels
        handle, source, current = None, None, object()
        try:
            for entry, start, stop in self._blocks():
                name = entry["name"] if entry is not None else None
                if name != current:  # a new shard (or the single file): verified, or the checked file reopened
                    if handle is not None:
                        handle.close()
                    handle, current = None, name
                    source = verified_shard(store, entry, self._seen) if entry is not None else None
                    if source is None:
                        handle = _open_h5(store.path / name if entry is not None else store.path, "r")
                        source = handle["features"]
                offset = entry["start"] if entry is not None else 0
                try:
                    block = np.asarray(source[start - offset:stop - offset])
                except OSError as exc:
                    raise damaged_error(store.path, f"/features rows {start}-{stop - 1}: {_first_line(exc)}") from None
                keep = self._selected[start:stop]
                yield block[keep], labels[start:stop][keep].astype(np.int64)
        finally:
            if handle is not None:
                handle.close()

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not self.prefetch:
            yield from self._read()
            return
        yield from _prefetched(self._read())

    def __len__(self) -> int:
        return self.n_rows


def _prefetched(source: Iterator) -> Iterator:
    """Items of ``source`` produced one ahead by a background thread; its errors re-raised here."""
    slot: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work():
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        slot.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slot.put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            slot.put(exc)
        finally:
            source.close()  # closes the open HDF5 file of an abandoned pass

    thread = threading.Thread(target=work, name="featx-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slot.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # Drain so a producer blocked on put() sees the stop flag and ends.
        while True:
            with contextlib.suppress(queue.Empty):
                slot.get_nowait()
            thread.join(timeout=0.01)
            if not thread.is_alive():
                break
