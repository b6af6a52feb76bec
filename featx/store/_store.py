"""The HDF5 feature store: one file per (source, backbone, weights, preprocessing, pooling).

Layout (format 1), documented in the README::

    /features      (N, D) float32 or float16   one row per source item, in source order
    /labels        (N,)   int64                class index into attrs["class_names"]
    /ids           (N,)   utf-8 str            stable item id (relative path or index)
    /splits        (N,)   utf-8 str            train / val / test, or "" when the source has none
    /status        (N,)   uint8                0 pending, 1 done, 2 skipped
    /skip_reasons  (N,)   S256 (utf-8)         why an item was skipped; empty otherwise
    /item_hash     (N,)   S64                  BLAKE2b-256 of each file item's bytes (file sources)
    /item_stat     (N, 3) int64                size, mtime_ns, ctime_ns of each file item when read
    /feature_sets/<name>  (N, D_k)             optional extra sets (``--layers``), same rows and dtype
    attrs: featx_format, config (JSON), fingerprint, class_names (JSON), versions (JSON),
           complete (bool), created, finished, run (JSON: device, batch size, timings),
           content_digest (one hash over /item_hash, set at finish),
           feature_sets (JSON list of {name, dim, layer, ...}; absent when there are none)

Crash safety: every dataset is allocated when the file is created (chunked datasets
with early allocation), so an interrupted run can only leave pending rows half
written, never broken metadata. The per-row arrays carry HDF5's Fletcher-32 checksum
per chunk, so damaged bytes fail at read instead of being used. Rows are written
batch by batch, features and item records first, then status, each followed by a
flush: a row whose status says "done" is on disk. ``complete`` is set only after
every row's status is done or skipped and everything else is flushed and fsynced
(see :meth:`StoreWriter.finish`). A sidecar ``<file>.lock`` (an OS lock that a killed
process releases) keeps a second writer out.

Stores written before per-item hashes (no ``/item_hash``) keep their old fingerprint
(ids, labels, splits, file sizes and mtimes) and are checked and reused as before.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import FeatxError, FeatxUsageError, StoreDamagedError, StoreInUseError, StoreMismatchError
from ..core.runtime import library_versions
from ._lock import writer_lock

__all__ = ["FeatureStore", "STATUS_PENDING", "STATUS_DONE", "STATUS_SKIPPED", "FORMAT_VERSION", "writer_lock",
           "damaged_error"]

FORMAT_VERSION = 1
STATUS_PENDING, STATUS_DONE, STATUS_SKIPPED = 0, 1, 2
_REASON_BYTES = 256


# Reserved sizes of the attributes rewritten at finish: rewriting an attribute in place
# with the same type and size needs no new space in the file, so a full disk cannot
# strike while the run's record is being written (padding spaces are valid JSON).
_RUN_ATTR_BYTES, _FINISHED_ATTR_BYTES, _DIGEST_ATTR_BYTES = 4096, 32, 32
_HASH_BYTES = 64
_FIX = "delete it, or run `featx extract` again with --overwrite"


def damaged_error(path: Path, detail: str) -> StoreDamagedError:
    """The one message for a store whose bytes are not what was written."""
    return StoreDamagedError(f"feature store {path} is damaged ({detail}): {_FIX}")


def _is_lock_conflict(text: str) -> bool:
    # HDF5's own file locking: "unable to lock file, errno = 11, ... Resource temporarily
    # unavailable". Match that phrase, never a bare "lock" ("sblock" is in every
    # truncated-file message).
    low = text.lower()
    return "unable to lock file" in low or "resource temporarily unavailable" in low


def _open_h5(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except BlockingIOError:
        raise StoreInUseError(f"feature store {path} is in use by another process") from None
    except OSError as exc:
        text = str(exc)
        if _is_lock_conflict(text):
            raise StoreInUseError(f"feature store {path} is in use by another process") from None
        if not path.exists():
            raise FeatxUsageError(f"feature store not found: {path}") from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise StoreDamagedError(
            f"{path} is not a readable HDF5 feature store (damaged, truncated or another kind of file: {first}): {_FIX}"
        ) from None


def _padded(text: str, size: int) -> np.bytes_:
    data = text.encode("utf-8")
    return np.bytes_(data.ljust(size) if len(data) <= size else data)


def _chunk_rows(n: int, row_bytes: int, target: int = 1 << 18) -> int:
    return max(1, min(n, target // max(1, row_bytes)))


def _checked_dataset(h5: h5py.File, name: str, shape: tuple, dtype, **kwargs) -> h5py.Dataset:
    """A chunked, Fletcher-32-checksummed dataset whose chunks are all allocated (and filled) now."""
    n = shape[0]
    if n == 0:
        return h5.create_dataset(name, shape=shape, dtype=dtype, **kwargs)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    row_bytes = int(np.dtype(dtype).itemsize * int(np.prod(shape[1:], dtype=np.int64)))
    chunks = (_chunk_rows(n, row_bytes), *shape[1:])
    return h5.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, fletcher32=True, dcpl=dcpl, **kwargs)


def _fsync(h5: h5py.File) -> None:
    h5.flush()
    try:
        fd = h5.id.get_vfd_handle()
    except Exception:  # a driver without a file descriptor: the flush is all we can do
        return
    os.fsync(fd)


def diff_configs(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff_configs(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _canonical(config: dict) -> dict:
    return json.loads(json.dumps(config, sort_keys=True, default=list))


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _attr_text(h5: h5py.File, name: str) -> str | None:
    value = h5.attrs.get(name)
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text.strip() or None


class FeatureStore:
    """Read a feature store. Arrays hold the usable (done) rows only, in source order.

    >>> store = FeatureStore("features/digits.h5")            # doctest: +SKIP
    >>> X, y = store.features, store.labels                   # doctest: +SKIP
    """

    _directory_layout: type | None = None

    def __new__(cls, path: str | os.PathLike, *args, **kwargs):
        # A directory is a sharded store (see _shards); every caller reads it through this class.
        # _shards registers its reader here on import (the package imports it), so this module
        # does not import _shards back: no import circle.
        if cls is FeatureStore and Path(path).is_dir():
            cls = FeatureStore._directory_layout
        return super().__new__(cls)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with _open_h5(self.path, "r") as h5:
            if h5.attrs.get("featx_format") is None:
                raise FeatxError(f"{self.path} is an HDF5 file but not a featx feature store")
            fmt = int(h5.attrs["featx_format"])
            if fmt > FORMAT_VERSION:
                raise FeatxError(f"{self.path} uses store format {fmt}; this featx reads up to {FORMAT_VERSION}: upgrade featx")
            try:
                skipped, reasons = self._read_metadata(h5)
            except (OSError, KeyError, ValueError, TypeError) as exc:
                # Unreadable attributes or a failed checksum: damaged bytes, never a traceback.
                raise damaged_error(self.path, _first_line(exc)) from None
        self._done = self._status == STATUS_DONE
        self.skipped = [
            {"id": str(self._all_ids[i]), "reason": bytes(r).decode("utf-8", "replace").rstrip("\x00")}
            for i, r in zip(skipped, reasons)
        ]
        self._features: np.ndarray | None = None
        #: True when :func:`featx.extract` returned this store without running the backbone.
        self.reused = False

    def _read_metadata(self, h5: h5py.File):
        self.config: dict = json.loads(h5.attrs["config"])
        self.fingerprint: str = str(h5.attrs["fingerprint"])
        self.class_names: list[str] = json.loads(h5.attrs["class_names"])
        self.versions: dict = json.loads(h5.attrs["versions"])
        self.run_info: dict = json.loads(h5.attrs.get("run", "{}") or "{}")
        self.content_digest: str | None = _attr_text(h5, "content_digest")
        self._complete_attr = bool(h5.attrs.get("complete", False))
        self._status = h5["status"][:]
        self._extra_sets: list[dict] = json.loads(h5.attrs.get("feature_sets", "[]"))
        self.n_items, self.dim = (int(s) for s in h5["features"].shape)
        self.feature_dtype = str(h5["features"].dtype)
        self._all_ids = h5["ids"].asstr()[:]
        self._all_labels = h5["labels"][:]
        self._all_splits = h5["splits"].asstr()[:]
        #: True for stores that record each file item's content hash and stat data.
        self.has_item_hashes = "item_hash" in h5
        skipped = np.flatnonzero(self._status == STATUS_SKIPPED)
        reasons = h5["skip_reasons"][skipped] if skipped.size else []
        return skipped, reasons

    def item_records(self) -> tuple[np.ndarray, list[str]]:
        """(N, 3) stat data and the N content hashes recorded at extraction (file sources only)."""
        if not self.has_item_hashes:
            raise FeatxError(f"{self.path} was written before per-item hashes; it has no item records")
        try:
            with _open_h5(self.path, "r") as h5:
                return h5["item_stat"][:], [h.decode("ascii") for h in h5["item_hash"][:]]
        except OSError as exc:
            raise damaged_error(self.path, _first_line(exc)) from None

    def changed_items(self, source) -> list[str]:
        """Ids of done or skipped rows whose file content changed since extraction (read-only check).

        Only files whose stat data changed are read again. Stores without per-item hashes
        return [] (their fingerprint already covers sizes and mtimes).
        """
        check = check_store_items(self, source)
        return [] if check is None else [str(self._all_ids[i]) for i in check.changed]

    # A complete flag alone could lie if the file was edited by hand; trust it only
    # when the status column agrees.
    @property
    def complete(self) -> bool:
        return self._complete_attr and not bool((self._status == STATUS_PENDING).any())

    def __len__(self) -> int:  # len(store): the usable rows, the length of features/labels/ids
        return int(self._done.sum())
    n_done = property(__len__)

    @property
    def n_pending(self) -> int:
        return int((self._status == STATUS_PENDING).sum())

    @property
    def backbone(self) -> str:
        return self.config["backbone"]["model"]

    @property
    def store_id(self) -> str:
        """A short hash of config + source fingerprint: what a trained head records it was fitted on."""
        import hashlib

        payload = {"config": self.config, "fingerprint": self.fingerprint}
        if self.content_digest:  # stores with per-item hashes: the content is part of the identity
            payload["content"] = self.content_digest
        blob = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def features(self) -> np.ndarray:
        if self._features is None:
            with _open_h5(self.path, "r") as h5:
                # One contiguous read, then a mask: far faster than h5py fancy indexing.
                try:
                    self._features = h5["features"][:][self._done]
                except OSError as exc:
                    raise damaged_error(self.path, f"/features: {_first_line(exc)}") from None
            self._features = self._features.astype(np.float32, copy=False)
        return self._features

    def iter_verified_shards(self, rows: int = 65536):
        """``(ids, labels, splits, features)`` of the usable rows, ``rows`` source rows at a time
        (see :func:`featx.store.iter_verified_shards`); each chunk's checksum is checked as it is read."""
        with _open_h5(self.path, "r") as h5:
            for lo in range(0, self.n_items, rows):
                sl = slice(lo, min(lo + rows, self.n_items))
                done = self._done[sl]
                try:
                    feats = h5["features"][sl][done]
                except OSError as exc:
                    raise damaged_error(self.path, f"/features: {_first_line(exc)}") from None
                yield (self._all_ids[sl][done], self._all_labels[sl][done].astype(np.int64), self._all_splits[sl][done],
                       feats.astype(np.float32, copy=False))

    @property
    def feature_sets(self) -> list[dict]:
        """Every stored set: ``pooled`` (``/features``) first, then the extra ones (``--layers``)."""
        return [{"name": "pooled", "dim": self.dim, "layer": None}, *(dict(s) for s in self._extra_sets)]

    def feature_set(self, name: str) -> np.ndarray:
        """The done rows of one named set (``pooled`` is :attr:`features`)."""
        if name == "pooled":
            return self.features
        if name not in {s["name"] for s in self._extra_sets}:
            known = ", ".join(s["name"] for s in self.feature_sets)
            raise FeatxUsageError(f"feature store {self.path} has no feature set {name!r}; it has: {known}")
        with _open_h5(self.path, "r") as h5:
            try:
                return h5["feature_sets"][name][:][self._done].astype(np.float32, copy=False)
            except OSError as exc:
                raise damaged_error(self.path, f"/feature_sets/{name}: {_first_line(exc)}") from None

    @property
    def done_mask(self) -> np.ndarray:
        """Which of all items (``all_ids`` order) are usable rows."""
        return self._done.copy()

    @property
    def labels(self) -> np.ndarray:
        return self._all_labels[self._done].astype(np.int64)

    @property
    def ids(self) -> np.ndarray:
        return self._all_ids[self._done]

    @property
    def splits(self) -> np.ndarray:
        return self._all_splits[self._done]

    def split_assignment(self, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                         usable_only: bool = True) -> tuple[np.ndarray, dict]:
        """Train/val/test for the usable rows (aligned with ``features``), computed over all items.

        Computing over every item of the source, skipped ones included, gives the very
        assignment the fine-tune baseline computes from the source itself.
        ``usable_only=False`` returns it for every item (aligned with ``all_ids``).
        """
        from ..data import assign_splits

        splits, rule = assign_splits(self._all_ids, self._all_labels, self._all_splits, seed=seed,
                                     val_fraction=val_fraction, test_fraction=test_fraction)
        return (splits[self._done] if usable_only else splits), rule

    @property
    def all_ids(self) -> np.ndarray:
        """Ids of every item of the source, skipped ones included."""
        return self._all_ids

    @property
    def all_labels(self) -> np.ndarray:
        """Labels of every item of the source, skipped ones included (``all_ids`` order)."""
        return self._all_labels

    @property
    def all_splits(self) -> np.ndarray:
        """The source's own split of every item ("" when it has none), skipped ones included."""
        return self._all_splits

    @property
    def has_splits(self) -> bool:
        return bool(np.any(self._all_splits != ""))

    def require_complete(self) -> FeatureStore:
        if not self.complete:
            raise FeatxError(
                f"feature store {self.path} is incomplete ({self.n_pending} of {self.n_items} rows pending): "
                "run `featx extract` again with the same arguments to resume it"
            )
        return self

    def info(self) -> dict:
        from collections import Counter

        split_counts = dict(Counter(str(split) or "none" for split in self.splits))
        return {
            "path": str(self.path),
            "n_items": self.n_items,
            "n_done": self.n_done,
            "n_skipped": len(self.skipped),
            "n_unlabelled": int((self.labels < 0).sum()),  # label -1 (extract --allow-unlabelled): in no split
            "n_pending": self.n_pending,
            "dim": self.dim,
            "dtype": self.feature_dtype,
            "complete": self.complete,
            "backbone": self.backbone,
            "weights": self.config["backbone"]["weights"],
            "classes": self.class_names,
            "splits": split_counts,
            "store_id": self.store_id,
            "size_bytes": self.path.stat().st_size,
            "config": self.config,
            "fingerprint": self.fingerprint,
            "item_hashes": self.has_item_hashes,
            "content_digest": self.content_digest,
            "versions": self.versions,
            "run": self.run_info,
            "skipped": self.skipped,
            "feature_sets": self.feature_sets,
        }

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{self.n_pending} pending"
        return f"FeatureStore({str(self.path)!r}, {self.n_done}x{self.dim}, {self.backbone}, {state})"


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
                _write_attrs(h5, config, fingerprint, class_names)
                _write_datasets(h5, ids, labels, splits, dim, dtype, item_records)
                if extra_sets:
                    h5.attrs["feature_sets"] = json.dumps(extra_sets)
                    for extra in extra_sets:
                        _checked_dataset(h5, f"feature_sets/{extra['name']}", (len(ids), extra["dim"]), dtype, fillvalue=0)
            os.replace(tmp, path)
        fsync_dir(path.parent)
        return cls(path, _open_h5(path, "r+"))

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
            status = np.array([STATUS_DONE if r is None else STATUS_SKIPPED for r in reasons], dtype=np.uint8)
            encoded = np.array([(r or "").encode("utf-8")[:_REASON_BYTES] for r in reasons], dtype=f"S{_REASON_BYTES}")
            self.h5["skip_reasons"][start:stop] = encoded
            self.h5["status"][start:stop] = status
            self.h5.flush()
        self.status[start:stop] = status
        if self.on_progress is not None:
            self.on_progress(int((self.status != STATUS_PENDING).sum()), len(self.status))

    def _write_records(self, start: int, records) -> None:
        from ..data import NO_STAT

        stop = start + len(records)
        self.h5["item_hash"][start:stop] = np.array([(r.digest if r else "").encode("ascii") for r in records],
                                                    dtype=f"S{_HASH_BYTES}")
        self.h5["item_stat"][start:stop] = np.array([r.stat if r else NO_STAT for r in records], dtype=np.int64)

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
        # Time to result counts every run that built this store, resumed ones included.
        previous = json.loads(self.h5.attrs.get("run", "{}") or "{}")
        run_info = {**run_info, "extract_seconds_total": round(
            float(previous.get("extract_seconds_total", 0.0)) + float(run_info.get("seconds_this_run", 0.0)), 3)}
        with disk_errors(self.path):
            if self.has_records:
                from ..data import digest_of_hashes

                hashes = [h.decode("ascii") for h in self.h5["item_hash"][:]]
                _set_attr(self.h5, "content_digest", digest_of_hashes(hashes), _DIGEST_ATTR_BYTES)
            _set_attr(self.h5, "run", json.dumps(run_info, sort_keys=True), _RUN_ATTR_BYTES)
            _set_attr(self.h5, "finished", time.strftime("%Y-%m-%dT%H:%M:%S%z"), _FINISHED_ATTR_BYTES)
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


