"""``featx train --engine ray``: XGBoost on Ray Train over a sharded store, same protocol and
results rows as the local xgboost head. Three Ray Train runs cost ~100 s on 2 busy cores, so that
check is marked slow (``pytest -m slow tests/test_ray_train.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import make_classification

from featx import FeatureStore, resolve_backbone
from featx.cli import cli

pytestmark = pytest.mark.ray


def _sharded_store(path, n=240, dim=16, shard_size=50):
    from featx.store import ShardedWriter, write_shard

    X, y = make_classification(n_samples=n, n_features=dim, n_informative=8, n_redundant=0, n_classes=3,
                               n_clusters_per_class=1, class_sep=2.0, random_state=0)
    config = {"source": {"kind": "array", "name": "synthetic"},
              "backbone": resolve_backbone("test_efficientnet", weights="random").identity(),
              "data_config": {"input_size": [3, 32, 32]}, "precision": "fp32", "dtype": "float32"}
    ids = [f"item{i:04d}" for i in range(n)]
    writer = ShardedWriter.create(path, config=config, fingerprint="synthetic", ids=ids, labels=y, splits=[""] * n,
                                  class_names=["a", "b", "c"], dim=dim, dtype="float32", shard_size=shard_size)
    for k in writer.pending_shards():
        lo, hi = writer.shard_range(k)
        writer.record(write_shard(path, k, lo, ids[lo:hi], X[lo:hi], [None] * (hi - lo), "float32"))
    writer.finish({"seconds_this_run": 0})
    return FeatureStore(path)


@pytest.mark.slow
def test_train_engine_ray_matches_the_local_protocol(tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.train.xgboost")
    store = _sharded_store(tmp_path / "store")
    runner = CliRunner()
    local = runner.invoke(cli, ["train", "--features", str(store.path), "--heads", "xgboost", "--out",
                                str(tmp_path / "local"), "-q"])
    assert local.exit_code == 0, local.output
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        result = runner.invoke(cli, ["train", "--features", str(store.path), "--heads", "xgboost", "--engine", "ray",
                                     "--ray-workers", "2", "--out", str(tmp_path / "ray"), "-q"])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    mine = json.loads((tmp_path / "ray" / "xgboost" / "result.json").read_text())
    theirs = json.loads((tmp_path / "local" / "xgboost" / "result.json").read_text())
    assert set(theirs) - set(mine) <= {"model"}  # the same results row, plus engine fields
    for key in ("n_train", "n_val", "n_test", "splits_digest", "refit_on", "store_id"):
        assert mine[key] == theirs[key], key
    assert (tmp_path / "ray" / "splits.json").read_text() == (tmp_path / "local" / "splits.json").read_text()
    assert mine["engine"] == "ray" and mine["selection"]["search"] == "early_stopping"
    assert mine["ray_train_runs"] == int(mine["ray_strategy"]["strategy"] == "data") and mine["memory_path"] == "streaming"
    assert [c["params"]["max_depth"] for c in mine["selection"]["candidates"]] == [4, 6]
    assert mine["accuracy"] > 0.8 and abs(mine["accuracy"] - theirs["accuracy"]) < 0.1
    rows = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert any(r.get("engine") == "ray" for r in (rows if isinstance(rows, list) else rows.get("entries", [])))
    assert np.isfinite(mine["fit_seconds"])
    # The worker group's own clock: selection and refit measured inside it, both within the fit.
    clock = mine["selection"]["selection_seconds"], mine["selection"]["refit_seconds"]
    assert all(0 < c < mine["fit_seconds"] for c in clock) and sum(clock) < mine["fit_seconds"]


def test_train_engine_ray_refuses_other_heads(tmp_path):
    store = _sharded_store(tmp_path / "store", n=60, shard_size=30)
    result = CliRunner().invoke(cli, ["train", "--features", str(store.path), "--heads", "knn", "--engine", "ray",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "xgboost head alone" in result.output


def test_train_engine_ray_with_an_unreachable_address_is_one_line_and_writes_nothing(tmp_path):
    pytest.importorskip("ray.train.xgboost")
    store = _sharded_store(tmp_path / "store", n=60, shard_size=30)
    out = tmp_path / "heads"
    result = CliRunner().invoke(cli, ["train", "--features", str(store.path), "--heads", "xgboost", "--engine", "ray",
                                      "--address", "127.0.0.1:9", "--out", str(out)])
    assert result.exit_code == 1 and "cannot reach the Ray cluster at 127.0.0.1:9" in result.output
    assert not out.exists()


@pytest.mark.parametrize("fails", [False, True])
def test_the_temporary_ray_train_folder_is_removed_without_out(tmp_path, monkeypatch, fails):
    """Without --out, Ray Train's storage is a temporary folder featx made: gone after the run, success or failure."""
    pytest.importorskip("ray.train.xgboost")
    import tempfile

    from featx import FeatxError
    from featx.heads import _ray_xgb

    store = _sharded_store(tmp_path / "store", n=60, shard_size=30)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    seen = []

    def run(ray, store, split, rule, out, storage, *args):
        (storage / "checkpoint").mkdir(parents=True)  # what Ray Train leaves there
        seen.append(storage)
        if fails:
            raise FeatxError("boom")
        return {"model": None}

    monkeypatch.setattr(_ray_xgb, "join_ray", lambda ray, address: False)
    monkeypatch.setattr(_ray_xgb, "_run", run)
    if fails:
        with pytest.raises(FeatxError):
            _ray_xgb.train_xgboost_ray(store)
    else:
        assert _ray_xgb.train_xgboost_ray(store) == {"model": None}
    assert seen and seen[0].parent == tmp_path / "tmp" and not seen[0].exists()
    assert list((tmp_path / "tmp").iterdir()) == []
