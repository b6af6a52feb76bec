"""Stage 2: the head registry, the training protocol (selection on val, refit on
train+val, one test evaluation), safe persistence, and prediction from images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_namespace

# Public name -> its module, imported on first use (see featx.core.lazy): asking for one
# name does not import torch, timm or scikit-learn for the others.
_LAZY = {
    "bench_logreg": "._bench",
    "synthetic_problem": "._bench",
    "bench_heads": "._bench_stream",
    "evaluate_model": "._evaluate_model",
    "EXPORT_MODEL_FORMATS": "._exportable",
    "EXPORTABLE_HEADS": "._exportable",
    "EXPORTABLE_KINDS": "._exportable",
    "export_model": "._export_model",
    "FeatureSet": "._featuresets",
    "is_per_store": "._featuresets",
    "open_features": "._featuresets",
    "parse_feature_set": "._featuresets",
    "parse_store_sets": "._featuresets",
    "logme_score": "._logme",
    "MLPClassifier": "._mlp",
    "CLI_WEIGHTS": "._model",
    "PYTHON_WEIGHTS": "._model",
    "Model": "._model",
    "build_finetuned": "._model",
    "image_inputs": "._model",
    "load_model": "._model",
    "open_model": "._model",
    "HEAD_FORMAT": "._persist",
    "MANIFEST_FILE": "._persist",
    "TRUSTED_TYPES": "._persist",
    "TrainedHead": "._persist",
    "load_head": "._persist",
    "save_head": "._persist",
    "backbone_for_head": "._predict",
    "collect_images": "._predict",
    "predict": "._predict",
    "rows_to_csv": "._predict",
    "train_xgboost_ray": "._ray_xgb",
    "LOGREG_C_GRID": "._registry",
    "SELECTIONS": "._registry",
    "HeadSpec": "._registry",
    "check_head_params": "._registry",
    "create_head": "._registry",
    "get_head": "._registry",
    "list_heads": "._registry",
    "register_head": "._registry",
    "TorchLogisticRegression": "._torch_logreg",
    "CONFIG_FILE": "._train",
    "ENTRY_FILE": "._train",
    "RESULTS_FILE": "._train",
    "evaluate_head": "._train",
    "resolve_splits": "._train",
    "select_and_fit": "._train",
    "train_heads": "._train",
    "training_rows": "._train",
    "VIEW_MODES": "._views",
    "with_views": "._views",
}
__getattr__, __dir__ = lazy_namespace(__name__, _LAZY)

if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from ._bench import bench_logreg, synthetic_problem
    from ._bench_stream import bench_heads
    from ._evaluate_model import evaluate_model
    from ._export_model import export_model
    from ._exportable import EXPORT_MODEL_FORMATS, EXPORTABLE_HEADS, EXPORTABLE_KINDS
    from ._featuresets import FeatureSet, is_per_store, open_features, parse_feature_set, parse_store_sets
    from ._logme import logme_score
    from ._mlp import MLPClassifier
    from ._model import (
        CLI_WEIGHTS,
        PYTHON_WEIGHTS,
        Model,
        build_finetuned,
        image_inputs,
        load_model,
        open_model,
    )
    from ._persist import HEAD_FORMAT, MANIFEST_FILE, TRUSTED_TYPES, TrainedHead, load_head, save_head
    from ._predict import backbone_for_head, collect_images, predict, rows_to_csv
    from ._ray_xgb import train_xgboost_ray
    from ._registry import (
        LOGREG_C_GRID,
        SELECTIONS,
        HeadSpec,
        check_head_params,
        create_head,
        get_head,
        list_heads,
        register_head,
    )
    from ._torch_logreg import TorchLogisticRegression
    from ._train import (
        CONFIG_FILE,
        ENTRY_FILE,
        RESULTS_FILE,
        evaluate_head,
        resolve_splits,
        select_and_fit,
        train_heads,
        training_rows,
    )
    from ._views import VIEW_MODES, with_views

__all__ = [
    "bench_heads",
    "evaluate_model",
    "export_model",
    "EXPORT_MODEL_FORMATS",
    "EXPORTABLE_HEADS",
    "EXPORTABLE_KINDS",
    "Model",
    "load_model",
    "open_model",
    "image_inputs",
    "build_finetuned",
    "CLI_WEIGHTS",
    "PYTHON_WEIGHTS",
    "train_xgboost_ray",
    "bench_logreg",
    "synthetic_problem",
    "TorchLogisticRegression",
    "MLPClassifier",
    "FeatureSet",
    "logme_score",
    "with_views",
    "VIEW_MODES",
    "open_features",
    "parse_feature_set",
    "parse_store_sets",
    "is_per_store",
    "TrainedHead",
    "save_head",
    "load_head",
    "TRUSTED_TYPES",
    "MANIFEST_FILE",
    "HEAD_FORMAT",
    "predict",
    "collect_images",
    "rows_to_csv",
    "backbone_for_head",
    "HeadSpec",
    "register_head",
    "create_head",
    "check_head_params",
    "list_heads",
    "get_head",
    "LOGREG_C_GRID",
    "SELECTIONS",
    "train_heads",
    "evaluate_head",
    "select_and_fit",
    "training_rows",
    "resolve_splits",
    "RESULTS_FILE",
    "CONFIG_FILE",
    "ENTRY_FILE",
]
