"""The Ray xgboost head's two strategies: ``candidates`` (a Ray task per candidate depth over all the
rows, no collective) and ``data`` (the rows split over Ray Train workers, XGBoost's collective). The
choice by size, the parameter's checks, the per-worker datasets that keep every row, and (slow) both
strategies end to end with the same protocol and the same kind of saved head."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import featx
from featx.cli import cli

pytestmark = pytest.mark.ray


def _store(path, n=301, dim=12, shard_size=60):
    rng = np.random.default_rng(1)
    y = np.arange(n) % 3
    X = rng.normal(size=(3, dim))[y] * 2.0 + rng.normal(size=(n, dim))
    return featx.write_store(path, X.astype(np.float32), y, class_names=["a", "b", "c"], shard_size=shard_size)


def test_auto_takes_candidates_while_the_quantised_matrix_fits_the_budget():
    pytest.importorskip("ray.train.xgboost")
    from featx.heads._ray_xgb import choose_strategy

    small = choose_strategy("auto", rows=50_000, width=128, n_classes=10, budget=2**30)
    assert small["strategy"] == "candidates" and small["estimated_matrix_bytes"] == 2 * 50_000 * (128 + 240 + 16)
    assert choose_strategy("auto", rows=10**7, width=128, n_classes=10, budget=2**30)["strategy"] == "data"
    # An explicit choice is kept whatever the size, and the plan says it was asked.
    forced = choose_strategy("data", rows=10, width=4, n_classes=2, budget=2**30)
    assert forced["strategy"] == "data" and forced["asked"] == "data"


def test_the_strategy_parameter_is_checked():
    pytest.importorskip("ray.train.xgboost")
    from featx import FeatxUsageError
    from featx.heads._ray_xgb import _asked_pca, _asked_strategy

    assert _asked_strategy(None) == "auto" and _asked_strategy({"strategy": "data", "pca": 8}) == "data"
    assert _asked_pca({"strategy": "candidates"}) == 128  # strategy is not "another parameter"
    with pytest.raises(FeatxUsageError, match="strategy"):
        _asked_strategy({"strategy": "fastest"})


def test_per_worker_datasets_keep_every_row_once(ray_local, tmp_path):
    """Ray Train's own split (equal=True) drops rows to even the counts; featx's per-worker datasets
    cover every row of the split exactly once, the same rows on every call, with a placeholder for a
    worker that has no block."""
    pytest.importorskip("ray.train.xgboost")  # featx.heads._ray_xgb's own imports
    from featx.heads._ray_xgb import _datasets

    store = _store(tmp_path / "s")  # 301 rows in 6 blocks
    split, _ = store.split_assignment(seed=0)
    for workers in (2, 4, 7):
        data = _datasets(ray_local, store, split, ("val",), None, workers)
        assert sorted(data) == [f"val_{r}" for r in range(workers)]
        labels = [np.concatenate([np.zeros(0, np.int64)] + [b["label"] for b in
                                 data[f"val_{r}"].iter_batches(batch_format="numpy")]) for r in range(workers)]
        assert sum(len(x) for x in labels) == int((split == "val").sum())
        np.testing.assert_array_equal(np.sort(np.concatenate(labels)), np.sort(store.labels[split == "val"]))
        again = _datasets(ray_local, store, split, ("val",), None, workers)["val_0"]
        assert again.count() == len(labels[0])
    assert _datasets(ray_local, store, split, ("val",), None, 7)["val_6"].count() == 0  # the placeholder


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["candidates", "data"])
def test_each_strategy_runs_the_local_protocol(ray_local, tmp_path, strategy):
    pytest.importorskip("ray.train.xgboost")
    store = _store(tmp_path / "store", n=600)
    result = CliRunner().invoke(cli, ["train", "--features", str(store.path), "--heads", "xgboost", "--engine", "ray",
                                      "--param", f"xgboost.strategy={strategy}", "--param", "xgboost.pca=6",
                                      "--out", str(tmp_path / "ray"), "-q"])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "ray" / "xgboost" / "result.json").read_text())
    assert row["ray_strategy"]["strategy"] == strategy and row["ray_train_runs"] == int(strategy == "data")
    assert [c["params"]["max_depth"] for c in row["selection"]["candidates"]] == [4, 6]
    n_val = row["n_val"]
    for candidate in row["selection"]["candidates"]:  # scored on every val row: a whole count of them right
        assert abs(candidate["val_accuracy"] * n_val - round(candidate["val_accuracy"] * n_val)) < 1e-6
    head = featx.load_head(tmp_path / "ray" / "xgboost")
    assert [name for name, _ in head.estimator.steps] == ["pca", "clf"] and row["params"]["pca"] == 6
    assert row["accuracy"] > 0.8
