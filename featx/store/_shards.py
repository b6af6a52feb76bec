"""The sharded feature store: a directory of HDF5 shards plus a JSON manifest.

Layout (documented in the README)::

    OUT/manifest.json     config, fingerprint, class names, shard size, one entry per committed
                          shard (rows, id range, sha256, skipped rows), complete
    OUT/items.h5          ids, labels, splits of every item of the source, in source order
    OUT/part-NNNNN.h5     rows [N*S, (N+1)*S): features, ids, status, skip_reasons

Shard ``N`` always covers the same rows of the source listing, whoever writes it (the
local engine or a Ray actor on another node), so writing a shard twice gives the same
file and a retried task can never duplicate a row. A shard is written under a temporary
name, fsynced and renamed into place: a file named ``part-NNNNN.h5`` is whole. The
manifest is rewritten atomically after each shard; a shard committed on disk but missing
from the manifest (the driver was killed in between) is validated and adopted on resume.
``complete`` is written only after the ids of all shards, read back from the shards
themselves, equal the source listing: no id missing, none twice.

:class:`ShardedFeatureStore` reads such a directory with the same interface as a
single-file :class:`FeatureStore`; ``FeatureStore(path)`` returns one for a directory.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import FeatxError, FeatxUsageError, StoreDamagedError
from ..core.io import disk_errors, file_sha256, fsync_dir, write_json_atomic
from ..core.runtime import library_versions
from ._store import (
    _REASON_BYTES,
    FORMAT_VERSION,
    STATUS_DONE,
    STATUS_PENDING,
    STATUS_SKIPPED,
    FeatureStore,
    _canonical,
)

__all__ = ["ShardedFeatureStore", "ShardedWriter", "write_shard", "shard_name", "is_sharded_store",
           "verify_sharded", "MANIFEST", "ITEMS"]

MANIFEST, ITEMS = "manifest.json", "items.h5"
_SHARD_RE = re.compile(r"^part-(\d{5,})\.h5$")


def shard_name(index: int) -> str:
    return f"part-{index:05d}.h5"


def is_sharded_store(path: str | os.PathLike) -> bool:
    return Path(path).is_dir()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(directory: str | os.PathLike, index: int, start: int, ids, features: np.ndarray,
                reasons: list[str | None], dtype: str) -> dict:
    """Write shard ``index`` (rows ``start..start+len(ids)``) atomically; return its manifest entry.

    Called by the local engine and by Ray actors alike; the entry carries everything the
    driver needs (sha256, id range, skipped rows) without reopening the file.
    """
    directory = Path(directory)
    final = directory / shard_name(index)
    # Unique temp name: a retried task and a stray one from a killed run never collide.
    tmp = directory / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    n = len(ids)
    status = np.array([STATUS_DONE if r is None else STATUS_SKIPPED for r in reasons], dtype=np.uint8)
    encoded = np.array([(r or "").encode("utf-8")[:_REASON_BYTES] for r in reasons], dtype=f"S{_REASON_BYTES}")
    with disk_errors(final, tmp):
        with h5py.File(tmp, "w") as h5:
            h5.attrs["featx_format"] = FORMAT_VERSION
            h5.attrs["shard"] = index
            h5.attrs["start"] = start
            h5.create_dataset("features", data=np.asarray(features).reshape(n, -1).astype(dtype))
            h5.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())
            h5.create_dataset("status", data=status)
            h5.create_dataset("skip_reasons", data=encoded)
        _fsync_file(tmp)
        sha = file_sha256(tmp)
        os.replace(tmp, final)
    fsync_dir(directory)
    return {
        "index": index, "name": final.name, "start": start, "stop": start + n, "rows": n,
        "first_id": str(ids[0]) if n else "", "last_id": str(ids[-1]) if n else "",
        "sha256": sha, "bytes": final.stat().st_size,
        "skipped": [[start + i, r] for i, r in enumerate(reasons) if r is not None],
    }


def _read_manifest(path: Path) -> dict:
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise FeatxUsageError(f"{path} is a directory but not a sharded feature store (no {MANIFEST})")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreDamagedError(f"{manifest} is unreadable ({exc}); re-run extract with --overwrite") from None
    if data.get("layout") != "sharded":
        raise FeatxError(f"{manifest} is not a featx sharded-store manifest")
    if int(data.get("featx_format", 0)) > FORMAT_VERSION:
        raise FeatxError(f"{path} uses store format {data['featx_format']}; this featx reads up to {FORMAT_VERSION}")
    return data


def _read_items(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        with h5py.File(path / ITEMS, "r") as h5:
            return h5["ids"].asstr()[:], h5["labels"][:], h5["splits"].asstr()[:]
    except (OSError, KeyError) as exc:
        raise StoreDamagedError(f"{path / ITEMS} is missing or unreadable ({exc}); re-run extract with --overwrite") from None


class ShardedFeatureStore(FeatureStore):
    """A sharded store, read through the :class:`FeatureStore` interface.

    Status and skip reasons come from the manifest alone, so opening a store of
    thousands of shards reads two small files; features are read (and each shard's
    sha256 checked against the manifest) on first access.
    """

    def __init__(self, path: str | os.PathLike):  # noqa: D107 - same contract as FeatureStore
        self.path = Path(path)
        self.manifest = _read_manifest(self.path)
        m = self.manifest
        self.config, self.fingerprint = m["config"], m["fingerprint"]
        self.class_names, self.versions, self.run_info = m["class_names"], m["versions"], m.get("run", {})
        self._complete_attr = bool(m.get("complete", False))
        # Shards carry a sha256 each (checked on read) instead of per-item content hashes.
        self.has_item_hashes, self.content_digest = False, None
        self._extra_sets: list[dict] = []  # --layers sets are not written to shards (yet)
        self._all_ids, self._all_labels, self._all_splits = _read_items(self.path)
        self.n_items, self.dim, self.feature_dtype = len(self._all_ids), int(m["dim"]), m["dtype"]
        self._status = np.full(self.n_items, STATUS_PENDING, dtype=np.uint8)
        reasons: dict[int, str] = {}
        for entry in self.shards:
            self._status[entry["start"]:entry["stop"]] = STATUS_DONE
            for row, reason in entry["skipped"]:
                self._status[row] = STATUS_SKIPPED
                reasons[row] = reason
        self._done = self._status == STATUS_DONE
        self.skipped = [{"id": str(self._all_ids[i]), "reason": reasons[i]} for i in sorted(reasons)]
        self._features = None
        self.reused = False

    @property
    def shards(self) -> list[dict]:
        return sorted(self.manifest.get("shards", {}).values(), key=lambda e: e["index"])

    def _read_all_features(self) -> np.ndarray:
        full = np.zeros((self.n_items, self.dim), dtype=np.float32)
        for entry in self.shards:
            shard = self.path / entry["name"]
            if not shard.is_file() or file_sha256(shard) != entry["sha256"]:
                raise StoreDamagedError(
                    f"shard {shard} is missing or does not match its sha256 in {self.path / MANIFEST}; "
                    "delete it and re-run extract to rebuild that shard"
                )
            with h5py.File(shard, "r") as h5:
                full[entry["start"]:entry["stop"]] = h5["features"][:]
        return full

    @property
    def features(self) -> np.ndarray:
        if self._features is None:
            self._features = self._read_all_features()[self._done]
        return self._features

    def iter_shards(self):
        """Yield ``(features, labels, ids, splits)`` of each committed shard's done rows: one shard in RAM at a time."""
        for entry in self.shards:
            with h5py.File(self.path / entry["name"], "r") as h5:
                feats = h5["features"][:].astype(np.float32, copy=False)
            sl = slice(entry["start"], entry["stop"])
            done = self._done[sl]
            yield feats[done], self._all_labels[sl][done], self._all_ids[sl][done], self._all_splits[sl][done]

    def info(self) -> dict:
        data = super().info()
        data["size_bytes"] = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        data["layout"] = {"kind": "sharded", "shard_size": self.manifest["shard_size"],
                          "n_shards": self.manifest["n_shards"], "committed": len(self.shards)}
        return data


