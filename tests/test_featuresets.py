"""Backbone ensembles and layer sets: stores concatenated by id, heads on them, predict, pipelines' feature_sets."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import featx
from featx import FeatureSet, FeatureStore, FeatxUsageError, load_pipeline, resolve_backbone
from featx.cli import cli
from featx.store import StoreWriter

from .conftest import write_image_folder

CLASSES = ("ant", "bee", "cow")


def _store(path: Path, features: np.ndarray, ids, labels, splits=None, extract_seconds=1.5, backbone="test_efficientnet"):
    """A complete store holding exactly ``features`` for ``ids`` (no backbone run)."""
    spec = resolve_backbone(backbone, weights="random")
    config = {"source": {"kind": "array", "name": "arr"}, "backbone": spec.identity(),
              "data_config": {"input_size": [3, 32, 32], "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3,
                              "crop_pct": 0.875, "crop_mode": "center"}, "precision": "fp32", "dtype": "float32"}
    n = len(ids)
    writer = StoreWriter.create(path, config=config, fingerprint=f"fake-{path.stem}", ids=list(ids), labels=labels,
                                splits=list(splits) if splits is not None else [""] * n, class_names=CLASSES,
                                dim=features.shape[1], dtype="float32")
    try:
        writer.write_batch(0, features.astype(np.float32), [None] * n)
        writer.finish({"device": "cpu", "seconds_this_run": extract_seconds})
    finally:
        writer.close()
    return FeatureStore(path)


@pytest.fixture
def pair(tmp_path):
    """Store a (rows in id order) and store b (same items, shuffled), both informative."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=150, n_features=10, n_informative=6, n_redundant=0, n_classes=3,
                               n_clusters_per_class=1, class_sep=2.0, random_state=0)
    ids = np.array([f"item{i:03d}" for i in range(150)])
    perm = np.random.default_rng(1).permutation(150)
    a = _store(tmp_path / "a.h5", X[:, :6], ids, y, extract_seconds=2.0)
    b = _store(tmp_path / "b.h5", X[perm, 6:], ids[perm], y[perm], extract_seconds=3.0, backbone="test_resnet")
    return a, b, X, y, ids


def test_concatenation_aligns_rows_by_id(pair):
    a, b, X, y, ids = pair
    fs = FeatureSet([a, b])
    np.testing.assert_array_equal(fs.features, X.astype(np.float32))
    np.testing.assert_array_equal(fs.labels, y)
    np.testing.assert_array_equal(fs.ids, ids)
    assert fs.dim == 10 and fs.name == "test_efficientnet+test_resnet"
    assert fs.store_id != FeatureSet([b, a]).store_id  # order is part of what a head was fitted on
    split, _ = fs.split_assignment()
    np.testing.assert_array_equal(split, a.split_assignment()[0])


