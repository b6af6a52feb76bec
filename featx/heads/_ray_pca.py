"""The Ray xgboost head's PCA step, fitted from streamed moments (the covariance route).

The local ``xgboost`` head is ``Pipeline(CappedPCA, XGBClassifier)``; on Ray the rows never
gather in one process, so the PCA is fitted from per-split sufficient statistics instead:
each block of the store contributes its row count, mean and centred scatter ``Xc^T Xc``
(float64, D x D), merged with Chan et al.'s pairwise update (the same totals as summing
``n``, ``sum x`` and ``x^T x``, without the cancellation of ``x^T x - n mu mu^T`` on
features far from zero). The covariance's top eigenvectors are the PCA: exactly what
scikit-learn's ``svd_solver="covariance_eigh"`` computes, set on a fitted ``PCA`` with the
attributes scikit-learn defines, inside a :class:`CappedPCA` capped as it caps itself.
"""

from __future__ import annotations

import numpy as np

from ._capped import CappedPCA

__all__ = ["block_moments", "merge_moments", "pca_from_moments", "pca_size", "project"]

Moments = tuple[int, np.ndarray, np.ndarray]  # (rows, mean, centred scatter), float64


def block_moments(rows: np.ndarray, dim: int) -> Moments:
    """(n, mean, centred scatter) of one block's rows, in float64."""
    X = np.asarray(rows, dtype=np.float64).reshape(-1, dim)
    if not len(X):
        return 0, np.zeros(dim), np.zeros((dim, dim))
    mean = X.mean(axis=0)
    Xc = X - mean
    return len(X), mean, Xc.T @ Xc


def merge_moments(a: Moments, b: Moments) -> Moments:
    """The moments of two blocks together (Chan, Golub and LeVeque's pairwise update)."""
    na, ma, sa = a
    nb, mb, sb = b
    if na == 0 or nb == 0:
        return a if nb == 0 else b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + np.outer(delta, delta) * (na * nb / n)


def pca_size(asked, n_rows: int, dim: int) -> int | None:
    """Components the PCA keeps: ``min(asked, rows, dim)`` as :class:`CappedPCA` caps it; None for no PCA
    (``pca`` None or 0, as the local head reads it)."""
    if not asked:
        return None
    return int(min(asked, n_rows, dim))


def _flip_signs(vectors: np.ndarray) -> np.ndarray:
    """scikit-learn's ``svd_flip(u_based_decision=False)``: each row's largest-magnitude entry positive."""
    biggest = np.argmax(np.abs(vectors), axis=1)
    signs = np.sign(vectors[np.arange(len(vectors)), biggest])
    signs[signs == 0] = 1.0
    return vectors * signs[:, None]


def pca_from_moments(moments: Moments, asked: int, seed=None) -> CappedPCA:
    """A fitted :class:`CappedPCA` (``asked`` components, capped) from a split's moments.

    Its ``pca_`` is a scikit-learn ``PCA`` whose fitted attributes are those ``fit`` sets with
    the exact solvers; ``svd_solver="full"`` names an exact solver every supported
    scikit-learn has (``covariance_eigh``, the same computation, is 1.5 and later only).
    """
    from sklearn.decomposition import PCA

    n, mean, scatter = moments
    dim = len(mean)
    k = pca_size(asked, n, dim)
    if k is None or n < 2:
        raise ValueError(f"a PCA needs at least 2 training rows and 1 component (rows {n}, pca {asked!r})")
    values, vectors = np.linalg.eigh(scatter / (n - 1))
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1].T  # descending, one component a row
    pca = PCA(n_components=k, svd_solver="full", random_state=seed)
    pca.components_ = np.ascontiguousarray(_flip_signs(vectors[:k]))
    pca.mean_ = np.asarray(mean, dtype=np.float64)
    pca.explained_variance_ = values[:k].copy()
    pca.explained_variance_ratio_ = values[:k] / values.sum()
    pca.singular_values_ = np.sqrt(values[:k] * (n - 1))
    # Probabilistic PCA's noise variance: the mean of the discarded eigenvalues (0 when none is).
    pca.noise_variance_ = float(values[k:min(n, dim)].mean()) if k < min(n, dim) else 0.0
    pca.n_components_, pca.n_samples_, pca.n_features_in_, pca._fit_svd_solver = k, n, dim, "full"
    capped = CappedPCA(n_components=asked, svd_solver="full", random_state=seed)
    capped.n_components_, capped.pca_, capped.n_features_in_ = k, pca, dim
    return capped


def project(X: np.ndarray, components: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``PCA.transform`` without the estimator (Ray Train workers get the arrays only): the same
    operations in the same order as scikit-learn's, so a worker's matrix and the saved head's
    transform agree to rounding."""
    out = np.asarray(X) @ components.T
    out -= np.reshape(mean, (1, -1)) @ components.T
    return out