FeatureStore._directory_layout = ShardedFeatureStore


def verify_sharded(report):
    """``featx info --verify`` for a directory: manifest, item listing, and every shard's sha256."""
    try:
        manifest = _read_manifest(report.path)
        _read_items(report.path)
    except FeatxError as exc:
        if exc.exit_code == 2:
            raise
        report.problems.append(str(exc))
        return report
    report.checked.extend([MANIFEST, ITEMS])
    for entry in sorted(manifest["shards"].values(), key=lambda e: e["index"]):
        shard = report.path / entry["name"]
        if not shard.is_file():
            report.problems.append(f"{entry['name']}: missing (rows {entry['start']}-{entry['stop'] - 1})")
        elif file_sha256(shard) != entry["sha256"]:
            report.problems.append(f"{entry['name']}: sha256 differs from the manifest (rows {entry['start']}-"
                                   f"{entry['stop'] - 1})")
        else:
            report.checked.append(entry["name"])
    return report


def verify_shard_ids(path: Path, manifest: dict, all_ids: np.ndarray) -> None:
    """Raise unless the ids read back from the shards are exactly the source listing."""
    n_shards = manifest["n_shards"]
    if sorted(int(k) for k in manifest["shards"]) != list(range(n_shards)):
        missing = sorted(set(range(n_shards)) - {int(k) for k in manifest["shards"]})
        raise FeatxError(f"internal error: shards {missing[:5]} of {path} are missing; not marking it complete")
    seen = []
    for index in range(n_shards):
        with h5py.File(path / shard_name(index), "r") as h5:
            seen.append(h5["ids"].asstr()[:])
    got = np.concatenate(seen) if seen else np.array([], dtype=object)
    if len(got) != len(all_ids) or not np.array_equal(got.astype(str), np.asarray(all_ids).astype(str)):
        dupes = len(got) - len(set(got.tolist()))
        raise FeatxError(
            f"{path}: the shards hold {len(got)} rows ({dupes} duplicate ids) for {len(all_ids)} listed items; "
            "not marking it complete (delete the damaged shards and re-run extract)"
        )


