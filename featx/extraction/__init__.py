"""Stage 1: frozen timm backbones, the extractor and its data loader (writing the feature
stores of ``featx.store``), and the scikit-learn ``FeatureExtractor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_namespace

# Public name -> its module, imported on first use (see featx.core.lazy): asking for one
# name does not import torch, timm or scikit-learn for the others.
_LAZY = {
    "DEFAULT_BACKBONE": "._backbones",
    "POOLINGS": "._backbones",
    "BackboneSpec": "._backbones",
    "OfflineWeights": "._backbones",
    "create_backbone": "._backbones",
    "list_offline_weights": "._backbones",
    "load_state_dict_file": "._backbones",
    "register_offline_weights": "._backbones",
    "resolve_backbone": "._backbones",
    "bench_extract": "._bench",
    "bare_loop": "._bench",
    "check_cores": "._bench",
    "format_table": "._bench",
    "subset_source": "._bench",
    "device_batches": "._engine",
    "prepare_model": "._engine",
    "extract": "._extractor",
    "DEFAULT_SET": "._features",
    "INTERPOLATIONS": "._features",
    "VIEWS": "._features",
    "FeatureRecipe": "._features",
    "data_config_with": "._features",
    "embed_batch": "._features",
    "feature_options": "._features",
    "feature_set_layout": "._features",
    "parse_layers": "._features",
    "parse_views": "._features",
    "preprocessing_overrides": "._features",
    "DECODES": "._gpu_decode",
    "check_gpu_decode": "._gpu_decode",
    "FEATURE_DTYPES": "._features",
    "ItemDataset": "._inputs",
    "default_store_path": "._inputs",
    "embedding_dim": "._inputs",
    "jsonable_data_config": "._inputs",
    "make_eval_transform": "._inputs",
    "store_config": "._inputs",
    "DeviceBatches": "._loader",
    "DeviceNormalizer": "._loader",
    "Uint8ItemDataset": "._loader",
    "input_dtype": "._loader",
    "make_loader": "._loader",
    "make_uint8_transform": "._loader",
    "RAW_PIXELS": "._raw_pixels",
    "RAW_PIXELS_SIZE": "._raw_pixels",
    "extract_raw_pixels": "._raw_pixels",
    "raw_pixel_features": "._raw_pixels",
    "raw_pixels_identity": "._raw_pixels",
    "join_ray": "._ray",
    "ray_errors": "._ray",
    "bench_ray_extract": "._ray_bench",
    "format_ray_table": "._ray_bench",
    "CPU_BATCH_SIZE": "._sizing",
    "auto_batch_size": "._sizing",
    "resolve_batch_size": "._sizing",
    "resolve_workers": "._sizing",
    "FeatureExtractor": "._sklearn",
    "view_path": "._views",
    "BackgroundWriter": "._writer",
    "to_host": "._writer",
}
__getattr__, __dir__ = lazy_namespace(__name__, _LAZY)

if TYPE_CHECKING:  # static analysers and IDEs see the real names
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
    from ._bench import bare_loop, bench_extract, check_cores, format_table, subset_source
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
    "bare_loop",
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
