"""``FeatureExtractor``: a frozen backbone as a scikit-learn transformer.

It turns images (file paths, PIL images or an ``(N, H, W, 3)`` uint8 array) into
embeddings, so it can sit first in a scikit-learn ``Pipeline`` in front of any head,
GridSearchCV included. With ``cache=PATH`` every embedding is kept in a small HDF5
file keyed by the image's content (or path, size and mtime for files) and the
backbone config, so cross-validation folds and repeated calls never run the backbone
twice on the same image.

The transformer cannot skip a bad image the way ``featx extract`` does (rows must stay
aligned with ``y``), so a bad image raises :class:`featx.FeatxError` naming it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..core.errors import BadImageError, FeatxError, FeatxUsageError, StoreMismatchError
from ..core.runtime import autocast_context, resolve_device, resolve_precision, tune_malloc
from ..data import load_image, to_rgb
from ._backbones import DEFAULT_BACKBONE, create_backbone, resolve_backbone
from ._inputs import embedding_dim, jsonable_data_config
from ._loader import DeviceNormalizer, input_dtype, make_uint8_transform

__all__ = ["FeatureExtractor"]


def _as_images(X) -> list:
    """Normalise X into a list whose items are paths, PIL images or HxWx3 uint8 arrays."""
    if isinstance(X, np.ndarray):
        if X.dtype == np.uint8 and X.ndim == 4 and X.shape[-1] == 3:
            return list(X)
        if X.ndim == 1 and X.dtype.kind in "UO":
            return [str(x) for x in X]
        if X.ndim == 2 and X.shape[1] == 1 and X.dtype.kind in "UO":
            return [str(x) for x in X[:, 0]]
        raise FeatxUsageError(
            f"FeatureExtractor takes image paths, PIL images or a uint8 (N, H, W, 3) array; got {X.dtype} {X.shape}"
        )
    if isinstance(X, (str, os.PathLike)):
        raise FeatxUsageError("FeatureExtractor takes a list of images; wrap a single path in a list")
    items = list(X)
    for item in items:
        if not isinstance(item, (str, os.PathLike, Image.Image, np.ndarray)):
            raise FeatxUsageError(f"cannot read an image from {type(item).__name__}")
    return items


def _item_key(item, config_key: str) -> str:
    digest = hashlib.sha256(config_key.encode())
    if isinstance(item, (str, os.PathLike)):
        path = Path(item).resolve()
        try:
            st = path.stat()
        except OSError:
            raise FeatxError(f"image not found: {item}") from None
        digest.update(f"file:{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        array = np.asarray(to_rgb(item) if isinstance(item, Image.Image) else item)
        digest.update(f"array:{array.shape}:".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class _EmbeddingCache:
    """Append-only HDF5 map from item key to embedding, for one backbone config."""

    def __init__(self, path: Path, config_key: str, dim: int):
        self.path, self.config_key, self.dim = path, config_key, dim

    def lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        if not self.path.exists():
            return {}
        with h5py.File(self.path, "r") as h5:
            self._check(h5)
            stored = h5["keys"][:].astype(str)
            index = {k: i for i, k in enumerate(stored)}
            rows = sorted({index[k] for k in keys if k in index})
            if not rows:
                return {}
            feats = h5["features"][rows]
        by_row = dict(zip(rows, feats))
        return {k: by_row[index[k]] for k in keys if k in index}

    def add(self, keys: Sequence[str], feats: np.ndarray) -> None:
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock", timeout=60), h5py.File(self.path, "a") as h5:
            if "keys" not in h5:
                h5.attrs["featx_cache_config"] = self.config_key
                h5.create_dataset("keys", shape=(0,), maxshape=(None,), dtype="S64", chunks=(4096,))
                h5.create_dataset("features", shape=(0, self.dim), maxshape=(None, self.dim), dtype="float32",
                                  chunks=(256, self.dim))
            self._check(h5)
            known = set(h5["keys"][:].astype(str))
            fresh = [(k, f) for k, f in zip(keys, feats) if k not in known]
            if not fresh:
                return
            n = h5["keys"].shape[0]
            h5["keys"].resize((n + len(fresh),))
            h5["features"].resize((n + len(fresh), self.dim))
            h5["features"][n:] = np.stack([f for _, f in fresh])
            h5["keys"][n:] = np.array([k.encode() for k, _ in fresh], dtype="S64")

    def _check(self, h5: h5py.File) -> None:
        stored = h5.attrs.get("featx_cache_config")
        if stored is not None and stored != self.config_key:
            raise StoreMismatchError(
                f"embedding cache {self.path} was made with another backbone config; use another cache path"
            )


_BACKBONES: collections.OrderedDict = collections.OrderedDict()  # (spec, device) -> (model, data_config)
_BACKBONES_KEPT = 2  # backbones kept per process: a search over two backbones stays warm
_BACKBONES_LOCK = threading.Lock()


def _shared_backbone(spec, device: str):
    """The frozen backbone for ``spec`` on ``device``, built once per process.

    ``GridSearchCV`` clones the pipeline for every fold and candidate; without this each
    clone rebuilt (and re-read the weights of) the same frozen network. Sharing it is safe:
    it is in eval mode, without gradients, and only ever run under ``inference_mode``.
    """
    key = (json.dumps(spec.identity(), sort_keys=True, default=str), str(device))
    with _BACKBONES_LOCK:
        if key in _BACKBONES:
            _BACKBONES.move_to_end(key)
            return _BACKBONES[key]
    model, data_config = create_backbone(spec)
    model.to(device)
    with _BACKBONES_LOCK:
        _BACKBONES[key] = (model, data_config)
        while len(_BACKBONES) > _BACKBONES_KEPT:
            _BACKBONES.popitem(last=False)
    return model, data_config


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """Frozen timm backbone as a transformer: images -> (N, D) float32 embeddings.

    Parameters mirror ``featx extract``: ``backbone``, ``weights`` (None, "hub",
    "random" or a checkpoint path), ``pooling``, ``batch_size``, ``device``,
    ``precision``; ``cache`` is an optional HDF5 path for reusing embeddings.

    Attributes after ``fit``: ``spec_`` (the resolved backbone), ``data_config_``,
    ``device_``, ``precision_``, ``n_features_out_``.
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, weights: str | None = None, pooling: str = "avg",
                 batch_size: int = 8, device: str = "auto", precision: str = "auto", cache: str | None = None):
        self.backbone = backbone
        self.weights = weights
        self.pooling = pooling
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.cache = cache

    def fit(self, X=None, y=None):
        """Build the backbone (the images are not needed; fitting learns nothing from them)."""
        if int(self.batch_size) < 1:
            raise FeatxUsageError("batch_size must be at least 1")
        self.spec_ = resolve_backbone(self.backbone, weights=self.weights, pooling=self.pooling)
        self.device_ = resolve_device(self.device)
        self.precision_ = resolve_precision(self.precision, self.device_)
        self.model_, data_config = _shared_backbone(self.spec_, self.device_)
        self.data_config_ = dict(data_config)
        # The uint8 loader's split: geometry on the host, float conversion and
        # normalisation batched on the device (equal to timm's float eval transform).
        self.transform_ = make_uint8_transform(self.data_config_)
        self.normalizer_ = DeviceNormalizer(self.data_config_["mean"], self.data_config_["std"], self.device_,
                                            input_dtype(self.device_, self.precision_))
        self.n_features_out_ = embedding_dim(self.model_, self.data_config_["input_size"], self.device_)
        self.config_key_ = json.dumps(
            {"backbone": self.spec_.identity(), "data_config": jsonable_data_config(self.data_config_),
             "precision": self.precision_}, sort_keys=True)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        items = _as_images(X)
        if not items:
            return np.empty((0, self.n_features_out_), dtype=np.float32)
        out = np.empty((len(items), self.n_features_out_), dtype=np.float32)
        todo = list(range(len(items)))
        cache = None
        if self.cache is not None:
            cache = _EmbeddingCache(Path(self.cache), self.config_key_, self.n_features_out_)
            keys = [_item_key(item, self.config_key_) for item in items]
            hits = cache.lookup(keys)
            todo = [i for i, k in enumerate(keys) if k not in hits]
            for i, k in enumerate(keys):
                if k in hits:
                    out[i] = hits[k]
        if todo:
            out[todo] = self._embed([items[i] for i in todo])
            if cache is not None:
                cache.add([keys[i] for i in todo], out[todo])
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        return np.array([f"{self.spec_.model}_{i}" for i in range(self.n_features_out_)], dtype=object)

    def _load(self, item) -> Image.Image:
        if isinstance(item, (str, os.PathLike)):
            try:
                return load_image(item)
            except BadImageError as exc:
                raise FeatxError(f"bad image {item}: {exc}") from None
        if isinstance(item, Image.Image):
            return to_rgb(item)
        array = np.asarray(item)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
            raise FeatxUsageError(f"array images must be uint8 (H, W, 3); got {array.dtype} {array.shape}")
        return Image.fromarray(np.ascontiguousarray(array), mode="RGB")

    def _embed(self, items: list) -> np.ndarray:
        tune_malloc()
        autocast = autocast_context(self.device_, self.precision_)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(items), int(self.batch_size)):
                batch = torch.stack([self.transform_(self._load(it)) for it in items[start:start + int(self.batch_size)]])
                with autocast:
                    feats = self.model_(self.normalizer_(batch.to(self.device_, non_blocking=True)))
                chunks.append(feats.float().reshape(len(batch), -1).cpu().numpy())
        return np.concatenate(chunks)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Images in (paths, PIL images, uint8 arrays), not 2-D float arrays: scikit-learn's
        # data-based checks do not apply; float32 embeddings out whatever came in.
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        tags.requires_fit = True
        return tags
