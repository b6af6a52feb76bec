"""A feature store written, in either layout, through one interface (the format and readers: ``_store``).

One file (:class:`StoreWriter`): every dataset is allocated when the file is created (chunked
datasets with early allocation), so an interrupted run can only leave pending rows half written,
never broken metadata. Rows are written batch by batch, features and item records first, then
status, each followed by a flush: a row whose status says "done" is on disk. ``complete`` is set
only after every row's status is done or skipped and everything else is flushed and fsynced.

A directory of shards (:class:`ShardedWriter`): shard ``N`` always covers the same rows of the
source listing, whoever writes it (the local engine through :meth:`ShardedWriter.write_batch`, or
a Ray actor through :func:`write_shard`), so writing a shard twice gives the same file and a
retried task can never duplicate a row. A shard is written under a temporary name, fsynced and
renamed into place: a file named ``part-NNNNN.h5`` is whole. The manifest is rewritten atomically
after each shard; a shard committed on disk but missing from the manifest (the driver was killed
in between) is adopted on resume only if it carries this store's nonce and config hash and the
ids the listing has there. ``complete`` is written only after every shard, read back through the
verified reader, holds exactly the listing's ids.

Callers write under :func:`~featx.store.writer_lock` (a sidecar ``<store>.lock``, an OS lock that
a killed process releases), so there is one writer at a time. Every write goes through
:func:`~featx.core.io.disk_errors`: a full disk or an I/O error is one line naming the store.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from itertools import chain
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import FeatxError
from ..core.io import disk_errors, file_sha256, fsync_dir, write_durably
from ..core.runtime import library_versions
from ..data import digest_of_hashes
from ._place import remove_temporaries
from ._store import (
    FORMAT_VERSION,
    ITEMS,
    RECORD_FIELDS,
    SHARD_RE,
    STAMP_KEYS,
    STATUS_DONE,
    STATUS_PENDING,
    STATUS_SKIPPED,
    _canonical,
    _check_shard,
    _first_line,
    _open_h5,
    _read_items,
    _read_manifest,
    _write_manifest,
    damaged_error,
    empty_records,
    header_digest,
    read_shard_fields,
    shard_name,
    take_records,
)

__all__ = ["StoreWriter", "ShardedWriter", "write_shard"]

_REASON_BYTES, _HASH_BYTES = 256, 64
# Reserved sizes of the attributes rewritten at finish: rewriting an attribute in place
# with the same type and size needs no new space in the file, so a full disk cannot
# strike while the run's record is being written (padding spaces are valid JSON).
_RUN_ATTR_BYTES, _FINISHED_ATTR_BYTES, _DIGEST_ATTR_BYTES = 4096, 32, 32


class _Writer:
    """What the writers of both layouts do alike, so one extraction loop writes either (``pending_rows``,
    ``batches``, ``write_batch``, ``refresh_items``, ``finish``, ``close``); each says where rows go."""

    _block: int | None = None  # the rows every batch stays inside (a shard's); None: the batch's own

    def __init__(self, path: Path, n_items: int, has_records: bool):
        self.path, self.n_items = path, n_items
        #: True for stores that keep each file item's content hash and stat data.
        self.has_records = has_records
        #: Called with (rows done or skipped, rows in all) after every batch (the progress sidecar).
        self.on_progress = None

    def batches(self, batch_size: int) -> list[list[int]]:
        """The pending rows in fixed, aligned batches: blocks ``[k*B, (k+1)*B)`` in a file, batches from
        each pending shard's first row in a directory (a shard never waits on another's rows). A resumed
        run recomputes the same batches with the same composition: its store equals an uninterrupted one."""
        block, out = self._block or batch_size, []
        for k in np.unique(self.pending_rows() // block):
            start, stop = int(k) * block, min((int(k) + 1) * block, self.n_items)
            out.extend(list(range(s, min(s + batch_size, stop))) for s in range(start, stop, batch_size))
        return out

    def finish(self, run_info: dict) -> None:
        """Check every row is in (each layout its way), then record the run (time to result counts
        every run that built the store, resumed ones included), its finish time and the content digest
        (stores with item records), and ``complete`` last: a store that fails to finish is resumed."""
        hashes, previous = self._check_rows()
        total = float(previous.get("extract_seconds_total", 0.0)) + float(run_info.get("seconds_this_run", 0))
        fields = {"run": {**run_info, "extract_seconds_total": round(total, 3)},
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if self.has_records:
            fields["content_digest"] = digest_of_hashes(hashes)
        self._complete(fields)

    def close(self) -> None:
        """Nothing held open between shards; a file's writer closes the file."""


