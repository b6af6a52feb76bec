"""The sharded layout of a feature store, read: a directory of HDF5 shards plus a JSON manifest.

Layout (``docs/store-format.md``)::

    OUT/manifest.json     config, fingerprint, class names, dim, dtype, shard size, nonce, config
                          hash, items.h5's sha256, one entry per committed shard (rows, id range,
                          sha256, skipped rows), complete, and a digest over all of it
    OUT/items.h5          ids, labels, splits of every item of the source, in source order
    OUT/part-NNNNN.h5     rows [N*S, (N+1)*S): features, ids, status, skip_reasons, item_hash and
                          item_stat (file sources), feature_sets/<name> (--layers); attributes:
                          the store's nonce and config hash

How it is written (one shard at a time, each committed whole) is in ``_writer``.
:class:`ShardedFeatureStore` reads such a directory with the same interface as a
single-file :class:`FeatureStore`; ``FeatureStore(path)`` returns one for a directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import FeatxError, FeatxUsageError, StoreDamagedError
from ..core.io import disk_errors, file_sha256, json_text, write_json_atomic
from ._store import (
    FORMAT_VERSION,
    STATUS_DONE,
    STATUS_PENDING,
    STATUS_SKIPPED,
    FeatureStore,
    _attr_text,
    _first_line,
)

__all__ = ["ShardedFeatureStore", "shard_name", "verify_sharded", "iter_verified_shards", "read_shard_fields",
           "manifest_digest", "MANIFEST", "ITEMS", "SHARD_RE"]

MANIFEST, ITEMS = "manifest.json", "items.h5"
SHARD_RE = re.compile(r"^part-(\d{5,})\.h5$")
# A shard's attributes naming its store: the store's nonce and config hash (adoption checks both).
STAMP_KEYS = ("store_nonce", "store_config")


def shard_name(index: int) -> str:
    return f"part-{index:05d}.h5"


def manifest_digest(manifest: dict) -> str:
    """sha256 over every field of a manifest but the digest itself: a manifest edited by hand
    (class names reordered, entries swapped or dropped, another dim) no longer matches it."""
    body = json.loads(json_text({k: v for k, v in manifest.items() if k != "manifest_sha256"}))
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_manifest(path: Path, manifest: dict) -> None:
    manifest["manifest_sha256"] = manifest_digest(manifest)
    with disk_errors(path / MANIFEST):
        write_json_atomic(path / MANIFEST, manifest)


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
    # Format 1 manifests written before the digest have none (they keep opening; their shards are still
    # checked). Format 2 ones, and format 1 ones with a nonce (written by the same code), always carry it:
    # one without it was edited, not written before digests.
    if "manifest_sha256" not in data and (int(data.get("featx_format", 0)) >= 2 or "nonce" in data):
        raise StoreDamagedError(f"{manifest} was edited or damaged (it has no manifest_sha256, which every manifest "
                                "of its format carries); re-run extract with --overwrite")
    if "manifest_sha256" in data and data["manifest_sha256"] != manifest_digest(data):
        raise StoreDamagedError(f"{manifest} was edited or damaged (its fields no longer match its manifest_sha256); "
                                "re-run extract with --overwrite")
    return data


def _read_items(path: Path, expected_sha256: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if expected_sha256 and (not (path / ITEMS).is_file() or file_sha256(path / ITEMS) != expected_sha256):
        raise StoreDamagedError(f"{path / ITEMS} is missing or differs from the one listed in {path / MANIFEST}; "
                                "re-run extract with --overwrite")
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

    def _load(self) -> tuple[dict, np.ndarray, dict[int, str]]:
        self.manifest = _read_manifest(self.path)
        self.all_ids, self.all_labels, self.all_splits = _read_items(self.path, self.manifest.get("items_sha256"))
        status = np.full(len(self.all_ids), STATUS_PENDING, dtype=np.uint8)
        reasons: dict[int, str] = {}
        for entry in self.shards:
            status[entry["start"]:entry["stop"]] = STATUS_DONE
            for row, reason in entry["skipped"]:
                status[row] = STATUS_SKIPPED
                reasons[row] = reason
        return self.manifest, status, reasons

    @property
    def shards(self) -> list[dict]:
        return sorted(self.manifest.get("shards", {}).values(), key=lambda e: e["index"])

    def _blocks(self, names):
        for entry in self.shards:  # each checked before use: sha256, ids, shape
            fields = read_shard_fields(self.path, entry, self.all_ids, self.dim, names)
            yield slice(entry["start"], entry["stop"]), fields

    def info(self) -> dict:
        data = super().info()
        data["size_bytes"] = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        data["layout"] = {"kind": "sharded", "shard_size": self.manifest["shard_size"],
                          "n_shards": self.manifest["n_shards"], "committed": len(self.shards)}
        return data


FeatureStore._directory_layout = ShardedFeatureStore


def iter_verified_shards(store: FeatureStore | str | os.PathLike):
    """Yield ``(ids, labels, splits, features)`` of a store's usable rows, one block at a time, in source order.

    The one read path of every consumer that streams a store (export, the Ray readers,
    out-of-core heads). A sharded store yields one committed shard per block, each
    checked before it is used: its sha256 against the manifest, its ids against
    ``items.h5`` and its shape against the manifest's ``dim``; a single-file store yields
    blocks of 65,536 rows, whose HDF5 checksums are checked as they are read. Anything
    that does not check out is a one-line :class:`~featx.core.errors.StoreDamagedError`,
    never wrong rows. ``labels`` are int64, ``features`` float32 of shape (rows, dim),
    ``splits`` the source's own split per row ("" where it has none). Only one block is
    held in memory at a time.
    """
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    yield from store.iter_verified_shards()


def read_shard_fields(path: Path, entry: dict, all_ids: np.ndarray, dim: int, names=("features",)) -> dict:
    """The datasets ``names`` (and ``ids``) of one committed shard, once its sha256, ids and width check
    out (:func:`_check_shard`), else one :class:`~featx.core.errors.StoreDamagedError` line."""
    problem, fields = _check_shard(path, entry, all_ids, dim, names)
    if problem:
        raise StoreDamagedError(f"shard {path / entry['name']} {problem}; delete it and re-run extract to rebuild "
                                "that shard")
    return fields


def _check_shard(path: Path, entry: dict, all_ids: np.ndarray, dim: int, names=("features",)):
    """(what is wrong or None, {name: array}) of one committed shard: sha256, then ids and shape."""
    rows = f"(rows {entry['start']}-{entry['stop'] - 1})"
    try:
        data = (path / entry["name"]).read_bytes()
    except OSError:
        return f"is missing or unreadable {rows}", {}
    sha = hashlib.sha256(data).hexdigest()
    if entry["sha256"] is not None and sha != entry["sha256"]:  # None: an orphan shard, to adopt or not
        return f"sha256 differs from the manifest {rows}", {}
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            fields = {"ids": h5["ids"].asstr()[:], "features": h5["features"][:], "sha256": sha,
                      "stamp": {key: _attr_text(h5, key) for key in STAMP_KEYS}}
            fields.update({name: h5[name][:] for name in names})
    except (OSError, KeyError, ValueError) as exc:
        return f"is unreadable {rows}: {_first_line(exc)}", {}
    n, feats = entry["stop"] - entry["start"], fields["features"]
    if feats.shape != (n, dim):
        return f"holds {'x'.join(map(str, feats.shape))} features where the manifest says {n}x{dim}", {}
    if not np.array_equal(fields["ids"].astype(str), np.asarray(all_ids[entry["start"]:entry["stop"]]).astype(str)):
        return f"holds other ids than {ITEMS} lists there {rows}", {}
    return None, fields


def verify_sharded(report):
    """``featx info --verify`` for a directory: manifest, item listing, and every shard (the verified read)."""
    try:
        store = ShardedFeatureStore(report.path)
    except FeatxError as exc:
        if exc.exit_code == 2:
            raise
        report.problems.append(str(exc))
        return report
    report.checked.extend([MANIFEST, ITEMS])
    for entry in store.shards:
        problem = _check_shard(report.path, entry, store.all_ids, store.dim)[0]
        if problem:
            report.problems.append(f"{entry['name']}: {problem.removeprefix('is ')}")
        else:
            report.checked.append(entry["name"])
    return report
