"""Fast probes (issue 12): the coarse-to-fine C search, the torch logreg engine, the mlp head, `featx bench logreg`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from featx.cli import cli
from featx.heads import (
    LOGREG_C_GRID,
    MLPClassifier,
    TorchLogisticRegression,
    get_head,
    select_and_fit,
    synthetic_problem,
)
from featx.heads._torch_logreg import logreg_loss_and_grad


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(1):
        yield


def _split(X, y, n_train, n_val):
    return (X[:n_train], y[:n_train]), (X[n_train:n_train + n_val], y[n_train:n_train + n_val]), \
        (X[n_train + n_val:], y[n_train + n_val:])


@pytest.mark.parametrize("n,dim,classes,seed", [(1500, 32, 4, 0), (1200, 64, 6, 1), (2000, 16, 3, 2)])
def test_coarse_to_fine_matches_the_45_point_path(n, dim, classes, seed):
    X, y = synthetic_problem(n, dim, classes, seed)
    train, val, test = _split(X, y, int(0.6 * n), int(0.2 * n))
    spec = get_head("logreg")
    walk, walk_record = select_and_fit(dataclasses.replace(spec, selection="path"), train, val, train,
                                       params={"engine": "sklearn"})
    fast, fast_record = select_and_fit(spec, train, val, train, params={"engine": "sklearn"})
    grid = list(LOGREG_C_GRID)
    i_walk, i_fast = grid.index(walk_record["params"]["C"]), grid.index(fast_record["params"]["C"])
    # Same C, or one fine grid step (a quarter decade) away on a flat stretch of val accuracy.
    assert abs(i_walk - i_fast) <= 1 or fast_record["val_accuracy"] >= walk_record["val_accuracy"]
    assert fast_record["val_accuracy"] >= walk_record["val_accuracy"] - 0.01
    assert abs(walk.score(*test) - fast.score(*test)) <= 0.02
    assert len(fast_record["candidates"]) < len(walk_record["candidates"])


def test_hand_written_gradient_matches_autograd():
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.standard_normal((40, 7)))
    Y = torch.nn.functional.one_hot(torch.tensor(rng.integers(0, 3, 40)), 3).double()
    W = torch.tensor(rng.standard_normal((3, 7)), requires_grad=True)
    b = torch.tensor(rng.standard_normal(3), requires_grad=True)
    loss, dW, db = logreg_loss_and_grad(W.detach(), b.detach(), X, Y, l2=0.3)
    reference = torch.nn.functional.cross_entropy(X @ W.T + b, Y.argmax(1)) + 0.15 * (W * W).sum()
    reference.backward()
    assert float(loss) == pytest.approx(float(reference.detach()), rel=1e-10)
    np.testing.assert_allclose(dW.numpy(), W.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(db.numpy(), b.grad.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("C", [1e-3, 0.1, 10.0])
def test_torch_engine_reproduces_sklearn_at_the_same_C(C):
    X, y = synthetic_problem(900, 24, 4, seed=3)
    X = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=C, tol=1e-8, max_iter=5000).fit(X.astype(np.float64), y)
    ours = TorchLogisticRegression(C=C, tol=1e-8, max_iter=5000, dtype="float64", device="cpu").fit(X, y)
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-3)
    assert (ours.predict(X) == ref.predict(X)).mean() >= 0.995
    fast = TorchLogisticRegression(C=C, device="cpu").fit(X, y)  # the default: float32, tol 1e-4
    assert (fast.predict(X) == ref.predict(X)).mean() >= 0.98


def test_torch_engine_selection_chooses_like_sklearn():
    X, y = synthetic_problem(1500, 32, 5, seed=4)
    train, val, test = _split(X, y, 900, 300)
    sk, sk_record = select_and_fit("logreg", train, val, train, params={"engine": "sklearn"})
    th, th_record = select_and_fit("logreg", train, val, train, params={"engine": "torch", "device": "cpu"})
    assert isinstance(th[-1], TorchLogisticRegression)
    grid = list(LOGREG_C_GRID)
    assert abs(grid.index(sk_record["params"]["C"]) - grid.index(th_record["params"]["C"])) <= 1
    assert abs(sk.score(*test) - th.score(*test)) <= 0.02


def test_logreg_engine_is_checked():
    from featx import FeatxUsageError, create_head

    with pytest.raises(FeatxUsageError, match="engine must be one of"):
        create_head("logreg", engine="jax")


def test_mlp_stops_early_on_val_and_keeps_its_best_epoch():
    X, y = synthetic_problem(600, 16, 3, seed=5)
    X = StandardScaler().fit_transform(X)
    (Xt, yt), (Xv, yv), _ = _split(X, y, 200, 200)
    # Few rows, a wide layer, no dropout: it overfits, so val loss turns up and training stops.
    mlp = MLPClassifier(hidden_units=256, dropout=0.0, lr=3e-3, max_iter=300, early_stopping=True, n_iter_no_change=5,
                        device="cpu", random_state=0).fit(Xt, yt, X_val=Xv, y_val=yv)
    scores = mlp.validation_score_
    assert len(scores) - 1 < 300  # stopped before the cap
    assert mlp.n_iter_ == int(np.argmax(scores)) and len(scores) - 1 == mlp.n_iter_ + 5
    proba = mlp.predict_proba(Xv)
    assert -float(np.mean(np.log(proba[np.arange(len(yv)), yv]))) == pytest.approx(-scores.max(), rel=1e-3)


def test_mlp_selection_fixes_the_epochs_for_the_refit():
    from sklearn.datasets import make_classification

    X, y = make_classification(600, 16, n_informative=8, n_redundant=0, n_classes=3, class_sep=1.5, random_state=6)
    X = X.astype(np.float32)
    train, val, test = _split(X, y, 300, 150)
    model, record = select_and_fit("mlp", train, val, train, params={"hidden_units": 64, "max_iter": 60})
    chosen = record["params"]["max_iter"]
    assert 1 <= chosen <= 60 and model[-1].max_iter == chosen and not model[-1].early_stopping
    assert model.score(*test) > 0.7  # 3 separable classes: chance is 1/3


def test_bench_logreg_times_three_probes_and_reports_the_machine():
    result = CliRunner().invoke(cli, ["bench", "logreg", "--n", "600", "--dim", "12", "--classes", "3", "--threads", "1",
                                      "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    for key in ("reference_s", "featx_s", "torch_s", "reference_acc", "featx_acc", "torch_acc", "settings", "device"):
        assert key in doc
    assert doc["settings"]["n_train"] == 600 and doc["settings"]["dim"] == 12 and doc["device"]["torch"] == "cpu"
    assert doc["runs"]["reference"]["fits"] > doc["runs"]["featx"]["fits"]
    machine = doc["machine"]
    assert machine["threads"] == 1 and machine["cpu_seconds"] > 0 and "cores_ok" in machine
    bad = CliRunner().invoke(cli, ["bench", "logreg", "--n", "5", "--classes", "3"])
    assert bad.exit_code == 2 and "at least 10 rows per class" in bad.output


def test_bench_logreg_on_a_store_whose_rows_are_grouped_by_class(tmp_path):
    from featx.store import StoreWriter
    from tests._head_stores import write_store

    # A folder source lists its rows class by class: the warm-up fit must still see every class
    # (the first 50 val rows below are all of one class).
    n = 600
    store = write_store(tmp_path / "shuffled.h5", n=n, dim=8)
    order = np.argsort(store.labels, kind="stable")
    splits = ["val" if i % 3 == 0 else "test" if i % 3 == 1 else "train" for i in range(n)]
    path = tmp_path / "by_class.h5"
    writer = StoreWriter.create(path, config=store.config, fingerprint="grouped", ids=[f"r{i:04d}" for i in range(n)],
                                labels=store.labels[order], splits=splits, class_names=store.class_names, dim=8,
                                dtype="float32")
    try:
        writer.write_batch(0, store.features[order], [None] * n)
        writer.finish({"device": "cpu"})
    finally:
        writer.close()
    result = CliRunner().invoke(cli, ["bench", "logreg", "--features", str(path), "--threads", "1", "--device", "cpu",
                                      "--no-reference", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["featx_acc"] > 0.5  # 3 separable classes: chance is 1/3