@pytest.mark.parametrize("change, expected", [
    ("id", "id 'item007' is in"),
    ("label", "id 'item007' has label"),
    ("split", "id 'item007' is in split"),
])
def test_mismatched_stores_are_refused_naming_the_first_difference(tmp_path, pair, change, expected):
    a, _, X, y, ids = pair
    ids2, y2, splits = ids.copy(), y.copy(), [""] * len(ids)
    if change == "id":
        ids2[7] = "other"
    elif change == "label":
        y2[7] = (y2[7] + 1) % 3
    else:
        splits[7] = "test"
    c = _store(tmp_path / "c.h5", X[:, 6:], ids2, y2, splits=splits)
    with pytest.raises(FeatxUsageError, match=expected):
        FeatureSet([a, c])
    result = CliRunner().invoke(cli, ["train", "--features", f"{a.path},{c.path}", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and expected in result.output and len(result.output.strip().splitlines()) == 1


def test_train_evaluate_on_concatenated_stores_records_every_store(tmp_path, pair):
    a, b, *_ = pair
    out = tmp_path / "run"
    (entry,) = featx.train_heads([a.path, b.path], heads=["logreg"], out=out, n_boot=100)
    assert entry["dim"] == 10 and entry["feature_set"] == "test_efficientnet+test_resnet"
    assert [s["path"] for s in entry["stores"]] == [str(a.path), str(b.path)]
    assert [s["dims"] for s in entry["stores"]] == [[6], [4]]
    assert entry["extract_seconds"] == pytest.approx(5.0)  # the sum of both stores' extraction
    manifest = json.loads((out / "logreg" / "manifest.json").read_text())
    assert [i["backbone"]["model"] for i in manifest["inputs"]] == ["test_efficientnet", "test_resnet"]
    again = featx.evaluate_head(out / "logreg", [a.path, b.path], n_boot=100)
    assert again["accuracy"] == entry["accuracy"]
    with pytest.raises(FeatxUsageError, match="2 concatenated"):
        featx.evaluate_head(out / "logreg", a.path)
    with pytest.raises(featx.FeatxError, match="trained on"):
        featx.evaluate_head(out / "logreg", [b.path, a.path])


def test_plain_single_store_path_is_unchanged(pair, tmp_path):
    a, *_ = pair
    (entry,) = featx.train_heads(a.path, heads=["logreg"], out=tmp_path / "one", n_boot=100)
    assert "stores" not in entry and entry["store_id"] == a.store_id
    manifest = json.loads((tmp_path / "one" / "logreg" / "manifest.json").read_text())
    assert "inputs" not in manifest and manifest["backbone"] == a.config["backbone"]


@pytest.fixture(scope="module")
def folder_stores(tmp_path_factory):
    """Two real (tiny, random) stores of one image folder: different preprocessing, layers and a view."""
    root = tmp_path_factory.mktemp("fs")
    images = write_image_folder(root / "img", n_per_class=10, classes=CLASSES, size=(30, 26))
    spec = resolve_backbone("test_efficientnet", weights="random")
    a = featx.extract(images, spec, root / "a.h5", layers="-2", views="hflip", img_size=32, quiet=True, batch_size=16)
    b = featx.extract(images, spec, root / "b.h5", img_size=40, crop_pct=1.0, interpolation="bilinear", quiet=True,
                      batch_size=16)
    return root, images, a, b


def test_predict_on_a_concatenated_head_runs_each_backbone(folder_stores):
    root, images, a, b = folder_stores
    out = root / "run-predict"
    with pytest.raises(FeatxUsageError, match="no feature set"):  # b was extracted without layers
        featx.train_heads([a, b], heads=["logreg"], out=out, feature_set="concat:pooled,-2")
    fs = FeatureSet([a, b], [["pooled", "layer3"], ["pooled"]])  # per-store sets
    featx.train_heads(fs, heads=["logreg"], out=out, n_boot=100)
    head = featx.load_head(out / "logreg")
    assert head.dim == fs.dim == a.dim + a.feature_set("layer3").shape[1] + b.dim
    rows = featx.predict(out / "logreg", [images])
    by_id = {str(Path(r["id"]).relative_to(images)): r for r in rows}
    expected = head.predict_proba(fs.features)
    got = np.array([[by_id[i]["probabilities"][c] for c in CLASSES] for i in fs.ids])
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_single_store_layer_sets_and_views_predict(folder_stores):
    root, images, a, _ = folder_stores
    out = root / "run-layers"
    (entry,) = featx.train_heads(a, heads=["logreg"], out=out, n_boot=100, feature_set="concat:pooled,layer3")
    assert entry["dim"] == a.dim + a.feature_set("layer3").shape[1]
    (plain,) = featx.train_heads(a, heads=["logreg"], out=root / "run-plain", n_boot=100)
    manifest = json.loads((root / "run-plain" / "logreg" / "manifest.json").read_text())
    assert manifest["features"] == {"layers": [-2], "views": ["hflip"]}
    assert manifest["data_config"]["input_size"] == [3, 32, 32]
    for run, fs in ((out, FeatureSet([a], "concat:pooled,layer3")), (root / "run-plain", a)):
        head = featx.load_head(run / "logreg")
        rows = featx.predict(run / "logreg", [images])
        by_id = {str(Path(r["id"]).relative_to(images)): r for r in rows}
        got = np.array([[by_id[i]["probabilities"][c] for c in CLASSES] for i in fs.ids])
        np.testing.assert_allclose(got, head.predict_proba(fs.features), atol=2e-4)


# --------------------------------------------------------------------------- pipelines


PIPE = """
    name: fs
    source: {path}
    backbones:
      - name: test_efficientnet
        weights: random
        label: a
        img_size: 32
        layers: [-1]
      - name: test_efficientnet
        weights: random
        label: b
        img_size: 40
        crop_pct: 1.0
    heads: [logreg]
    feature_sets:
      - [a, b]
"""


def _write(tmp_path: Path, text: str, source="digits") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text.replace("{path}", str(source))).lstrip())
    return path


