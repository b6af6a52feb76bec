"""Stage 1: frozen timm backbones, the extractor and its data loader, the resumable HDF5
feature store, and the scikit-learn ``FeatureExtractor``.
"""

from __future__ import annotations

from ._backbones import (
    DEFAULT_BACKBONE,
    POOLINGS,
    BackboneSpec,
    OfflineWeights,
    create_backbone,
    list_offline_weights,
    load_state_dict_file,
    register_offline_weights,
    resolve_backbone,
)
from ._extractor import (
    FEATURE_DTYPES,
    ItemDataset,
    default_store_path,
    embedding_dim,
    extract,
    jsonable_data_config,
    make_eval_transform,
)
from ._raw_pixels import RAW_PIXELS, RAW_PIXELS_SIZE, extract_raw_pixels, raw_pixels_identity
from ._sklearn import FeatureExtractor
from ._store import FORMAT_VERSION, STATUS_DONE, STATUS_PENDING, STATUS_SKIPPED, FeatureStore, diff_configs

__all__ = [
    "OfflineWeights",
    "BackboneSpec",
    "register_offline_weights",
    "list_offline_weights",
    "resolve_backbone",
    "create_backbone",
    "load_state_dict_file",
    "DEFAULT_BACKBONE",
    "POOLINGS",
    "extract",
    "default_store_path",
    "make_eval_transform",
    "jsonable_data_config",
    "embedding_dim",
    "ItemDataset",
    "FEATURE_DTYPES",
    "FeatureExtractor",
    "FeatureStore",
    "STATUS_PENDING",
    "STATUS_DONE",
    "STATUS_SKIPPED",
    "FORMAT_VERSION",
    "diff_configs",
    "extract_raw_pixels",
    "raw_pixels_identity",
    "RAW_PIXELS",
    "RAW_PIXELS_SIZE",
]
