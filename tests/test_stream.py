"""Streaming heads: bounded batch reads, --max-memory, the out-of-core logreg and xgboost."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import featx
from featx.cli import cli
from featx.core.errors import FeatxUsageError, StoreDamagedError
from featx.core.memory import memory_plan, parse_size
from featx.heads import get_head, select_and_fit
from featx.store import BatchReader


def _problem(n=900, d=16, k=3, seed=0, noise=1.6):
    """Overlapping Gaussian classes: the best C is inside the grid, not at its edge."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    X = (centres[y] + noise * rng.normal(size=(n, d))).astype(np.float32) * rng.uniform(0.5, 4, d).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    X, y = _problem()
    return {"file": featx.write_store(root / "s.h5", X, y), "sharded": featx.write_store(root / "d", X, y, shard_size=200),
            "X": X, "y": y, "root": root}


@pytest.mark.parametrize("layout", ["file", "sharded"])
@pytest.mark.parametrize("prefetch", [True, False])
def test_batches_are_the_selected_rows_bounded(stores, layout, prefetch):
    store = stores[layout]
    mask = np.random.default_rng(1).random(store.n_done) < 0.4
    reader = BatchReader(store, mask, batch_rows=64, prefetch=prefetch)
    batches = list(reader)
    assert all(len(X) <= 64 for X, _ in batches)
    np.testing.assert_array_equal(np.concatenate([X for X, _ in batches]), stores["X"][mask])
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), stores["y"][mask])
    assert len(reader) == int(mask.sum())
    again = np.concatenate([X for X, _ in reader])  # a second pass: the same rows in the same order
    np.testing.assert_array_equal(again, stores["X"][mask])


def test_batches_keep_the_stored_dtype(tmp_path):
    X, y = _problem(200)
    store = featx.write_store(tmp_path / "h", X.astype(np.float16), y, shard_size=64)
    assert {b.dtype for b, _ in BatchReader(store, batch_rows=50)} == {np.dtype(np.float16)}


def test_a_damaged_shard_is_refused_and_early_stop_does_not_hang(tmp_path):
    X, y = _problem(300)
    store = featx.write_store(tmp_path / "d", X, y, shard_size=100)
    reader = BatchReader(store, batch_rows=50)
    it = iter(reader)
    next(it)
    it.close()  # abandoning a pass stops the prefetch thread
    list(reader)  # a whole pass: every shard checked once
    shard = tmp_path / "d" / store.shards[1]["name"]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreDamagedError, match="sha256"):
        list(reader)  # the same reader: the file changed since it was checked, so it is checked again
    with pytest.raises(StoreDamagedError, match="sha256"):
        list(BatchReader(featx.FeatureStore(tmp_path / "d"), batch_rows=50))


def test_parse_size_and_plan():
    assert parse_size("256MB") == 256_000_000 and parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size(4096) == 4096
    for bad in ("lots", "-1MB", "0", "5 parsecs"):
        with pytest.raises(FeatxUsageError):
            parse_size(bad)
    big = memory_plan(1_000_000, 128, "256MB")
    assert big["memory_path"] == "streaming" and big["feature_bytes"] == 512_000_000
    assert big["batch_rows"] * 128 * 4 <= 256_000_000 // 8
    assert memory_plan(10_000, 128, "256MB")["memory_path"] == "in_memory"


def test_streamed_logreg_matches_the_in_memory_torch_fit(stores):
    store = stores["sharded"]
    split, _ = store.split_assignment()
    X, y = store.features, store.labels
    masks = {"train": split == "train", "val": split == "val", "refit": np.isin(split, ["train", "val"])}
    spec = get_head("logreg")
    memory, rec_m = select_and_fit(spec, *[(X[masks[m]], y[masks[m]]) for m in ("train", "val", "refit")],
                                   params={"engine": "torch", "device": "cpu"})
    from featx.heads._stream_logreg import select_logreg_stream

    readers = {m: BatchReader(store, masks[m], batch_rows=97) for m in masks}
    streamed, rec_s = select_logreg_stream(spec, {}, 0, readers["train"], readers["val"], readers["refit"])
    grid = sorted(spec.search_space["C"])
    assert 0 < grid.index(rec_s["params"]["C"]) < len(grid) - 1  # an interior C: the comparison means something
    assert abs(grid.index(rec_s["params"]["C"]) - grid.index(rec_m["params"]["C"])) <= 1
    test = split == "test"
    acc_m, acc_s = memory.score(X[test], y[test]), streamed.score(X[test], y[test])
    assert abs(acc_m - acc_s) <= 0.005 + 1.0 / test.sum()  # within half a point (one item on this small test split)
    assert type(streamed[-1]).__name__ == "TorchLogisticRegression"


