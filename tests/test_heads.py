"""The head registry: every head is a plain scikit-learn estimator with a bounded search."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

import featx
from featx import FeatxUsageError, create_head, list_heads
from featx.cli import cli
from featx.heads._registry import LOGREG_C_GRID, get_head

HEADS = ["logreg", "linear_svm", "knn", "decision_tree", "random_forest", "gradient_boosting", "xgboost", "mlp", "rbf_svm"]
# Small settings so each head fits in well under a second on 16 features.
SMALL = {"knn": {"pca": 8}, "decision_tree": {"pca": None}, "random_forest": {"n_estimators": 30},
         "gradient_boosting": {"pca": None, "max_iter": 30}, "xgboost": {"pca": None, "n_estimators": 30},
         "mlp": {"max_iter": 30, "hidden_units": 32}}


@pytest.fixture(autouse=True)
def one_thread():
    # As train_heads does: on a busy 2-core machine spinning BLAS/OpenMP threads cost 10x+.
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=300, n_features=16, n_informative=8, n_redundant=0, n_classes=3,
                               n_clusters_per_class=1, class_sep=2.0, random_state=0)
    return X.astype(np.float32), y


def test_registry_lists_every_head_with_one_line():
    assert set(HEADS) <= set(list_heads())
    result = CliRunner().invoke(cli, ["heads"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == len(list_heads())
    for name in HEADS:
        assert any(line.split()[0] == name and len(line.split()) > 3 for line in lines)


@pytest.mark.parametrize("name", HEADS)
def test_each_head_is_a_working_estimator(name, data):
    X, y = data
    est = create_head(name, random_state=0, **SMALL.get(name, {}))
    clone(est)  # the sklearn contract: params only in __init__
    train, test = slice(0, 200), slice(200, None)
    est.fit(X[train], y[train])
    proba = est.predict_proba(X[test])
    assert proba.shape == (100, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    # Well-separated classes: any working head is far above chance (1/3).
    assert (est.predict(X[test]) == y[test]).mean() > 0.7


def test_unknown_heads_and_parameters_are_refused():
    with pytest.raises(FeatxUsageError, match="unknown head 'lgoreg'.*logreg"):
        create_head("lgoreg")
    with pytest.raises(TypeError):
        create_head("knn", n_neighbours=3)


def test_search_spaces_are_bounded_and_skip_fixed_parameters():
    logreg = get_head("logreg")
    assert logreg.selection == "coarse_fine" and len(LOGREG_C_GRID) == 45
    assert LOGREG_C_GRID[0] == pytest.approx(1e-6) and LOGREG_C_GRID[-1] == pytest.approx(1e5)
    for name in HEADS:
        spec = get_head(name)
        assert 1 <= len(spec.candidates()) <= spec.budget
    knn = get_head("knn")
    fixed = knn.candidates({"n_neighbors": 3})
    assert len(fixed) == 1 and fixed[0]["n_neighbors"] == 3
    # A grid bigger than the budget is subsampled, reproducibly.
    forest = get_head("random_forest")
    small = type(forest)(**{**forest.__dict__, "budget": 2})
    assert len(small.candidates(seed=1)) == 2 and small.candidates(seed=1) == small.candidates(seed=1)


def test_grid_search_after_feature_extractor():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 20, 20, 3), dtype=np.uint8)
    y = np.arange(12) % 2
    images[y == 1, :, :, 0] = 255
    pipe = Pipeline([("features", featx.FeatureExtractor("test_efficientnet", weights="random")),
                     ("head", create_head("logreg"))])
    search = GridSearchCV(pipe, {"head__clf__C": [0.01, 1.0]}, cv=2).fit(images, y)
    assert search.best_params_["head__clf__C"] in (0.01, 1.0)
    assert search.predict_proba(images).shape == (12, 2)
