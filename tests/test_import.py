"""Bring your own embeddings: featx.write_store and `featx import` (npy/npz, Parquet)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import featx
import featx.store
from featx.cli import cli
from featx.core.errors import FeatxUsageError


def _data(n=240, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = (rng.normal(size=(n, d)) + 3 * np.eye(k, d)[y]).astype(np.float32)
    return X, y


@pytest.mark.parametrize("shard_size", [None, 50])
def test_write_store_round_trip(tmp_path, shard_size):
    X, y = _data()
    ids = np.array([f"item-{i}" for i in range(len(y))])
    splits = np.array(["train"] * 160 + ["val"] * 40 + ["test"] * 40)
    path = tmp_path / ("s" if shard_size else "s.h5")
    store = featx.write_store(path, X, y, ids=ids, splits=splits, class_names=["a", "b", "c"], shard_size=shard_size,
                              backbone="my-clip")
    again = featx.FeatureStore(path)
    assert again.complete and again.n_done == len(y)
    np.testing.assert_array_equal(again.features, X)
    np.testing.assert_array_equal(again.labels, y)
    assert list(again.ids) == list(ids) and list(again.splits) == list(splits)
    assert again.class_names == ["a", "b", "c"]
    info = again.info()
    assert info["config"]["provenance"] == "imported" and info["backbone"] == "my-clip"
    assert (path.is_dir()) == (shard_size is not None)
    assert store.store_id == again.store_id
    assert featx.store.verify_store(path).ok


def test_store_id_follows_the_feature_bytes(tmp_path):
    X, y = _data()
    a = featx.write_store(tmp_path / "a.h5", X, y)
    X2 = X.copy()
    X2[5, 3] += 1.0
    b = featx.write_store(tmp_path / "b.h5", X2, y)
    c = featx.write_store(tmp_path / "c", X, y, shard_size=64)
    assert a.store_id != b.store_id
    assert a.fingerprint == c.fingerprint  # same content, either layout


def test_string_labels_and_float16(tmp_path):
    X, y = _data()
    names = np.array(["cat", "dog", "emu"])[y]
    store = featx.write_store(tmp_path / "h.h5", X.astype(np.float16), names)
    assert store.class_names == ["cat", "dog", "emu"] and store.feature_dtype == "float16"
    np.testing.assert_array_equal(store.labels, y)


def test_chunk_iterable_input(tmp_path):
    X, y = _data()
    store = featx.write_store(tmp_path / "it", (X[i:i + 37] for i in range(0, len(X), 37)), y, shard_size=100)
    np.testing.assert_array_equal(store.features, X)
    assert [e["rows"] for e in store.shards] == [100, 100, 40]


@pytest.mark.parametrize("change, match", [
    (lambda X, y, kw: X.__setitem__((3, 1), np.nan), "row 3 holds NaN"),
    (lambda X, y, kw: kw.update(ids=["same"] * len(y)), "ids must be unique"),
    (lambda X, y, kw: kw.update(splits=["training"] * len(y)), "splits must be train, val, test"),
    (lambda X, y, kw: kw.update(labels=y[:-1]), "rows for"),
    (lambda X, y, kw: kw.update(features=iter([X, X])), "more rows than"),
    (lambda X, y, kw: kw.update(labels=np.zeros(len(y), int)), "at least 2 classes"),
    (lambda X, y, kw: kw.update(class_names=["a", "b"]), "has no class name"),
])
def test_bad_input_is_one_usage_line_and_writes_nothing(tmp_path, change, match):
    X, y = _data()
    kw = {"labels": y, "features": X}
    change(X, y, kw)
    with pytest.raises(FeatxUsageError, match=match):
        featx.write_store(tmp_path / "bad.h5", **kw)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_rules(tmp_path):
    X, y = _data()
    featx.write_store(tmp_path / "s.h5", X, y)
    with pytest.raises(FeatxUsageError, match="already exists"):
        featx.write_store(tmp_path / "s.h5", X, y)
    store = featx.write_store(tmp_path / "s.h5", X[:, :5], y, overwrite=True)
    assert store.dim == 5
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    with pytest.raises(FeatxUsageError, match="not a featx feature store"):
        featx.write_store(other, X, y, overwrite=True)
    assert other.read_text() == "mine"  # featx never deletes what it did not write


def test_cli_import_npz_train_evaluate_and_predict_refused(tmp_path):
    X, y = _data()
    np.savez(tmp_path / "emb.npz", features=X, labels=y, class_names=np.array(["a", "b", "c"]))
    runner = CliRunner()
    out = tmp_path / "store"
    result = runner.invoke(cli, ["import", "--format", "npy", str(tmp_path / "emb.npz"), str(out), "--shard-size", "100"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["train", "--features", str(out), "--heads", "knn", "--out", str(tmp_path / "r"), "-q",
                                 "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    acc = json.loads((tmp_path / "r" / "results.json").read_text())[0]["accuracy"]
    assert acc > 0.8  # the class signal survived the import
    result = runner.invoke(cli, ["evaluate", "--model", str(tmp_path / "r" / "knn"), "--features", str(out)])
    assert result.exit_code == 0, result.output
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.png").write_bytes(b"not needed")
    result = runner.invoke(cli, ["predict", "--model", str(tmp_path / "r" / "knn"), str(tmp_path / "img")])
    assert result.exit_code == 2 and "imported features" in result.output
    assert "Traceback" not in result.output


def test_cli_import_npy_folder_is_memory_mapped(tmp_path):
    X, y = _data()
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "features.npy", X)
    np.save(folder / "labels.npy", y)
    np.save(folder / "splits.npy", np.array(["train"] * 160 + ["val"] * 40 + ["test"] * 40))
    kwargs = featx.store.read_import_source(folder, "npy")
    assert isinstance(kwargs["features"], np.memmap)
    result = CliRunner().invoke(cli, ["import", "--format", "npy", str(folder), str(tmp_path / "s.h5")])
    assert result.exit_code == 0, result.output
    assert featx.FeatureStore(tmp_path / "s.h5").has_splits
    result = CliRunner().invoke(cli, ["import", "--format", "npy", str(tmp_path), str(tmp_path / "t.h5")])
    assert result.exit_code == 2 and "features.npy" in result.output


def test_cli_import_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    X, y = _data()
    names = np.array(["a", "b", "c"])[y]
    table = pa.table({"id": [f"r{i}" for i in range(len(y))], "label": names,
                      "features": pa.array(list(X), type=pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "emb.parquet", row_group_size=50)
    result = CliRunner().invoke(cli, ["import", "--format", "parquet", str(tmp_path / "emb.parquet"), str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    store = featx.FeatureStore(tmp_path / "p")
    np.testing.assert_allclose(store.features, X)
    assert list(store.ids[:2]) == ["r0", "r1"] and store.class_names == ["a", "b", "c"]
    ragged = pa.table({"label": ["a", "b"], "features": pa.array([[1.0, 2.0], [1.0]], type=pa.list_(pa.float32()))})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    result = CliRunner().invoke(cli, ["import", "--format", "parquet", str(tmp_path / "ragged.parquet"),
                                      str(tmp_path / "q.h5")])
    assert result.exit_code == 2 and "different lengths" in result.output


def test_parquet_class_names_survive_export_and_import_and_come_from_a_name_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    X, y = _data()
    # Names that sort differently from their codes, so "sorted names" would be caught too.
    featx.write_store(tmp_path / "s.h5", X, y, class_names=["zebra", "ant", "moth"])
    featx.store.export_store(tmp_path / "s.h5", tmp_path / "e.parquet")
    back = featx.store.write_store(tmp_path / "back.h5", **{
        k: v for k, v in featx.store.read_import_source(tmp_path / "e.parquet", "parquet").items()
        if k in ("features", "labels", "ids", "splits", "class_names")})
    assert back.class_names == ["zebra", "ant", "moth"]
    np.testing.assert_array_equal(back.labels, y)
    # Another tool's file: integer labels with a name column, no featx metadata.
    table = pa.table({"label": y, "label_name": np.array(["zebra", "ant", "moth"])[y],
                      "features": pa.array(list(X), type=pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "other.parquet")
    result = CliRunner().invoke(cli, ["import", "--format", "parquet", str(tmp_path / "other.parquet"),
                                      str(tmp_path / "o.h5")])
    assert result.exit_code == 0, result.output
    assert featx.FeatureStore(tmp_path / "o.h5").class_names == ["zebra", "ant", "moth"]
    wrong = np.array(["zebra", "ant", "moth"])[y]
    wrong[np.flatnonzero(y == 1)[0]] = "moth"  # one row names label 1 like label 2
    for bad, message in ((wrong, "named both"), (np.array(["zebra"] * len(y)), "two labels one name")):
        pq.write_table(table.set_column(1, "label_name", pa.array(bad)), tmp_path / "bad.parquet")
        result = CliRunner().invoke(cli, ["import", "--format", "parquet", str(tmp_path / "bad.parquet"),
                                          str(tmp_path / "c.h5")])
        assert result.exit_code == 2 and message in result.output, result.output