def test_train_past_the_budget_streams_records_and_skips(stores, tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, ["train", "--features", str(stores["root"] / "d"), "--heads", "logreg,xgboost,knn",
                                      "--out", str(out), "--max-memory", "20KB", "-q", "--bootstrap", "100",
                                      "--param", "xgboost.n_estimators=40"])
    assert result.exit_code == 0, result.output
    rows = {r["head"]: r for r in json.loads((out / "results.json").read_text())}
    assert rows["logreg"]["memory_path"] == "streaming" and rows["logreg"]["max_memory"] == 20_000
    assert rows["logreg"]["accuracy"] > 0.6 and rows["xgboost"]["accuracy"] > 0.6
    assert "needs its features in memory" in rows["knn"]["skipped"]
    assert rows["xgboost"]["selection"]["pca_kind"] == "IncrementalPCA"
    for head in ("logreg", "xgboost"):  # the saved head reproduces the row
        entry = featx.evaluate_head(out / head, stores["root"] / "d", n_boot=100)
        assert entry["accuracy"] == pytest.approx(rows[head]["accuracy"])
    result = CliRunner().invoke(cli, ["train", "--features", str(stores["root"] / "d"), "--heads", "logreg",
                                      "--out", str(tmp_path / "m"), "-q", "--bootstrap", "100"])
    row = json.loads((tmp_path / "m" / "results.json").read_text())[0]
    assert row["memory_path"] == "in_memory" and row["max_memory"] > 20_000


def test_streamed_xgboost_on_disk_matrix_matches_in_memory_matrix(stores):
    from featx.heads._stream_xgb import select_xgboost_stream

    store = stores["file"]
    split, _ = store.split_assignment()
    spec = get_head("xgboost")
    masks = {"train": split == "train", "val": split == "val", "refit": np.isin(split, ["train", "val"])}
    fixed = {"n_estimators": 30, "max_depth": 3, "pca": 8}
    runs = []
    for budget in (10**9, 1000):  # bins in memory, then ExtMemQuantileDMatrix on disk
        readers = [BatchReader(store, masks[m], batch_rows=128) for m in ("train", "val", "refit")]
        model, record = select_xgboost_stream(spec, fixed, 0, *readers, budget=budget)
        runs.append(model.predict(store.features[split == "test"]))
        assert record["params"]["pca"] == 8 and model[0].n_components_ == 8
    assert np.mean(runs[0] == runs[1]) > 0.95


def test_evaluate_past_the_budget_predicts_in_batches(stores, tmp_path, monkeypatch):
    out = tmp_path / "r"
    featx.train_heads(stores["root"] / "d", ["logreg"], out=out, n_boot=100)
    whole = featx.evaluate_head(out / "logreg", stores["root"] / "d", n_boot=100)
    import featx.heads._train as train_module

    def tiny(store, max_memory, quiet=True):
        return memory_plan(store.n_done, store.dim, "4KB")

    monkeypatch.setattr(train_module, "plan_memory", tiny)
    from featx.store import ShardedFeatureStore

    monkeypatch.setattr(ShardedFeatureStore, "features", property(lambda self: pytest.fail("held in memory")))
    streamed = featx.evaluate_head(out / "logreg", stores["root"] / "d", n_boot=100)
    assert streamed["accuracy"] == whole["accuracy"] and streamed["n_test"] == whole["n_test"]


def test_concatenated_stores_over_the_budget_are_held_in_memory_and_said(stores, tmp_path, capsys):
    entries = featx.train_heads([stores["root"] / "s.h5", stores["root"] / "d"], ["knn"], max_memory="1KB", n_boot=100)
    assert entries[0]["memory_path"] == "in_memory" and entries[0]["accuracy"] is not None
    assert "only a single store can be streamed" in capsys.readouterr().err
