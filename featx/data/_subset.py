"""Stratified, seeded subsets of a source: ``--per-class N`` / ``--limit N`` at extract,
and the growing subsamples of ``featx search``.

Items are ranked within their group by ``sha256(f"{seed}:{id}")`` (the rule
``_splits`` uses), so a draw depends only on the ids, labels, splits and seed: the
same subset on every run, and a larger subset contains every smaller one drawn with
the same seed (the search grows its subsamples this way). Groups are (split, class):
a source with its own train/test split keeps both sides, each stratified by class.

A :class:`SubsetSource` is a view of the picked items in the base source's order;
``splits`` can relabel them (the search hands its train/val assignment down so the
store's split is the full source's, never a new carve on the subset).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import FeatxUsageError
from ._fingerprint import ItemRecord
from ._sources import Item, Source, structure_digest

__all__ = ["SubsetSource", "subset_indices", "subset_source", "subset_record"]


def _ranks(ids: Sequence[str], seed: int) -> np.ndarray:
    return np.array([hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids])


def _largest_remainder(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas proportional to ``sizes`` summing to ``min(total, sizes.sum())``, each <= its size."""
    total = min(total, int(sizes.sum()))
    exact = sizes * (total / max(int(sizes.sum()), 1))
    quota = np.minimum(np.floor(exact).astype(int), sizes)
    order = np.argsort(-(exact - quota), kind="stable")
    for k in order:
        if quota.sum() >= total:
            break
        if quota[k] < sizes[k]:
            quota[k] += 1
    return quota


def subset_indices(ids: Sequence[str], labels: Sequence[int], splits: Sequence[str], *, per_class: int | None = None,
                   limit: int | None = None, seed: int = 0) -> np.ndarray:
    """Sorted indices of the kept items: at most ``per_class`` per (split, class), then at most
    ``limit`` in all, spread over the (split, class) groups in proportion to their size."""
    for name, value in (("per_class", per_class), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise FeatxUsageError(f"{name} must be a whole number >= 1, got {value!r}")
    keys = _ranks([str(i) for i in ids], seed)
    labels, splits = np.asarray(labels), np.asarray([str(s) for s in splits])
    groups = [np.flatnonzero((splits == s) & (labels == c)) for s in np.unique(splits) for c in np.unique(labels)]
    groups = [g[np.argsort(keys[g], kind="stable")] for g in groups if g.size]
    if per_class is not None:
        groups = [g[:per_class] for g in groups]
    sizes = np.array([g.size for g in groups])
    quota = _largest_remainder(sizes, limit) if limit is not None else sizes
    kept = [g[:q] for g, q in zip(groups, quota)]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


class SubsetSource(Source):
    """The items ``indices`` of ``base`` (in that order), optionally with their splits replaced."""

    def __init__(self, base: Source, indices: Sequence[int], splits: Sequence[str] | None = None,
                 description: dict | None = None):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.kind, self.name = base.kind, base.name
        self.class_names = list(base.class_names)
        self.max_pixels = getattr(base, "max_pixels", None)
        self.description = dict(description or {})
        # Where the base's files are (a store must not be written among them): the same place.
        for name in ("root", "csv_path", "shards", "files"):
            if getattr(base, name, None) is not None:
                setattr(self, name, getattr(base, name))
        picked = [base.items[int(i)] for i in self.indices]
        if splits is not None and len(splits) != len(picked):
            raise FeatxUsageError(f"{len(splits)} splits for a subset of {len(picked)} items")
        self.items = [Item(it.id, it.label, it.split if splits is None else str(splits[k]))
                      for k, it in enumerate(picked)]

    def load(self, index: int) -> Image.Image:
        return self.base.load(int(self.indices[index]))

    def load_item(self, index: int) -> tuple[Image.Image | None, str, ItemRecord | None]:
        return self.base.load_item(int(self.indices[index]))

    def path_of(self, index: int) -> Path:
        return self.base.path_of(int(self.indices[index]))

    def item_paths(self) -> list[Path] | None:
        paths = self.base.item_paths()
        return None if paths is None else [paths[int(i)] for i in self.indices]

    def structure_fingerprint(self) -> str:
        if self.base.item_paths() is None:
            return self.fingerprint()
        return structure_digest(self.class_names, self.items)  # as a file source computes it

    def _content_markers(self, indices: Sequence[int] | None = None) -> Sequence[str]:
        # Only the picked items' markers: each is the string the base's full list holds for that
        # item, so the fingerprint is unchanged, without a stat of every file of a large base.
        picked = self.indices if indices is None else self.indices[np.asarray(indices, dtype=np.int64)]
        return self.base._content_markers(picked)

    def describe(self) -> dict:
        return {**self.base.describe(), "n_items": len(self.items), "subset_of": len(self.base), **self.description}


def subset_source(source: Source, *, per_class: int | None = None, limit: int | None = None,
                  seed: int = 0) -> Source:
    """``source`` itself when neither bound is given, else the stratified seeded :class:`SubsetSource`."""
    if per_class is None and limit is None:
        return source
    picked = subset_indices(source.ids, source.labels, [it.split for it in source.items], per_class=per_class,
                            limit=limit, seed=seed)
    if picked.size == 0:
        raise FeatxUsageError(f"the subset of {source.name} is empty")
    return SubsetSource(source, picked, description={"subset": subset_record(per_class, limit, seed)})


def subset_record(per_class: int | None, limit: int | None, seed: int) -> dict:
    """What a store config records of a subset (and so its id and cache key)."""
    return {k: v for k, v in (("per_class", per_class), ("limit", limit), ("seed", seed)) if v is not None}
