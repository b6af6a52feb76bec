"""Feature stores for the head tests, written directly (no backbone run) with a known signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification

from featx import resolve_backbone
from featx.store import StoreWriter

CLASSES = ("ant", "bee", "cow")


def write_store(path: Path, *, n: int = 240, dim: int = 16, splits=None, backbone: str = "test_efficientnet",
                seed: int = 0, class_sep: float = 2.0):
    """A complete store of ``make_classification`` features, as if ``backbone`` had made them."""
    from featx import FeatureStore

    X, y = make_classification(n_samples=n, n_features=dim, n_informative=min(dim, 8), n_redundant=0,
                               n_classes=len(CLASSES), n_clusters_per_class=1, class_sep=class_sep, random_state=seed)
    spec = resolve_backbone(backbone, weights="random")
    config = {"source": {"kind": "array", "name": path.stem}, "backbone": spec.identity(),
              "data_config": {"input_size": [3, 32, 32], "interpolation": "bicubic", "mean": [0.5] * 3,
                              "std": [0.5] * 3, "crop_pct": 0.875, "crop_mode": "center"},
              "precision": "fp32", "dtype": "float32"}
    ids = [f"item{i:04d}" for i in range(n)]
    writer = StoreWriter.create(path, config=config, fingerprint=f"fake-{seed}-{n}-{dim}", ids=ids, labels=y,
                                splits=splits if splits is not None else [""] * n, class_names=CLASSES, dim=dim,
                                dtype="float32")
    try:
        writer.write_batch(0, X.astype(np.float32), [None] * n)
        writer.finish({"device": "cpu"})
    finally:
        writer.close()
    return FeatureStore(path)
