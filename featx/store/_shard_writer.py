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
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import FeatxError, FeatxUsageError
from ..core.io import disk_errors, file_sha256, write_durably
from ..core.runtime import library_versions
from ._place import remove_temporaries
from ._shards import (
    ITEMS,
    MANIFEST,
    SHARD_RE,
    _read_items,
    _read_manifest,
    _write_manifest,
    read_shard_fields,
    shard_name,
)
from ._store import (
    _HASH_BYTES,
    _REASON_BYTES,
    FORMAT_VERSION,
    STATUS_DONE,
    STATUS_PENDING,
    STATUS_SKIPPED,
    _attr_text,
    _canonical,
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
    attributes, so a resume adopts only shards of this very store. ``records``: (content
    hashes, (n, 3) stat data) of file items; ``extra``: the rows of each ``--layers`` set.
    """
    directory = Path(directory)
    final = directory / shard_name(index)
    # Unique temp name: a retried task and a stray one from a killed run never collide.
    tmp = directory / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    n = len(ids)
    status = np.array([STATUS_DONE if r is None else STATUS_SKIPPED for r in reasons], dtype=np.uint8)
    encoded = np.array([(r or "").encode("utf-8")[:_REASON_BYTES] for r in reasons], dtype=f"S{_REASON_BYTES}")

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
            hashes, stats = records
            h5.create_dataset("item_hash", data=np.array([h.encode("ascii") for h in hashes], dtype=f"S{_HASH_BYTES}"))
            h5.create_dataset("item_stat", data=np.asarray(stats, dtype=np.int64).reshape(n, 3))
        for name, rows in (extra or {}).items():
            h5.create_dataset(f"feature_sets/{name}", data=np.asarray(rows).reshape(n, -1).astype(dtype))

    sha = _commit_h5(final, tmp, build)
    return {
        "index": index, "name": final.name, "start": start, "stop": start + n, "rows": n,
        "first_id": str(ids[0]) if n else "", "last_id": str(ids[-1]) if n else "",
        "sha256": sha, "bytes": final.stat().st_size,
        "skipped": [[start + i, r] for i, r in enumerate(reasons) if r is not None],
    }


class _Slot:
    """The rows of one shard gathered from batches until all are in."""

    def __init__(self, rows: int, dim: int, extra_dims: dict[str, int]):
        self.features = np.zeros((rows, dim), dtype=np.float32)
        self.reasons: list[str | None] = [None] * rows
        self.hashes, self.stats = [""] * rows, np.full((rows, 3), -1, dtype=np.int64)
        self.extra = {name: np.zeros((rows, d), dtype=np.float32) for name, d in extra_dims.items()}
        self.missing = rows

    def put(self, at: int, features, reasons, records, extra) -> None:
        stop = at + len(reasons)
        self.features[at:stop] = features
        self.reasons[at:stop] = reasons
        for i, record in enumerate(records or []):
            if record is not None:
                self.hashes[at + i], self.stats[at + i] = record.digest, record.stat
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

    @classmethod
    def create(cls, path: Path, *, config: dict, fingerprint: str, ids, labels, splits, class_names, dim: int,
               dtype: str, shard_size: int, item_records: bool = False,
               extra_sets: list[dict] | None = None) -> ShardedWriter:
        if shard_size < 1:
            raise FeatxUsageError("shard size must be at least 1")
        path.mkdir(parents=True, exist_ok=True)

        def build(h5: h5py.File) -> None:
            h5.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
            h5.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())
            h5.create_dataset("splits", data=np.asarray(splits, dtype=object), dtype=h5py.string_dtype())

        items_sha = _commit_h5(path / ITEMS, path / f".{ITEMS}.tmp", build)
        n = len(ids)
        config = _canonical(config)
        # What every shard of this store carries: a resume adopts an orphan shard only when both match.
        identity = json.dumps({"config": config, "dim": int(dim), "dtype": dtype}, sort_keys=True)
        manifest = {
            "featx_format": FORMAT_VERSION, "layout": "sharded", "config": config,
            "nonce": uuid.uuid4().hex, "config_sha256": hashlib.sha256(identity.encode()).hexdigest(),
            "items_sha256": items_sha, "item_records": bool(item_records),
            "fingerprint": fingerprint, "class_names": list(class_names),
            "versions": library_versions(xgboost=False), "n_items": n, "dim": int(dim), "dtype": dtype,
            "shard_size": int(shard_size), "n_shards": -(-n // shard_size), "shards": {},
            "complete": False, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": "", "run": {},
        }
        if extra_sets:
            manifest["feature_sets"] = list(extra_sets)
        # The manifest goes last: a directory without it is not a store yet, and is recreated.
        with disk_errors(path / MANIFEST):
            _write_manifest(path, manifest)
        return cls(path, manifest, np.asarray(ids, dtype=object))

    @property
    def stamp(self) -> dict:
        """The attributes every shard of this store records (none for stores made before stamps)."""
        m = self.manifest
        return {"store_nonce": m["nonce"], "store_config": m["config_sha256"]} if "nonce" in m else {}

    @classmethod
    def reopen(cls, path: Path) -> ShardedWriter:
        manifest = _read_manifest(path)
        ids, _, _ = _read_items(path, manifest.get("items_sha256"))
        remove_temporaries(path)  # of a killed run: under the writer lock, no live writer owns them
        writer = cls(path, manifest, ids)
        writer._check_listed()
        writer._adopt_committed()
        return writer

    def _check_listed(self) -> None:
        """Drop manifest entries whose shard file vanished or changed, so they are rebuilt."""
        dropped = False
        for key, entry in list(self.manifest["shards"].items()):
            shard = self.path / entry["name"]
            if not shard.is_file() or file_sha256(shard) != entry["sha256"]:
                shard.unlink(missing_ok=True)
                del self.manifest["shards"][key]
                self.manifest["complete"], dropped = False, True
        if dropped:  # on disk before anything else: readers see those rows pending, not damaged
            with disk_errors(self.path / MANIFEST):
                _write_manifest(self.path, self.manifest)

    def _adopt_committed(self) -> None:
        """Add shards committed on disk after the last manifest write (driver killed in between)."""
        for shard in sorted(self.path.iterdir()):
            match = SHARD_RE.match(shard.name)
            index = int(match.group(1)) if match else -1
            if index < 0 or str(index) in self.manifest["shards"]:
                continue
            start, stop = self.shard_range(index)
            try:
                with h5py.File(shard, "r") as h5:
                    # Another store's or another run's shard (another nonce or config) is never adopted.
                    if any(_attr_text(h5, key) != value for key, value in self.stamp.items()):
                        raise KeyError("not this store's shard")
                    ids = h5["ids"].asstr()[:]
                    status = h5["status"][:]
                    reasons = [bytes(r).decode("utf-8", "replace").rstrip("\x00") for r in h5["skip_reasons"][:]]
            except (OSError, KeyError):
                ids, status, reasons = np.array([]), np.array([]), []
            if stop > self.manifest["n_items"] or not np.array_equal(ids.astype(str), self.ids[start:stop].astype(str)) \
                    or (status == STATUS_PENDING).any():
                shard.unlink(missing_ok=True)
                continue
            self.record({
                "index": index, "name": shard.name, "start": start, "stop": stop, "rows": stop - start,
                "first_id": str(ids[0]), "last_id": str(ids[-1]), "sha256": file_sha256(shard),
                "bytes": shard.stat().st_size,
                "skipped": [[start + i, r] for i, (s, r) in enumerate(zip(status, reasons)) if s == STATUS_SKIPPED],
            })

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
            records = (slot.hashes, slot.stats) if self.has_records else None
            self.record(write_shard(self.path, index, lo, self.ids[lo:hi], slot.features, slot.reasons,
                                    self.manifest["dtype"], stamp=self.stamp, records=records,
                                    extra=slot.extra or None))
        if self.on_progress is not None:
            done = sum(e["rows"] for e in self.manifest["shards"].values())
            self.on_progress(done + sum(len(s.reasons) - s.missing for s in self._open.values()),
                             self.manifest["n_items"])

    def refresh_items(self, touched: dict[int, tuple[int, int, int]], changed: list[int]) -> None:
        """Record new stat data of touched-but-unchanged items; make shards with changed items pending again."""
        size = self.manifest["shard_size"]
        redo = {row // size for row in changed}
        for index in sorted(redo):
            entry = self.manifest["shards"].pop(str(index), None)
            if entry:
                (self.path / entry["name"]).unlink(missing_ok=True)
        if redo:
            self.manifest["complete"] = False
        for index in sorted({row // size for row in touched} - redo):
            entry = self.manifest["shards"][str(index)]
            shard = self.path / entry["name"]
            with disk_errors(shard), h5py.File(shard, "r+") as h5:
                for row in (r for r in touched if r // size == index):
                    h5["item_stat"][row - entry["start"]] = np.asarray(touched[row], dtype=np.int64)
            # A kill before the manifest below: the shard no longer matches its sha256 and is rebuilt.
            entry.update(sha256=file_sha256(shard), bytes=shard.stat().st_size)
        with disk_errors(self.path / MANIFEST):
            _write_manifest(self.path, self.manifest)

    def record(self, entry: dict) -> None:
        self.manifest["shards"][str(entry["index"])] = entry
        with disk_errors(self.path / MANIFEST):
            _write_manifest(self.path, self.manifest)

    def finish(self, run_info: dict) -> None:
        """Check every shard through the verified reader and the ids against the listing; then ``complete``."""
        hashes = self._verify_ids()
        previous = self.manifest.get("run") or {}
        total = float(previous.get("extract_seconds_total", 0.0)) + float(run_info.get("seconds_this_run", 0.0))
        self.manifest["run"] = {**run_info, "extract_seconds_total": round(total, 3)}
        self.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if self.has_records:
            from ..data import digest_of_hashes

            self.manifest["content_digest"] = digest_of_hashes(hashes)
        self.manifest["complete"] = True
        with disk_errors(self.path / MANIFEST):
            _write_manifest(self.path, self.manifest)

    def _verify_ids(self) -> list[str]:
        """Raise unless the ids read back from the shards are exactly the listing; the item hashes."""
        n_shards = self.manifest["n_shards"]
        if self.pending_shards():
            raise FeatxError(f"internal error: shards {self.pending_shards()[:5]} of {self.path} are missing; "
                             "not marking it complete")
        names = ["item_hash"] if self.has_records else []
        seen, hashes = [], []
        for index in range(n_shards):
            fields = read_shard_fields(self.path, self.manifest["shards"][str(index)], self.ids,
                                       int(self.manifest["dim"]), names)
            seen.append(fields["ids"])
            hashes.extend(h.decode("ascii") for h in fields.get("item_hash", []))
        got = np.concatenate(seen) if seen else np.array([], dtype=object)
        if len(got) != len(self.ids) or not np.array_equal(got.astype(str), np.asarray(self.ids).astype(str)):
            dupes = len(got) - len(set(got.tolist()))
            raise FeatxError(
                f"{self.path}: the shards hold {len(got)} rows ({dupes} duplicate ids) for {len(self.ids)} listed items; "
                "not marking it complete (delete the damaged shards and re-run extract)"
            )
        return hashes

    def close(self) -> None:
        """Nothing held open between shards; here for symmetry with the single-file writer."""
