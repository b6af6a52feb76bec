"""Shipping a results row: every kind of row names a model that `featx.load_model`, `featx predict`
and `featx export-model` take, and what they compute is what the row was scored with.

Real EfficientNet-Lite0 weights on a small digits subset (10 images per class); the ONNX
checks need the `export` extra (skipped without it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import featx
from featx import ArraySource, FeatureSet, extract, finetune, train_heads
from featx.cli import cli
from featx.core.results import model_path, read_results
from featx.extraction import extract_raw_pixels, make_uint8_transform

PER_CLASS = 10


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = np.concatenate([np.flatnonzero(d.target == c)[:PER_CLASS] for c in range(10)])
    gray = np.rint(d.images[rows] * (255.0 / 16.0)).astype(np.uint8)
    return ArraySource(np.repeat(gray[..., None], 3, axis=-1), d.target[rows], class_names=[str(i) for i in range(10)],
                       ids=[f"d{i:04d}" for i in rows], name="digits-subset")


@pytest.fixture(scope="module")
def work(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("ship")
    fast = {"batch_size": 32, "workers": 0, "device": "cpu", "quiet": True}
    store = extract(digits, "efficientnet_lite0", out=root / "lite0.h5", **fast)
    train_heads(store, heads=["logreg", "mlp", "decision_tree", "linear_svm"], out=root / "heads", n_boot=100,
                params={"mlp": {"max_iter": 30, "hidden_units": 64}, "decision_tree": {"pca": 16}})
    raw = extract_raw_pixels(digits, root / "raw.h5")
    train_heads(raw, heads=["logreg"], out=root / "raw_heads", n_boot=100)
    return {"root": root, "store": store, "raw": raw}


def _test_rows(store, out):
    from featx.data import load_splits

    return np.flatnonzero(load_splits(out / "splits.json", store.ids) == "test")


def _images(source, rows):
    return [source.load(int(i)) for i in rows]


def _check_row(out, row, store, source):
    """The row's model loads, predicts the test images from pixels as the row's head scored them."""
    model = featx.load_model(model_path(out, row))
    rows = _test_rows(store, out)
    proba = model.predict_proba(_images(source, rows))
    head = featx.load_head(model_path(out, row))
    np.testing.assert_allclose(proba, head.predict_proba(store.features[rows]), atol=1e-4)
    labels = np.asarray(store.class_names)[store.labels[rows]]
    assert float(np.mean(model.classes_[proba.argmax(1)] == labels)) == pytest.approx(row["accuracy"])
    return model


def test_every_head_row_names_a_model_that_predicts_what_it_scored(work, digits):
    out = work["root"] / "heads"
    rows = read_results(out)
    assert sorted(r["head"] for r in rows) == ["decision_tree", "linear_svm", "logreg", "mlp"]
    for row in rows:
        assert row["model"] == row["head"] and (out / row["model"] / "manifest.json").is_file()
        model = _check_row(out, row, work["store"], digits)
        assert list(model.classes_) == digits.class_names and model.kind == "head"
    manifest = json.loads((out / "logreg" / "manifest.json").read_text())
    assert manifest["kind"] == "head" and manifest["steps"] == ["scale", "clf"]
    # Every file of the head is hashed, its row and per-item test predictions included, and the row
    # names the predictions where they are after the swap.
    assert set(manifest["sha256"]) == {"model.skops", "result.json", "test_predictions.npz"}
    record = read_results(out)[0]["test_predictions"]
    assert Path(record["path"]).is_file() and Path(record["path"]).parent.name == read_results(out)[0]["head"]


def test_the_raw_pixel_control_predicts(work, digits, tmp_path):
    out = work["root"] / "raw_heads"
    row = read_results(out)[0]
    _check_row(out, row, work["raw"], digits)
    # From the command line too (it used to exit 2: "pooling None is not one of ...").
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(_images(digits, range(3))):
        image.save(folder / f"{i}.png")
    result = CliRunner().invoke(cli, ["predict", "--model", str(model_path(out, row)), str(folder), "--json"])
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.output[result.output.index("["):])
    assert len(predicted) == 3 and all(p["predicted"] in digits.class_names for p in predicted)


def test_predict_on_a_large_folder_reports_progress_on_stderr(work, digits, tmp_path):
    out = work["root"] / "raw_heads"
    model = model_path(out, read_results(out)[0])
    image = _images(digits, [0])[0]
    for i in range(300):
        image.save(tmp_path / f"{i:03d}.png")
    result = CliRunner().invoke(cli, ["predict", "--model", str(model), str(tmp_path), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    # Not a terminal here: plain lines, one per tenth, no bar.
    assert "featx: predicted 300/300 images" in result.output and "\r" not in result.output
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 301


def test_load_model_takes_every_image_form(work, digits, tmp_path):
    model = featx.load_model(work["root"] / "heads" / "logreg")
    images = _images(digits, range(4))
    array = np.stack([np.asarray(i) for i in images])
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
    by_pil = model.predict_proba(images)
    np.testing.assert_allclose(model.predict_proba(array), by_pil, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba([tmp_path / f"{i}.png" for i in range(4)]), by_pil, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(tmp_path), by_pil, atol=1e-6)  # a folder, sorted
    np.testing.assert_allclose(model.predict_proba(str(tmp_path / "0.png")), by_pil[:1], atol=1e-6)
    with pytest.raises(featx.FeatxUsageError, match="uint8 \\(N, H, W, 3\\)"):
        model.predict(array.astype(np.float32))


def test_a_linear_fine_tune_is_a_loadable_model(digits, tmp_path):
    out = tmp_path / "ft"
    entry = finetune(digits, "efficientnet_lite0", out, mode="linear", epochs=1, image_size=64, batch_size=16,
                     workers=0, n_boot=50, quiet=True, device="cpu")
    assert entry["model"] == "model" and read_results(out)[0]["model"] == "model"
    model = featx.load_model(out / "model")
    assert model.kind == "finetune" and list(model.classes_) == digits.class_names
    ids = json.loads((out / "splits.json").read_text())
    test = [i for i, item in enumerate(digits.items) if item.id in set(ids["ids"]["test"])]
    pred = model.predict(_images(digits, test))
    assert float(np.mean(pred == np.asarray(digits.class_names)[digits.labels[test]])) == pytest.approx(entry["accuracy"])
    result = CliRunner().invoke(cli, ["predict", "--model", str(out), str(tmp_path)])
    assert result.exit_code == 2 and f"give {out}/model" in result.output  # the run folder names its model

    # A run finished before fine-tunes saved models: rerunning it saves its best checkpoint as one.
    import shutil

    shutil.rmtree(out / "model")
    for name in ("finetune_linear.json", "results.json"):
        doc = json.loads((out / name).read_text())
        for row in doc if isinstance(doc, list) else [doc]:
            row.pop("model"), row.pop("commit")
        (out / name).write_text(json.dumps(doc))
    again = finetune(digits, "efficientnet_lite0", out, mode="linear", epochs=1, image_size=64, batch_size=16,
                     workers=0, n_boot=50, quiet=True, device="cpu")
    assert again["model"] == "model" and read_results(out)[0]["model"] == "model"
    np.testing.assert_allclose(featx.load_model(out / "model").predict_proba(_images(digits, test[:3])),
                               model.predict_proba(_images(digits, test[:3])), atol=1e-6)


@pytest.mark.parametrize("pca", [None, 16])
def test_a_ray_trained_booster_is_saved_as_a_head(work, digits, pca):
    """The Ray path's save (no Ray needed): the same head format as the local one, its PCA step
    (fitted from streamed moments) included when asked; without, the steps say no PCA."""
    import xgboost

    from featx.heads._ray_pca import block_moments, pca_from_moments, project
    from featx.heads._ray_xgb import _as_head, _save
    from featx.heads._train import resolve_splits

    store, out = work["store"], work["root"] / "ray"
    split, rule = resolve_splits(store)
    train = split != "test"
    X = store.features[train]
    fitted = pca_from_moments(block_moments(X, store.dim), pca, 0) if pca else None
    Z = project(X, fitted.pca_.components_, fitted.pca_.mean_) if pca else X
    booster = xgboost.train({"objective": "multi:softprob", "num_class": 10, "tree_method": "hist", "max_depth": 3},
                            xgboost.DMatrix(Z, label=store.labels[train]), 5)
    entry = json.loads((work["root"] / "heads" / "decision_tree" / "result.json").read_text())
    entry = {**entry, "head": "xgboost", "params": {"max_depth": 3, "n_estimators": 5, "pca": pca}, "engine": "ray"}
    _save(out, store, split, rule, _as_head(booster, fitted), entry)
    manifest = json.loads((out / "xgboost" / "manifest.json").read_text())
    assert manifest["steps"] == (["pca", "clf"] if pca else ["clf"]) and manifest["engine"] == "ray"
    assert manifest["files"]["xgboost"] and bool(manifest["files"]["skops"]) == bool(pca)
    (row,) = read_results(out)
    model = featx.load_model(model_path(out, row))
    rows = np.flatnonzero(split == "test")
    test = store.features[rows]
    expected = booster.predict(xgboost.DMatrix(project(test, fitted.pca_.components_, fitted.pca_.mean_) if pca else test))
    np.testing.assert_allclose(model.predict_proba(_images(digits, rows)), expected, atol=1e-4)
    head = featx.load_head(out / "xgboost")
    np.testing.assert_allclose(head.predict_proba(test), expected, atol=1e-5)
    from featx.heads._export_model import head_module

    with pytest.raises(featx.FeatxUsageError, match=r"\(XGBClassifier\) is not a tensor program"):
        head_module(head)  # refused as the local xgboost head is: a tree, not for its PCA
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(out / "xgboost"), "--features", str(store.path)])
    assert result.exit_code == 0, result.output


def test_a_kill_between_the_head_swap_and_results_json_never_shows_the_old_head(work, monkeypatch, tmp_path):
    import featx.heads._train as train_module

    out = tmp_path / "run"
    train_heads(work["store"], heads=["logreg"], params={"logreg": {"C": 1e-3}}, out=out, n_boot=50)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the head directory is swapped in; results.json is not yet replaced

    monkeypatch.setattr(train_module, "merge_results", killed)
    with pytest.raises(KeyboardInterrupt):
        train_heads(work["store"], heads=["logreg"], params={"logreg": {"C": 10.0}}, out=out, n_boot=50)
    monkeypatch.undo()
    assert json.loads((out / "results.json").read_text())[0]["params"]["C"] == 1e-3  # the index is behind
    for rows in (read_results(out), featx.pipeline.load_results(out)):
        assert [r["params"]["C"] for r in rows] == [10.0]  # but every reader sees the head on disk
    assert featx.load_head(out / "logreg").manifest["params"]["C"] == 10.0
    train_heads(work["store"], heads=["logreg"], params={"logreg": {"C": 10.0}}, out=out, n_boot=50)
    assert len(json.loads((out / "results.json").read_text())) == 1


# -- export ------------------------------------------------------------------------


def _crops(model, images) -> np.ndarray:
    """What goes into an exported graph: the eval transform's uint8 crop, NHWC."""
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in model.manifest["data_config"].items()}
    transform = make_uint8_transform(config)
    return np.stack([transform(i).permute(1, 2, 0).numpy() for i in images])


