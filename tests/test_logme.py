"""LogME: the evidence against its closed form, the fixed point is a maximum, and its properties."""

from __future__ import annotations

import numpy as np
from scipy.stats import multivariate_normal

from featx.heads._logme import logme_evidence, logme_score


def _closed_form(F, y, alpha, beta):
    """log N(y; 0, I/beta + F F^T / alpha): the marginal likelihood LogME maximises, written out."""
    cov = np.eye(len(y)) / beta + F @ F.T / alpha
    return multivariate_normal(mean=np.zeros(len(y)), cov=cov).logpdf(y)


def test_a_hand_computable_case():
    # N=2, D=1, F = [1, 0]^T, y = [1, 0]: cov = diag(1/beta + 1/alpha, 1/beta).
    F, y = np.array([[1.0], [0.0]]), np.array([1.0, 0.0])
    value, alpha, beta = logme_evidence(F, y)
    a, b = 1 / alpha, 1 / beta
    by_hand = -np.log(2 * np.pi) - 0.5 * np.log((a + b) * b) - 0.5 * (1 / (a + b))
    assert np.isclose(value * 2, by_hand)


def test_evidence_is_the_marginal_likelihood_at_its_maximum():
    rng = np.random.default_rng(0)
    for n, d in ((40, 5), (8, 20)):  # more rows than features, and fewer
        F = rng.normal(size=(n, d))
        y = (F @ rng.normal(size=d) + 0.5 * rng.normal(size=n) > 0).astype(float)
        value, alpha, beta = logme_evidence(F, y)
        assert np.isclose(value * n, _closed_form(F, y, alpha, beta), rtol=1e-8)
        if n < d:
            continue  # here pure noise can win (alpha -> infinity): a maximum at the edge
        for fa, fb in ((1.2, 1), (1 / 1.2, 1), (1, 1.2), (1, 1 / 1.2)):  # the fixed point is a maximum
            assert _closed_form(F, y, alpha * fa, beta * fb) < value * n


def test_properties_rotation_invariant_and_rewards_separable_features():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 30)
    noise = rng.normal(size=(120, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert np.isclose(logme_score(noise @ q, labels), logme_score(noise, labels))  # depends on F F^T only
    informative = noise.copy()
    informative[:, :4] += 3 * np.eye(4)[labels]
    assert logme_score(informative, labels) > logme_score(noise, labels)
    assert np.isclose(logme_score(noise, labels), logme_score(noise, (labels + 1) % 4))  # class names do not matter
