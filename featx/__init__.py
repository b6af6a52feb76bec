"""featx: extract once, fit many heads.

Stage 1 (:func:`extract`) runs images through a frozen timm backbone into an HDF5
:class:`FeatureStore`; stage 2 fits classical heads on the cached features and
compares them with a fine-tune baseline of the same backbone on the same splits.
"""

__version__ = "0.1.0"

from ._backbones import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    OfflineWeights,
    create_backbone,
    list_offline_weights,
    register_offline_weights,
    resolve_backbone,
)
from ._errors import BadImageError, FeatxError, FeatxUsageError, StoreInUseError, StoreMismatchError
from ._extract import extract
from ._finetune import finetune
from ._heads import HeadSpec, create_head, list_heads, register_head
from ._persist import TrainedHead, load_head
from ._pipeline import Pipeline, load_pipeline
from ._predict import predict
from ._report import write_report
from ._runner import PipelineRun, run_pipeline
from ._sklearn import FeatureExtractor
from ._sources import ArraySource, CsvSource, DigitsSource, ImageFolderSource, Item, Source, open_source
from ._store import FeatureStore
from ._train import evaluate_head, train_heads

__all__ = [
    "__version__",
    "DEFAULT_BACKBONE",
    "BackboneSpec",
    "OfflineWeights",
    "create_backbone",
    "list_offline_weights",
    "register_offline_weights",
    "resolve_backbone",
    "BadImageError",
    "FeatxError",
    "FeatxUsageError",
    "StoreInUseError",
    "StoreMismatchError",
    "extract",
    "finetune",
    "FeatureExtractor",
    "ArraySource",
    "CsvSource",
    "DigitsSource",
    "ImageFolderSource",
    "Item",
    "Source",
    "open_source",
    "FeatureStore",
    "HeadSpec",
    "create_head",
    "list_heads",
    "register_head",
    "train_heads",
    "evaluate_head",
    "TrainedHead",
    "load_head",
    "predict",
    "Pipeline",
    "PipelineRun",
    "load_pipeline",
    "run_pipeline",
    "write_report",
]