def _write_attrs(h5: h5py.File, config: dict, fingerprint: str, class_names) -> None:
    h5.attrs["featx_format"] = FORMAT_VERSION
    h5.attrs["config"] = json.dumps(_canonical(config), sort_keys=True)
    h5.attrs["fingerprint"] = fingerprint
    h5.attrs["class_names"] = json.dumps(list(class_names))
    h5.attrs["versions"] = json.dumps(library_versions(xgboost=False), sort_keys=True)
    h5.attrs["complete"] = np.bool_(False)
    h5.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    h5.attrs["run"] = _padded("{}", _RUN_ATTR_BYTES)
    h5.attrs["finished"] = _padded("", _FINISHED_ATTR_BYTES)


def _write_datasets(h5: h5py.File, ids, labels, splits, dim: int, dtype: str, item_records: bool) -> None:
    n = len(ids)
    _checked_dataset(h5, "features", (n, dim), dtype, fillvalue=0)
    _checked_dataset(h5, "labels", (n,), np.int64)[:] = np.asarray(labels, dtype=np.int64)
    h5.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())
    h5.create_dataset("splits", data=np.asarray(splits, dtype=object), dtype=h5py.string_dtype())
    _checked_dataset(h5, "status", (n,), np.uint8, fillvalue=STATUS_PENDING)
    _checked_dataset(h5, "skip_reasons", (n,), f"S{_REASON_BYTES}", fillvalue=b"")
    if item_records:
        h5.attrs["content_digest"] = _padded("", _DIGEST_ATTR_BYTES)
        _checked_dataset(h5, "item_hash", (n,), f"S{_HASH_BYTES}", fillvalue=b"")
        _checked_dataset(h5, "item_stat", (n, 3), np.int64, fillvalue=-1)


