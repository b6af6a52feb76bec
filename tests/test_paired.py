"""Paired comparisons: the bootstrap against brute force, McNemar against scipy, the items-needed formula
against simulation, and the per-row prediction records they read."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from featx.core.paired import (
    bootstrap_differences,
    compare_predictions,
    items_needed,
    mcnemar,
    paired_bootstrap,
)
from featx.core.predictions import load_correctness, prediction_record


def test_paired_bootstrap_matches_brute_force_enumeration_of_resamples():
    a = np.array([1, 1, 0, 1, 0, 1], dtype=bool)
    b = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    n = a.size
    # Every one of the n^n index resamples, equally likely: the exact bootstrap distribution.
    exact = np.array([a[list(idx)].mean() - b[list(idx)].mean() for idx in itertools.product(range(n), repeat=n)])
    exact = np.round(exact * n).astype(int)  # in items: exact arithmetic
    draws = np.round(bootstrap_differences(a, b, n_resamples=20_000, seed=1) * n).astype(int)
    for value in np.unique(exact):
        assert np.mean(draws == value) == pytest.approx(np.mean(exact == value), abs=0.012), value
    assert set(np.unique(draws)) <= set(np.unique(exact))
    exact = exact / n
    result = paired_bootstrap(a, b, n_resamples=20_000, seed=1)
    assert result["diff"] == pytest.approx(a.mean() - b.mean())
    lo, hi = np.percentile(exact, [2.5, 97.5])
    assert abs(result["ci"][0] - lo) <= 1 / n + 1e-9 and abs(result["ci"][1] - hi) <= 1 / n + 1e-9


def test_paired_ci_is_narrower_than_unpaired_when_models_agree():
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.8
    b = a.copy()
    flip = rng.choice(400, 12, replace=False)
    b[flip] = ~b[flip]  # the two models differ on 12 of 400 items only
    paired = paired_bootstrap(a, b, seed=0)
    unpaired = np.percentile(rng.choice(a, (4000, 400)).mean(1) - rng.choice(b, (4000, 400)).mean(1), [2.5, 97.5])
    assert paired["ci"][1] - paired["ci"][0] < 0.5 * (unpaired[1] - unpaired[0])
    assert paired["n_resamples"] == 10_000 and paired["n"] == 400


def test_mcnemar_counts_discordant_items_and_matches_scipy_and_the_binomial_sums():
    a = np.array([1] * 20 + [1] * 9 + [0] * 2 + [0] * 5, dtype=bool)
    b = np.array([1] * 20 + [0] * 9 + [1] * 2 + [0] * 5, dtype=bool)
    result = mcnemar(a, b)
    assert (result["only_a"], result["only_b"]) == (9, 2)
    assert result["p_exact"] == pytest.approx(binomtest(9, 11, 0.5).pvalue)
    tail = sum(math.comb(11, i) for i in range(0, 3)) / 2 ** 11
    assert result["p_exact"] == pytest.approx(2 * tail)
    assert result["p_mid"] == pytest.approx(2 * (tail - 0.5 * math.comb(11, 2) / 2 ** 11))
    assert mcnemar(b, a)["p_exact"] == pytest.approx(result["p_exact"])  # symmetric
    same = mcnemar(a, a)
    assert same["p_exact"] == 1.0 and same["p_mid"] == 1.0


@pytest.mark.parametrize(("only_a", "only_b"), [(0, 1), (7, 7), (3, 40), (4_100, 4_400), (0, 12_000)])
def test_mcnemar_matches_scipy_from_tiny_to_large_and_tied_counts(only_a, only_b):
    # featx computes the tail in integers (no SciPy import on a warm run); SciPy is the reference.
    a = np.r_[np.ones(only_a, bool), np.zeros(only_b, bool)]
    result = mcnemar(a, ~a)
    n, k = only_a + only_b, min(only_a, only_b)
    assert result["p_exact"] == pytest.approx(binomtest(only_a, n, 0.5).pvalue, rel=1e-9, abs=1e-300)
    assert result["p_mid"] == pytest.approx(min(1.0, 2 * (binom.cdf(k, n, 0.5) - 0.5 * binom.pmf(k, n, 0.5))),
                                            rel=1e-9, abs=1e-300)


def test_items_needed_gives_the_stated_power_in_simulation():
    gap, disagreement = 0.03, 0.10
    n = items_needed(gap, disagreement)
    assert n == math.ceil((1.959964 * math.sqrt(0.10) + 0.841621 * math.sqrt(0.10 - 0.0009)) ** 2 / 0.0009)
    # Simulate McNemar's (asymptotic) test at that size: it rejects about 80% of the time.
    rng = np.random.default_rng(3)
    p10, p01 = (disagreement + gap) / 2, (disagreement - gap) / 2
    counts = rng.multinomial(n, [p10, p01, 1 - p10 - p01], size=4000)
    z = (counts[:, 0] - counts[:, 1]) / np.sqrt(np.maximum(counts[:, 0] + counts[:, 1], 1))
    assert np.mean(np.abs(z) > 1.959964) == pytest.approx(0.8, abs=0.04)
    assert items_needed(0.01, 0.10) > items_needed(0.03, 0.10) > items_needed(0.03, 0.04)
    with pytest.raises(ValueError, match="non-zero"):
        items_needed(0.0, 0.1)


def test_compare_predictions_pairs_by_id_not_by_position():
    ids = [f"img{i}" for i in range(30)]
    a = np.arange(30) % 3 != 0  # 20 of 30 right
    compared = compare_predictions(ids, a, list(reversed(ids)), a[::-1])
    assert compared["diff"] == 0 and compared["only_a"] == compared["only_b"] == 0 and not compared["separated"]
    partial = compare_predictions(ids, a, ids[:10], np.zeros(10, bool))
    assert partial["n"] == 10
    with pytest.raises(ValueError, match="share no test item"):
        compare_predictions(ids, a, ["other"], [True])


def test_prediction_records_inline_and_on_file_and_a_changed_file_reads_as_absent(tmp_path):
    inline = prediction_record(["x", "y", "z"], [0, 1, 2], [0, 2, 2])
    ids, correct = load_correctness({"test_predictions": inline})
    assert ids.tolist() == ["x", "y", "z"] and correct.tolist() == [True, False, True]
    record = prediction_record(["x", "y", "z"], [0, 1, 2], [0, 2, 2], path=tmp_path / "p.npz")
    assert "ids" not in record and record["n"] == 3
    assert load_correctness({"test_predictions": record})[1].tolist() == [True, False, True]
    prediction_record(["x", "y", "z"], [0, 1, 2], [0, 1, 2], path=tmp_path / "p.npz")  # another run, same folder
    assert load_correctness({"test_predictions": record}) is None
    assert load_correctness({}) is None
