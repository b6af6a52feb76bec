"""Coarse-to-fine choice of the logistic-regression strength C on the validation split.

The linear-probe protocol is unchanged (C chosen on val accuracy, then a refit on
train+val); only the search is cheaper than walking the 45-point grid. It works on the
indices of that same grid (``LOGREG_C_GRID``, 1e-6 .. 1e5, 4 points per decade), so it
can only choose a C the full walk could have chosen:

1. **coarse**: every ``COARSE_STEP``-th grid point (one decade apart), from strong to
   weak regularisation, each fit warm-started from the previous one; the walk stops
   once ``COARSE_PATIENCE`` points (two decades, as the full walk) have not beaten the
   best val accuracy, since weak-L2 fits are the slow ones. Stopping at the first dip
   was tried and chose C = 1e-6 on a weak-signal problem whose val accuracy is noise at
   strong regularisation;
2. **refine**: around the best index, half steps (2 points), then single steps, hill
   climbing on val accuracy; every fit starts from the fitted C nearest to it.

Ties go to the smaller C (stronger regularisation), as in the full walk. About 10-13
fits instead of 20-45 on typical problems. The candidates use the head's ``search_only``
parameters (for ``logreg`` a 10x looser ``tol``: ranking C on val needs no tight
optimum); the refit at the chosen C does not.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

__all__ = ["select_coarse_fine", "COARSE_STEP", "COARSE_PATIENCE"]

COARSE_STEP = 4  # grid points between coarse candidates: one decade of C
COARSE_PATIENCE = 2  # coarse points without a better val accuracy end the coarse walk


class _Probe:
    """Fits of one classifier at grid indices, warm-started from the nearest fitted index."""

    def __init__(self, clf, grid, Z, y, Zv, yv, fixed):
        self.clf, self.grid, self.Z, self.y, self.Zv, self.yv, self.fixed = clf, grid, Z, y, Zv, yv, fixed
        self.acc: dict[int, float] = {}
        self.coefs: dict[int, tuple] = {}
        self.trace: list[dict] = []

    def score(self, i: int) -> float:
        if i in self.acc:
            return self.acc[i]
        started = time.perf_counter()
        if self.coefs:
            near = min(self.coefs, key=lambda j: (abs(j - i), j))
            self.clf.coef_, self.clf.intercept_ = (a.copy() for a in self.coefs[near])
            self.clf.set_params(warm_start=True)
        self.clf.set_params(C=self.grid[i])
        with warnings.catch_warnings():
            # A weak-L2 fit may stop at max_iter; its val accuracy is still what counts.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.clf.fit(self.Z, self.y)
        self.acc[i] = float(self.clf.score(self.Zv, self.yv))
        self.coefs[i] = (self.clf.coef_.copy(), self.clf.intercept_.copy())
        self.trace.append({"params": {**self.fixed, "C": self.grid[i]}, "val_accuracy": self.acc[i],
                           "n_iter": int(np.max(self.clf.n_iter_)), "seconds": round(time.perf_counter() - started, 3)})
        return self.acc[i]

    def best(self) -> int:
        # Highest accuracy, then the smallest C (strongest regularisation) among ties.
        return min(self.acc, key=lambda i: (-self.acc[i], i))


def _coarse(probe: _Probe, n: int, step: int) -> None:
    indices = list(range(0, n, step))
    if indices[-1] != n - 1:
        indices.append(n - 1)
    since_best = 0
    for i in indices:
        before = max(probe.acc.values()) if probe.acc else -1.0
        if probe.score(i) > before:
            since_best = 0
        else:
            since_best += 1
            if since_best >= COARSE_PATIENCE:
                break


def _refine(probe: _Probe, n: int, step: int) -> None:
    while step >= 1:
        center = probe.best()
        for i in (center - step, center + step):
            if 0 <= i < n:
                probe.score(i)
        if probe.best() == center:
            step = step // 2 if step > 1 else 0
        # else: keep climbing at this step size from the new best


def select_coarse_fine(spec, candidates, seed, train, val, step: int = COARSE_STEP):
    """Selector for ``select_and_fit``: (trace of every fit, coefficients at the chosen C)."""
    (X, y), (Xv, yv) = train, val
    fixed = {k: v for k, v in candidates[0].items() if k != "C"}
    grid = sorted({float(c["C"]) for c in candidates})
    # ``search_only`` (e.g. a looser tol) applies to the candidates, not to the refit.
    model = spec.create(**{**fixed, **spec.search_only}, random_state=seed)
    prep, clf = model[:-1], model[-1]
    Z, Zv = prep.fit_transform(X), prep.transform(Xv)
    probe = _Probe(clf, grid, Z, y, Zv, yv, fixed)
    _coarse(probe, len(grid), step)
    _refine(probe, len(grid), step // 2)
    chosen = probe.best()
    coef, intercept = probe.coefs[chosen]
    # The caller picks the first best of the trace: put the chosen fit's entry first
    # among equals by ordering the trace by C (smaller C first, as the full walk does).
    trace = sorted(probe.trace, key=lambda t: t["params"]["C"])
    return trace, {"coef": coef, "intercept": intercept}
