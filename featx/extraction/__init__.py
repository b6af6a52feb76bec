"""Stage 1: frozen timm backbones, the extractor and its data loader (writing the feature
stores of ``featx.store``), and the scikit-learn ``FeatureExtractor``.
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
from ._bench import bench_extract, check_cores, format_table, subset_source
from ._engine import device_batches, prepare_model
from ._extractor import extract
from ._features import (
    DEFAULT_SET,
    INTERPOLATIONS,
    VIEWS,
    FeatureRecipe,
    data_config_with,
    embed_batch,
    feature_options,
    feature_set_layout,
    parse_layers,
    parse_views,
    preprocessing_overrides,
)
from ._gpu_decode import DECODES, check_gpu_decode
from ._inputs import (
    FEATURE_DTYPES,
    ItemDataset,
    default_store_path,
    embedding_dim,
    jsonable_data_config,
    make_eval_transform,
    store_config,
)
from ._loader import (
    DeviceBatches,
    DeviceNormalizer,
    Uint8ItemDataset,
    input_dtype,
    make_loader,
    make_uint8_transform,
)
from ._raw_pixels import (
    RAW_PIXELS,
    RAW_PIXELS_SIZE,
    extract_raw_pixels,
    raw_pixel_features,
    raw_pixels_identity,
)
from ._ray import join_ray, ray_errors
from ._ray_bench import bench_ray_extract, format_ray_table
from ._sizing import CPU_BATCH_SIZE, auto_batch_size, resolve_batch_size, resolve_workers
from ._sklearn import FeatureExtractor
from ._views import view_path
from ._writer import BackgroundWriter, to_host

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
    "view_path",
    "default_store_path",
    "make_eval_transform",
    "jsonable_data_config",
    "embedding_dim",
    "ItemDataset",
    "FEATURE_DTYPES",
    "store_config",
    "FeatureExtractor",
    "join_ray",
    "ray_errors",
    "bench_ray_extract",
    "format_ray_table",
    "extract_raw_pixels",
    "raw_pixels_identity",
    "raw_pixel_features",
    "RAW_PIXELS",
    "RAW_PIXELS_SIZE",
    "make_uint8_transform",
    "Uint8ItemDataset",
    "DeviceNormalizer",
    "DeviceBatches",
    "make_loader",
    "input_dtype",
    "device_batches",
    "prepare_model",
    "BackgroundWriter",
    "to_host",
    "DECODES",
    "check_gpu_decode",
    "CPU_BATCH_SIZE",
    "auto_batch_size",
    "resolve_batch_size",
    "resolve_workers",
    "bench_extract",
    "format_table",
    "check_cores",
    "subset_source",
    "DEFAULT_SET",
    "INTERPOLATIONS",
    "VIEWS",
    "FeatureRecipe",
    "data_config_with",
    "embed_batch",
    "feature_options",
    "feature_set_layout",
    "parse_layers",
    "parse_views",
    "preprocessing_overrides",
]