def check_existing(path: Path, config: dict, source) -> FeatureStore:
    """The store at ``path`` if it holds exactly this config and source; else :class:`StoreMismatchError`.

    Stores with per-item hashes compare the source's structure (ids, labels, splits);
    their content is checked item by item afterwards (:func:`check_store_items`). Older
    stores compare the fingerprint they were written with (which includes sizes and mtimes).
    """
    store = FeatureStore(path)
    differences = diff_configs(store.config, _canonical(config))
    expected = source.structure_fingerprint() if store.has_item_hashes else source.fingerprint()
    if store.fingerprint != expected:
        differences.append("source content changed (files added, removed, renamed, relabelled or modified since "
                           "extraction)")
    if differences:
        raise StoreMismatchError(
            f"{path} holds features for a different config or source ({'; '.join(differences[:4])}"
            f"{'; ...' if len(differences) > 4 else ''}); use --overwrite to replace it, or another --out"
        )
    return store


def check_store_items(store: FeatureStore, source):
    """Which extracted rows' files were touched (same bytes) or changed since extraction, or None
    for stores and sources without per-item records."""
    paths = source.item_paths() if store.has_item_hashes else None
    if paths is None or len(paths) != store.n_items:
        return None
    from ..data import check_items

    stats, hashes = store.item_records()
    return check_items(paths, stats, hashes, np.flatnonzero(store._status != STATUS_PENDING))
