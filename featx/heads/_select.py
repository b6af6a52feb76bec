"""Choosing a head's hyper-parameters on held-out data, then the refit: ``select_and_fit``.

Every head's search (``grid``, ``path``, ``coarse_fine``, ``early_stopping``) scores its
candidates on held-out data — the validation split, or k-fold CV on the refit rows when
validation is small (:mod:`._cv`) — and :func:`._search.rank_candidates` picks the best
(accuracy, then loss). A grid value chosen on the edge of a geometric grid is searched
past; one still there is recorded as ``edge``. A refit that predicts a single class for
all its training rows gives way to the next-ranked candidate.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold

from ._adapt import HeadUnfitError, adapt_params, factory_defaults
from ._cv import best_of, choose_protocol, select_cv
from ._mlp import MLPClassifier
from ._registry import HeadSpec, get_head
from ._search import (
    EDGE_EXTENSIONS,
    edge_side,
    extend_geometric,
    heldout_scores,
    loss_name,
    rank_candidates,
    rank_order,
    select_coarse_fine,
)

__all__ = ["select_and_fit", "PATH_PATIENCE"]

PATH_PATIENCE = 8  # grid points (two decades of C) without a better held-out score end the path


def _fit_candidate(spec: HeadSpec, params: dict, seed: int, X, y) -> BaseEstimator:
    return spec.create(**{**params, **spec.search_only}, random_state=seed).fit(X, y)


def _select_grid(spec, candidates, seed, train, val):
    trace = []
    for params in candidates:
        started = time.perf_counter()
        try:
            model = _fit_candidate(spec, params, seed, *train)
            scores = heldout_scores(model, *val)
        except ValueError as exc:  # a candidate this training set cannot support, even after adapt_params
            trace.append({"params": params, "error": str(exc).splitlines()[0]})
            continue
        trace.append({"params": params, **scores, "seconds": round(time.perf_counter() - started, 3)})
    return trace, {}


def _select_path(spec, candidates, seed, train, val, patience: int = PATH_PATIENCE):
    """Warm-started regularisation path: C from small (strong L2) to large, stopped after the peak."""
    (X, y), (Xv, yv) = train, val
    fixed = {k: v for k, v in candidates[0].items() if k != "C"}
    model = spec.create(**fixed, random_state=seed)
    prep, clf = model[:-1], model[-1]
    Z, Zv = prep.fit_transform(X), prep.transform(Xv)
    clf.set_params(warm_start=True)
    trace, since_best, coefs = [], 0, {}
    for C in sorted({float(c["C"]) for c in candidates}):
        started = time.perf_counter()
        clf.set_params(C=C)
        with warnings.catch_warnings():
            # Far along the path a step may stop at max_iter; its held-out score is still what counts.
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Z, y)
        trace.append({"params": {**fixed, "C": C}, **heldout_scores(clf, Zv, yv), "n_iter": int(np.max(clf.n_iter_)),
                      "seconds": round(time.perf_counter() - started, 3)})
        if rank_candidates(trace) == len(trace) - 1:
            since_best = 0
            coefs = {"coef": clf.coef_.copy(), "intercept": clf.intercept_.copy()}
        else:
            since_best += 1
            if since_best >= patience:
                break
    return trace, coefs


def _rounds_param(clf) -> str:
    return "n_estimators" if hasattr(clf, "get_booster") else "max_iter"


def _select_early_stopping(spec, candidates, seed, train, val, rounds_patience: int = 20):
    """Each candidate's booster (or MLP) stops on the validation split; its best round count is kept."""
    (X, y), (Xv, yv) = train, val
    trace = []
    for params in candidates:
        started = time.perf_counter()
        model = spec.create(**params, random_state=seed)
        prep, clf = model[:-1], model[-1]
        try:
            Z = prep.fit_transform(X, y) if len(model) > 1 else X
        except ValueError as exc:
            trace.append({"params": params, "error": str(exc).splitlines()[0]})
            continue
        Zv = prep.transform(Xv) if len(model) > 1 else Xv
        if _rounds_param(clf) == "n_estimators":
            clf.set_params(early_stopping_rounds=rounds_patience, eval_metric="mlogloss")
            clf.fit(Z, y, eval_set=[(Zv, yv)], verbose=False)
            rounds = int(clf.best_iteration) + 1
        elif isinstance(clf, MLPClassifier):  # featx's MLP: best epoch by accuracy, loss breaking ties
            clf.set_params(early_stopping=True, n_iter_no_change=rounds_patience, scoring="accuracy")
            clf.fit(Z, y, X_val=Zv, y_val=yv)
            rounds = max(1, int(clf.n_iter_))
        else:
            clf.set_params(early_stopping=True, n_iter_no_change=rounds_patience, scoring="loss")
            clf.fit(Z, y, X_val=Zv, y_val=yv)
            # validation_score_[i] is the score after i rounds (index 0: before any).
            rounds = max(1, int(np.argmax(clf.validation_score_)))
        trace.append({"params": {**params, _rounds_param(clf): rounds}, **heldout_scores(clf, Zv, yv),
                      "seconds": round(time.perf_counter() - started, 3)})
    return trace, {}


