"""The sharded layout of a feature store, written (the reader and the format are in ``_shards``).

Shard ``N`` always covers the same rows of the source listing, whoever writes it (the
local engine through :meth:`ShardedWriter.write_batch`, or a Ray actor through
:func:`write_shard`), so writing a shard twice gives the same file and a retried task can
never duplicate a row. A shard is written under a temporary name, fsynced and renamed
into place: a file named ``part-NNNNN.h5`` is whole. The manifest is rewritten atomically
after each shard; a shard committed on disk but missing from the manifest (the driver was
killed in between) is adopted on resume only if it carries this store's nonce and config
hash and the ids the listing has there. ``complete`` is written only after every shard,
read back through the verified reader, holds exactly the listing's ids.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import FeatxError
from ..core.io import disk_errors, file_sha256, write_durably
from ._place import remove_temporaries
from ._shards import (
    ITEMS,
    RECORD_FIELDS,
    SHARD_RE,
    STAMP_KEYS,
    _check_shard,
    _read_items,
    _read_manifest,
    _write_manifest,
    empty_records,
    read_shard_fields,
    shard_name,
    take_records,
)
from ._store import (
    FORMAT_VERSION,
    STATUS_PENDING,
    STATUS_SKIPPED,
    encode_reasons,
    encode_records,
    finish_fields,
    store_header,
    write_listing,
)

__all__ = ["ShardedWriter", "write_shard"]


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
    directory = Path(directory)
    final = directory / shard_name(index)
    # Unique temp name: a retried task and a stray one from a killed run never collide.
    tmp = directory / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    n = len(ids)
    status, encoded = encode_reasons(reasons)

    def build(h5: h5py.File) -> None:
        h5.attrs["featx_format"] = FORMAT_VERSION
        h5.attrs["shard"] = index
        h5.attrs["start"] = start
        for key, value in (stamp or {}).items():
            h5.attrs[key] = value
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


class _Slot:
    """The rows of one shard gathered from batches until all are in."""

    def __init__(self, rows: int, dim: int, extra_dims: dict[str, int]):
        self.features = np.zeros((rows, dim), dtype=np.float32)
        self.reasons: list[str | None] = [None] * rows
        self.records: list = [None] * rows
        self.extra = {name: np.zeros((rows, d), dtype=np.float32) for name, d in extra_dims.items()}
        self.missing = rows

    def put(self, at: int, features, reasons, records, extra) -> None:
        stop = at + len(reasons)
        self.features[at:stop] = features
        self.reasons[at:stop] = reasons
        self.records[at:stop] = records or [None] * len(reasons)
        for name, rows in (extra or {}).items():
            self.extra[name][at:stop] = rows
        self.missing -= len(reasons)


class ShardedWriter:
    """Create or resume a sharded store; the driver (one process, under the writer lock) owns the manifest.

    The same writing interface as :class:`~featx.store.StoreWriter` (``batches``,
    ``write_batch``, ``refresh_items``, ``finish``), so one extraction loop writes both layouts.
    """

    def __init__(self, path: Path, manifest: dict, ids: np.ndarray):
        self.path, self.manifest, self.ids = path, manifest, ids
        self.has_records = bool(manifest.get("item_records"))
        self.on_progress = None
        self._open: dict[int, _Slot] = {}
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

    @property
    def stamp(self) -> dict:
        """The attributes every shard of this store records (none for stores made before stamps)."""
        m = self.manifest
        return dict(zip(STAMP_KEYS, (m["nonce"], m["config_sha256"]))) if "nonce" in m else {}

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
            take_records(self.records, entry, fields)
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
        size = self.manifest["shard_size"]
        return index * size, min((index + 1) * size, self.manifest["n_items"])

    def pending_shards(self) -> list[int]:
        return [k for k in range(self.manifest["n_shards"]) if str(k) not in self.manifest["shards"]]

    def pending_rows(self) -> np.ndarray:
        ranges = [np.arange(*self.shard_range(k)) for k in self.pending_shards()]
        return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)

    def batches(self, batch_size: int) -> list[list[int]]:
        """Batches aligned inside each pending shard, so a shard never waits on another's rows."""
        out = []
        for index in self.pending_shards():
            start, stop = self.shard_range(index)
            out.extend(list(range(s, min(s + batch_size, stop))) for s in range(start, stop, batch_size))
        return out

    def write_batch(self, start: int, features: np.ndarray, reasons: list[str | None], records=None,
                    extra: dict[str, np.ndarray] | None = None) -> None:
        """Rows ``start..start+len(reasons)`` (inside one shard); the shard is committed once all its rows are in."""
        index = start // self.manifest["shard_size"]
        lo, hi = self.shard_range(index)
        dims = {s["name"]: int(s["dim"]) for s in self.manifest.get("feature_sets", [])}
        slot = self._open.setdefault(index, _Slot(hi - lo, int(self.manifest["dim"]), dims))
        slot.put(start - lo, features, reasons, records, extra)
        if slot.missing == 0:
            del self._open[index]
            self.record(write_shard(self.path, index, lo, self.ids[lo:hi], slot.features, slot.reasons,
                                    self.manifest["dtype"], stamp=self.stamp,
                                    records=slot.records if self.has_records else None,
                                    extra=slot.extra or None))
        if self.on_progress is not None:
            done = sum(e["rows"] for e in self.manifest["shards"].values())
            self.on_progress(done + sum(len(s.reasons) - s.missing for s in self._open.values()),
                             self.manifest["n_items"])

    def refresh_items(self, touched: dict[int, tuple[int, int, int]], changed: list[int]) -> None:
        """Record new stat data of touched-but-unchanged items; make shards with changed items pending again."""
        size = self.manifest["shard_size"]
        redo = {row // size for row in changed}
        if redo:
            self._drop(redo)
        for index in sorted({row // size for row in touched} - redo):
            entry = self.manifest["shards"][str(index)]
            shard = self.path / entry["name"]
            with disk_errors(shard), h5py.File(shard, "r+") as h5:
                for row in (r for r in touched if r // size == index):
                    h5["item_stat"][row - entry["start"]] = np.asarray(touched[row], dtype=np.int64)
            # A kill before the manifest below: the shard no longer matches its sha256 and is rebuilt.
            entry.update(sha256=file_sha256(shard), bytes=shard.stat().st_size)
        _write_manifest(self.path, self.manifest)

    def record(self, entry: dict) -> None:
        self.manifest["shards"][str(entry["index"])] = entry
        _write_manifest(self.path, self.manifest)

    def finish(self, run_info: dict) -> None:
        """Check every shard through the verified reader and the ids against the listing; then ``complete``."""
        # The shards must tile the listing (each covers exactly its rows: none missing, none twice) and
        # each, read back through the verified reader, hold the listing's ids there.
        names, hashes = (["item_hash"] if self.has_records else []), []
        for index in range(self.manifest["n_shards"]):
            entry = self.manifest["shards"].get(str(index))
            if entry is None or (entry["start"], entry["stop"]) != self.shard_range(index):
                raise FeatxError(f"{self.path}: shard {index} is missing or covers other rows than the listing has "
                                 "for it; not marking it complete (re-run extract to rebuild it)")
            fields = read_shard_fields(self.path, entry, self.ids, int(self.manifest["dim"]), names)
            hashes.extend(h.decode("ascii") for h in fields.get("item_hash", []))
        previous = self.manifest.get("run") or {}
        self.manifest.update(finish_fields(previous, run_info, hashes if self.has_records else None), complete=True)
        _write_manifest(self.path, self.manifest)

    def close(self) -> None:
        """Nothing held open between shards; here for symmetry with the single-file writer."""
