"""Feature sets: one or more feature stores, aligned by id, with chosen sets concatenated.

:class:`FeatureSet` is a read-only view with the interface the training protocol reads
from a :class:`featx.FeatureStore` (``features``, ``labels``, ``ids``, ``splits``,
``split_assignment``, ``store_id``, ``dim``, ``config``, ...), so heads train on a
backbone ensemble (``featx train --features a.h5,b.h5``) or on a store's extra layers
(``--feature-set layer4`` or ``concat:pooled,layer4``) with the same protocol.

Stores are aligned by item id (rows follow the first store's order) and must describe
the same items: the same ids, labels (by class name) and source splits; the first
difference is named in one line. A row is used when every store has it done (a bad
image skipped by any store is skipped by all). Its ``config["backbone"]`` is a
composite identity listing every input (backbone identity, data config, extraction
recipe, the sets taken and their widths), which a saved head records, so ``featx
predict`` can run each backbone and concatenate, and a head is never loaded onto
features of another composition.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.errors import FeatxUsageError
from ..extraction import DEFAULT_SET
from ..store import FeatureStore

__all__ = ["FeatureSet", "parse_feature_set", "parse_store_sets", "is_per_store", "open_features"]


def parse_feature_set(spec: str | Sequence[str] | None) -> list[str]:
    """``None`` -> ``["pooled"]``; ``"layer4"`` -> ``["layer4"]``; ``"concat:pooled,layer4"`` or
    ``"pooled+layer4"`` -> both."""
    if spec is None:
        return [DEFAULT_SET]
    if not isinstance(spec, str):
        names = [str(s).strip() for s in spec]
    else:
        text = spec.strip()
        names = [s.strip() for s in text[len("concat:"):].split(",")] if text.startswith("concat:") else text.split("+")
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise FeatxUsageError(f"feature set {spec!r}: give a set name (featx info lists them) or concat:NAME,NAME")
    if len(set(names)) != len(names):
        raise FeatxUsageError(f"feature set {spec!r} names a set twice")
    return names


def is_per_store(spec) -> bool:
    """Whether ``spec`` is the per-store form ``STORE:SET+SET,STORE:SET``."""
    return isinstance(spec, str) and not spec.strip().startswith("concat:") and ":" in spec


def _store_keys(store: FeatureStore, given: str | None) -> set[str]:
    path = Path(str(store.path))
    keys = {str(store.path), path.name, path.stem, store.backbone}
    if given:
        keys |= {given, Path(given).name}
    return keys


def parse_store_sets(spec: str, stores: Sequence[FeatureStore], given: Sequence[str] | None = None) -> list[list[str]]:
    """``"lite0.h5:pooled+layer-1,mnv2.h5:pooled"`` -> one list of set names per store, in store order.

    A store is named by its path as given, its file name (with or without suffix) or its
    backbone; a store left out takes ``pooled``.
    """
    given = list(given) if given is not None else [None] * len(stores)
    out: list[list[str] | None] = [None] * len(stores)
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, sep, sets = part.rpartition(":")
        if not sep or not key:
            raise FeatxUsageError(f"--feature-set {part!r}: expected STORE:SET+SET (e.g. lite0.h5:pooled+layer-1)")
        matches = [k for k, st in enumerate(stores) if key in _store_keys(st, given[k])]
        if len(matches) != 1:
            names = ", ".join(Path(str(st.path)).name for st in stores)
            what = "matches no" if not matches else "matches more than one"
            raise FeatxUsageError(f"--feature-set {part!r}: {key!r} {what} store of --features ({names})")
        if out[matches[0]] is not None:
            raise FeatxUsageError(f"--feature-set names store {key!r} twice")
        out[matches[0]] = parse_feature_set(sets)
    return [names if names is not None else [DEFAULT_SET] for names in out]


def _resolve_set(store: FeatureStore, token: str) -> str:
    """A set name of ``store``: its exact name, or a layer index as given to ``--layers`` or absolute."""
    sets = store.feature_sets
    for s in sets:
        if s["name"] == token:
            return token
    try:
        # A layer index as given to --layers (-1) or written as a set (layer-1).
        index = int(token[len("layer"):] if token.startswith("layer-") else token)
    except ValueError:
        index = None
    if index is not None:
        for s in sets:
            if s.get("layer") is not None and index in (s["layer"], s.get("spec")):
                return s["name"]
    raise FeatxUsageError(f"feature store {store.path} has no feature set {token!r}; it has: "
                          f"{', '.join(s['name'] for s in sets)} (extract with --layers to add layers; "
                          f"pick sets per store with STORE:SET+SET,STORE:SET)")


def _aligned(first: FeatureStore, other: FeatureStore) -> np.ndarray:
    """Row permutation putting ``other``'s items in ``first``'s order, or a usage error naming the first mismatch."""
    a, b = first.all_ids, other.all_ids
    position = {str(i): k for k, i in enumerate(b)}
    for item in a:
        if str(item) not in position:
            raise FeatxUsageError(f"stores differ: id {item!r} is in {first.path} but not in {other.path}")
    if len(b) != len(a):
        known = {str(i) for i in a}  # built once: a set per element would make this quadratic
        extra = next(i for i in b if str(i) not in known)
        raise FeatxUsageError(f"stores differ: id {extra!r} is in {other.path} but not in {first.path}")
    perm = np.fromiter((position[str(i)] for i in a), dtype=np.int64, count=len(a))
    if list(first.class_names) != list(other.class_names):
        raise FeatxUsageError(f"stores differ: classes {list(first.class_names)[:6]} in {first.path} but "
                              f"{list(other.class_names)[:6]} in {other.path}")
    labels_a, labels_b = first.all_labels, other.all_labels[perm]
    bad = np.flatnonzero(labels_a != labels_b)
    if bad.size:
        k = int(bad[0])
        raise FeatxUsageError(f"stores differ: id {a[k]!r} has label {first.class_names[labels_a[k]]!r} in {first.path} "
                              f"but {other.class_names[labels_b[k]]!r} in {other.path}")
    splits_a, splits_b = first.all_splits, other.all_splits[perm]
    bad = np.flatnonzero(splits_a != splits_b)
    if bad.size:
        k = int(bad[0])
        raise FeatxUsageError(f"stores differ: id {a[k]!r} is in split {splits_a[k] or 'none'!r} in {first.path} "
                              f"but {splits_b[k] or 'none'!r} in {other.path}")
    return perm


class FeatureSet:
    """Stores aligned by id, with the named sets of each concatenated (read-only).

    ``sets`` is one spec for every store (``"pooled"``, ``"layer4"``,
    ``"concat:pooled,layer4"`` or a list of names) or a list with one spec per store.

    >>> fs = FeatureSet(["features/lite0.h5", "features/mnv2.h5"])      # doctest: +SKIP
    >>> fs.features.shape                                               # doctest: +SKIP
    (1797, 2560)
    """

    def __init__(self, stores: Sequence[FeatureStore | str | os.PathLike], sets=None):
        if isinstance(stores, (str, os.PathLike, FeatureStore)):
            stores = [stores]
        self.stores = [(s if isinstance(s, FeatureStore) else FeatureStore(s)).require_complete() for s in stores]
        if not self.stores:
            raise FeatxUsageError("a feature set needs at least one feature store")
        if is_per_store(sets):
            sets = parse_store_sets(sets, self.stores, [s if isinstance(s, (str, os.PathLike)) else None for s in stores])
        per_store = sets if isinstance(sets, list) and sets and isinstance(sets[0], (list, tuple)) else [sets] * len(self.stores)
        if len(per_store) != len(self.stores):
            raise FeatxUsageError(f"{len(per_store)} set specs for {len(self.stores)} stores")
        self.set_names = [[_resolve_set(st, t) for t in parse_feature_set(spec)] for st, spec in zip(self.stores, per_store)]
        first = self.stores[0]
        self._perms = [np.arange(first.n_items)] + [_aligned(first, s) for s in self.stores[1:]]
        done = np.ones(first.n_items, dtype=bool)
        for store, perm in zip(self.stores, self._perms):
            done &= store.done_mask[perm]
        self._done = done
        self._features: np.ndarray | None = None
        self.class_names = list(first.class_names)
        self.reused = False

    # -- what the protocol reads ---------------------------------------------------

    @property
    def inputs(self) -> list[dict]:
        """Per store: what a saved head needs to rebuild its features from images."""
        out = []
        for store, names in zip(self.stores, self.set_names):
            dims = {s["name"]: s["dim"] for s in store.feature_sets}
            out.append({"backbone": store.config["backbone"], "data_config": store.config["data_config"],
                        "features": store.config.get("features"), "precision": store.config.get("precision"),
                        "sets": list(names), "dims": [int(dims[n]) for n in names], "store_id": store.store_id,
                        "store_path": str(store.path)})
        return out

    @property
    def name(self) -> str:
        parts = []
        for store, names in zip(self.stores, self.set_names):
            parts.append(store.backbone + ("" if names == [DEFAULT_SET] else f"[{','.join(names)}]"))
        return "+".join(parts)

    @property
    def config(self) -> dict:
        first = self.stores[0]
        poolings = sorted({s.config["backbone"].get("pooling", "avg") for s in self.stores})
        identity = {"model": self.name, "weights": {"kind": "feature_set"}, "pooling": "+".join(poolings),
                    "inputs": [{k: v for k, v in i.items() if k not in ("store_id", "store_path")} for i in self.inputs]}
        return {"backbone": identity, "data_config": first.config["data_config"], "precision": first.config.get("precision"),
                "source": first.config.get("source"), "features": first.config.get("features")}

    @property
    def backbone(self) -> str:
        return self.name

    @property
    def path(self) -> str:
        return " + ".join(str(s.path) for s in self.stores)

    @property
    def store_id(self) -> str:
        blob = json.dumps([[s.store_id, n] for s, n in zip(self.stores, self.set_names)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        return sum(sum(i["dims"]) for i in self.inputs)

    @property
    def n_items(self) -> int:
        return len(self._done)

    @property
    def complete(self) -> bool:
        return True

    def require_complete(self) -> FeatureSet:
        return self

    @property
    def features(self) -> np.ndarray:
        if self._features is None:
            out = np.empty((int(self._done.sum()), self.dim), dtype=np.float32)
            offset = 0
            for store, names, perm in zip(self.stores, self.set_names, self._perms):
                # Map each used item to its row among the store's own done rows.
                row_of = np.cumsum(store.done_mask) - 1
                rows = row_of[perm[self._done]]
                for name in names:
                    block = store.feature_set(name)
                    out[:, offset:offset + block.shape[1]] = block[rows]
                    offset += block.shape[1]
            self._features = out
        return self._features

    @property
    def labels(self) -> np.ndarray:
        return self.stores[0].all_labels[self._done].astype(np.int64)

    def __len__(self) -> int:
        """The number of rows shared by every store (the length of ``features``)."""
        return int(np.count_nonzero(self._done))

    @property
    def ids(self) -> np.ndarray:
        return self.stores[0].all_ids[self._done]

    @property
    def splits(self) -> np.ndarray:
        return self.stores[0].all_splits[self._done]

    @property
    def all_ids(self) -> np.ndarray:
        return self.stores[0].all_ids

    @property
    def has_splits(self) -> bool:
        return self.stores[0].has_splits

    def split_assignment(self, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                         usable_only: bool = True) -> tuple[np.ndarray, dict]:
        """The first store's assignment over every item (identical for all: same ids, labels, splits)."""
        full, rule = self.stores[0].split_assignment(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                                                     usable_only=False)
        return (full[self._done] if usable_only else full), rule

    def entry_fields(self) -> dict:
        """Results-entry fields: every store with its cost, and the summed extraction cost and size."""
        stores, total, size = [], 0.0, 0
        for info in self.inputs:
            store = next(s for s in self.stores if s.store_id == info["store_id"])
            seconds = store.run_info.get("extract_seconds_total")
            total = None if seconds is None or total is None else total + float(seconds)
            nbytes = store.path.stat().st_size if store.path.exists() else 0
            size += nbytes
            stores.append({"path": info["store_path"], "store_id": info["store_id"], "backbone": store.backbone,
                           "sets": info["sets"], "dims": info["dims"], "extract_seconds": seconds, "store_bytes": nbytes,
                           "extract_images_per_second": store.run_info.get("images_per_second")})
        return {"feature_set": self.name, "stores": stores, "extract_seconds": total, "store_bytes": size}

    def __repr__(self) -> str:
        return f"FeatureSet({self.name!r}, {int(self._done.sum())}x{self.dim})"


def open_features(store, feature_set: str | Sequence | None = None):
    """A :class:`FeatureStore` when ``store`` is one store and ``feature_set`` is the default, else a :class:`FeatureSet`.

    ``store`` may be a store, a path, a comma-separated string of paths, a list of
    either, or a :class:`FeatureSet`; plain single stores go through unchanged.
    """
    if isinstance(store, FeatureSet):
        return store
    if isinstance(store, str) and "," in store:
        store = [s.strip() for s in store.split(",") if s.strip()]
    if isinstance(store, (list, tuple)):
        if len(store) == 1:
            store = store[0]
        else:
            return FeatureSet(list(store), feature_set)
    if feature_set is None or (not is_per_store(feature_set) and parse_feature_set(feature_set) == [DEFAULT_SET]):
        return (store if isinstance(store, FeatureStore) else FeatureStore(store)).require_complete()
    return FeatureSet([store], feature_set)
