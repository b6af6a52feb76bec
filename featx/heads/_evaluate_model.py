"""``featx evaluate --source``: any saved model (a head, a raw-pixel control, a fine-tune), re-scored from
the images of its test split.

A fine-tune reads pixels, not a feature store, so it is evaluated on a source. The test split is the
one the model was scored on: ``splits`` if given, else the ``splits.json`` of the run it was saved in,
else the split recomputed from the source with the rule its results row records (after the same
stratified seeded subset, when its store was a ``--per-class``/``--limit`` one). Unless ``splits``
is given, the split's digest must equal the row's ``splits_digest``: another source, or the same one
with items added, removed or relabelled, would give another test split, and a number on it would
not be comparable with the row's. Images go through :func:`featx.load_model`, the path ``featx
predict`` takes, so the accuracy is what the model computes from pixels.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..core.errors import BadImageError, FeatxUsageError, StoreDamagedError
from ..core.metrics import classification_metrics
from ..core.modeldir import RESULT_FILE
from ..core.results import metric_fields
from ..core.runtime import library_versions
from ..data import SPLITS_FILE, assign_splits, load_splits, open_source, splits_digest, subset_source
from ._model import CLI_WEIGHTS, open_model

__all__ = ["evaluate_model"]

_CHUNK = 256  # images decoded and held at a time


def _saved_row(model_dir: Path) -> dict:
    """The results row saved inside the model directory (its hash was checked when the model loaded)."""
    try:
        row = json.loads((model_dir / RESULT_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FeatxUsageError(f"{model_dir} holds no {RESULT_FILE}: it was saved before models carried their "
                              "results row; give --splits to say which items are the test split") from None
    except (OSError, ValueError) as exc:
        raise StoreDamagedError(f"cannot read {model_dir / RESULT_FILE}: {exc}".splitlines()[0]) from None
    if not isinstance(row, dict):
        raise StoreDamagedError(f"{model_dir / RESULT_FILE} is not a results row")
    return row


def _test_split(model_dir: Path, src, row: dict, splits) -> tuple[np.ndarray, dict]:
    """(split per source item, rule), the model's own test split unless ``splits`` names another."""
    if splits is not None:
        return load_splits(splits, src.ids), {"rule": f"loaded from {splits}"}
    rule = row.get("split_rule") or {}
    recorded = model_dir.resolve().parent / SPLITS_FILE
    if "seed" in rule:
        split, _ = assign_splits(src.ids, src.labels, [it.split for it in src.items], seed=rule["seed"],
                                 val_fraction=rule["val_fraction"], test_fraction=rule["test_fraction"])
    elif recorded.is_file():
        split, rule = load_splits(recorded, src.ids), {"rule": f"loaded from {recorded}"}
    else:
        raise FeatxUsageError(f"{model_dir} was scored on a split from a file ({rule.get('rule', 'unknown')}); "
                              "give it with --splits")
    if row.get("splits_digest") not in (None, splits_digest(src.ids, split)):
        raise FeatxUsageError(f"this source's split is not the one {model_dir} was scored on (other items, labels "
                              "or splits than the source it was trained on, or its store was a --per-class/--limit "
                              "subset); give that source, or --splits FILE")
    return split, rule


def _predict(model, src, rows: np.ndarray) -> tuple[list[int], list[str], list[dict], float]:
    """(rows predicted, predicted class names, skipped rows with reasons, seconds), a chunk at a time."""
    kept, names, skipped, seconds = [], [], [], 0.0
    for start in range(0, len(rows), _CHUNK):
        images, chunk = [], []
        for index in rows[start:start + _CHUNK]:
            try:
                images.append(src.load(int(index)))
                chunk.append(int(index))
            except BadImageError as exc:
                skipped.append({"id": src.items[int(index)].id, "reason": str(exc)})
        if images:
            began = time.perf_counter()
            names.extend(str(n) for n in model.predict(images))
            seconds += time.perf_counter() - began
            kept.extend(chunk)
    return kept, names, skipped, seconds


def evaluate_model(model_dir: str | os.PathLike, source, *, splits: str | os.PathLike | None = None,
                   n_boot: int = 1000, weights: str | os.PathLike | None = None, device: str = "auto",
                   batch_size: int = 16) -> dict:
    """Re-evaluate any saved model on the test split of ``source`` (a path, pattern or :class:`Source`)
    from its images; return a results entry. See the module docstring for which split and why."""
    model_dir = Path(model_dir)
    model = open_model(model_dir, weights=weights, device=device, batch_size=batch_size, option=CLI_WEIGHTS)
    row = _saved_row(model_dir)
    # A model scored with unlabelled samples beside its split reads the source the same way.
    src = open_source(source, allow_unlabelled=bool((row.get("split_rule") or {}).get("unlabelled")))
    if row.get("store_subset"):  # its store held a stratified seeded subset: the same draw, then the split
        src = subset_source(src, **row["store_subset"])
    if list(model.classes_) != list(src.class_names):
        raise FeatxUsageError(f"{model_dir} predicts the classes {list(model.classes_)[:6]} but the source has "
                              f"{list(src.class_names)[:6]}: give the source it was trained on")
    split, rule = _test_split(model_dir, src, row, splits)
    test = np.flatnonzero((split == "test") & (src.labels >= 0))
    if not test.size:
        raise FeatxUsageError(f"the test split of {src.name} is empty")
    kept, names, skipped, seconds = _predict(model, src, test)
    if not kept:
        raise FeatxUsageError(f"no test image of {src.name} could be read ({skipped[0]['reason']})")
    index = {name: k for k, name in enumerate(src.class_names)}
    metrics = classification_metrics(src.labels[kept], np.array([index[n] for n in names]), src.class_names,
                                     n_boot=n_boot)
    return {
        "kind": row.get("kind", model.kind), "head": row.get("head", model.kind), "mode": row.get("mode"),
        "backbone": row.get("backbone"), "model": str(model_dir), "source": src.describe(),
        "per_class": row.get("per_class"), "n_train": None, "n_val": int((split == "val").sum()),
        "n_skipped": len(skipped), "skipped": skipped[:100], "splits_digest": splits_digest(src.ids, split),
        "split_rule": rule, **metric_fields(metrics), "predict_seconds_per_1k": round(seconds / len(kept) * 1000, 5),
        "recorded_accuracy": row.get("accuracy"), "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
