"""Ranking held-out scores, and the coarse-to-fine search of the logistic-regression C.

**Ranking** (:func:`rank_candidates`, used by every head's search, on val or in CV):
the highest held-out accuracy wins; among equal accuracies the lower held-out loss
(log-loss of ``predict_proba``, or the multiclass hinge loss of ``decision_function``
for heads without probabilities) wins; only then the earlier candidate. Accuracy alone
ties on small validation sets (every C at 5/6 on 6 images), and breaking those ties
towards strong regularisation picked C = 1e-6, whose refit predicted one class
everywhere; its log-loss is about log(K), far worse than a fitted C's.

**Coarse-to-fine C** (``select_coarse_fine``) works on the indices of ``LOGREG_C_GRID``
(1e-6 .. 1e5, 4 points per decade), so it can only choose a C the full walk could have
chosen, about 10-13 fits instead of 20-45:

1. **coarse**: every ``COARSE_STEP``-th grid point (one decade apart), from strong to
   weak regularisation, each fit warm-started from the previous one; the walk stops
   once ``COARSE_PATIENCE`` points (two decades) have beaten neither the best (accuracy,
   then loss) nor the lowest loss, since weak-L2 fits are the slow ones;
2. **refine**: around the best index, half steps (2 points), then single steps, hill
   climbing on the ranking; every fit starts from the fitted C nearest to it;
3. **edge**: a best C on the first or last grid point is not trusted: the grid is
   extended by ``EDGE_DECADES`` decades on that side (at most ``EDGE_EXTENSIONS``
   times) and refined again; a C still on the edge is reported as ``edge``.

The candidates use the head's ``search_only`` parameters (for ``logreg`` a 10x looser
``tol``: ranking C needs no tight optimum); the refit at the chosen C does not.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning

__all__ = ["rank_candidates", "rank_order", "heldout_scores", "loss_name", "extend_geometric", "edge_side", "select_coarse_fine", "COARSE_STEP",
           "COARSE_PATIENCE", "EDGE_DECADES", "EDGE_EXTENSIONS"]

COARSE_STEP = 4  # grid points between coarse candidates: one decade of C
COARSE_PATIENCE = 2  # coarse points without a better score end the coarse walk
EDGE_DECADES = 2  # how far a search is extended past an edge of its grid
EDGE_EXTENSIONS = 2  # at most this many extensions per edge


def _rank_key(score: Mapping, position: int) -> tuple:
    loss = score.get("val_loss")
    loss = math.inf if loss is None or not math.isfinite(loss) else float(loss)
    # Rounded so that float noise in a mean over folds does not decide before the loss.
    return -round(float(score["val_accuracy"]), 9), loss, position


def _usable(score: Mapping) -> bool:
    acc = score.get("val_accuracy")
    return acc is not None and math.isfinite(acc)


def rank_order(scores: Sequence[Mapping]) -> list[int]:
    """Indices of ``scores`` from best to worst, as :func:`rank_candidates` ranks them; failed fits left out."""
    usable = [i for i, s in enumerate(scores) if _usable(s)]
    return sorted(usable, key=lambda i: _rank_key(scores[i], i))


def rank_candidates(scores: Sequence[Mapping]) -> int:
    """Index of the best of ``scores`` (dicts with ``val_accuracy`` and optional ``val_loss``).

    Highest accuracy; ties to the lower loss (a missing or non-finite loss ranks last);
    then to the earlier entry. Entries without a finite accuracy (failed fits) never win.
    """
    order = rank_order(scores)
    if not order:
        raise ValueError("no candidate has a held-out score")
    return order[0]


def heldout_scores(model, X, y) -> dict:
    """``{"val_accuracy", "val_loss", "loss"}`` of a fitted classifier on held-out ``(X, y)``.

    The loss is the log-loss of ``predict_proba`` when the model has it, else the
    multiclass hinge loss of ``decision_function``; ``None`` when neither applies (a
    held-out label the model never saw).
    """
    from sklearn.metrics import hinge_loss, log_loss

    y = np.asarray(y)
    accuracy = float(np.mean(np.asarray(model.predict(X)) == y))
    classes = getattr(model, "classes_", None)
    loss, kind = None, None
    if classes is not None and np.isin(y, classes).all():
        try:
            if hasattr(model, "predict_proba"):
                loss, kind = float(log_loss(y, model.predict_proba(X), labels=classes)), "log_loss"
            elif hasattr(model, "decision_function"):
                loss, kind = float(hinge_loss(y, model.decision_function(X), labels=classes)), "hinge"
        except ValueError:
            loss, kind = None, None
    return {"val_accuracy": accuracy, "val_loss": loss, "loss": kind}


def loss_name(model) -> str:
    """Which loss :func:`heldout_scores` uses for this (fitted or unfitted) model."""
    return "log_loss" if hasattr(model, "predict_proba") else "hinge"


def extend_geometric(values: Sequence[float], side: str, points: int) -> list[float]:
    """``points`` more values past the ``"low"`` or ``"high"`` end of a geometric sequence."""
    values = sorted(float(v) for v in values)
    ratio = values[1] / values[0]
    if side == "low":
        return [values[0] / ratio ** k for k in range(points, 0, -1)]
    return [values[-1] * ratio ** k for k in range(1, points + 1)]


class _Probe:
    """Fits of one classifier at grid values of C, warm-started from the nearest fitted C."""

    def __init__(self, clf, grid, Z, y, Zv, yv, fixed):
        self.clf, self.grid, self.Z, self.y, self.Zv, self.yv, self.fixed = clf, list(grid), Z, y, Zv, yv, fixed
        self.scores: dict[float, dict] = {}
        self.coefs: dict[float, tuple] = {}
        self.trace: list[dict] = []

    def score(self, i: int) -> tuple:
        C = self.grid[i]
        if C not in self.scores:
            self._fit(C)
        return _rank_key(self.scores[C], 0)

    def _fit(self, C: float) -> None:
        started = time.perf_counter()
        if self.coefs:
            near = min(self.coefs, key=lambda c: (abs(math.log(c / C)), c))
            self.clf.coef_, self.clf.intercept_ = (a.copy() for a in self.coefs[near])
            self.clf.set_params(warm_start=True)
        self.clf.set_params(C=C)
        with warnings.catch_warnings():
            # A weak-L2 fit may stop at max_iter; its held-out score is still what counts.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.clf.fit(self.Z, self.y)
        self.scores[C] = heldout_scores(self.clf, self.Zv, self.yv)
        self.coefs[C] = (self.clf.coef_.copy(), self.clf.intercept_.copy())
        self.trace.append({"params": {**self.fixed, "C": C}, **self.scores[C], "n_iter": int(np.max(self.clf.n_iter_)),
                           "seconds": round(time.perf_counter() - started, 3)})

    def best(self) -> int:
        """Grid index of the best fitted C (ties: the smaller C, after accuracy and loss)."""
        fitted = sorted(self.scores)
        return self.grid.index(fitted[rank_candidates([self.scores[c] for c in fitted])])

    def extend(self, side: str) -> None:
        more = extend_geometric(self.grid, side, EDGE_DECADES * COARSE_STEP)
        self.grid = more + self.grid if side == "low" else self.grid + more


def _coarse(probe: _Probe, step: int) -> None:
    n = len(probe.grid)
    indices = list(range(0, n, step))
    if indices[-1] != n - 1:
        indices.append(n - 1)
    since_best, best, best_loss = 0, None, math.inf
    for i in indices:
        key = probe.score(i)
        # A lower loss also counts as progress: at strong L2 the accuracy of near-zero
        # coefficients is noise (it can even peak there) while the loss still falls.
        if best is None or key < best or key[1] < best_loss:
            best, since_best = min(key, best or key), 0
            best_loss = min(best_loss, key[1])
        else:
            since_best += 1
            if since_best >= COARSE_PATIENCE:
                break


def _refine(probe: _Probe, step: int) -> None:
    while step >= 1:
        center = probe.best()
        for i in (center - step, center + step):
            if 0 <= i < len(probe.grid):
                probe.score(i)
        if probe.best() == center:
            step = step // 2 if step > 1 else 0
        # else: keep climbing at this step size from the new best


def edge_side(index: int, n: int) -> str | None:
    """``"low"`` / ``"high"`` when ``index`` is the first / last of ``n`` grid points, else None."""
    return "low" if index == 0 else "high" if index == n - 1 else None


def _search_with_edges(probe: _Probe, step: int) -> bool:
    """Coarse walk, refinement, extension past an edge; True when the best C is still on an edge.

    A grid of one or two values (a C given with ``--param``) is scored as it is.
    """
    if len(probe.grid) <= 2:
        for i in range(len(probe.grid)):
            probe.score(i)
        return False
    _coarse(probe, step)
    _refine(probe, step // 2)
    for _ in range(EDGE_EXTENSIONS):
        side = edge_side(probe.best(), len(probe.grid))
        if side is None:
            return False
        probe.extend(side)
        _refine(probe, step)
    return edge_side(probe.best(), len(probe.grid)) is not None


def select_coarse_fine(spec, candidates, seed, train, val, step: int = COARSE_STEP):
    """Selector for ``select_and_fit``: (trace of every fit, state with the chosen C's coefficients)."""
    (X, y), (Xv, yv) = train, val
    fixed = {k: v for k, v in candidates[0].items() if k != "C"}
    grid = sorted({float(c["C"]) for c in candidates})
    # ``search_only`` (e.g. a looser tol) applies to the candidates, not to the refit.
    model = spec.create(**{**fixed, **spec.search_only}, random_state=seed)
    prep, clf = model[:-1], model[-1]
    Z, Zv = prep.fit_transform(X), prep.transform(Xv)
    probe = _Probe(clf, grid, Z, y, Zv, yv, fixed)
    on_edge = _search_with_edges(probe, step)
    chosen = probe.grid[probe.best()]
    coef, intercept = probe.coefs[chosen]
    # Ordered by C (smaller first): rank_candidates' last tie-break then matches the walk's.
    trace = sorted(probe.trace, key=lambda t: t["params"]["C"])
    return trace, {"coef": coef, "intercept": intercept, "edge": ["C"] if on_edge else []}