class ShardedWriter:
    """Create or resume a sharded store; the driver (one process, under the writer lock) owns the manifest."""

    def __init__(self, path: Path, manifest: dict, ids: np.ndarray):
        self.path, self.manifest, self.ids = path, manifest, ids

    @classmethod
    def create(cls, path: Path, *, config: dict, fingerprint: str, ids, labels, splits, class_names, dim: int,
               dtype: str, shard_size: int) -> ShardedWriter:
        if shard_size < 1:
            raise FeatxUsageError("shard size must be at least 1")
        path.mkdir(parents=True, exist_ok=True)
        items_tmp = path / f".{ITEMS}.tmp"
        with disk_errors(path / ITEMS, items_tmp):
            with h5py.File(items_tmp, "w") as h5:
                h5.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
                h5.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())
                h5.create_dataset("splits", data=np.asarray(splits, dtype=object), dtype=h5py.string_dtype())
            _fsync_file(items_tmp)
            os.replace(items_tmp, path / ITEMS)
        n = len(ids)
        manifest = {
            "featx_format": FORMAT_VERSION, "layout": "sharded", "config": _canonical(config),
            "fingerprint": fingerprint, "class_names": list(class_names),
            "versions": library_versions(xgboost=False), "n_items": n, "dim": int(dim), "dtype": dtype,
            "shard_size": int(shard_size), "n_shards": -(-n // shard_size), "shards": {},
            "complete": False, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": "", "run": {},
        }
        # The manifest goes last: a directory without it is not a store yet, and is recreated.
        write_json_atomic(path / MANIFEST, manifest)
        return cls(path, manifest, np.asarray(ids, dtype=object))

    @classmethod
    def reopen(cls, path: Path) -> ShardedWriter:
        manifest = _read_manifest(path)
        ids, _, _ = _read_items(path)
        writer = cls(path, manifest, ids)
        writer._check_listed()
        writer._adopt_committed()
        return writer

    def _check_listed(self) -> None:
        """Drop manifest entries whose shard file vanished or changed, so they are rebuilt."""
        for key, entry in list(self.manifest["shards"].items()):
            shard = self.path / entry["name"]
            if not shard.is_file() or file_sha256(shard) != entry["sha256"]:
                shard.unlink(missing_ok=True)
                del self.manifest["shards"][key]
                self.manifest["complete"] = False

    def _adopt_committed(self) -> None:
        """Add shards committed on disk after the last manifest write (driver killed in between)."""
        for shard in sorted(self.path.iterdir()):
            match = _SHARD_RE.match(shard.name)
            if not match:
                continue
            index = int(match.group(1))
            if str(index) in self.manifest["shards"]:
                continue
            start, stop = self.shard_range(index)
            try:
                with h5py.File(shard, "r") as h5:
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

    def record(self, entry: dict) -> None:
        self.manifest["shards"][str(entry["index"])] = entry
        write_json_atomic(self.path / MANIFEST, self.manifest)

    def finish(self, run_info: dict) -> None:
        verify_shard_ids(self.path, self.manifest, self.ids)
        previous = self.manifest.get("run") or {}
        total = float(previous.get("extract_seconds_total", 0.0)) + float(run_info.get("seconds_this_run", 0.0))
        self.manifest["run"] = {**run_info, "extract_seconds_total": round(total, 3)}
        self.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.manifest["complete"] = True
        write_json_atomic(self.path / MANIFEST, self.manifest)

    def close(self) -> None:
        """Nothing held open between shards; here for symmetry with the single-file writer."""
