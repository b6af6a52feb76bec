"""Stage 2: the head registry, the training protocol (selection on val, refit on
train+val, one test evaluation), safe persistence, and prediction from images.
"""

from __future__ import annotations

from ._bench import bench_logreg, synthetic_problem
from ._bench_stream import bench_heads
from ._evaluate_model import evaluate_model
from ._export_model import EXPORT_MODEL_FORMATS, EXPORTABLE_HEADS, EXPORTABLE_KINDS, export_model
from ._featuresets import FeatureSet, is_per_store, open_features, parse_feature_set, parse_store_sets
from ._logme import logme_score
from ._mlp import MLPClassifier
from ._model import CLI_WEIGHTS, PYTHON_WEIGHTS, Model, build_finetuned, image_inputs, load_model, open_model
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
