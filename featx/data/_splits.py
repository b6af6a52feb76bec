"""Train/val/test splits and few-shot subsets that every stage agrees on.

Protocol: a source's own split is kept. Splits it lacks are carved out of its
training items (or out of everything, when it has no split at all), stratified by
class. Few-shot subsets (``per_class=N``) are drawn from the training split only,
before validation data is touched.

Every random choice here ranks items by ``sha256(f"{seed}:{id}")`` within their
class instead of shuffling positions. A draw therefore depends only on the item
ids, labels and seed, not on the order or on which other items exist, so the heads
(reading a feature store, whose bad images are skipped) and the fine-tune baseline
(reading the source) pick exactly the same items. The assignment is also written to
``splits.json`` next to results and can be re-loaded with :func:`load_splits`.

Items without a label (label < 0, kept by ``allow_unlabelled``) are in no split: their
split is ``""`` (``unlabelled`` in ``splits.json``) and they are left out of every draw,
so no head is trained, selected or scored on them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.errors import FeatxError, FeatxUsageError
from ..core.io import write_atomic

__all__ = ["assign_splits", "few_shot_mask", "save_splits", "load_splits", "splits_digest", "SPLITS_FILE"]

SPLITS_FILE = "splits.json"
# splits.json's name for the items in no split (label < 0); "" in the arrays.
_NO_SPLIT = "unlabelled"


def _rank_keys(ids: Sequence[str], seed: int) -> np.ndarray:
    return np.array([hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids])


def _carve(ids: np.ndarray, labels: np.ndarray, pool: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Pick ``round(fraction * class size)`` items of each class from ``pool`` (a boolean mask)."""
    chosen = np.zeros(len(ids), dtype=bool)
    if fraction <= 0:
        return chosen
    keys = _rank_keys(ids, seed)
    for label in np.unique(labels[pool]):
        members = np.flatnonzero(pool & (labels == label))
        take = int(round(fraction * len(members)))
        # Keep at least one item per class in what remains, and take one when a class is
        # big enough to spare it, so small classes still appear on both sides.
        take = min(max(take, 1 if len(members) >= 3 else 0), len(members) - 1)
        if take > 0:
            chosen[members[np.argsort(keys[members], kind="stable")[:take]]] = True
    return chosen


def assign_splits(
    ids: Sequence[str],
    labels: Sequence[int],
    source_splits: Sequence[str] | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> tuple[np.ndarray, dict]:
    """Return (split per item, a description of the rule used).

    ``source_splits`` holds ``train``/``val``/``test`` or ``""`` per item; items with
    ``""`` in a source that has some splits are treated as training items. Items with a
    negative label (unlabelled) get ``""``, whatever their source split.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise FeatxUsageError("val and test fractions must be in [0, 1) and sum to less than 1")
    ids = np.asarray([str(i) for i in ids])
    labels = np.asarray(labels)
    given = np.asarray(source_splits if source_splits is not None else [""] * len(ids), dtype=object).astype(str)
    # Class codes below 0 are unlabelled; labels given as names (the public API allows them) never are.
    labelled = labels >= 0 if labels.dtype.kind in "iuf" else np.ones(len(ids), dtype=bool)
    out = np.where(given == "", "train", given).astype("<U5")
    out[~labelled] = ""
    present = set(np.unique(given[labelled])) - {""}
    rule = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    if not labelled.all():
        rule["unlabelled"] = int((~labelled).sum())
    if not present:
        test = _carve(ids, labels, labelled, test_fraction, seed)
        out[test] = "test"
        # Val is a fraction of the whole, carved from what is left.
        remaining = val_fraction / (1 - test_fraction)
        val = _carve(ids, labels, labelled & ~test, remaining, seed + 1)
        out[val] = "val"
        rule["rule"] = "stratified split of the whole source"
    else:
        carved = []
        if "test" not in present:
            test = _carve(ids, labels, out == "train", test_fraction, seed)
            out[test] = "test"
            carved.append("test")
        if "val" not in present:
            val = _carve(ids, labels, out == "train", val_fraction, seed + 1)
            out[val] = "val"
            carved.append("val")
        rule["rule"] = "source splits" + (f"; {' and '.join(carved)} carved from train, stratified" if carved else "")
    return out, rule


def few_shot_mask(
    ids: Sequence[str],
    labels: Sequence[int],
    splits: Sequence[str],
    per_class: int,
    seed: int = 0,
    usable: Sequence[bool] | None = None,
) -> np.ndarray:
    """Boolean mask of the training items kept when each class has at most ``per_class`` of them.

    ``usable`` (default: all) excludes items that cannot be used (bad images), so the
    draw walks on to the next-ranked item of the class instead of losing a slot.
    """
    if per_class < 1:
        raise FeatxUsageError("per_class must be a positive number of training images per class")
    ids = np.asarray([str(i) for i in ids])
    labels = np.asarray(labels)
    train = np.asarray(splits) == "train"
    if usable is not None:
        train &= np.asarray(usable, dtype=bool)
    keys = _rank_keys(ids, 10_000 + seed)
    keep = np.zeros(len(ids), dtype=bool)
    for label in np.unique(labels[train]):
        members = np.flatnonzero(train & (labels == label))
        keep[members[np.argsort(keys[members], kind="stable")[:per_class]]] = True
    return keep


def splits_digest(ids: Sequence[str], splits: Sequence[str]) -> str:
    pairs = sorted(zip((str(i) for i in ids), (str(s) for s in splits)))
    return hashlib.sha256("\n".join(f"{i}\t{s}" for i, s in pairs).encode()).hexdigest()[:16]


def save_splits(path: str | os.PathLike, ids: Sequence[str], splits: Sequence[str], rule: dict) -> Path:
    """Write the assignment (ids per split) atomically as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for item_id, split in zip(ids, splits):
        by_split.setdefault(str(split) or _NO_SPLIT, []).append(str(item_id))
    doc = {"rule": rule, "digest": splits_digest(ids, splits), "counts": {k: len(v) for k, v in by_split.items()}, "ids": by_split}
    return write_atomic(path, json.dumps(doc, indent=1))  # fsynced; a full disk keeps the old file


def load_splits(path: str | os.PathLike, ids: Sequence[str]) -> np.ndarray:
    """Read a recorded assignment back for ``ids``; every id must be in it."""
    try:
        doc = json.loads(Path(path).read_text())
        lookup = {item_id: "" if split == _NO_SPLIT else split for split, members in doc["ids"].items()
                  for item_id in members}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise FeatxUsageError(f"cannot read split file {path}: {exc}") from None
    missing = [i for i in ids if str(i) not in lookup]
    if missing:
        raise FeatxError(f"split file {path} does not cover {len(missing)} item(s), e.g. {missing[0]!r}: it was made for other data")
    return np.array([lookup[str(i)] for i in ids])
