"""The Ray xgboost head's PCA step: fitted from moments streamed over the store's blocks by Ray
tasks, it equals scikit-learn's PCA on the same rows, and the head saved with it is the local
head's kind (steps pca, clf). The whole Ray Train run is marked slow, as in test_ray_train.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import featx
from featx.cli import cli

pytestmark = pytest.mark.ray


def _gaussian_store(path, n=360, dim=24, classes=3, shard_size=70):
    """Gaussian classes in a sharded store whose features sit far from zero (the centring matters)."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    centres = rng.normal(scale=1.5, size=(classes, dim))
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)  # correlated features: a PCA with something to find
    X = (centres[y] + rng.normal(size=(n, dim))) @ mixing + 10.0
    return featx.write_store(path, X.astype(np.float32), y, class_names=["a", "b", "c"], shard_size=shard_size)


def _assert_same_pca(mine, rows: np.ndarray, k: int) -> None:
    from sklearn.decomposition import PCA

    theirs = PCA(n_components=k, svd_solver="full").fit(rows.astype(np.float64))
    ours = mine.pca_
    assert mine.n_components_ == ours.n_components_ == k and ours.n_features_in_ == rows.shape[1]
    assert ours.n_samples_ == len(rows) and not ours.whiten
    np.testing.assert_allclose(ours.mean_, theirs.mean_, rtol=1e-6)
    np.testing.assert_allclose(ours.explained_variance_, theirs.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(ours.explained_variance_ratio_, theirs.explained_variance_ratio_, rtol=1e-6)
    np.testing.assert_allclose(ours.singular_values_, theirs.singular_values_, rtol=1e-6)
    np.testing.assert_allclose(ours.noise_variance_, theirs.noise_variance_, rtol=1e-6)
    # Components up to sign (the same sign rule is used, so they agree outright too, but that is not vital).
    signs = np.sign(np.sum(ours.components_ * theirs.components_, axis=1))
    np.testing.assert_allclose(ours.components_ * signs[:, None], theirs.components_, atol=1e-6)
    np.testing.assert_allclose(mine.transform(rows[:9]), theirs.transform(rows[:9]) * signs, atol=1e-5)


def test_the_streamed_pca_is_sklearns_pca_on_the_same_rows(ray_local, tmp_path):
    from featx.heads._ray_pca import project
    from featx.heads._ray_xgb import _fit_pcas
    from featx.heads._train import resolve_splits

    store = _gaussian_store(tmp_path / "store")
    assert len(store.shards) > 3  # several blocks, merged
    split, _ = resolve_splits(store)
    select, refit = _fit_pcas(ray_local, store, split, 6, seed=0)
    X = store.features
    _assert_same_pca(select, X[split == "train"], 6)
    _assert_same_pca(refit, X[np.isin(split, ("train", "val"))], 6)
    # The two fits see different rows: a mix-up of train and train+val would show.
    assert not np.allclose(select.pca_.mean_, refit.pca_.mean_, rtol=0, atol=1e-7)
    # What a Ray Train worker feeds XGBoost is what the saved head's PCA step computes.
    np.testing.assert_allclose(project(X[:50], refit.pca_.components_, refit.pca_.mean_), refit.transform(X[:50]),
                               rtol=0, atol=1e-9)
    # Capped as CappedPCA caps itself: more components asked than features gives the feature count.
    assert _fit_pcas(ray_local, store, split, 500, seed=0)[0].n_components_ == store.dim
    assert _fit_pcas(ray_local, store, split, 0, seed=0) == (None, None)


def test_a_ray_pca_head_refuses_other_parameters():
    pytest.importorskip("ray.train.xgboost")
    from featx import FeatxUsageError
    from featx.heads._ray_xgb import _asked_pca

    assert _asked_pca(None) == 128 and _asked_pca({"pca": None}) is None and _asked_pca({"pca": 0}) == 0
    for bad in ({"pca": -1}, {"pca": 2.5}, {"max_depth": 3}):
        with pytest.raises(FeatxUsageError):
            _asked_pca(bad)


@pytest.mark.slow
def test_the_ray_head_has_the_local_heads_pca_step(ray_local, tmp_path):
    pytest.importorskip("ray.train.xgboost")
    store = _gaussian_store(tmp_path / "store")
    runner = CliRunner()
    args = ["train", "--features", str(store.path), "--heads", "xgboost", "--param", "xgboost.pca=8", "-q", "--json"]
    local = runner.invoke(cli, [*args, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    result = runner.invoke(cli, [*args, "--engine", "ray", "--ray-workers", "2", "--out", str(tmp_path / "ray")])
    assert result.exit_code == 0, result.output
    mine, theirs = json.loads(result.output)[0], json.loads(local.output)[0]
    assert mine["engine"] == "ray" and mine["params"]["pca"] == theirs["params"]["pca"] == 8
    assert all(c["params"]["pca"] == 8 for c in mine["selection"]["candidates"])
    manifest = json.loads((tmp_path / "ray" / "xgboost" / "manifest.json").read_text())
    theirs_manifest = json.loads((tmp_path / "local" / "xgboost" / "manifest.json").read_text())
    assert manifest["steps"] == theirs_manifest["steps"] == ["pca", "clf"]
    assert mine["accuracy"] > 0.7 and abs(mine["accuracy"] - theirs["accuracy"]) <= 0.05, \
        (mine["accuracy"], theirs["accuracy"])
    # The saved head: its PCA is the train+val PCA, and it reproduces its own test accuracy.
    head = featx.load_head(tmp_path / "ray" / "xgboost")
    pca = head.estimator.steps[0][1]
    assert type(pca).__name__ == "CappedPCA" and pca.n_components_ == 8
    from featx.heads._train import resolve_splits

    split, _ = resolve_splits(store)
    rows = store.features[np.isin(split, ("train", "val"))]
    np.testing.assert_allclose(pca.pca_.mean_, rows.mean(axis=0, dtype=np.float64), rtol=1e-6)
    test = split == "test"
    predicted = head.predict(store.features[test])
    assert float(np.mean(predicted == store.labels[test])) == pytest.approx(mine["accuracy"])
    evaluated = runner.invoke(cli, ["evaluate", "--model", str(tmp_path / "ray" / "xgboost"), "--features",
                                    str(store.path), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["accuracy"] == mine["accuracy"]
