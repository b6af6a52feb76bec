"""Each results row's test predictions on identified items, for paired comparisons.

A row (head or fine-tune) records ``test_predictions``:

* ``{"path": FILE, "sha256": ..., "n": N}`` when the row has a folder of its own:
  ``FILE`` is an ``.npz`` beside the row's ``result.json`` with arrays ``ids`` (item ids,
  unicode), ``true`` and ``pred`` (class indices into the row's ``class_names``), so
  ``results.json`` stays small on large test sets;
* ``{"ids": [...], "true": [...], "pred": [...]}`` inline otherwise (a Python call
  with no output folder).

:func:`load_correctness` reads either and returns ``(ids, correct)``; a file whose
sha256 no longer matches (the row's folder was reused by another run) reads as absent,
never as another run's predictions.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .io import file_sha256, write_atomic

__all__ = ["PREDICTIONS_FILE", "prediction_record", "load_correctness"]

PREDICTIONS_FILE = "test_predictions.npz"


def prediction_record(ids: Sequence, y_true: Sequence[int], y_pred: Sequence[int],
                      path: str | os.PathLike | None = None) -> dict:
    """The row's ``test_predictions`` field; with ``path``, the arrays are written there (atomically)."""
    ids = np.asarray([str(i) for i in ids])
    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    if not (len(ids) == len(true) == len(pred)):
        raise ValueError(f"ids, true and pred differ in length ({len(ids)}, {len(true)}, {len(pred)})")
    if path is None:
        return {"ids": ids.tolist(), "true": true.tolist(), "pred": pred.tolist()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, ids=ids, true=true, pred=pred)
    written = write_atomic(Path(path), buffer.getvalue())
    return {"path": str(written.resolve()), "sha256": file_sha256(written), "n": int(len(ids))}


def load_correctness(entry: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """``(ids, correct)`` of a row's test items, or None when it recorded none (or its file changed)."""
    record = entry.get("test_predictions")
    if not isinstance(record, dict):
        return None
    if "ids" in record:
        ids, true, pred = record["ids"], record["true"], record["pred"]
    else:
        path = Path(str(record.get("path", "")))
        try:
            if record.get("sha256") != file_sha256(path):
                return None  # another run wrote this folder since: not this row's predictions
            with np.load(path, allow_pickle=False) as data:
                ids, true, pred = data["ids"], data["true"], data["pred"]
        except (OSError, KeyError, ValueError):
            return None
    ids = np.asarray(ids).astype(str)
    true, pred = np.asarray(true), np.asarray(pred)
    if not (len(ids) == len(true) == len(pred)):
        return None
    return ids, true == pred
