"""The test items a head got most confidently wrong, recorded in its results entry.

The report shows them as a gallery (thumbnail, true and predicted class, confidence),
so the entry keeps what the gallery needs and no more: the item id, both class names and
the predicted class's probability (``predict_proba`` when the head has it; else ``None``
and the mistakes in test order).
"""

from __future__ import annotations

import numpy as np

__all__ = ["worst_mistakes", "MISTAKES_KEPT"]

MISTAKES_KEPT = 16


def worst_mistakes(model, X, y_true, y_pred, ids, class_names, k: int = MISTAKES_KEPT) -> list[dict]:
    """Up to ``k`` misclassified test items, most confident first."""
    wrong = np.flatnonzero(np.asarray(y_pred) != np.asarray(y_true))
    if not wrong.size:
        return []
    confidence = None
    if hasattr(model, "predict_proba"):
        try:
            proba = np.asarray(model.predict_proba(X[wrong]))
            classes = list(getattr(model, "classes_", range(proba.shape[1])))
            column = [classes.index(p) for p in np.asarray(y_pred)[wrong]]
            confidence = proba[np.arange(len(wrong)), column]
        except (AttributeError, ValueError, IndexError):  # a head without usable probabilities
            confidence = None
    order = np.argsort(-confidence, kind="stable")[:k] if confidence is not None else np.arange(min(k, wrong.size))
    return [{"id": str(ids[wrong[i]]), "true": str(class_names[int(y_true[wrong[i]])]),
             "pred": str(class_names[int(y_pred[wrong[i]])]),
             "confidence": None if confidence is None else round(float(confidence[i]), 4)} for i in order]
