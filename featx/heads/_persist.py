"""Saving and loading trained heads, in safe formats only.

A saved head is a directory::

    manifest.json   what the head was trained on: backbone identity, store_id, feature
                    dimension, class names, the backbone's data config, the head's
                    parameters and preprocessing ``steps``, library versions, which model
                    files follow, and the sha256 of every file (:mod:`featx.core.modeldir`)
    model.skops     the scikit-learn estimator (for xgboost: its preprocessing steps)
    model.ubj       XGBoost's booster in XGBoost's own UBJSON format (xgboost only)
    result.json     the results row of the run that produced it, written before the swap

Nothing is ever unpickled. ``.skops`` files are loaded only after
:func:`skops.io.get_untrusted_types` has listed every type they would instantiate
beyond skops' own defaults and each of those is in :data:`TRUSTED_TYPES`, the types
featx's own heads are made of; anything else (a tampered or foreign file) is refused
with the offending type names. Loading a head for features from another backbone or
of another dimension fails with both sides named.

A head directory is replaced as a whole (:func:`featx.core.io.atomic_dir`), and loading
validates the manifest and checks every model file's sha256 first (:mod:`._manifest`):
a kill, a full disk, a damaged file or an edited manifest never yields a silent score.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from ..core.errors import FeatxError, FeatxUsageError, StoreDamagedError
from ..core.io import atomic_dir
from ..core.modeldir import MANIFEST_FILE, MODEL_FORMAT, read_manifest, seal_manifest, write_row
from ._manifest import check_classes, check_files, check_manifest

__all__ = ["TrainedHead", "save_head", "load_head", "TRUSTED_TYPES", "MANIFEST_FILE", "HEAD_FORMAT"]

# 2: the manifest records model_classes, each model file's sha256 and its own hash.
# 3: featx_model_format, kind and steps; every file hashed, the results row (result.json) included.
HEAD_FORMAT = MODEL_FORMAT
SKOPS_FILE = "model.skops"
XGBOOST_FILE = "model.ubj"

# Types in featx's heads that skops does not trust by default (found with
# ``skops.io.get_untrusted_types`` on every registered head; tests/test_persist.py
# checks each head saves and loads with this list and nothing else).
TRUSTED_TYPES = frozenset({
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
    # featx's own torch-fitted heads: their fitted state is numpy arrays only.
    "featx.heads._torch_logreg.TorchLogisticRegression",
    "featx.heads._mlp.MLPClassifier",
    # PCA and k-NN capped to the data inside fit; their fitted state is scikit-learn's own.
    "featx.heads._capped.CappedPCA",
    "featx.heads._capped.CappedKNeighborsClassifier",
})


def _is_xgboost(estimator) -> bool:
    try:
        from xgboost import XGBModel
    except ImportError:  # pragma: no cover - xgboost is a dependency
        return False
    return isinstance(estimator, XGBModel)


def save_head(path: str | os.PathLike, estimator: BaseEstimator, manifest: dict,
              evaluate: Callable[[TrainedHead], dict] | None = None) -> Path:
    """Save a fitted head and its manifest into directory ``path``, atomically as a whole.

    The files are written into a temporary sibling folder, fsynced, and swapped into place
    (:func:`featx.core.io.atomic_dir`): a kill or a full disk at any point leaves the
    previous head or the new one, complete, never a mix. ``evaluate`` (given the head as
    loaded back from the temporary folder) returns the results row, which is written
    as ``result.json`` inside the folder before the swap: the head and the row that
    describes it are committed together. The manifest records every file's sha256 and a
    hash of its own meaningful fields (:mod:`featx.core.modeldir`).
    """
    import skops.io as sio

    path = Path(path)
    pipeline = isinstance(estimator, Pipeline)
    final = estimator.steps[-1][1] if pipeline else estimator
    with atomic_dir(path) as tmp:
        files: dict = {"skops": None, "xgboost": None, "final_step": None}
        if _is_xgboost(final):
            prefix = estimator.steps[:-1] if pipeline else []
            if prefix:
                (tmp / SKOPS_FILE).write_bytes(sio.dumps(Pipeline(prefix)))
                files["skops"] = SKOPS_FILE
            final.save_model(str(tmp / XGBOOST_FILE))
            files["xgboost"] = XGBOOST_FILE
            files["final_step"] = estimator.steps[-1][0] if pipeline else None
        else:
            (tmp / SKOPS_FILE).write_bytes(sio.dumps(estimator))
            files["skops"] = SKOPS_FILE
        doc = {"featx_model_format": MODEL_FORMAT, "kind": "head", **manifest, "files": files,
               # Which preprocessing the head applies itself (e.g. an xgboost head trained with pca=None has no PCA).
               "steps": [name for name, _ in estimator.steps] if pipeline else ["clf"],
               "model_classes": [int(c) for c in getattr(estimator, "classes_", [])],
               "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        seal_manifest(tmp, doc)
        if evaluate is not None:
            write_row(tmp, evaluate(load_head(tmp)))
            seal_manifest(tmp, doc)  # result.json is one of the files the manifest vouches for
    return path


def load_skops(path: Path):
    """Load a ``.skops`` file after checking every type it needs against :data:`TRUSTED_TYPES`."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same: not a readable model
        raise StoreDamagedError(f"{path} is not a readable skops model file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    refused = sorted(set(untrusted) - TRUSTED_TYPES)
    if refused:
        raise FeatxError(
            f"refusing to load {path}: it needs type(s) featx does not trust: {', '.join(refused)}. "
            "It was not written by featx or has been altered; retrain the head"
        )
    return sio.load(path, trusted=untrusted)


@dataclass
class TrainedHead:
    """A loaded head: the fitted estimator plus the manifest of what it was trained on."""

    path: Path
    manifest: dict
    estimator: BaseEstimator

    @property
    def name(self) -> str:
        return self.manifest["head"]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def proba_names(self) -> list[str]:
        """The class of each ``predict_proba`` column (a class with no training item has none)."""
        names = self.class_names
        return [names[i] for i in self.manifest.get("model_classes", range(len(names)))]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def backbone(self) -> dict:
        return self.manifest["backbone"]

    def check_features(self, backbone: dict, dim: int, where: str = "the features") -> None:
        """Raise unless features of ``backbone`` (an identity dict) and ``dim`` are what this head was fitted on."""
        mine, theirs = _describe(self.backbone), _describe(backbone)
        if _canonical(backbone) != _canonical(self.backbone):
            raise FeatxError(
                f"head {self.path} was trained on {mine} features but {where} come from {theirs}; "
                "extract features with the head's backbone, or train a head on these features"
            )
        if int(dim) != self.dim:
            raise FeatxError(f"head {self.path} expects {self.dim}-dim features ({mine}) but {where} are {dim}-dim")

    def check_store(self, store) -> None:
        self.check_features(store.config["backbone"], store.dim, where=f"store {store.path}")
        if list(store.class_names) != self.class_names:
            raise FeatxError(
                f"head {self.path} predicts classes {self.class_names[:6]} but store {store.path} has "
                f"{list(store.class_names)[:6]}; evaluate on a store of the same dataset"
            )

    def _check_dim(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise FeatxUsageError(f"head {self.name} expects (n, {self.dim}) features; got shape {X.shape}")
        return X

    def predict(self, X) -> np.ndarray:
        return self.estimator.predict(self._check_dim(X))

    def predict_proba(self, X) -> np.ndarray:
        return self.estimator.predict_proba(self._check_dim(X))

    def __repr__(self) -> str:
        return f"TrainedHead({self.name!r}, {len(self.class_names)} classes, {self.dim}-dim {_describe(self.backbone)})"


def _canonical(identity: dict) -> str:
    return json.dumps(identity, sort_keys=True, default=str)


def _describe(identity: dict) -> str:
    weights = identity.get("weights", {})
    detail = weights.get("name") or weights.get("tag") or (weights.get("sha256") or "")[:12] or ""
    return f"{identity.get('model')} ({weights.get('kind', '?')}{' ' + detail if detail else ''}, pooling {identity.get('pooling')})"


def _read_manifest(path: Path) -> dict:
    manifest = read_manifest(path, "saved head")
    check_manifest(manifest, path / MANIFEST_FILE)
    check_files(manifest, path)
    return manifest


def load_head(path: str | os.PathLike, store=None) -> TrainedHead:
    """Load a head saved by :func:`featx.train_heads`; with ``store``, check it fits that store's features.

    The manifest is validated (:func:`._manifest.check_manifest`), and for heads saved
    with hashes the manifest and every model file are checked against them before any
    model file is read; a damaged or edited head is one :class:`StoreDamagedError` line.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    files = manifest["files"]
    prefix = load_skops(path / files["skops"]) if files.get("skops") else None
    if files.get("xgboost"):
        from xgboost import XGBClassifier

        from ._registry import xgboost_device

        booster = XGBClassifier()
        try:
            booster.load_model(str(path / files["xgboost"]))
        except Exception as exc:  # noqa: BLE001 - XGBoostError and friends
            raise StoreDamagedError(f"cannot read {path / files['xgboost']}: {exc}".splitlines()[0]) from None
        booster.set_params(device=xgboost_device("auto"))
        steps = list(prefix.steps) if prefix is not None else []
        estimator = Pipeline([*steps, (files.get("final_step") or "clf", booster)])
    elif prefix is not None:
        estimator = prefix
    else:
        raise StoreDamagedError(f"{path / MANIFEST_FILE} names no model file; retrain the head")
    check_classes(manifest, estimator, path)
    head = TrainedHead(path, manifest, estimator)
    if store is not None:
        head.check_store(store)
    return head
