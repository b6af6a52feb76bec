"""The HDF5 feature store: one file per (source, backbone, weights, preprocessing, pooling).

Layout (format 1), documented in the README::

    /features      (N, D) float32 or float16   one row per source item, in source order
    /labels        (N,)   int64                class index into attrs["class_names"]
    /ids           (N,)   utf-8 str            stable item id (relative path or index)
    /splits        (N,)   utf-8 str            train / val / test, or "" when the source has none
    /status        (N,)   uint8                0 pending, 1 done, 2 skipped
    /skip_reasons  (N,)   S256 (utf-8)         why an item was skipped; empty otherwise
    /feature_sets/<name>  (N, D_k)             optional extra sets (layers), same rows and dtype
    attrs: featx_format, config (JSON), fingerprint, class_names (JSON), versions (JSON),
           complete (bool), created, finished, run (JSON: device, batch size, timings),
           feature_sets (JSON list of {name, dim, layer, ...}; absent when there are none)

Crash safety: every dataset is contiguous and allocated when the file is created, so
an interrupted run can only leave raw rows half written, never broken metadata.
Rows are written batch by batch, features first, then status, each followed by a
flush: a row whose status says "done" is on disk. ``complete`` is set only after
every row's status is done or skipped. A sidecar ``<file>.lock`` (an OS lock that a
killed process releases) keeps a second writer out.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import FeatxError, FeatxUsageError, StoreInUseError, StoreMismatchError
from ..core.runtime import library_versions

__all__ = ["FeatureStore", "STATUS_PENDING", "STATUS_DONE", "STATUS_SKIPPED", "FORMAT_VERSION"]

FORMAT_VERSION = 1
STATUS_PENDING, STATUS_DONE, STATUS_SKIPPED = 0, 1, 2
_REASON_BYTES = 256


def _open_h5(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except BlockingIOError:
        raise StoreInUseError(f"feature store {path} is in use by another process") from None
    except OSError as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise StoreInUseError(f"feature store {path} is in use by another process") from None
        if not path.exists():
            raise FeatxUsageError(f"feature store not found: {path}") from None
        raise FeatxError(f"{path} is not a readable HDF5 feature store ({text.splitlines()[0]})") from None


@contextmanager
def writer_lock(path: Path):
    """Hold ``<path>.lock`` for the duration of a write; fail at once if another process holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path) + ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise StoreInUseError(
            f"feature store {path} is in use: another featx process is writing it (wait for it, or use another --out)"
        ) from None
    try:
        yield
    finally:
        lock.release()


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


