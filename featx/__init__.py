"""featx: extract once, fit many heads.

Stage 1 (:func:`extract`) runs images through a frozen timm backbone into an HDF5
:class:`FeatureStore`; stage 2 fits classical heads on the cached features and
compares them with a fine-tune baseline of the same backbone on the same splits.

``import featx`` is cheap: the public names below are loaded on first use (module
``__getattr__``, as scikit-learn and timm do), so ``featx --help`` and a script that
only needs the errors never pay for torch, timm or scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The version and the errors are plain Python and small: imported eagerly so
# ``featx.__version__`` and ``except featx.FeatxError`` never trigger a heavy import.
from .core.errors import (
    BadImageError,
    DiskError,
    FeatxError,
    FeatxUsageError,
    StoreDamagedError,
    StoreInUseError,
    StoreMismatchError,
)
from .core.lazy import lazy_namespace
from .core.version import __version__

# Public name -> the featx package that defines it, imported on first access.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ["ArraySource", "CsvSource", "DigitsSource", "ImageFolderSource", "Item", "ParquetSource", "Source",
         "WebDatasetSource", "open_source"], ".data"),
    **dict.fromkeys(
        ["DEFAULT_BACKBONE", "BackboneSpec", "FeatureExtractor", "OfflineWeights", "create_backbone",
         "extract", "list_offline_weights", "register_offline_weights", "resolve_backbone"], ".extraction"),
    **dict.fromkeys(["finetune"], ".finetuning"),
    **dict.fromkeys(
        ["FeatureSet", "HeadSpec", "TrainedHead", "create_head", "evaluate_head", "evaluate_model", "list_heads",
         "load_head", "load_model", "predict", "register_head", "train_heads"], ".heads"),
    **dict.fromkeys(["Pipeline", "PipelineRun", "load_pipeline", "run_pipeline", "write_report"], ".pipeline"),
    **dict.fromkeys(["FeatureStore", "write_store"], ".store"),
}

# Subpackages reachable as attributes after a bare ``import featx`` (``featx.heads.get_head``).
_SUBPACKAGES = frozenset({"core", "data", "store", "extraction", "heads", "finetuning", "pipeline", "cli"})

if TYPE_CHECKING:  # static analysers and IDEs see the real names
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
        evaluate_model,
        list_heads,
        load_head,
        load_model,
        predict,
        register_head,
        train_heads,
    )
    from .pipeline import Pipeline, PipelineRun, load_pipeline, run_pipeline, write_report
    from .store import FeatureStore, write_store


__getattr__, __dir__ = lazy_namespace(__name__, _LAZY, frozenset(_SUBPACKAGES))


# Kept literal (not built from _LAZY) so tools that read __all__ statically see every name.
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
    "write_store",
    "FeatureSet",
    "HeadSpec",
    "create_head",
    "list_heads",
    "register_head",
    "train_heads",
    "evaluate_head",
    "evaluate_model",
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
