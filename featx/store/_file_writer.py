"""The single-file layout of a feature store, written: :class:`StoreWriter` (the reader and the
format are in ``_store``).

Crash safety: every dataset is allocated when the file is created (chunked datasets
with early allocation), so an interrupted run can only leave pending rows half
written, never broken metadata. Rows are written batch by batch, features and item
records first, then status, each followed by a flush: a row whose status says "done"
is on disk. ``complete`` is set only after every row's status is done or skipped and
everything else is flushed and fsynced (see :meth:`StoreWriter.finish`). A sidecar
``<file>.lock`` (an OS lock that a killed process releases) keeps a second writer out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import FeatxError
from ._store import (
    _HASH_BYTES,
    _REASON_BYTES,
    STATUS_PENDING,
    _checked_dataset,
    _first_line,
    _open_h5,
    _padded,
    damaged_error,
    encode_reasons,
    encode_records,
    finish_fields,
    header_digest,
    store_header,
    write_listing,
)

__all__ = ["StoreWriter"]

# Reserved sizes of the attributes rewritten at finish: rewriting an attribute in place
# with the same type and size needs no new space in the file, so a full disk cannot
# strike while the run's record is being written (padding spaces are valid JSON).
_RUN_ATTR_BYTES, _FINISHED_ATTR_BYTES, _DIGEST_ATTR_BYTES = 4096, 32, 32


def _fsync(h5: h5py.File) -> None:
    h5.flush()
    try:
        fd = h5.id.get_vfd_handle()
    except Exception:  # a driver without a file descriptor: the flush is all we can do
        return
    os.fsync(fd)


class StoreWriter:
    """Create or reopen a store for writing; used by :func:`featx.extract` under :func:`writer_lock`.

    Every write goes through :func:`~featx.core.io.disk_errors`: a full disk or an I/O
    error is one line naming the store, and a half-made ``.creating`` file is removed.
    """

    def __init__(self, path: Path, h5: h5py.File):
        self.path = path
        self.h5 = h5
        try:
            self.status = h5["status"][:]
        except OSError as exc:
            h5.close()
            raise damaged_error(path, _first_line(exc)) from None
        self.has_records = "item_hash" in h5
        #: Called with (rows done or skipped, rows in all) after every batch (the progress sidecar).
        self.on_progress = None

    @classmethod
    def create(cls, path: Path, *, config: dict, fingerprint: str, ids, labels, splits, class_names, dim: int,
               dtype: str, item_records: bool = False, extra_sets: list[dict] | None = None) -> StoreWriter:
        """Write the skeleton (every dataset allocated) under ``<path>.creating``, then rename it into place.

        ``item_records``: add ``/item_hash`` and ``/item_stat`` for a file source's per-item checks.
        ``extra_sets``: ``{name, dim, ...}`` of each ``/feature_sets/<name>`` to allocate beside ``/features``.
        """
        from ..core.io import disk_errors, fsync_dir

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".creating")
        # A crash during creation never leaves a half-made file at the real path.
        with disk_errors(path, tmp):
            with h5py.File(tmp, "w") as h5:
                header = store_header(config, fingerprint, class_names)
                for name in ("config", "class_names", "versions"):
                    header[name] = json.dumps(header[name], sort_keys=True)
                h5.attrs.update({**header, "complete": np.bool_(False), "run": _padded("{}", _RUN_ATTR_BYTES),
                                 "finished": _padded("", _FINISHED_ATTR_BYTES)})
                n = len(ids)
                write_listing(h5, ids, labels, splits)
                # (name, row shape, dtype, fill) of every per-row dataset, allocated and filled now
                rows = [("features", (dim,), dtype, 0), ("status", (), np.uint8, STATUS_PENDING),
                        ("skip_reasons", (), f"S{_REASON_BYTES}", b"")]
                rows += [(f"feature_sets/{s['name']}", (s["dim"],), dtype, 0) for s in extra_sets or []]
                if item_records:
                    h5.attrs["content_digest"] = _padded("", _DIGEST_ATTR_BYTES)
                    rows += [("item_hash", (), f"S{_HASH_BYTES}", b""), ("item_stat", (3,), np.int64, -1)]
                for name, shape, kind, fill in rows:
                    _checked_dataset(h5, name, (n, *shape), kind, fillvalue=fill)
                if extra_sets:
                    h5.attrs["feature_sets"] = json.dumps(extra_sets)
                _seal(h5, (ids, labels, splits))
            os.replace(tmp, path)
        fsync_dir(path.parent)
        return cls.reopen(path)

    @classmethod
    def reopen(cls, path: Path) -> StoreWriter:
        return cls(path, _open_h5(path, "r+"))

    def pending_rows(self) -> np.ndarray:
        return np.flatnonzero(self.status == STATUS_PENDING)

    def batches(self, batch_size: int) -> list[list[int]]:
        """The pending rows in fixed, batch-aligned blocks ``[k*B, (k+1)*B)``: a resumed run recomputes
        the same blocks with the same batch composition, so its file equals an uninterrupted one."""
        n = len(self.status)
        blocks = np.unique(self.pending_rows() // batch_size)
        return [list(range(int(b) * batch_size, min((int(b) + 1) * batch_size, n))) for b in blocks]

    def write_batch(self, start: int, features: np.ndarray, reasons: list[str | None], records=None,
                    extra: dict[str, np.ndarray] | None = None) -> None:
        """Write rows ``start:start+len(reasons)``: features (and item records), flush, then status, flush.

        ``records``: one :class:`featx.data.ItemRecord` (or None) per row, for stores with item records.
        ``extra``: rows of the ``/feature_sets`` (written, like features, before the status).
        """
        from ..core.io import disk_errors

        stop = start + len(reasons)
        with disk_errors(self.path):
            self.h5["features"][start:stop] = features
            for name, values in (extra or {}).items():
                self.h5["feature_sets"][name][start:stop] = values
            if records is not None and self.has_records:
                self._write_records(start, records)
            self.h5.flush()
            status, encoded = encode_reasons(reasons)
            self.h5["skip_reasons"][start:stop] = encoded
            self.h5["status"][start:stop] = status
            self.h5.flush()
        self.status[start:stop] = status
        if self.on_progress is not None:
            self.on_progress(int((self.status != STATUS_PENDING).sum()), len(self.status))

    def _write_records(self, start: int, records) -> None:
        rows = slice(start, start + len(records))
        self.h5["item_hash"][rows], self.h5["item_stat"][rows] = encode_records(records)

    def refresh_items(self, touched: dict[int, tuple[int, int, int]], changed: list[int]) -> None:
        """Record new stat data of touched-but-unchanged items; mark changed items pending again."""
        from ..core.io import disk_errors

        with disk_errors(self.path):
            if changed:
                # Not complete from the first changed row on, and on disk before any row moves.
                self.h5.attrs.modify("complete", False)
                self.h5.flush()
            for row, stat in sorted(touched.items()):
                self.h5["item_stat"][row] = np.asarray(stat, dtype=np.int64)
            for row in sorted(changed):
                self.h5["status"][row] = STATUS_PENDING
                self.status[row] = STATUS_PENDING
            self.h5.flush()

    def finish(self, run_info: dict) -> None:
        """Record the run, flush and fsync; only then set ``complete`` (flushed and fsynced too).

        A failure anywhere before the last step (a full disk during the final flush) leaves
        an incomplete store whose attributes read back, which the next run resumes.
        """
        from ..core.io import disk_errors

        if (self.status == STATUS_PENDING).any():
            raise FeatxError("internal error: finishing a store with pending rows")
        previous = json.loads(self.h5.attrs.get("run", "{}") or "{}")
        with disk_errors(self.path):
            hashes = [h.decode("ascii") for h in self.h5["item_hash"][:]] if self.has_records else None
            fields = finish_fields(previous, run_info, hashes)
            if hashes is not None:  # before the seal: header_sha256 covers the content digest
                _set_attr(self.h5, "content_digest", fields["content_digest"], _DIGEST_ATTR_BYTES)
            _seal(self.h5)
            _set_attr(self.h5, "run", json.dumps(fields["run"], sort_keys=True), _RUN_ATTR_BYTES)
            _set_attr(self.h5, "finished", fields["finished"], _FINISHED_ATTR_BYTES)
            _fsync(self.h5)
            self.h5.attrs.modify("complete", True)
            _fsync(self.h5)

    def close(self) -> None:
        self.h5.close()


def _set_attr(h5: h5py.File, name: str, text: str, reserved: int) -> None:
    """Rewrite a reserved fixed-size text attribute in place (stores before reservations: replace it)."""
    current = h5.attrs.get(name)
    if isinstance(current, np.bytes_) and len(text.encode("utf-8")) <= reserved:
        h5.attrs.modify(name, _padded(text, reserved))
    else:
        h5.attrs[name] = _padded(text, reserved)


def _seal(h5: h5py.File, listing: tuple | None = None) -> None:
    """(Re)write ``header_sha256`` over the header as it is now (at create, and at finish: the content
    digest, or an import's late fingerprint); ``listing``: (ids, labels, splits), else read from the file."""
    ids, labels, splits = listing or (h5["ids"].asstr()[:], h5["labels"][:], h5["splits"].asstr()[:])
    _set_attr(h5, "header_sha256", header_digest(h5, ids, labels, splits), _HASH_BYTES)
