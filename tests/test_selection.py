"""The selection protocol: ranking by accuracy then loss, CV on a small val split, grid-edge
extension, collapsed refits, the MLP's best epoch, and repeated splits."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from featx import FeatxUsageError, create_head, train_heads
from featx.heads import LOGREG_C_GRID, MLPClassifier, select_and_fit
from featx.heads._cv import SMALL_VAL_PER_CLASS, choose_protocol
from featx.heads._search import COARSE_STEP, _Probe, _search_with_edges, rank_candidates, rank_order
from tests._head_stores import write_store


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(1):
        yield


def test_rank_candidates_breaks_accuracy_ties_by_loss():
    scores = [{"val_accuracy": 0.8, "val_loss": 1.09}, {"val_accuracy": 0.8, "val_loss": 0.4},
              {"val_accuracy": 0.7, "val_loss": 0.1}, {"error": "failed"}, {"val_accuracy": 0.8, "val_loss": None}]
    assert rank_candidates(scores) == 1
    assert rank_order(scores) == [1, 0, 4, 2]  # a missing loss ranks after a finite one; failures never
    assert rank_candidates([{"val_accuracy": 0.5, "val_loss": 0.3}, {"val_accuracy": 0.5, "val_loss": 0.3}]) == 0
    assert rank_candidates([{"val_accuracy": 0.5, "val_loss": math.nan}, {"val_accuracy": 0.5, "val_loss": 2.0}]) == 1
    with pytest.raises(ValueError):
        rank_candidates([{"error": "x"}])


def test_cv_is_chosen_when_some_class_has_few_val_items():
    y_refit = np.repeat([0, 1, 2], 30)
    assert choose_protocol(np.repeat([0, 1, 2], SMALL_VAL_PER_CLASS), y_refit) == ("val", 0)
    assert choose_protocol(np.repeat([0, 1, 2], [25, 25, 3]), y_refit) == ("cv", 5)
    assert choose_protocol(np.repeat([0, 1], 2), np.repeat([0, 1], 3)) == ("cv", 3)
    assert choose_protocol(np.repeat([0, 1], 2), np.array([0, 0, 1])) == ("val", 0)  # a class of 1: no CV
    assert choose_protocol(np.repeat([0, 1, 2], 50), y_refit, "cv") == ("cv", 5)


def _weak_signal(seed: int, per_class=(25, 25, 25), n_val=2, dim=64, n_test=300):
    """Gaussian classes with a weak mean shift in many dims, like small-data embeddings; 2 val items per class."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 0.35, (3, dim))

    def sample(counts):
        y = np.repeat(np.arange(3), counts)
        return (means[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y

    return sample(per_class), sample([n_val] * 3), sample([n_test // 3] * 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logreg_on_a_tiny_val_split_matches_the_reference_libraries(seed):
    (X, y), (Xv, yv), (Xt, yt) = _weak_signal(seed)
    Xr, yr = np.concatenate([X, Xv]), np.concatenate([y, yv])
    model, record = select_and_fit("logreg", (X, y), (Xv, yv), (Xr, yr), params={"engine": "sklearn"})
    pred = model.predict(Xt)
    assert record["method"] == "cv" and len(np.unique(pred)) == 3
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lrcv = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(LOGREG_C_GRID[::2]), cv=folds,
                                                                    max_iter=1000)).fit(Xr, yr)
        grid = GridSearchCV(create_head("logreg", engine="sklearn"), {"clf__C": list(LOGREG_C_GRID[::4])},
                            cv=folds).fit(Xr, yr)
    best_reference = max(lrcv.score(Xt, yt), grid.score(Xt, yt))
    assert float(np.mean(pred == yt)) >= best_reference - 0.03, (record["params"], lrcv.score(Xt, yt), grid.score(Xt, yt))


class _ScoredProbe(_Probe):
    """The coarse-to-fine walk with a given held-out loss per C (accuracy tied everywhere)."""

    def __init__(self, loss):
        super().__init__(None, LOGREG_C_GRID, None, None, None, None, {})
        self.loss = loss

    def _fit(self, C):
        self.scores[C] = {"val_accuracy": 0.8, "val_loss": self.loss(C)}
        self.trace.append({"params": {"C": C}, **self.scores[C]})


@pytest.mark.parametrize("optimum,edge", [(1e6, False), (1e-7, False), (1e20, True)])
def test_a_best_value_on_the_grid_edge_is_searched_past_then_reported(optimum, edge):
    probe = _ScoredProbe(lambda C: abs(math.log10(C) - math.log10(optimum)))
    assert _search_with_edges(probe, COARSE_STEP) is edge
    best = probe.grid[probe.best()]
    if edge:  # two extensions of two decades each, still rising: reported, not hidden
        assert best == pytest.approx(LOGREG_C_GRID[-1] * 1e4)
    else:
        assert best == pytest.approx(optimum)


def test_a_grid_head_on_the_edge_of_its_geometric_grid_is_searched_past():
    # linear_svm searches C in 1e-5 .. 1e-1; on easy, well-separated data the best lies above.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    _, record = select_and_fit("linear_svm", (X[:200], y[:200]), (X[200:], y[200:]), (X, y), protocol="val")
    tried = sorted(c["params"]["C"] for c in record["candidates"])
    assert tried[-1] > 0.1 and record["params"]["C"] > 1e-5
    assert record["edge"] == (record["params"]["C"] in (tried[0], tried[-1]))


def _constant_or_linear(kind: str = "constant", random_state=None):
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    return make_pipeline(DummyClassifier() if kind == "constant" else LogisticRegression())


def test_a_collapsed_refit_gives_way_to_the_next_candidate():
    # The best-ranked candidate's refit predicts one class for every training row: the next one is refitted.
    from featx.heads import HeadSpec
    from featx.heads._select import _refit_best

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    spec = HeadSpec("toy", "constant or linear", _constant_or_linear)
    trace = [{"params": {"kind": "constant"}, "val_accuracy": 0.9, "val_loss": 0.2},
             {"params": {"kind": "linear"}, "val_accuracy": 0.8, "val_loss": 0.3}]
    model, chosen, params, _, rejected = _refit_best(spec, trace, {}, (X, y), 0)
    assert params == {"kind": "linear"} and chosen is trace[1]
    assert rejected == [{"params": {"kind": "constant"}, "reason": "the refit predicts one class for every training item"}]
    assert len(np.unique(model.predict(X))) == 2


def test_mlp_best_epoch_is_the_most_accurate_with_the_loss_breaking_ties():
    mlp = MLPClassifier(scoring="accuracy")
    assert mlp._better((0.8, 0.9), (0.7, 0.1))  # more accurate wins, whatever the loss
    assert mlp._better((0.8, 0.5), (0.8, 0.6)) and not mlp._better((0.8, 0.7), (0.8, 0.6))
    assert MLPClassifier(scoring="loss")._better((0.1, 0.5), (0.9, 0.6))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)
    fitted = MLPClassifier(hidden_units=16, max_iter=40, early_stopping=True, scoring="accuracy", device="cpu",
                           n_iter_no_change=40).fit(X[:80], y[:80], X_val=X[80:], y_val=y[80:])
    acc, loss = fitted.validation_score_, fitted.validation_loss_
    best = fitted.n_iter_
    assert acc[best] == acc.max() and loss[best] == loss[acc == acc.max()].min()


def test_repeats_give_every_split_and_their_spread(tmp_path):
    store = write_store(tmp_path / "s.h5", n=150)
    entries = train_heads(store, heads=["logreg"], repeats=3, n_boot=100, out=tmp_path / "out")
    repeats = entries[0]["repeats"]
    assert repeats["split_seeds"] == [0, 1, 2] and len(repeats["accuracy"]) == 3
    assert repeats["accuracy"][0] == entries[0]["accuracy"]
    assert repeats["accuracy_mean"] == pytest.approx(np.mean(repeats["accuracy"]))
    assert repeats["accuracy_std"] == pytest.approx(np.std(repeats["accuracy"], ddof=1))
    with pytest.raises(FeatxUsageError, match="--repeats"):
        train_heads(store, heads=["logreg"], repeats=2, splits=tmp_path / "out" / "splits.json")
