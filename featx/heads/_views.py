"""Test-time, train-time or both: a store's mirror view (added with ``featx extract --views hflip``,
see :mod:`featx.extraction._views`) averaged into the rows a head reads.

``mode``:

* ``train``: the train rows (the fit) average each image with its mirror; val and test are
  the plain embeddings;
* ``test``: the evaluated rows (val and test: selection sees what test sees) average with
  the mirror; the fit is on plain embeddings;
* ``both``: every row.

The mode is part of the features' identity (``store_id``), so a results row and its cache
key say which it was.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..core.errors import FeatxUsageError
from ..extraction import view_path
from ..store import FeatureStore
from ._featuresets import FeatureSet

__all__ = ["with_views", "VIEW_MODES", "ViewedFeatureSet"]

VIEW_MODES = {"train": ("train",), "test": ("val", "test"), "both": ("train", "val", "test")}


class ViewedFeatureSet(FeatureSet):
    """A :class:`FeatureSet` whose rows in ``mode``'s splits are the mean of the plain and the mirror embedding."""

    def __init__(self, base: FeatureSet, mirror: FeatureSet, split: np.ndarray, mode: str):
        super().__init__(base.stores, base.set_names)
        self.mirror, self.views = mirror, mode
        if not np.array_equal(np.asarray(base.ids), np.asarray(mirror.ids)):
            raise FeatxUsageError("views: the mirror store does not hold the same items as the store; extract it "
                                  "again with --views hflip")
        plain = base.features
        rows = np.isin(np.asarray(split), VIEW_MODES[mode])
        out = plain.copy()
        out[rows] = 0.5 * (plain[rows] + mirror.features[rows])
        self._features = out

    @property
    def store_id(self) -> str:
        blob = json.dumps([super().store_id, self.mirror.store_id, self.views])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{super().name}@hflip-{self.views}"

    def entry_fields(self) -> dict:
        """The plain stores' fields, the mode, and the mirror pass's seconds added to the extraction cost."""
        fields, mirror = super().entry_fields(), self.mirror.entry_fields()
        seconds = (None if fields["extract_seconds"] is None or mirror["extract_seconds"] is None
                   else fields["extract_seconds"] + mirror["extract_seconds"])
        return {**fields, "views": self.views, "view_stores": mirror["stores"], "extract_seconds": seconds,
                "store_bytes": fields["store_bytes"] + mirror["store_bytes"]}


def with_views(features, split: np.ndarray, mode: str | None):
    """``features`` with the mirror view averaged in per ``mode`` (None: unchanged)."""
    if mode is None:
        return features
    if mode not in VIEW_MODES:
        raise FeatxUsageError(f"views: {mode!r} is not one of {', '.join(VIEW_MODES)}")
    base = features if isinstance(features, FeatureSet) else FeatureSet([features], [["pooled"]])
    companions = []
    for store in base.stores:
        path = view_path(store.path)
        if not (path.is_file() or path.is_dir()):
            raise FeatxUsageError(f"views: {store.path} has no hflip view; add it with `featx extract ... "
                                  f"--out {store.path} --views hflip`")
        companions.append(FeatureStore(path))
    return ViewedFeatureSet(base, FeatureSet(companions, base.set_names), split, mode)
