"""End-to-end prediction: images -> the head's backbone -> the saved head -> classes.

The backbone is rebuilt from the head's manifest (model, weights, pooling) and must
resolve to the very identity the head was trained on; images go through timm's eval
transform for the recorded data config, exactly as in ``featx extract``. A file that
cannot be used gives a row with its reason in ``error`` instead of stopping the run.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..core.errors import BadImageError, FeatxUsageError
from ..data import load_image_file, safe_id
from ._embed import embed_images, make_embedders, spec_for_identity
from ._persist import TrainedHead, load_head

__all__ = ["predict", "collect_images", "rows_to_csv", "backbone_for_head"]


def collect_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders (recursively, hidden files ignored, sorted) and keep files as given."""
    return [path for path, _ in _collect(paths)]


def _collect(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, str]]:
    # The same walk as an image-folder source: unusable entries come with their reason.
    from ..data import walk_files

    out: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend((found.path, found.reason) for found in walk_files(path))
        elif path.exists() or path.is_symlink():
            out.append((path, ""))
        else:
            raise FeatxUsageError(f"image or folder not found: {safe_id(str(path))}")
    if not out:
        raise FeatxUsageError("no images to predict: the folders given are empty")
    return out


def backbone_for_head(head: TrainedHead, weights: str | os.PathLike | None = None):
    """Resolve the backbone the head was trained on; ``weights`` is needed for file checkpoints."""
    spec = spec_for_identity(head.backbone, head, weights)
    head.check_features(spec.identity(), head.dim, where=f"the backbone {spec.display_name}")
    return spec


def predict(
    model_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    *,
    weights: str | os.PathLike | None = None,
    batch_size: int = 16,
    device: str = "auto",
    max_pixels: int | None = None,
) -> list[dict]:
    """Predict the class of every image (files or folders of them) with a saved head.

    Returns one row per file, in order: ``id`` (the path), ``predicted`` (class name),
    ``confidence``, ``probabilities`` ({class: p}) and ``error`` (``None``, or why
    the file was skipped, with ``predicted`` ``None``).
    """
    from ..core.runtime import autocast_context, resolve_device, resolve_precision

    if batch_size < 1:
        raise FeatxUsageError("batch size must be at least 1")
    head = load_head(model_dir)
    files = _collect(images)
    dev = resolve_device(device)
    precision = resolve_precision("auto", dev)
    # One per backbone the features came from (several for concatenated stores).
    embedders = make_embedders(head, weights, dev, precision)
    autocast = autocast_context(dev, precision)
    classes = head.proba_names  # predict_proba's columns, in order
    rows: list[dict] = []
    for start in range(0, len(files), batch_size):
        batch, decoded = [], []
        for path, reason in files[start:start + batch_size]:
            # A name that is not UTF-8 is written escaped (\xNN), so CSV and JSON always encode.
            row = {"id": safe_id(str(path)), "predicted": None, "confidence": None, "probabilities": None,
                   "error": reason or None}
            if not reason:
                try:
                    # The one file filter `featx extract` uses: extension allowlist, then the bytes.
                    decoded.append(load_image_file(path, max_pixels=max_pixels))
                    batch.append(row)
                except BadImageError as exc:
                    row["error"] = str(exc)
            rows.append(row)
        if not decoded:
            continue
        proba = head.predict_proba(embed_images(embedders, decoded, dev, autocast))
        for row, p in zip(batch, proba):
            best = int(np.argmax(p))
            row.update(predicted=classes[best], confidence=float(p[best]),
                       probabilities={c: float(v) for c, v in zip(classes, p)})
    return rows


def rows_to_csv(rows: Sequence[dict], class_names: Sequence[str]) -> str:
    """CSV text: id, predicted, confidence, one ``p_<class>`` column per class, error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "predicted", "confidence", *(f"p_{c}" for c in class_names), "error"])
    for row in rows:
        probs = row["probabilities"] or {}
        writer.writerow([row["id"], row["predicted"] or "", "" if row["confidence"] is None else f"{row['confidence']:.6f}",
                         *("" if c not in probs else f"{probs[c]:.6f}" for c in class_names), row["error"] or ""])
    return buffer.getvalue()
