"""The fine-tune baseline (linear, partial, full, scratch) on exactly the items the heads
use, and its data side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_namespace

# Public name -> its module, imported on first use (see featx.core.lazy): asking for one
# name does not import torch, timm or scikit-learn for the others.
_LAZY = {
    "DeviceAugment": "._augment",
    "make_train_resize": "._augment",
    "bench_finetune": "._bench",
    "FinetuneData": "._data",
    "epoch_seed": "._data",
    "make_train_transform": "._data",
    "seed_everything": "._data",
    "select_items": "._data",
    "train_loader": "._data",
    "DEFAULT_LR": "._modes",
    "MODES": "._modes",
    "finetune": "._entry",
    "keep_frozen_in_eval": "._finetune",
    "model_stages": "._finetune",
    "set_trainable": "._finetune",
}
__getattr__, __dir__ = lazy_namespace(__name__, _LAZY)

if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from ._augment import DeviceAugment, make_train_resize
    from ._bench import bench_finetune
    from ._data import (
        FinetuneData,
        epoch_seed,
        make_train_transform,
        seed_everything,
        select_items,
        train_loader,
    )
    from ._entry import finetune
    from ._finetune import keep_frozen_in_eval, model_stages, set_trainable
    from ._modes import DEFAULT_LR, MODES

__all__ = [
    "FinetuneData",
    "select_items",
    "make_train_transform",
    "make_train_resize",
    "DeviceAugment",
    "bench_finetune",
    "epoch_seed",
    "seed_everything",
    "train_loader",
    "finetune",
    "model_stages",
    "set_trainable",
    "keep_frozen_in_eval",
    "MODES",
    "DEFAULT_LR",
]
