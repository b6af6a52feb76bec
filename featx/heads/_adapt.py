"""Fitting a head's parameters to the data it is trained on: small, few-shot or lopsided sets.

A registered search space is written for ordinary datasets; on a tiny training set some
of its values cannot work at all (a PCA with more components than rows, k-NN with more
neighbours than training items, a tree leaf larger than half the smallest class, probability calibration with more folds than the
smallest class has items). Rather than let the fit crash, every parameter set is capped
to what the data allows before it is fitted, the same way for every head, and each cap
is recorded. A head the data cannot support even after capping raises
:class:`HeadUnfitError`, which :func:`featx.train_heads` turns into a *skipped* row with
its reason instead of a failed run.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import FeatxError

__all__ = ["HeadUnfitError", "adapt_params", "factory_defaults", "check_classes_usable", "few_shot_shortfall",
           "ADAPTED"]

ADAPTED = ("pca", "n_neighbors", "calibration_folds", "min_samples_leaf")  # the parameters adapt_params may cap


class HeadUnfitError(FeatxError):
    """This head cannot be fitted on this training set; the message says why."""


def factory_defaults(spec) -> dict:
    """The head factory's own defaults for the parameters :func:`adapt_params` caps."""
    import inspect

    return {name: p.default for name, p in inspect.signature(spec.factory).parameters.items()
            if name in ADAPTED and p.default is not inspect.Parameter.empty}


def adapt_params(params: dict, X: np.ndarray, y: np.ndarray) -> tuple[dict, dict]:
    """``params`` capped to what ``(X, y)`` supports, and ``{name: (asked, used)}`` for each cap."""
    n_rows, dim = X.shape
    counts = np.bincount(np.asarray(y, dtype=np.int64))
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    out, caps = dict(params), {}

    def cap(name: str, limit: int) -> None:
        value = out.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            out[name], caps[name] = limit, (value, limit)

    cap("pca", min(n_rows, dim))  # PCA: at most min(rows, features) components
    cap("n_neighbors", n_rows)  # k-NN: at most as many neighbours as training items
    # Trees: a leaf may hold at most half the smallest class; histogram boosting's default 20
    # on 12 items per class allowed no split at all, a constant predictor.
    cap("min_samples_leaf", max(1, smallest // 2))
    folds = out.get("calibration_folds")
    if isinstance(folds, int) and folds > smallest:
        if smallest < 2:
            raise HeadUnfitError(
                f"probability calibration needs at least 2 training items in every class; the smallest class has {smallest}"
            )
        cap("calibration_folds", smallest)  # stratified folds: at most the smallest class's size
    return out, caps


def check_classes_usable(y: np.ndarray, class_names, where: str) -> None:
    """A classifier needs two classes with training items; one usable class is one clear line."""
    present = np.unique(np.asarray(y))
    if len(present) < 2:
        named = ", ".join(repr(class_names[int(c)]) for c in present) or "none"
        raise FeatxError(
            f"{where} has only {len(present)} class with usable training items ({named}); a classifier needs two "
            "or more: add images of the other classes, or check why they were skipped (featx info)"
        )


def few_shot_shortfall(y_train: np.ndarray, class_names, per_class: int) -> str | None:
    """One warning line when some class has fewer training items than ``per_class``, else None."""
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=len(class_names))
    short = [(class_names[i], int(c)) for i, c in enumerate(counts) if 0 < c < per_class]
    if not short:
        return None
    listed = ", ".join(f"{name!r} {count}" for name, count in short[:6]) + (", ..." if len(short) > 6 else "")
    return (f"--per-class {per_class}: {len(short)} class(es) have fewer training items, so fewer were used "
            f"({listed}); {int(counts.sum())} training items in all")