class StoreWriter(_Writer):
    """Create or reopen a single-file store for writing; a failed :meth:`create` leaves no half-made file."""

    def __init__(self, path: Path, h5: h5py.File):
        try:
            self.status = h5["status"][:]
        except OSError as exc:
            h5.close()
            raise damaged_error(path, _first_line(exc)) from None
        super().__init__(path, len(self.status), "item_hash" in h5)
        self.h5 = h5

    @classmethod
    def create(cls, path: Path, *, config: dict, fingerprint: str, ids, labels, splits, class_names, dim: int,
               dtype: str, item_records: bool = False, extra_sets: list[dict] | None = None) -> StoreWriter:
        """Write the skeleton (every dataset allocated) under ``<path>.creating``, then rename it into place.

        ``item_records``: add ``/item_hash`` and ``/item_stat`` for a file source's per-item checks.
        ``extra_sets``: ``{name, dim, ...}`` of each ``/feature_sets/<name>`` to allocate beside ``/features``.
        """
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
                write_listing(h5, ids, labels, splits)
                # (name, row shape, dtype, fill) of every per-row dataset, allocated and filled now
                rows = [("features", (dim,), dtype, 0), ("status", (), np.uint8, STATUS_PENDING),
                        ("skip_reasons", (), f"S{_REASON_BYTES}", b"")]
                rows += [(f"feature_sets/{s['name']}", (s["dim"],), dtype, 0) for s in extra_sets or []]
                if item_records:
                    h5.attrs["content_digest"] = _padded("", _DIGEST_ATTR_BYTES)
                    rows += [("item_hash", (), f"S{_HASH_BYTES}", b""), ("item_stat", (3,), np.int64, -1)]
                for name, shape, kind, fill in rows:
                    _checked_dataset(h5, name, (len(ids), *shape), kind, fillvalue=fill)
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

    def write_batch(self, start: int, features: np.ndarray, reasons: list[str | None], records=None,
                    extra: dict[str, np.ndarray] | None = None) -> None:
        """Write rows ``start:start+len(reasons)``: features (and item records), flush, then status, flush.

        ``records``: one :class:`featx.data.ItemRecord` (or None) per row, for stores with item records.
        ``extra``: rows of the ``/feature_sets`` (written, like features, before the status).
        """
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
            self.on_progress(int((self.status != STATUS_PENDING).sum()), self.n_items)

    def _write_records(self, start: int, records) -> None:
        rows = slice(start, start + len(records))
        self.h5["item_hash"][rows], self.h5["item_stat"][rows] = encode_records(records)

    def refresh_items(self, touched: dict[int, tuple[int, int, int]], changed: list[int]) -> None:
        """Record new stat data of touched-but-unchanged items; mark changed items pending again."""
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

    def _check_rows(self) -> tuple[list[str] | None, dict]:
        """(the item hashes, the previous run's record) once no row is pending."""
        if (self.status == STATUS_PENDING).any():
            raise FeatxError("internal error: finishing a store with pending rows")
        with disk_errors(self.path):
            hashes = [h.decode("ascii") for h in self.h5["item_hash"][:]] if self.has_records else None
        return hashes, json.loads(self.h5.attrs.get("run", "{}") or "{}")

    def _complete(self, fields: dict) -> None:
        """Record the run, flush and fsync; only then set ``complete`` (flushed and fsynced too).

        A failure anywhere before the last step (a full disk during the final flush) leaves
        an incomplete store whose attributes read back, which the next run resumes.
        """
        with disk_errors(self.path):
            if "content_digest" in fields:  # before the seal: header_sha256 covers the content digest
                _set_attr(self.h5, "content_digest", fields["content_digest"], _DIGEST_ATTR_BYTES)
            _seal(self.h5)
            _set_attr(self.h5, "run", json.dumps(fields["run"], sort_keys=True), _RUN_ATTR_BYTES)
            _set_attr(self.h5, "finished", fields["finished"], _FINISHED_ATTR_BYTES)
            _fsync(self.h5)
            self.h5.attrs.modify("complete", True)
            _fsync(self.h5)

    def close(self) -> None:
        self.h5.close()


