"""``featx.finetune``: the fine-tune baseline's entry point.

The training itself lives in :mod:`._finetune` and imports torch and timm; this module
does not, so a pipeline's config check reads the options a ``finetune:`` entry may set
(this signature) without paying for either.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core.interrupts import sticky_interrupts
from ..extraction import DEFAULT_BACKBONE
from ._modes import CROP_SCALE

if TYPE_CHECKING:
    from ..data import Source
    from ..extraction import BackboneSpec

__all__ = ["finetune"]


def finetune(
    source: str | os.PathLike | Source,
    backbone: str | BackboneSpec = DEFAULT_BACKBONE,
    out: str | os.PathLike = "finetune",
    *,
    mode: str = "full",
    weights: str | os.PathLike | None = None,
    pooling: str = "avg",
    epochs: int = 10,
    per_class: int | None = None,
    seed: int = 0,
    val_per_class: int | None = None,
    unfreeze: int = 1,
    batch_size: int = 32,
    lr: float | None = None,
    weight_decay: float = 0.05,
    layer_decay: float = 0.85,
    label_smoothing: float = 0.1,
    warmup_epochs: float = 1.0,
    head_epochs: int = 1,
    patience: int = 3,
    image_size: int | None = None,
    crop_scale: tuple[float, float] = CROP_SCALE,
    splits: str | os.PathLike | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    device: str = "auto",
    precision: str = "auto",
    workers: int | str = "auto",
    eval_batch_size: int | None = None,
    n_boot: int = 1000,
    resume: bool = True,
    quiet: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> dict:
    """Fine-tune ``backbone`` on ``source`` in ``mode``, evaluate on the test split, return the results entry.

    Writes into ``out``: ``config.json``, ``splits.json``, ``best.safetensors`` (+
    ``best.json``), ``last.pt``, ``finetune_<mode>.json`` and ``results.json`` (the
    list ``featx train`` writes). Rerunning with the same arguments returns the
    finished entry, or resumes an interrupted run after its last completed epoch.
    ``callback(record)`` is called after each epoch's checkpoint is saved.
    An interrupt (Ctrl-C) always stops the run with ``KeyboardInterrupt``, even one that
    arrives while a DataLoader starts its workers (:mod:`featx.core.interrupts`); the
    completed epochs stay in ``last.pt`` for the resume.
    """
    arguments = dict(locals())
    from ._finetune import run_finetune  # torch, timm: only when a fine-tune runs

    with sticky_interrupts():
        return run_finetune(**arguments)
