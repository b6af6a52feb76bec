"""End-to-end prediction rows for any saved model (:mod:`._model` does the work).

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

from ._embed import spec_for_identity
from ._model import image_inputs, open_model
from ._persist import TrainedHead

__all__ = ["predict", "collect_images", "rows_to_csv", "backbone_for_head"]


def collect_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders (recursively, hidden files ignored, sorted) and keep files as given."""
    return [Path(item) for _, item, _ in image_inputs(list(paths))]


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
    """Predict the class of every image (files or folders of them) with any saved model.

    Returns one row per file, in order: ``id`` (the path), ``predicted`` (class name),
    ``confidence``, ``probabilities`` ({class: p}) and ``error`` (``None``, or why
    the file was skipped, with ``predicted`` ``None``). The same as
    ``featx.load_model(model_dir).predict_rows(images)``.
    """
    model = open_model(model_dir, weights=weights, device=device, batch_size=batch_size)
    return model.predict_rows(images, max_pixels=max_pixels)


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