def _onnx_proba(path, pixels: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": pixels})[0]


def test_onnx_export_of_lite0_logreg_matches_featx_predict(work, digits, tmp_path):
    pytest.importorskip("onnx")
    model_dir = work["root"] / "heads" / "logreg"
    result = CliRunner().invoke(cli, ["export-model", str(model_dir), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    preprocess = json.loads((tmp_path / "m.onnx.preprocess.json").read_text())
    assert preprocess["input_size"] == [3, 224, 224] and preprocess["classes"] == digits.class_names
    assert {"interpolation", "crop_pct", "crop_mode", "mean", "std"} <= set(preprocess)
    model = featx.load_model(model_dir)
    images = _images(digits, range(0, 100, 11))
    np.testing.assert_allclose(_onnx_proba(tmp_path / "m.onnx", _crops(model, images)), model.predict_proba(images),
                               atol=1e-4)


@pytest.mark.parametrize("head", ["mlp", "linear_svm"])
def test_the_exported_graph_of_mlp_and_calibrated_linear_svm_heads_computes_their_probabilities(work, digits, head):
    """The torch graph itself (ONNX conversion of it is checked for logreg here and for the rest in the slow test)."""
    import torch

    from featx.heads._export_model import build_graph

    model = featx.load_model(work["root"] / "heads" / head)
    graph, _ = build_graph(model)
    images = _images(digits, range(0, 100, 17))
    with torch.no_grad():
        got = graph(torch.from_numpy(_crops(model, images))).numpy()
    np.testing.assert_allclose(got, model.predict_proba(images), atol=1e-4)


def test_raw_pixel_export_downsamples_inside(work, digits, tmp_path):
    pytest.importorskip("onnx")
    from PIL import Image

    model_dir = model_path(work["root"] / "raw_heads", read_results(work["root"] / "raw_heads")[0])
    featx.heads.export_model(model_dir, tmp_path / "raw.onnx", input_size=32)
    model = featx.load_model(model_dir)
    images = _images(digits, range(0, 100, 7))
    pixels = np.stack([np.asarray(i.resize((32, 32), Image.Resampling.BOX)) for i in images])
    np.testing.assert_allclose(_onnx_proba(tmp_path / "raw.onnx", pixels), model.predict_proba(images), atol=1e-4)
    with pytest.raises(featx.FeatxUsageError, match="multiple of 16"):
        featx.heads.export_model(model_dir, tmp_path / "bad.onnx", input_size=20)


def test_tree_heads_are_refused_in_one_line_naming_what_exports(work, tmp_path):
    result = CliRunner().invoke(cli, ["export-model", str(work["root"] / "heads" / "decision_tree"), "--out",
                                      str(tmp_path / "tree.onnx")])
    assert result.exit_code == 2 and "logreg, linear_svm, mlp" in result.output and "fine-tunes" in result.output
    # Refused for what it is (a tree), not for the PCA step in front of it.
    assert "DecisionTreeClassifier" in result.output and "not a tensor program" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "tree.onnx").exists()


@pytest.mark.slow
def test_mlp_feature_set_and_fine_tune_export_match_featx_predict(work, digits, tmp_path):
    pytest.importorskip("onnx")
    fast = {"batch_size": 32, "workers": 0, "device": "cpu", "quiet": True}
    mx = extract(digits, "efficientnet_lite0", out=tmp_path / "max.h5", pooling="max", **fast)
    fs = FeatureSet([work["store"].path, mx.path])
    train_heads(fs, heads=["logreg"], out=tmp_path / "fs", n_boot=50)
    finetune(digits, "efficientnet_lite0", tmp_path / "ft", mode="partial", epochs=1, image_size=64, batch_size=16,
             workers=0, n_boot=50, quiet=True, device="cpu")
    images = _images(digits, range(0, 100, 13))
    for name, model_dir in {"mlp": work["root"] / "heads" / "mlp", "svm": work["root"] / "heads" / "linear_svm",
                            "fs": tmp_path / "fs" / "logreg",
                            "ft": tmp_path / "ft" / "model"}.items():
        model = featx.load_model(model_dir)
        for fmt in ("onnx", "torchscript"):
            path = tmp_path / f"{name}.{fmt}"
            featx.heads.export_model(model_dir, path, format=fmt)
            pixels = _crops(model, images)
            if fmt == "onnx":
                got = _onnx_proba(path, pixels)
            else:
                import torch

                got = torch.jit.load(str(path))(torch.from_numpy(pixels)).numpy()
            np.testing.assert_allclose(got, model.predict_proba(images), atol=1e-4, err_msg=f"{name} {fmt}")


@pytest.mark.slow
@pytest.mark.ray
def test_a_ray_trained_head_round_trips_through_evaluate_and_load(tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.train.xgboost")
    from tests.test_ray_train import _sharded_store

    store = _sharded_store(tmp_path / "store")
    out = tmp_path / "ray"
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        result = CliRunner().invoke(cli, ["train", "--features", str(store.path), "--heads", "xgboost", "--engine", "ray",
                                          "--ray-workers", "2", "--out", str(out), "-q"])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    (row,) = read_results(out)
    assert row["model"] == "xgboost" and row["engine"] == "ray"
    head = featx.load_head(model_path(out, row))
    # The local head's kind: its PCA step (128 asked, capped at the 16 columns) before the classifier.
    assert head.manifest["steps"] == ["pca", "clf"] and head.manifest["params"]["pca"] == row["params"]["pca"] == 16
    again = CliRunner().invoke(cli, ["evaluate", "--model", str(model_path(out, row)), "--features", str(store.path),
                                     "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["accuracy"] == row["accuracy"]