def _commit_h5(final: Path, tmp: Path, build) -> str:
    """Build an HDF5 file in memory (``build(h5)``), write it under ``tmp``, fsync, rename it to ``final``;
    its sha256. Only plain writes touch the disk, so a full disk is one clean error (HDF5 writing to
    a full disk itself fails again, noisily, when its objects are freed)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        build(h5)
    data = buffer.getvalue()
    write_durably(final, tmp, data)
    return hashlib.sha256(data).hexdigest()


def write_shard(directory: str | os.PathLike, index: int, start: int, ids, features: np.ndarray,
                reasons: list[str | None], dtype: str, stamp: dict | None = None, records=None,
                extra: dict[str, np.ndarray] | None = None) -> dict:
    """Write shard ``index`` (rows ``start..start+len(ids)``) atomically; return its manifest entry.

    Called by the local engine and by Ray actors alike; the entry carries everything the
    driver needs (sha256, id range, skipped rows) without reopening the file. ``stamp``
    (:attr:`ShardedWriter.stamp`: the store's nonce and config hash) goes into the shard's
    attributes, so a resume adopts only shards of this very store. ``records``: one
    :class:`~featx.data.ItemRecord` (or None) per row; ``extra``: the rows of each ``--layers`` set.
    """
    final = Path(directory) / shard_name(index)
    # Unique temp name: a retried task and a stray one from a killed run never collide.
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    n = len(ids)
    status, encoded = encode_reasons(reasons)

    def build(h5: h5py.File) -> None:
        h5.attrs.update({"featx_format": FORMAT_VERSION, "shard": index, "start": start, **(stamp or {})})
        h5.create_dataset("features", data=np.asarray(features).reshape(n, -1).astype(dtype))
        h5.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())
        h5.create_dataset("status", data=status)
        h5.create_dataset("skip_reasons", data=encoded)
        if records is not None:
            for name, data in zip(RECORD_FIELDS, encode_records(records)):
                h5.create_dataset(name, data=data)
        for name, rows in (extra or {}).items():
            h5.create_dataset(f"feature_sets/{name}", data=np.asarray(rows).reshape(n, -1).astype(dtype))

    sha = _commit_h5(final, tmp, build)
    return shard_entry(index, start, ids, reasons, sha, final.stat().st_size)


def shard_entry(index: int, start: int, ids, reasons: list[str | None], sha256: str, size: int) -> dict:
    """The manifest entry of committed shard ``index``: its rows, id range, sha256, size and skipped rows."""
    n = len(ids)
    return {"index": index, "name": shard_name(index), "start": start, "stop": start + n, "rows": n,
            "first_id": str(ids[0]) if n else "", "last_id": str(ids[-1]) if n else "", "sha256": sha256,
            "bytes": size, "skipped": [[start + i, r] for i, r in enumerate(reasons) if r is not None]}


class ShardedWriter(_Writer):
    """Create or resume a sharded store; the driver (one process, under the writer lock) owns the manifest."""

    def __init__(self, path: Path, manifest: dict, ids: np.ndarray):
        super().__init__(path, int(manifest["n_items"]), bool(manifest.get("item_records")))
        self.manifest, self.ids, self._block = manifest, ids, int(manifest["shard_size"])
        #: The attributes every shard of this store records (none for stores made before stamps).
        self.stamp = {attr: manifest[key] for attr, key in STAMP_KEYS.items()} if "nonce" in manifest else {}
        # The batches of each shard not yet committed, by first row: (features, reasons, records, extra).
        self._open: dict[int, dict[int, tuple]] = {}
        #: (stats, hashes) of every row, as read from the committed shards on reopen (stores with item records).
        self.records = empty_records(len(ids)) if self.has_records else None

    @classmethod
    def create(cls, path: Path, *, config: dict, fingerprint: str, ids, labels, splits, class_names, dim: int,
               dtype: str, shard_size: int, item_records: bool = False,
               extra_sets: list[dict] | None = None) -> ShardedWriter:
        path.mkdir(parents=True, exist_ok=True)
        items_sha = _commit_h5(path / ITEMS, path / f".{ITEMS}.tmp", lambda h5: write_listing(h5, ids, labels, splits))
        n, manifest = len(ids), store_header(config, fingerprint, class_names)
        # What every shard of this store carries: a resume adopts an orphan shard only when both match.
        identity = json.dumps({"config": manifest["config"], "dim": int(dim), "dtype": dtype}, sort_keys=True)
        manifest.update({
            "layout": "sharded", "nonce": uuid.uuid4().hex, "config_sha256": hashlib.sha256(identity.encode()).hexdigest(),
            "items_sha256": items_sha, "item_records": bool(item_records), "n_items": n, "dim": int(dim), "dtype": dtype,
            "shard_size": int(shard_size), "n_shards": -(-n // shard_size), "shards": {},
        })
        if extra_sets:
            manifest["feature_sets"] = list(extra_sets)
        # The manifest goes last: a directory without it is not a store yet, and is recreated.
        _write_manifest(path, manifest)
        return cls(path, manifest, np.asarray(ids, dtype=object))

    @classmethod
    def reopen(cls, path: Path) -> ShardedWriter:
        manifest = _read_manifest(path)
        ids, _, _ = _read_items(path, manifest.get("items_sha256"))
        remove_temporaries(path)  # of a killed run: under the writer lock, no live writer owns them
        writer = cls(path, manifest, ids)
        # Read every listed shard once (the verified read, keeping its item records); drop the entries
        # whose shard vanished or changed, so they are rebuilt.
        dropped = [int(key) for key, entry in manifest["shards"].items() if writer._keep(entry) is None]
        if dropped:  # on disk before anything else: readers see those rows pending, not damaged
            writer._drop(dropped)
        writer._adopt_committed()
        return writer

    def _drop(self, indices) -> None:
        """Forget shards ``indices`` (entries and files), so they are rebuilt; the manifest goes to disk."""
        for index in sorted(indices):
            entry = self.manifest["shards"].pop(str(index), None)
            if entry:
                (self.path / entry["name"]).unlink(missing_ok=True)
        self.manifest["complete"] = False
        _write_manifest(self.path, self.manifest)

    def _keep(self, entry: dict) -> dict | None:
        """A committed shard's fields, read once, if it is this store's and checks out: its sha256 (``None``
        for an orphan), the listing's ids there, its shape, this store's nonce and config hash (never another
        store's or another run's shard), every row done or skipped. Its item records go to :attr:`records`."""
        names = ["status", "skip_reasons", *(RECORD_FIELDS if self.has_records else [])]
        problem, fields = _check_shard(self.path, entry, self.ids, int(self.manifest["dim"]), names)
        if problem or any(fields["stamp"][k] != v for k, v in self.stamp.items()) \
                or (fields["status"] == STATUS_PENDING).any():
            return None
        if self.records is not None:
            take_records(self.records, slice(entry["start"], entry["stop"]), fields)
        return fields

    def _adopt_committed(self) -> None:
        """Add shards committed on disk after the last manifest write (driver killed in between)."""
        for shard in sorted(self.path.iterdir()):
            match = SHARD_RE.match(shard.name)
            index = int(match.group(1)) if match else -1
            if shard.name != shard_name(index) or str(index) in self.manifest["shards"]:
                continue
            start, stop = self.shard_range(index)
            entry = {"name": shard.name, "start": start, "stop": stop, "sha256": None}
            fields = self._keep(entry) if index < self.manifest["n_shards"] else None
            if fields is None:
                shard.unlink(missing_ok=True)
                continue
            reasons = [bytes(r).decode("utf-8", "replace").rstrip("\x00") if s == STATUS_SKIPPED else None
                       for s, r in zip(fields["status"], fields["skip_reasons"])]
            self.record(shard_entry(index, start, fields["ids"], reasons, fields["sha256"], shard.stat().st_size))

    def shard_range(self, index: int) -> tuple[int, int]:
        return index * self._block, min((index + 1) * self._block, self.n_items)

    def pending_shards(self) -> list[int]:
        return [k for k in range(self.manifest["n_shards"]) if str(k) not in self.manifest["shards"]]

    def pending_rows(self) -> np.ndarray:
        ranges = [np.arange(*self.shard_range(k)) for k in self.pending_shards()]
        return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)

    def write_batch(self, start: int, features: np.ndarray, reasons: list[str | None], records=None,
                    extra: dict[str, np.ndarray] | None = None) -> None:
        """Rows ``start..start+len(reasons)`` (inside one shard); the shard is committed once all its rows are in."""
        index = start // self._block
        lo, hi = self.shard_range(index)
        parts = self._open.setdefault(index, {})
        # float32 copies (the caller may reuse its arrays), cast to the store's dtype once, at commit.
        parts[start] = (np.array(features, np.float32), list(reasons), list(records or [None] * len(reasons)),
                        {name: np.array(rows, np.float32) for name, rows in (extra or {}).items()})
        if sum(len(part[1]) for part in parts.values()) == hi - lo:
            feats, reasons, records, extra = zip(*(parts[k] for k in sorted(self._open.pop(index))))
            extra = {name: np.concatenate([rows[name] for rows in extra]) for name in extra[0]}
            records = list(chain(*records)) if self.has_records else None
            self.record(write_shard(self.path, index, lo, self.ids[lo:hi], np.concatenate(feats),
                                    list(chain(*reasons)), self.manifest["dtype"], stamp=self.stamp,
                                    records=records, extra=extra or None))
        if self.on_progress is not None:
            done = sum(e["rows"] for e in self.manifest["shards"].values())
            self.on_progress(done + sum(len(p[1]) for shard in self._open.values() for p in shard.values()),
                             self.n_items)

    def refresh_items(self, touched: dict[int, tuple[int, int, int]], changed: list[int]) -> None:
        """Record new stat data of touched-but-unchanged items; make shards with changed items pending again."""
        redo = {row // self._block for row in changed}
        if redo:
            self._drop(redo)
        for index in sorted({row // self._block for row in touched} - redo):
            entry = self.manifest["shards"][str(index)]
            shard = self.path / entry["name"]
            with disk_errors(shard), h5py.File(shard, "r+") as h5:
                for row in (r for r in touched if r // self._block == index):
                    h5["item_stat"][row - entry["start"]] = np.asarray(touched[row], dtype=np.int64)
            # A kill before the manifest below: the shard no longer matches its sha256 and is rebuilt.
            entry.update(sha256=file_sha256(shard), bytes=shard.stat().st_size)
        _write_manifest(self.path, self.manifest)

    def record(self, entry: dict) -> None:
        self.manifest["shards"][str(entry["index"])] = entry
        _write_manifest(self.path, self.manifest)

    def _check_rows(self) -> tuple[list[str], dict]:
        """(the item hashes, the previous run's record) once the shards tile the listing (each covers
        exactly its rows: none missing, none twice) and each, read back through the verified reader,
        holds the listing's ids there."""
        names, hashes = (["item_hash"] if self.has_records else []), []
        for index in range(self.manifest["n_shards"]):
            entry = self.manifest["shards"].get(str(index))
            if entry is None or (entry["start"], entry["stop"]) != self.shard_range(index):
                raise FeatxError(f"{self.path}: shard {index} is missing or covers other rows than the listing has "
                                 "for it; not marking it complete (re-run extract to rebuild it)")
            fields = read_shard_fields(self.path, entry, self.ids, int(self.manifest["dim"]), names)
            hashes.extend(h.decode("ascii") for h in fields.get("item_hash", []))
        return hashes, self.manifest.get("run") or {}

    def _complete(self, fields: dict) -> None:
        self.manifest.update(fields, complete=True)
        _write_manifest(self.path, self.manifest)


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


def _fsync(h5: h5py.File) -> None:
    h5.flush()
    try:
        fd = h5.id.get_vfd_handle()
    except Exception:  # a driver without a file descriptor: the flush is all we can do
        return
    os.fsync(fd)


def _padded(text: str, size: int) -> np.bytes_:
    data = text.encode("utf-8")
    return np.bytes_(data.ljust(size) if len(data) <= size else data)


def _checked_dataset(h5: h5py.File, name: str, shape: tuple, dtype, **kwargs) -> h5py.Dataset:
    """A chunked, Fletcher-32-checksummed dataset whose chunks are all allocated (and filled) now."""
    n = shape[0]
    if n == 0:
        return h5.create_dataset(name, shape=shape, dtype=dtype, **kwargs)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    row_bytes = int(np.dtype(dtype).itemsize * int(np.prod(shape[1:], dtype=np.int64)))
    chunks = (max(1, min(n, (1 << 18) // max(1, row_bytes))), *shape[1:])  # chunks of about 256 KiB
    return h5.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, fletcher32=True, dcpl=dcpl, **kwargs)


def encode_reasons(reasons: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(status, fixed-size utf-8 skip reasons) of rows whose reason is None (done) or a text (skipped)."""
    status = np.array([STATUS_DONE if r is None else STATUS_SKIPPED for r in reasons], dtype=np.uint8)
    return status, np.array([(r or "").encode("utf-8")[:_REASON_BYTES] for r in reasons], dtype=f"S{_REASON_BYTES}")


def encode_records(records) -> tuple[np.ndarray, np.ndarray]:
    """(content hashes, (n, 3) stat data) of rows' :class:`~featx.data.ItemRecord` (None: '' and -1s)."""
    hashes = np.array([(r.digest if r else "").encode("ascii") for r in records], dtype=f"S{_HASH_BYTES}")
    return hashes, np.array([r.stat if r else (-1, -1, -1) for r in records], dtype=np.int64).reshape(-1, 3)


def store_header(config: dict, fingerprint: str, class_names) -> dict:
    """The fields every new store starts with, whatever its layout (attributes of a file, a manifest's keys)."""
    return {"featx_format": FORMAT_VERSION, "config": _canonical(config), "fingerprint": fingerprint,
            "class_names": list(class_names), "versions": library_versions(xgboost=False), "complete": False,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": "", "run": {}}


def write_listing(h5: h5py.File, ids, labels, splits) -> None:
    """The item listing (ids, labels, splits in source order): a file store's, or a sharded store's items.h5."""
    _checked_dataset(h5, "labels", (len(ids),), np.int64)[:] = np.asarray(labels, dtype=np.int64)
    h5.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())
    h5.create_dataset("splits", data=np.asarray(splits, dtype=object), dtype=h5py.string_dtype())
