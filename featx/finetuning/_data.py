"""The data side of the fine-tune baseline: which items, which transforms, which batches.

Items: the split is :func:`featx.data.assign_splits` over every item of the source
(split seed 0 and the heads' val/test fractions by default), or a recorded
``splits.json``; ``per_class=N`` keeps :func:`featx.data.few_shot_mask` of the
training split. Both are hash-ranked by item id, so they are the very items
``featx train`` uses on a feature store of the same source.

Bad images: a feature store skips items whose ``source.load`` raises
:class:`featx.BadImageError`, and few-shot draws on a store walk past them to the
next-ranked item. To pick the same few-shot items without decoding the whole
training split, :func:`select_items` loads only the items the draw picks, marks the
bad ones unusable and draws again until every pick is known to load. Elsewhere a bad
image is dropped from its batch when it is met and recorded with its reason, which
again leaves the usable items a store would hold.

Randomness: every epoch reseeds Python's and torch's generators and the loader from
``(seed, epoch)``, so the batches, the augmentations and dropout of an epoch do not
depend on whether the run was interrupted before it.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.errors import BadImageError, FeatxUsageError
from ..core.interrupts import check_interrupt
from ..data import Source, assign_splits, few_shot_mask, load_splits
from ..extraction import DeviceNormalizer, Uint8ItemDataset, input_dtype, make_loader, make_uint8_transform

__all__ = ["FinetuneData", "select_items", "make_train_transform", "epoch_seed", "seed_everything",
           "train_loader", "predict"]

# Light augmentation for fine-tuning: timm's random-resized-crop and flip, with a
# milder minimum crop than ImageNet-from-scratch training (0.08) and no colour jitter.
CROP_SCALE = (0.25, 1.0)


@dataclass
class FinetuneData:
    """Row indices into the source for each split, and every bad image met so far."""

    source: Source
    splits: np.ndarray
    rule: dict
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels

    def record_bad(self, index: int, reason: str) -> None:
        self.skipped.setdefault(self.source.items[index].id, reason)

    def usable(self, indices: np.ndarray) -> np.ndarray:
        ids = self.source.ids
        return np.array([i for i in indices if ids[i] not in self.skipped], dtype=np.int64)


def select_items(
    source: Source,
    *,
    per_class: int | None = None,
    seed: int = 0,
    val_per_class: int | None = None,
    splits_file: str | os.PathLike | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> FinetuneData:
    """The train/val/test items of ``source``: the same assignment and few-shot draw as the heads.

    ``val_per_class`` (default: the whole validation split, as the heads use) keeps a
    seeded, hash-ranked subset of the validation split for early stopping; a compute
    concession for slow machines, recorded in the results. The test split is never cut.
    """
    ids, labels = source.ids, source.labels
    if splits_file is not None:
        # Unlabelled items (label -1) are in no split, whatever a split file says of them.
        splits = np.where(np.asarray(labels) < 0, "", load_splits(splits_file, ids))
        rule = {"rule": f"loaded from {splits_file}"}
    else:
        splits, rule = assign_splits(ids, labels, [it.split for it in source.items], seed=split_seed,
                                     val_fraction=val_fraction, test_fraction=test_fraction)
    data = FinetuneData(source, splits, rule, *(np.flatnonzero(splits == s) for s in ("train", "val", "test")))
    if per_class is not None:
        data.train = np.flatnonzero(_verified_few_shot(data, per_class, seed))
    if val_per_class is not None:
        as_train = np.where(splits == "val", "train", "")
        data.val = np.flatnonzero(few_shot_mask(ids, labels, as_train, val_per_class, seed=split_seed))
    for name in ("train", "val", "test"):
        if not len(getattr(data, name)):
            raise FeatxUsageError(f"the {name} split of {source.name} is empty: give a source with more images per class")
    return data


def _verified_few_shot(data: FinetuneData, per_class: int, seed: int) -> np.ndarray:
    ids, labels = data.source.ids, data.source.labels
    usable = np.ones(len(ids), dtype=bool)
    checked = np.zeros(len(ids), dtype=bool)
    while True:
        mask = few_shot_mask(ids, labels, data.splits, per_class, seed, usable=usable)
        unchecked = np.flatnonzero(mask & ~checked)
        if not unchecked.size:
            return mask
        for index in unchecked:
            checked[index] = True
            try:
                data.source.load(int(index))
            except BadImageError as exc:
                usable[index] = False
                data.record_bad(int(index), str(exc))


def make_train_transform(data_config: dict, crop_scale: tuple[float, float] = CROP_SCALE):
    import timm.data

    return timm.data.create_transform(**data_config, is_training=True, scale=tuple(crop_scale), hflip=0.5,
                                      color_jitter=None)


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % (2**31)


def seed_everything(value: int) -> torch.Generator:
    """Seed Python's and torch's global generators; return a generator for the loader."""
    random.seed(value)
    torch.manual_seed(value)
    return torch.Generator().manual_seed(value)


def train_loader(data: FinetuneData, transform, input_size, batch_size: int, workers: int, generator: torch.Generator,
                 pin_memory: bool = False) -> DataLoader:
    """Shuffled batches of the training items for one epoch (a batch of one is dropped: BatchNorm needs two)."""
    order = data.train[torch.randperm(len(data.train), generator=generator).numpy()]
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    # uint8 images (``_augment.make_train_resize``): augmentation and normalisation run on the device.
    return DataLoader(
        Uint8ItemDataset(data.source, transform, tuple(input_size)), batch_sampler=batches, num_workers=workers,
        generator=generator, pin_memory=pin_memory, prefetch_factor=4 if workers else None,
        worker_init_fn=_one_thread if workers else None,
    )


def _one_thread(_worker_id: int) -> None:
    # Decoding and a uint8 resize need no intra-op threads; more would compete with training.
    torch.set_num_threads(1)


def predict(model: torch.nn.Module, data: FinetuneData, indices: np.ndarray, data_config: dict, *,
            device: torch.device, autocast, channels_last: bool, batch_size: int, workers: int,
            cache: dict | None = None, cache_key: str = "") -> tuple[np.ndarray, np.ndarray, float]:
    """Eval-transform predictions for ``indices``: (usable indices, predicted labels, seconds).

    With a ``cache`` (linear mode only, where everything but the classifier is frozen
    and in eval mode, so the pooled pre-logits of an image never change) the pre-logits
    are kept under ``cache_key`` and later calls run only the classifier on them.
    Leaves the model in eval mode; the training loop puts it back in train mode each epoch.
    """
    model.eval()
    classifier = model.get_classifier()
    if cache is not None and cache_key in cache:
        kept, features = cache[cache_key]
        started = time.perf_counter()
        with torch.inference_mode():
            preds = classifier(features.to(device)).float().argmax(1).cpu().numpy()
        return kept, preds, time.perf_counter() - started
    # The extractor's uint8 split: eval geometry in the workers, normalisation on the device.
    dataset = Uint8ItemDataset(data.source, make_uint8_transform(data_config), tuple(data_config["input_size"]))
    batches = [indices[i:i + batch_size].tolist() for i in range(0, len(indices), batch_size)]
    loader = make_loader(dataset, batches, workers, device)
    precision = "bf16" if device.type == "cuda" and getattr(autocast, "fast_dtype", None) == torch.bfloat16 else "fp32"
    normalize = DeviceNormalizer(data_config["mean"], data_config["std"], device, input_dtype(device, precision),
                                 channels_last)
    kept, preds, features = [], [], []
    started = time.perf_counter()
    with torch.inference_mode():
        for batch_indices, images, reasons in loader:
            check_interrupt()
            good = [i for i, reason in enumerate(reasons) if not reason]
            for i, reason in enumerate(reasons):
                if reason:
                    data.record_bad(int(batch_indices[i]), reason)
            if not good:
                continue
            images = normalize(images[good].to(device, non_blocking=True))
            with autocast:
                if cache is None:
                    logits = model(images)
                else:
                    pooled = model.forward_head(model.forward_features(images), pre_logits=True)
                    features.append(pooled.cpu())
                    logits = classifier(pooled)
            kept.append(batch_indices[good].numpy())
            preds.append(logits.float().argmax(1).cpu().numpy())
    seconds = time.perf_counter() - started
    if not kept:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), seconds
    if cache is not None:
        cache[cache_key] = (np.concatenate(kept), torch.cat(features))
    return np.concatenate(kept), np.concatenate(preds), seconds
