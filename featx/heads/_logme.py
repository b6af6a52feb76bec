"""LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
ICML 2021): how well frozen features explain the labels, without fitting a head.

For each class ``k`` the one-vs-rest target ``y`` (N) is modelled as Bayesian linear
regression on the features ``F`` (N x D): weights ``w ~ N(0, alpha^-1 I)``, noise
``y | w ~ N(F w, beta^-1 I)``. Its log evidence (marginal likelihood)

    L(alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2 pi
                     - beta/2 ||F m - y||^2 - alpha/2 ||m||^2 - 1/2 log |alpha I + beta F^T F|

with ``m = beta (alpha I + beta F^T F)^-1 F^T y`` the posterior mean is maximised over
alpha and beta by MacKay's fixed point (``gamma = sum beta s_i / (alpha + beta s_i)``,
``alpha = gamma / ||m||^2``, ``beta = (N - gamma) / ||F m - y||^2``, ``s_i`` the eigenvalues
of ``F^T F``). One SVD of ``F`` makes every step O(min(N, D)): in the basis of its left
singular vectors each term is a sum over the singular values. The score is the mean over
classes of ``L / N``; higher is better.

Written from the paper with numpy (scikit-learn's ``ARDRegression``/``BayesianRidge`` fit
the same model one target at a time with an O(D^3) loop each, and report no evidence
per sample that can be compared across feature widths).
"""

from __future__ import annotations

import numpy as np

__all__ = ["logme_score", "logme_evidence"]


def logme_evidence(F: np.ndarray, y: np.ndarray, *, max_iter: int = 100, tol: float = 1e-5) -> tuple[float, float, float]:
    """(maximised log evidence / N, alpha, beta) of the target ``y`` (N) on the features ``F`` (N x D)."""
    F, y = np.asarray(F, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n, d = F.shape
    u, s, _ = np.linalg.svd(F, full_matrices=False)
    return _fixed_point(s ** 2, u.T @ y, float(y @ y), n, d, max_iter, tol)


def _fixed_point(sigma, z, yy, n, d, max_iter, tol):
    """MacKay's updates in the SVD basis: ``sigma`` eigenvalues of F^T F, ``z = U^T y``, ``yy = ||y||^2``."""
    z2 = z ** 2
    outside = max(yy - float(z2.sum()), 0.0)  # the part of y outside F's column space
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * z2 / (sigma + t) ** 2).sum())           # ||m||^2
        res2 = float((z2 * (t / (sigma + t)) ** 2).sum()) + outside  # ||F m - y||^2
        alpha, beta = gamma / max(m2, 1e-12), max(n - gamma, 1e-12) / max(res2, 1e-12)
        if abs(alpha / beta - t) <= tol * t:
            break
    t = alpha / beta
    m2 = float((sigma * z2 / (sigma + t) ** 2).sum())
    res2 = float((z2 * (t / (sigma + t)) ** 2).sum()) + outside
    logdet = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * np.log(alpha)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
                - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2)
    return float(evidence / n), float(alpha), float(beta)


def logme_score(X: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest LogME evidence per sample (one SVD for all classes)."""
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    n, d = X.shape
    u, s, _ = np.linalg.svd(X, full_matrices=False)
    sigma, scores = s ** 2, []
    for k in np.unique(labels):
        y = (labels == k).astype(np.float64)
        scores.append(_fixed_point(sigma, u.T @ y, float(y @ y), n, d, 100, 1e-5)[0])
    return float(np.mean(scores))
