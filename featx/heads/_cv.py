"""Selection by stratified k-fold cross-validation, for validation splits too small to rank on.

With fewer than ``SMALL_VAL_PER_CLASS`` validation items in some class, one validation
split cannot tell candidates apart (6 images: every C at 5/6). There the candidates
are scored by stratified k-fold CV on the rows the final model is refitted on
(train+val, or the few-shot training items with ``per_class``), ``k`` = at most
``MAX_FOLDS`` and at most the smallest class's count. The scores are the same as on
val (mean fold accuracy, mean fold loss) and are ranked by the same
:func:`featx.heads._search.rank_candidates`:

* ``grid`` heads: scikit-learn's ``GridSearchCV`` over the head's candidates;
* ``coarse_fine`` (logreg): the coarse-to-fine walk of :mod:`._search`, each C scored
  by ``cross_validate`` instead of one val split;
* ``early_stopping`` heads: the early-stopping selector on each fold (the booster stops
  on the fold's held-out part); a candidate's rounds are the median over folds.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate

from ._search import _Probe, _search_with_edges, heldout_scores, rank_candidates

__all__ = ["SMALL_VAL_PER_CLASS", "MAX_FOLDS", "PROTOCOLS", "choose_protocol", "select_cv"]

SMALL_VAL_PER_CLASS = 20  # fewer validation items than this in some class: choose by CV
MAX_FOLDS = 5
PROTOCOLS = ("auto", "val", "cv")


def choose_protocol(y_val: np.ndarray, y_refit: np.ndarray, protocol: str = "auto") -> tuple[str, int]:
    """(``"val"`` or ``"cv"``, fold count) for these labels; ``protocol`` forces one where possible.

    CV needs at least 2 items of every class in the refit rows; without them it is val.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
    classes, counts = np.unique(np.asarray(y_refit), return_counts=True)
    folds = int(min(MAX_FOLDS, counts.min())) if len(counts) else 0
    if protocol == "val" or folds < 2:
        return "val", 0
    val_counts = np.array([np.sum(np.asarray(y_val) == c) for c in classes])
    if protocol == "cv" or val_counts.min() < SMALL_VAL_PER_CLASS:
        return "cv", folds
    return "val", 0


def _scorer(estimator, X, y) -> dict:
    scores = heldout_scores(estimator, X, y)
    loss = scores["val_loss"]
    return {"accuracy": scores["val_accuracy"], "loss": np.nan if loss is None else loss}


class HeadCandidate(ClassifierMixin, BaseEstimator):
    """One parameter set of a registered head as an estimator, so ``GridSearchCV`` can search ``params``."""

    def __init__(self, head: str = "logreg", params: dict | None = None, random_state=None):
        self.head = head
        self.params = params
        self.random_state = random_state

    def fit(self, X, y):
        from ._registry import get_head

        spec = get_head(self.head)
        self.model_ = spec.create(**{**(self.params or {}), **spec.search_only}, random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_.fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def __getattr__(self, name):
        # predict_proba / decision_function exactly when the fitted head has them.
        if name in ("predict_proba", "decision_function") and "model_" in self.__dict__:
            return getattr(self.model_, name)
        raise AttributeError(name)


def _folds(seed: int, k: int) -> StratifiedKFold:
    return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)


def _cv_grid(spec, candidates, seed, data, k) -> list[dict]:
    X, y = data
    search = GridSearchCV(HeadCandidate(spec.name, random_state=seed), {"params": candidates}, scoring=_scorer,
                          refit=False, cv=_folds(seed, k), error_score=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)
        warnings.simplefilter("ignore", UserWarning)  # "one or more of the test scores are non-finite"
        search.fit(X, y)
    res = search.cv_results_
    trace = []
    for i, params in enumerate(res["params"]):
        acc, loss = float(res["mean_test_accuracy"][i]), float(res["mean_test_loss"][i])
        if not np.isfinite(acc):
            trace.append({"params": params["params"], "error": "failed to fit on a fold"})
            continue
        trace.append({"params": params["params"], "val_accuracy": acc, "val_loss": loss if np.isfinite(loss) else None,
                      "folds": k, "seconds": round(float(res["mean_fit_time"][i]) * k, 3)})
    return trace