@pytest.mark.parametrize("replace, line, expected", [
    ("      - [a, c]", 16, "no backbone labelled 'c'"),
    ("      - {stores: [a], layers: [pooled]}", 16, "already that backbone's own row"),
    ("      - {stores: [a, b], layers: [-1]}", 16, "layer -1 is not extracted for backbone 'b'"),
    ("      - {stores: [a, b], size: 3}", 16, "unknown key 'size'"),
    ("      - [a, b]\n      - {name: a, stores: [a, b]}", 17, "already used"),
    ("      - a", 16, "list of backbone labels"),
])
def test_feature_sets_validation_names_file_and_line(tmp_path, replace, line, expected):
    text = PIPE.replace("      - [a, b]", replace)
    path = _write(tmp_path, text)
    with pytest.raises(FeatxUsageError) as info:
        load_pipeline(path)
    assert f"{path}:{line}:" in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize("key, value, expected", [
    ("layers", "[x]", "not a layer index"), ("views", "vflip", "unknown view"),
    ("crop_pct", "1.5", "crop_pct must be in"), ("interpolation", "cubic", "interpolation"),
])
def test_backbone_feature_options_are_validated_with_line(tmp_path, key, value, expected):
    path = _write(tmp_path, PIPE.replace("        crop_pct: 1.0", f"        crop_pct: 1.0\n        {key}: {value}"
                                         if key != "crop_pct" else f"        crop_pct: {value}"))
    with pytest.raises(FeatxUsageError) as info:
        load_pipeline(path)
    assert f"{path}:1" in str(info.value) and f"backbones[1].{key}" in str(info.value) and expected in str(info.value)


def test_pipeline_feature_sets_run_cache_and_sum_costs(tmp_path):
    images = write_image_folder(tmp_path / "img", n_per_class=10, classes=CLASSES, size=(30, 26))
    # The raw-pixel control (on by default) has tests of its own (tests/test_controls.py).
    path = _write(tmp_path, PIPE + "      - {name: a-top, stores: [a], layers: [pooled, -1]}\n    raw_pixels: false\n",
                  source=images)
    out = tmp_path / "out"
    run = featx.run_pipeline(path, out=out, quiet=True)
    assert not run.failed, [(s.title, s.error) for s in run.failed]
    rows = {e["backbone"]: e for e in json.loads((out / "results.json").read_text())}
    assert set(rows) == {"a", "b", "a+b", "a-top"}  # same model twice: rows carry their labels
    a, b = FeatureStore(out / "features" / "a.h5"), FeatureStore(out / "features" / "b.h5")
    assert b.config["data_config"]["crop_pct"] == 1.0 and b.config["data_config"]["input_size"] == [3, 40, 40]
    assert a.config["features"] == {"layers": [-1], "views": []}
    cost = [s.run_info["extract_seconds_total"] for s in (a, b)]
    assert rows["a+b"]["extract_seconds"] == pytest.approx(sum(cost))
    assert [s["extract_seconds"] for s in rows["a+b"]["stores"]] == cost
    assert rows["a-top"]["dim"] == a.dim + a.feature_set("layer4").shape[1]
    assert rows["a-top"]["extract_seconds"] == pytest.approx(cost[0])
    resolved = yaml.safe_load((out / "pipeline.resolved.yaml").read_text())
    assert resolved["feature_sets"][0] == {"name": "a+b", "stores": ["a", "b"], "layers": ["pooled"]}

    again = featx.run_pipeline(path, out=out, quiet=True)
    assert {s.status for s in again.stages} == {"cached"}
    # A new crop for b re-runs b's extraction and every head that reads b, nothing else.
    dry = featx.run_pipeline(path, out=out, dry_run=True, overrides=["backbones.1.crop_pct=0.9"])
    to_run = sorted(s.id for s in dry.stages if s.status == "to run")
    assert to_run == ["extract:b", "head:a+b:logreg", "head:b:logreg"]
