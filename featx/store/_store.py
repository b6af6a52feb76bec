"""The HDF5 feature store, read: one per (source, backbone, weights, preprocessing, pooling), in
two layouts of one format (``docs/store-format.md``): one file, or a directory of shards.

One file (format 2)::

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
           feature_sets (JSON list of {name, dim, layer, ...}; absent when there are none),
           header_sha256 (format 2: a hash over what the rows mean, see :func:`header_digest`)

A directory of shards, read by :class:`ShardedFeatureStore` through the same interface
(``FeatureStore(path)`` returns one for a directory)::

    OUT/manifest.json     config, fingerprint, class names, dim, dtype, shard size, nonce, config
                          hash, items.h5's sha256, one entry per committed shard (rows, id range,
                          sha256, skipped rows), complete, and a digest over all of it
    OUT/items.h5          ids, labels, splits of every item of the source, in source order
    OUT/part-NNNNN.h5     rows [N*S, (N+1)*S): features, ids, status, skip_reasons, item_hash and
                          item_stat (file sources), feature_sets/<name> (--layers); attributes:
                          the store's nonce and config hash

The per-row arrays of a file carry HDF5's Fletcher-32 checksum per chunk, and every shard is
checked against the manifest's sha256 before use, so damaged bytes fail at read instead of
being used. How a store is written (and why an interrupted run never leaves broken metadata)
is in ``_writer``.

Stores written before per-item hashes (no ``/item_hash``) keep their old fingerprint
(ids, labels, splits, file sizes and mtimes) and are checked and reused as before.
Format 1 stores, written before ``header_sha256``, open unhashed; every format 2 store has one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import FeatxError, FeatxUsageError, StoreDamagedError, StoreInUseError, StoreMismatchError
from ..core.io import disk_errors, file_sha256, json_text, write_json_atomic
from ..data import assign_splits, check_items

__all__ = ["FeatureStore", "ShardedFeatureStore", "STATUS_PENDING", "STATUS_DONE", "STATUS_SKIPPED",
           "FORMAT_VERSION", "damaged_error", "check_existing", "check_store_items", "diff_configs",
           "header_digest", "shard_name", "verify_sharded", "iter_verified_shards", "read_shard_fields",
           "manifest_digest", "MANIFEST", "ITEMS", "SHARD_RE"]

# Format 2: every store carries a hash over what its rows mean (a file's header_sha256, a manifest's
# manifest_sha256), so a missing one is an edit; format 1 stores, written before, open without one.
FORMAT_VERSION = 2
STATUS_PENDING, STATUS_DONE, STATUS_SKIPPED = 0, 1, 2
RECORD_FIELDS = ["item_hash", "item_stat"]  # the datasets of item records, in the order of encode_records

# What a file store's header_sha256 covers: every attribute whose edit changes what the rows mean.
_HEADER_ATTRS = ("featx_format", "config", "fingerprint", "class_names", "feature_sets", "content_digest")
_FIX = "delete it, or run `featx extract` again with --overwrite"
MANIFEST, ITEMS = "manifest.json", "items.h5"
SHARD_RE = re.compile(r"^part-(\d{5,})\.h5$")
# A shard's attributes naming its store, and the manifest keys they copy (adoption checks both).
STAMP_KEYS = {"store_nonce": "nonce", "store_config": "config_sha256"}


def damaged_error(path: Path, detail: str) -> StoreDamagedError:
    """The one message for a store whose bytes are not what was written."""
    return StoreDamagedError(f"feature store {path} is damaged ({detail}): {_FIX}")


def _open_h5(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as exc:  # BlockingIOError included: another process holds the file
        # HDF5's own file locking: "unable to lock file, errno = 11, ... Resource temporarily
        # unavailable". Match that phrase, never a bare "lock" ("sblock" is in every
        # truncated-file message).
        low = str(exc).lower()
        if isinstance(exc, BlockingIOError) or "unable to lock file" in low or "resource temporarily" in low:
            raise StoreInUseError(f"feature store {path} is in use by another process") from None
        if not path.exists():
            raise FeatxUsageError(f"feature store not found: {path}") from None
        raise StoreDamagedError(f"{path} is not a readable HDF5 feature store (damaged, truncated or another kind of "
                                f"file: {_first_line(exc)}): {_FIX}") from None


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

    def __new__(cls, path: str | os.PathLike, *args, **kwargs):
        # A directory is a sharded store; every caller reads it through this class.
        if cls is FeatureStore and Path(path).is_dir():
            cls = ShardedFeatureStore
        return super().__new__(cls)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        # What both layouts read the same way: a header (attributes, or a manifest), the
        # listing, the status of every row and the reasons of the skipped ones.
        # _load also sets what every item of the source has, skipped ones included, in source order:
        # ``all_ids``, ``all_labels`` (-1: unlabelled) and ``all_splits`` (the source's own, "" for none).
        meta, self._status, reasons = self._load()
        self.config: dict = meta["config"]
        self.fingerprint: str = str(meta["fingerprint"])
        self.class_names: list[str] = list(meta["class_names"])
        self.versions: dict = meta["versions"]
        self.run_info: dict = meta.get("run") or {}
        self.content_digest: str | None = meta.get("content_digest") or None
        self._complete_attr = bool(meta.get("complete", False))
        self._extra_sets: list[dict] = list(meta.get("feature_sets") or [])
        #: True for stores that record each file item's content hash and stat data.
        self.has_item_hashes = bool(meta.get("item_records"))
        self.n_items, self.dim, self.feature_dtype = len(self.all_ids), int(meta["dim"]), str(meta["dtype"])
        self._done = self._status == STATUS_DONE
        self.skipped = [{"id": str(self.all_ids[i]), "reason": reasons[i]} for i in sorted(reasons)]
        self._features: np.ndarray | None = None
        #: True when :func:`featx.extract` returned this store without running the backbone.
        self.reused = False

    def _load(self) -> tuple[dict, np.ndarray, dict[int, str]]:
        """(header fields, status of every row, {row: skip reason}); sets ``all_ids/labels/splits``."""
        with _open_h5(self.path, "r") as h5:
            if h5.attrs.get("featx_format") is None:
                raise FeatxError(f"{self.path} is an HDF5 file but not a featx feature store")
            fmt = int(h5.attrs["featx_format"])
            if fmt > FORMAT_VERSION:
                raise FeatxError(f"{self.path} uses store format {fmt}; this featx reads up to {FORMAT_VERSION}: upgrade featx")
            try:
                meta = {name: json.loads(h5.attrs[name]) for name in ("config", "class_names", "versions")}
                meta.update(fingerprint=h5.attrs["fingerprint"], run=json.loads(h5.attrs.get("run", "{}") or "{}"),
                            content_digest=_attr_text(h5, "content_digest"), complete=h5.attrs.get("complete", False),
                            feature_sets=json.loads(h5.attrs.get("feature_sets", "[]")), item_records="item_hash" in h5,
                            dim=h5["features"].shape[1], dtype=h5["features"].dtype)
                status = h5["status"][:]
                self.all_ids = h5["ids"].asstr()[:]
                self.all_labels = h5["labels"][:]
                self.all_splits = h5["splits"].asstr()[:]
                skipped = np.flatnonzero(status == STATUS_SKIPPED)
                reasons = h5["skip_reasons"][skipped] if skipped.size else []
                problem = header_problem(h5, self.all_ids, self.all_labels, self.all_splits) if fmt >= 2 else None
            except (OSError, KeyError, ValueError, TypeError) as exc:
                # Unreadable attributes or a failed checksum: damaged bytes, never a traceback.
                raise damaged_error(self.path, _first_line(exc)) from None
        if problem:
            raise damaged_error(self.path, problem)
        return meta, status, {int(i): bytes(r).decode("utf-8", "replace").rstrip("\x00") for i, r in zip(skipped, reasons)}

    def item_records(self) -> tuple[np.ndarray, list[str]]:
        """(N, 3) stat data and the N content hashes recorded at extraction (file sources only)."""
        if not self.has_item_hashes:
            raise FeatxError(f"{self.path} has no item records (it was written before featx recorded them)")
        records = empty_records(self.n_items)
        for rows, fields in self._blocks(RECORD_FIELDS):
            take_records(records, rows, fields)
        return records

    def changed_items(self, source) -> list[str]:
        """Ids of done or skipped rows whose file content changed since extraction (read-only check).

        Only files whose stat data changed are read again. Stores without per-item hashes
        return [] (their fingerprint already covers sizes and mtimes).
        """
        check = check_store_items(self, source)
        return [] if check is None else [str(self.all_ids[i]) for i in check.changed]

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
        payload = {"config": self.config, "fingerprint": self.fingerprint}
        if self.content_digest:  # stores with per-item hashes: the content is part of the identity
            payload["content"] = self.content_digest
        blob = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def features(self) -> np.ndarray:
        if self._features is None:
            self._features = self._gather("features", self.dim)
        return self._features

    def _gather(self, dataset: str, dim: int) -> np.ndarray:
        """The usable rows of one dataset (``features`` or ``feature_sets/<name>``), as float32, block by
        verified block (:meth:`iter_verified_shards`): one implementation for both layouts."""
        out = np.zeros((self.n_done, dim), dtype=np.float32)
        offset = 0
        for ids, _, _, feats in self.iter_verified_shards(dataset):
            out[offset:offset + len(ids)] = feats
            offset += len(ids)
        return out

    def iter_verified_shards(self, dataset: str = "features"):
        """The usable rows of ``dataset``, one verified block at a time (see :func:`iter_verified_shards`)."""
        for rows, fields in self._blocks([dataset]):
            done = self._done[rows]
            yield (self.all_ids[rows][done], self.all_labels[rows][done].astype(np.int64),
                   self.all_splits[rows][done], fields[dataset][done].astype(np.float32, copy=False))

    def _blocks(self, names, size: int = 65536):
        """``(rows, {name: values there})`` of the datasets ``names`` over all source rows, ``size`` rows at
        a time, each chunk's checksum checked as it is read (a sharded store: shard by verified shard)."""
        with _open_h5(self.path, "r") as h5:
            for lo in range(0, self.n_items, size):
                rows, fields = slice(lo, min(lo + size, self.n_items)), {}
                for name in names:
                    try:
                        fields[name] = h5[name][rows]
                    except OSError as exc:
                        raise damaged_error(self.path, f"/{name}: {_first_line(exc)}") from None
                yield rows, fields

    @property
    def feature_sets(self) -> list[dict]:
        """Every stored set: ``pooled`` (``/features``) first, then the extra ones (``--layers``)."""
        return [{"name": "pooled", "dim": self.dim, "layer": None}, *(dict(s) for s in self._extra_sets)]

    def feature_set(self, name: str) -> np.ndarray:
        """The done rows of one named set (``pooled`` is :attr:`features`)."""
        if name == "pooled":
            return self.features
        extra = next((s for s in self._extra_sets if s["name"] == name), None)
        if extra is None:
            known = ", ".join(s["name"] for s in self.feature_sets)
            raise FeatxUsageError(f"feature store {self.path} has no feature set {name!r}; it has: {known}")
        return self._gather(f"feature_sets/{name}", int(extra["dim"]))

    @property
    def done_mask(self) -> np.ndarray:
        """Which of all items (``all_ids`` order) are usable rows."""
        return self._done.copy()

    @property
    def labels(self) -> np.ndarray:
        return self.all_labels[self._done].astype(np.int64)

    @property
    def ids(self) -> np.ndarray:
        return self.all_ids[self._done]

    @property
    def splits(self) -> np.ndarray:
        return self.all_splits[self._done]

    def split_assignment(self, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                         usable_only: bool = True) -> tuple[np.ndarray, dict]:
        """Train/val/test for the usable rows (aligned with ``features``), computed over all items.

        Computing over every item of the source, skipped ones included, gives the very
        assignment the fine-tune baseline computes from the source itself.
        ``usable_only=False`` returns it for every item (aligned with ``all_ids``).
        """
        splits, rule = assign_splits(self.all_ids, self.all_labels, self.all_splits, seed=seed,
                                     val_fraction=val_fraction, test_fraction=test_fraction)
        return (splits[self._done] if usable_only else splits), rule

    @property
    def has_splits(self) -> bool:
        return bool(np.any(self.all_splits != ""))

    def require_complete(self) -> FeatureStore:
        if not self.complete:
            raise FeatxError(
                f"feature store {self.path} is incomplete ({self.n_pending} of {self.n_items} rows pending): "
                "run `featx extract` again with the same arguments to resume it"
            )
        return self

    def info(self) -> dict:
        return {
            "path": str(self.path), "n_items": self.n_items, "n_done": self.n_done,
            "n_skipped": len(self.skipped),
            "n_unlabelled": int((self.labels < 0).sum()),  # label -1 (extract --allow-unlabelled): no split
            "n_pending": self.n_pending, "dim": self.dim, "dtype": self.feature_dtype,
            "complete": self.complete, "backbone": self.backbone,
            "weights": self.config["backbone"]["weights"], "classes": self.class_names,
            "splits": dict(Counter(str(split) or "none" for split in self.splits)),
            "store_id": self.store_id, "size_bytes": self.path.stat().st_size, "config": self.config,
            "fingerprint": self.fingerprint, "item_hashes": self.has_item_hashes,
            "content_digest": self.content_digest, "versions": self.versions, "run": self.run_info,
            "skipped": self.skipped, "feature_sets": self.feature_sets,
        }

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{self.n_pending} pending"
        return f"FeatureStore({str(self.path)!r}, {self.n_done}x{self.dim}, {self.backbone}, {state})"


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