_SELECTORS = {"grid": _select_grid, "path": _select_path, "coarse_fine": select_coarse_fine,
              "early_stopping": _select_early_stopping}


def _search(spec, candidates, seed, data: dict, method: str, folds: int):
    """(trace, state) of one search over ``candidates``, on val or by ``folds``-fold CV on the refit rows."""
    if method == "cv":
        return select_cv(spec, candidates, seed, data["refit"], folds, early_stopping=_select_early_stopping)
    return _SELECTORS[spec.selection](spec, candidates, seed, data["train"], data["val"])


def _geometric(values) -> bool:
    nums = sorted({float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if len(nums) < 3 or len(nums) != len(set(values)) or nums[0] <= 0:
        return False
    ratios = [b / a for a, b in zip(nums, nums[1:])]
    return max(ratios) / min(ratios) < 1.01


def _extend_edges(spec, candidates, seed, data, method, folds, trace) -> tuple[list[dict], list[str]]:
    """A grid head's best value on the edge of a geometric grid: search past it; names still on an edge."""
    if spec.selection != "grid":
        return trace, []
    on_edge = []
    for name in {k for c in candidates for k in c}:
        values = {c[name] for c in candidates if name in c}
        if not _geometric(values):
            continue
        grid = sorted(values)
        for _ in range(EDGE_EXTENSIONS):
            best = best_of(trace)["params"]
            side = edge_side(grid.index(best[name]), len(grid)) if best[name] in grid else None
            if side is None:
                break
            more = extend_geometric(grid, side, 2)
            grid = sorted(grid + more)
            extra, _ = _search(spec, [{**best, name: v} for v in more], seed, data, method, folds)
            trace = trace + extra
        best = best_of(trace)["params"]
        if best[name] in grid and edge_side(grid.index(best[name]), len(grid)):
            on_edge.append(name)
    return trace, on_edge


def select_and_fit(
    spec: HeadSpec | str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    refit: tuple[np.ndarray, np.ndarray],
    *,
    params: Mapping | None = None,
    seed: int = 0,
    protocol: str = "auto",
) -> tuple[BaseEstimator, dict]:
    """Choose a head's hyper-parameters on held-out data, refit on ``refit``; return (model, selection record).

    ``protocol``: ``"val"`` ranks the candidates on ``val``; ``"cv"`` by stratified k-fold
    CV on ``refit``; ``"auto"`` uses CV when some class has fewer than
    ``SMALL_VAL_PER_CLASS`` validation items (see :mod:`featx.heads._cv`). Candidates are
    ranked by :func:`~featx.heads._search.rank_candidates` (accuracy, then loss).
    ``params`` are fixed (not searched). The record holds the chosen parameters, the
    method and fold count, every candidate's scores, ``edge`` (a chosen value still on the
    edge of its extended grid) and the selection and refit wall times.
    """
    spec = get_head(spec) if isinstance(spec, str) else spec
    method, folds = choose_protocol(val[1], refit[1], protocol)
    # Capped to what the rows a candidate is fitted on support (PCA size, k, calibration folds); see _adapt.
    smallest = train if method == "val" else _fold_rows(refit, folds)
    candidates = [adapt_params(c, *smallest)[0] for c in spec.candidates(params, seed=seed)]
    data = {"train": train, "val": val, "refit": refit}
    started = time.perf_counter()
    trace, state = _search(spec, candidates, seed, data, method, folds)
    if not any("val_accuracy" in t for t in trace):
        reasons = "; ".join(f"{t['params']}: {t['error']}" for t in trace[:3])
        raise HeadUnfitError(f"no {spec.name} configuration could be fitted on this training set ({reasons})")
    trace, edge = _extend_edges(spec, candidates, seed, data, method, folds, trace)
    edge = edge or state.get("edge", [])
    selection_seconds = time.perf_counter() - started
    started = time.perf_counter()
    model, chosen, refit_params, caps, rejected = _refit_best(spec, trace, state if method == "val" else {}, refit, seed)
    record = {
        "params": refit_params,
        "val_accuracy": chosen["val_accuracy"],
        "method": method, **({"folds": folds} if method == "cv" else {}),
        "score": chosen["val_accuracy"], "loss": chosen.get("val_loss"),
        "loss_name": loss_name(spec.create(**{**chosen["params"], **spec.search_only})),
        "edge": bool(edge), **({"edge_params": edge} if edge else {}),
        "metric": "val_accuracy", "search": spec.selection, "budget": spec.budget,
        "candidates": trace,
        "selection_seconds": round(selection_seconds, 3),
        "refit_seconds": round(time.perf_counter() - started, 3),
        **({"capped": {k: {"asked": a, "used": u} for k, (a, u) in caps.items()}} if caps else {}),
        **({"rejected": rejected} if rejected else {}),
    }
    return model, record


MAX_REFITS = 3  # collapsed refits tolerated before the best-ranked one is kept anyway


def _refit_best(spec, trace, state, refit, seed):
    """Refit the best-ranked candidate; one whose refit predicts a single class on its own
    training rows (a collapse: near-zero coefficients, the intercept deciding) gives way to
    the next-ranked one, and is recorded as rejected."""
    order, rejected = rank_order(trace), []
    for attempt, index in enumerate(order[:MAX_REFITS]):
        chosen = trace[index]
        model, refit_params, caps = _refit(spec, chosen, state if attempt == 0 else {}, refit, seed)
        if len(np.unique(refit[1])) < 2 or len(np.unique(model.predict(refit[0]))) > 1:
            return model, chosen, refit_params, caps, rejected
        rejected.append({"params": refit_params, "reason": "the refit predicts one class for every training item"})
    chosen = trace[order[0]]
    model, refit_params, caps = _refit(spec, chosen, state, refit, seed)
    return model, chosen, refit_params, caps, rejected


def _fold_rows(data, folds: int):
    """The rows of one CV training fold (the smallest set a candidate is fitted on), for capping."""
    X, y = data
    fit_rows, _ = next(StratifiedKFold(n_splits=folds).split(X, y))
    return X[fit_rows], y[fit_rows]


def _refit(spec, chosen: dict, state: dict, refit, seed: int):
    """The chosen configuration fitted on ``refit`` (warm-started from the search's coefficients when given)."""
    # The factory's defaults count too (linear_svm calibrates with 3 folds unless told otherwise).
    adapted, caps = adapt_params({**factory_defaults(spec), **chosen["params"]}, *refit)
    refit_params = {**chosen["params"], **{name: adapted[name] for name in caps}}
    model = spec.create(**refit_params, random_state=seed)
    if state.get("coef") is not None:
        # The path's solution at the chosen C is an excellent start for the refit.
        prep, clf = model[:-1], model[-1]
        Z = prep.fit_transform(*refit)
        clf.set_params(warm_start=True)
        clf.coef_, clf.intercept_ = state["coef"], state["intercept"]
        clf.fit(Z, refit[1])
        clf.set_params(warm_start=False)
    else:
        model.fit(*refit)
    return model, refit_params, caps
