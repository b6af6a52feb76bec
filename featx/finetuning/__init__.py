"""The fine-tune baseline (linear, partial, full, scratch) on exactly the items the heads
use, and its data side.
"""

from __future__ import annotations

from ._augment import DeviceAugment, make_train_resize
from ._bench import bench_finetune
from ._data import FinetuneData, epoch_seed, make_train_transform, seed_everything, select_items, train_loader
from ._finetune import DEFAULT_LR, MODES, finetune, keep_frozen_in_eval, model_stages, set_trainable

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
