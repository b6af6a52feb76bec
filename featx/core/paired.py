"""Paired comparisons of two models on the same test items.

Two rows of a report are scored on the same test images, so the right question is not
whether their two confidence intervals overlap (they nearly always do on a small test
set) but how the *difference* behaves on the shared items. Everything here works on the
per-item correctness of each model (``correct_a[i]``: model A got item ``i`` right):

* :func:`paired_bootstrap`: the accuracy difference ``acc(A) - acc(B)`` with a
  percentile-bootstrap CI that resamples *items*, both models together. Per item the
  difference is ``d_i = correct_a[i] - correct_b[i]`` in ``{-1, 0, +1}``; a resample of
  ``n`` items is a draw of how many ``+1``, ``-1`` and ``0`` items it holds, i.e. one
  multinomial draw with the observed proportions. That is exactly the distribution of
  index resampling (the brute-force enumeration in the tests checks it), at
  ``O(resamples)`` memory instead of ``O(resamples x items)``.
* :func:`mcnemar`: McNemar's exact test on the discordant items (``b``: only A right,
  ``c``: only B right; under "equally accurate" ``b ~ Binomial(b + c, 1/2)``), two-sided,
  via :func:`scipy.stats.binomtest`, with the mid-p value beside it.
* :func:`items_needed`: how many test items would separate a gap at a given
  disagreement rate, from the normal approximation of McNemar's test (formula there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

__all__ = ["paired_bootstrap", "bootstrap_differences", "mcnemar", "items_needed", "compare_predictions",
           "N_RESAMPLES"]

N_RESAMPLES = 10_000


def _as_correct(values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"per-item correctness must be one-dimensional, got shape {arr.shape}")
    return arr.astype(bool)


def _pair(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_correct(correct_a), _as_correct(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same items for both models ({a.size} vs {b.size})")
    if not a.size:
        raise ValueError("no shared test items to compare")
    return a, b


def bootstrap_differences(correct_a, correct_b, *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """``n_resamples`` bootstrap replicates of ``acc(A) - acc(B)`` over the shared items."""
    a, b = _pair(correct_a, correct_b)
    n = a.size
    plus = int(np.sum(a & ~b))
    minus = int(np.sum(~a & b))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [plus / n, minus / n, (n - plus - minus) / n], size=n_resamples)
    return (counts[:, 0] - counts[:, 1]) / n


def paired_bootstrap(correct_a, correct_b, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                     level: float = 0.95) -> dict:
    """The accuracy difference A - B on the shared items and its paired percentile-bootstrap CI.

    Returns ``{"diff", "ci", "n", "n_resamples", "level"}``; ``ci`` excluding 0 means the
    test items separate the two models at this level.
    """
    a, b = _pair(correct_a, correct_b)
    diffs = bootstrap_differences(a, b, n_resamples=n_resamples, seed=seed)
    lo, hi = np.percentile(diffs, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return {"diff": float(a.mean() - b.mean()), "ci": [float(lo), float(hi)], "n": int(a.size),
            "n_resamples": int(n_resamples), "level": level}


def mcnemar(correct_a, correct_b) -> dict:
    """McNemar's exact two-sided test (and mid-p) on the items exactly one of the models got right.

    ``only_a`` items A got right and B wrong, ``only_b`` the reverse. Exact p: the
    two-sided binomial test of ``only_a`` out of ``only_a + only_b`` at 1/2. Mid-p:
    ``2 * (P(X <= k) - P(X = k) / 2)`` with ``k = min(only_a, only_b)``, capped at 1;
    less conservative than the exact p, with close to nominal error rates.
    """
    a, b = _pair(correct_a, correct_b)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    if discordant == 0:
        p_exact = p_mid = 1.0
    else:
        # At 1/2 the binomial is symmetric, so the two-sided exact p is twice the smaller tail.
        cdf, pmf = _half_binomial_tail(min(only_a, only_b), discordant)
        p_exact = min(1.0, 2 * cdf)
        p_mid = min(1.0, 2 * (cdf - 0.5 * pmf))
    return {"only_a": only_a, "only_b": only_b, "p_exact": p_exact, "p_mid": p_mid}


def _half_binomial_tail(k: int, n: int) -> tuple[float, float]:
    """``P(X <= k)`` and ``P(X = k)`` for ``X ~ Binomial(n, 1/2)``, exactly.

    Integer arithmetic instead of ``scipy.stats``: importing SciPy costs a warm ``featx run``
    (which only redraws the report) more than a second.
    """
    term, total = 1, 1  # C(n, 0)
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        total += term
    scale = 2 ** n
    return total / scale, term / scale  # int / int is correctly rounded, however large


def items_needed(gap: float, disagreement: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Test items needed for McNemar's test to separate an accuracy gap, at a disagreement rate.

    ``gap`` is the true accuracy difference ``delta = p10 - p01`` and ``disagreement`` the
    share of items on which the two models differ, ``psi = p10 + p01`` (at least
    ``|delta|``; smaller values are raised to it). Normal approximation (Connor 1987)::

        n = (z_{1-alpha/2} * sqrt(psi) + z_{power} * sqrt(psi - delta^2))^2 / delta^2

    i.e. the ``n`` at which a two-sided level-``alpha`` McNemar test detects ``delta``
    with probability ``power``.
    """
    delta = abs(float(gap))
    if not 0 < delta <= 1:
        raise ValueError(f"gap must be a non-zero accuracy difference in (0, 1], got {gap!r}")
    psi = min(1.0, max(float(disagreement), delta))
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    return int(math.ceil((z_a * math.sqrt(psi) + z_b * math.sqrt(max(psi - delta * delta, 0.0))) ** 2 / delta ** 2))


def compare_predictions(ids_a: Sequence[str], correct_a, ids_b: Sequence[str], correct_b, *,
                        n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = 0.95) -> dict:
    """Paired bootstrap and McNemar of A vs B on the test items both were scored on (matched by id).

    Returns the bootstrap fields, the McNemar fields, ``disagreement`` (share of shared
    items exactly one model got right), ``separated`` (the CI excludes 0) and ``n``
    (the number of shared items).
    """
    index_b = {str(item): i for i, item in enumerate(ids_b)}
    pos_a, pos_b = [], []
    for i, item in enumerate(ids_a):
        j = index_b.get(str(item))
        if j is not None:
            pos_a.append(i)
            pos_b.append(j)
    if not pos_a:
        raise ValueError("the two rows share no test item")
    a = _as_correct(correct_a)[pos_a]
    b = _as_correct(correct_b)[pos_b]
    boot = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed, level=level)
    test = mcnemar(a, b)
    disagreement = (test["only_a"] + test["only_b"]) / a.size
    separated = boot["ci"][0] > 0 or boot["ci"][1] < 0
    return {**boot, **test, "disagreement": float(disagreement), "separated": bool(separated)}