class _CVProbe(_Probe):
    """The coarse-to-fine walk with each C scored by k-fold CV of the whole head pipeline."""

    def __init__(self, spec, grid, data, fixed, seed, k):
        super().__init__(None, grid, *data, None, None, fixed)
        self.spec, self.seed, self.k = spec, seed, k

    def _fit(self, C: float) -> None:
        started = time.perf_counter()
        params = {**self.fixed, "C": C}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = cross_validate(HeadCandidate(self.spec.name, params, self.seed), self.Z, self.y, scoring=_scorer,
                                 cv=_folds(self.seed, self.k))
        loss = float(np.mean(res["test_loss"]))
        self.scores[C] = {"val_accuracy": float(np.mean(res["test_accuracy"])),
                          "val_loss": loss if np.isfinite(loss) else None}
        self.coefs[C] = None
        self.trace.append({"params": params, **self.scores[C], "folds": self.k,
                           "seconds": round(time.perf_counter() - started, 3)})


def _cv_coarse_fine(spec, candidates, seed, data, k) -> tuple[list[dict], list[str]]:
    from ._search import COARSE_STEP

    fixed = {key: v for key, v in candidates[0].items() if key != "C"}
    grid = sorted({float(c["C"]) for c in candidates})
    probe = _CVProbe(spec, grid, data, fixed, seed, k)
    on_edge = _search_with_edges(probe, COARSE_STEP)
    return sorted(probe.trace, key=lambda t: t["params"]["C"]), ["C"] if on_edge else []


def _cv_early_stopping(spec, candidates, seed, data, k, selector: Callable) -> list[dict]:
    """The early-stopping selector on every fold; per candidate the mean scores and the median rounds."""
    X, y = data
    by_candidate: dict[str, list[dict]] = {}
    for fit_rows, held_rows in _folds(seed, k).split(X, y):
        trace, _ = selector(spec, candidates, seed, (X[fit_rows], y[fit_rows]), (X[held_rows], y[held_rows]))
        for params, entry in zip(candidates, trace):
            by_candidate.setdefault(json.dumps(params, sort_keys=True, default=str), []).append(entry)
    out = []
    for params in candidates:
        entries = by_candidate.get(json.dumps(params, sort_keys=True, default=str), [])
        scored = [e for e in entries if "val_accuracy" in e]
        if len(scored) < k:
            out.append({"params": params, "error": next((e["error"] for e in entries if "error" in e), "no score")})
            continue
        rounds = {name: int(np.median([e["params"][name] for e in scored]))
                  for name in scored[0]["params"] if name not in params}
        losses = [e.get("val_loss") for e in scored]
        out.append({"params": {**params, **rounds}, "val_accuracy": float(np.mean([e["val_accuracy"] for e in scored])),
                    "val_loss": None if None in losses else float(np.mean(losses)), "folds": k,
                    "seconds": round(sum(e["seconds"] for e in scored), 3)})
    return out


def select_cv(spec, candidates, seed: int, data, k: int, early_stopping: Callable | None = None):
    """(trace, state) of ``spec``'s search scored by ``k``-fold CV on ``data``, in the selectors' shape."""
    if spec.selection in ("coarse_fine", "path"):
        trace, edge = _cv_coarse_fine(spec, candidates, seed, data, k)
        return trace, {"edge": edge}
    if spec.selection == "early_stopping" and early_stopping is not None:
        return _cv_early_stopping(spec, candidates, seed, data, k, early_stopping), {}
    return _cv_grid(spec, candidates, seed, data, k), {}


def best_of(trace: list[dict]) -> dict:
    """The trace entry :func:`rank_candidates` chooses."""
    return trace[rank_candidates(trace)]
