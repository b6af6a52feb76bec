"""featx: extract once, fit many heads.

Stage 1 (:func:`extract`) runs images through a frozen timm backbone into an HDF5
:class:`FeatureStore`; stage 2 fits classical heads on the cached features and
compares them with a fine-tune baseline of the same backbone on the same splits.
"""

from .core.errors import (
    BadImageError,
    DiskError,
    FeatxError,
    FeatxUsageError,
    StoreDamagedError,
    StoreInUseError,
    StoreMismatchError,
)
from .core.version import __version__
from .data import (
    ArraySource,
    CsvSource,
    DigitsSource,
    ImageFolderSource,
    Item,
    ParquetSource,
    Source,
    WebDatasetSource,
    open_source,
)
from .extraction import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    FeatureExtractor,
    OfflineWeights,
    create_backbone,
    extract,
    list_offline_weights,
    register_offline_weights,
    resolve_backbone,
)
from .finetuning import finetune
from .heads import (
    FeatureSet,
    HeadSpec,
    TrainedHead,
    create_head,
    evaluate_head,
    list_heads,
    load_head,
    load_model,
    predict,
    register_head,
    train_heads,
)
from .pipeline import Pipeline, PipelineRun, load_pipeline, run_pipeline, write_report
from .store import FeatureStore

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
    "StoreDamagedError",
    "DiskError",
    "extract",
    "finetune",
    "FeatureExtractor",
    "ArraySource",
    "WebDatasetSource",
    "ParquetSource",
    "CsvSource",
    "DigitsSource",
    "ImageFolderSource",
    "Item",
    "Source",
    "open_source",
    "FeatureStore",
    "FeatureSet",
    "HeadSpec",
    "create_head",
    "list_heads",
    "register_head",
    "train_heads",
    "evaluate_head",
    "TrainedHead",
    "load_head",
    "load_model",
    "predict",
    "Pipeline",
    "PipelineRun",
    "load_pipeline",
    "run_pipeline",
    "write_report",
]