class FeatureStore:
    """Read a feature store. Arrays hold the usable (done) rows only, in source order.

    >>> store = FeatureStore("features/digits.h5")            # doctest: +SKIP
    >>> X, y = store.features, store.labels                   # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with _open_h5(self.path, "r") as h5:
            if h5.attrs.get("featx_format") is None:
                raise FeatxError(f"{self.path} is an HDF5 file but not a featx feature store")
            fmt = int(h5.attrs["featx_format"])
            if fmt > FORMAT_VERSION:
                raise FeatxError(f"{self.path} uses store format {fmt}; this featx reads up to {FORMAT_VERSION}: upgrade featx")
            self.config: dict = json.loads(h5.attrs["config"])
            self.fingerprint: str = str(h5.attrs["fingerprint"])
            self.class_names: list[str] = json.loads(h5.attrs["class_names"])
            self.versions: dict = json.loads(h5.attrs["versions"])
            self.run_info: dict = json.loads(h5.attrs.get("run", "{}"))
            self._complete_attr = bool(h5.attrs.get("complete", False))
            self._status = h5["status"][:]
            self._extra_sets: list[dict] = json.loads(h5.attrs.get("feature_sets", "[]"))
            self.n_items, self.dim = (int(s) for s in h5["features"].shape)
            self.feature_dtype = str(h5["features"].dtype)
            self._all_ids = h5["ids"].asstr()[:]
            self._all_labels = h5["labels"][:]
            self._all_splits = h5["splits"].asstr()[:]
            skipped = np.flatnonzero(self._status == STATUS_SKIPPED)
            reasons = h5["skip_reasons"][skipped] if skipped.size else []
        self._done = self._status == STATUS_DONE
        self.skipped = [
            {"id": str(self._all_ids[i]), "reason": bytes(r).decode("utf-8", "replace").rstrip("\x00")}
            for i, r in zip(skipped, reasons)
        ]
        self._features: np.ndarray | None = None
        #: True when :func:`featx.extract` returned this store without running the backbone.
        self.reused = False

    # A complete flag alone could lie if the file was edited by hand; trust it only
    # when the status column agrees.
    @property
    def complete(self) -> bool:
        return self._complete_attr and not bool((self._status == STATUS_PENDING).any())

    @property
    def n_done(self) -> int:
        return int(self._done.sum())

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

        blob = json.dumps({"config": self.config, "fingerprint": self.fingerprint}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def features(self) -> np.ndarray:
        if self._features is None:
            with _open_h5(self.path, "r") as h5:
                # One contiguous read, then a mask: far faster than h5py fancy indexing.
                self._features = h5["features"][:][self._done]
            self._features = self._features.astype(np.float32, copy=False)
        return self._features

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
            return h5["feature_sets"][name][:][self._done].astype(np.float32, copy=False)

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
        split_counts: dict[str, int] = {}
        for split in self.splits:
            key = str(split) or "none"
            split_counts[key] = split_counts.get(key, 0) + 1
        return {
            "path": str(self.path),
            "n_items": self.n_items,
            "n_done": self.n_done,
            "n_skipped": len(self.skipped),
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
            "versions": self.versions,
            "run": self.run_info,
            "skipped": self.skipped,
            "feature_sets": self.feature_sets,
        }

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{self.n_pending} pending"
        return f"FeatureStore({str(self.path)!r}, {self.n_done}x{self.dim}, {self.backbone}, {state})"


class StoreWriter:
    """Create or reopen a store for writing; used by :func:`featx.extract` under :func:`writer_lock`."""

    def __init__(self, path: Path, h5: h5py.File):
        self.path = path
        self.h5 = h5
        self.status = h5["status"][:]

    @classmethod
    def create(cls, path: Path, *, config: dict, fingerprint: str, ids, labels, splits, class_names, dim: int,
               dtype: str, extra_sets: list[dict] | None = None) -> StoreWriter:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".creating")
        n = len(ids)
        # Build the skeleton under a temporary name so a crash during creation never
        # leaves a half-made file at the real path.
        with h5py.File(tmp, "w") as h5:
            h5.attrs["featx_format"] = FORMAT_VERSION
            h5.attrs["config"] = json.dumps(_canonical(config), sort_keys=True)
            h5.attrs["fingerprint"] = fingerprint
            h5.attrs["class_names"] = json.dumps(list(class_names))
            h5.attrs["versions"] = json.dumps(library_versions(xgboost=False), sort_keys=True)
            h5.attrs["complete"] = False
            h5.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            h5.attrs["run"] = "{}"
            h5.attrs["finished"] = ""
            h5.create_dataset("features", shape=(n, dim), dtype=dtype, fillvalue=0)
            h5.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
            h5.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())
            h5.create_dataset("splits", data=np.asarray(splits, dtype=object), dtype=h5py.string_dtype())
            h5.create_dataset("status", shape=(n,), dtype=np.uint8, fillvalue=STATUS_PENDING)
            h5.create_dataset("skip_reasons", shape=(n,), dtype=f"S{_REASON_BYTES}", fillvalue=b"")
            if extra_sets:
                h5.attrs["feature_sets"] = json.dumps(extra_sets)
                for extra in extra_sets:
                    h5.create_dataset(f"feature_sets/{extra['name']}", shape=(n, extra["dim"]), dtype=dtype, fillvalue=0)
                    h5[f"feature_sets/{extra['name']}"][n - 1 :] = 0 if n else None
            # Touch every dataset so its storage is allocated now, not during the run.
            h5["features"][n - 1 :] = 0 if n else None
            h5["status"][:] = STATUS_PENDING
            h5["skip_reasons"][n - 1 :] = b"" if n else None
        os.replace(tmp, path)
        return cls(path, _open_h5(path, "r+"))

    @classmethod
    def reopen(cls, path: Path) -> StoreWriter:
        return cls(path, _open_h5(path, "r+"))

    def pending_rows(self) -> np.ndarray:
        return np.flatnonzero(self.status == STATUS_PENDING)

    def write_batch(self, start: int, features: np.ndarray, reasons: list[str | None],
                    extra: dict[str, np.ndarray] | None = None) -> None:
        stop = start + len(reasons)
        self.h5["features"][start:stop] = features
        for name, values in (extra or {}).items():  # every set before the status that says "done"
            self.h5["feature_sets"][name][start:stop] = values
        self.h5.flush()
        status = np.array([STATUS_DONE if r is None else STATUS_SKIPPED for r in reasons], dtype=np.uint8)
        encoded = np.array([(r or "").encode("utf-8")[:_REASON_BYTES] for r in reasons], dtype=f"S{_REASON_BYTES}")
        self.h5["skip_reasons"][start:stop] = encoded
        self.h5["status"][start:stop] = status
        self.h5.flush()
        self.status[start:stop] = status

    def finish(self, run_info: dict) -> None:
        if (self.status == STATUS_PENDING).any():
            raise FeatxError("internal error: finishing a store with pending rows")
        # Time to result counts every run that built this store, resumed ones included.
        previous = json.loads(self.h5.attrs.get("run", "{}") or "{}")
        run_info = {**run_info, "extract_seconds_total": round(
            float(previous.get("extract_seconds_total", 0.0)) + float(run_info.get("seconds_this_run", 0.0)), 3)}
        self.h5.attrs["run"] = json.dumps(run_info, sort_keys=True)
        self.h5.attrs["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.h5.attrs["complete"] = True
        self.h5.flush()

    def close(self) -> None:
        self.h5.close()


def check_existing(path: Path, config: dict, fingerprint: str) -> None:
    """Raise :class:`StoreMismatchError` unless the store at ``path`` holds exactly this config and source."""
    store = FeatureStore(path)
    differences = diff_configs(store.config, _canonical(config))
    if store.fingerprint != fingerprint:
        differences.append("source content changed (files added, removed, renamed or modified since extraction)")
    if differences:
        raise StoreMismatchError(
            f"{path} holds features for a different config or source ({'; '.join(differences[:4])}"
            f"{'; ...' if len(differences) > 4 else ''}); use --overwrite to replace it, or another --out"
        )