def header_digest(h5: h5py.File, ids, labels, splits) -> str:
    """sha256 over what a file store's rows mean: the attributes of ``_HEADER_ATTRS``, the shape and
    dtype of ``/features``, and the item listing (``/ids`` and ``/splits`` carry no HDF5 checksum)."""
    header = {name: _attr_text(h5, name) for name in _HEADER_ATTRS}
    header["features"] = [list(h5["features"].shape), str(h5["features"].dtype)]
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for column in (ids, splits):  # ids hold no NUL (the sources refuse one), splits are train/val/test/""
        digest.update("\x00".join(map(str, column)).encode("utf-8") + b"\x01")
    digest.update(np.asarray(labels, dtype="<i8").tobytes())
    return digest.hexdigest()


def header_problem(h5: h5py.File, ids, labels, splits) -> str | None:
    """What is wrong with a format 2 file's ``header_sha256`` (None when it matches)."""
    recorded = _attr_text(h5, "header_sha256")
    if recorded is None:
        return "no header_sha256, which every format 2 store carries: its attributes were edited"
    if recorded != header_digest(h5, ids, labels, splits):
        return "its attributes or item listing (config, class names, ids, labels, splits) were edited"
    return None


def empty_records(n: int) -> tuple[np.ndarray, list[str]]:
    """(stats, content hashes) of ``n`` rows none of which was read yet."""
    return np.full((n, 3), -1, dtype=np.int64), [""] * n


def take_records(records: tuple[np.ndarray, list[str]], rows: slice, fields: dict) -> None:
    """Copy the item records (``RECORD_FIELDS`` of ``fields``) of source rows ``rows`` into ``records``."""
    records[0][rows] = fields["item_stat"]
    records[1][rows] = [h.decode("ascii") for h in fields["item_hash"]]


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


def check_store_items(store: FeatureStore, source, records: tuple | None = None):
    """Which extracted rows' files were touched (same bytes) or changed since extraction, or None
    for stores and sources without per-item records. ``records``: the store's (stats, hashes)
    when the caller has already read them (a resumed sharded writer), else they are read here."""
    paths = source.item_paths() if store.has_item_hashes else None
    if paths is None or len(paths) != store.n_items:
        return None
    stats, hashes = records or store.item_records()
    return check_items(paths, stats, hashes, np.flatnonzero(store._status != STATUS_PENDING))
