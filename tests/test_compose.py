"""Feature sets that compose from the CLI and YAML: per-store sets (STORE:SET+SET,STORE:SET), layer-1 tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import featx
from featx import FeatureSet, FeatxUsageError, load_pipeline
from featx.cli import cli

from .conftest import write_image_folder
from .test_featuresets import CLASSES, PIPE, _write


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """lite-like store ``a`` with two extra layers, store ``b`` without: the case `concat:` cannot serve."""
    root = tmp_path_factory.mktemp("compose")
    images = write_image_folder(root / "img", n_per_class=8, classes=CLASSES, size=(30, 26))
    spec = featx.resolve_backbone("test_efficientnet", weights="random")
    a = featx.extract(images, spec, root / "a.h5", layers="-1,-2", img_size=32, quiet=True, batch_size=16)
    b = featx.extract(images, spec, root / "b.h5", img_size=40, quiet=True, batch_size=16)
    return root, a, b


def test_per_store_sets_concatenate_each_stores_own_sets(stores):
    root, a, b = stores
    with pytest.raises(FeatxUsageError, match="STORE:SET"):  # the old form cannot say it: b has no layer4
        FeatureSet([a, b], "concat:pooled,layer4")
    fs = FeatureSet([str(a.path), str(b.path)], "a.h5:pooled+layer-1+layer-2,b.h5:pooled")
    assert fs.set_names == [["pooled", "layer4", "layer3"], ["pooled"]]
    rows = fs.features
    np.testing.assert_allclose(rows[:, :a.dim], a.features)
    d4 = a.feature_set("layer4").shape[1]
    np.testing.assert_allclose(rows[:, a.dim:a.dim + d4], a.feature_set("layer4"))
    np.testing.assert_allclose(rows[:, -b.dim:], b.features)
    # By file stem, a store left out takes pooled; unknown or doubled names are one-line usage errors.
    assert FeatureSet([a, b], "a:pooled+layer-1").set_names == [["pooled", "layer4"], ["pooled"]]
    with pytest.raises(FeatxUsageError, match="matches no store"):
        FeatureSet([a, b], "c.h5:pooled")
    with pytest.raises(FeatxUsageError, match="twice"):
        FeatureSet([a, b], "a.h5:pooled,a:layer-1")


def test_cli_train_with_per_store_sets_and_info_lists_tokens(stores):
    root, a, b = stores
    runner = CliRunner()
    out = root / "run"
    result = runner.invoke(cli, ["train", "--features", f"{a.path},{b.path}", "--feature-set",
                                 "a.h5:pooled+layer-1,b.h5:pooled", "--out", str(out), "--bootstrap", "100", "-q"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((out / "results.json").read_text())
    assert entry["dim"] == a.dim + a.feature_set("layer4").shape[1] + b.dim
    assert [s["sets"] for s in entry["stores"]] == [["pooled", "layer4"], ["pooled"]]
    bad = runner.invoke(cli, ["train", "--features", f"{a.path},{b.path}", "--feature-set", "concat:pooled,layer4",
                              "--out", str(root / "bad"), "-q"])
    assert bad.exit_code == 2 and "STORE:SET" in bad.output and "Traceback" not in bad.output
    text = runner.invoke(cli, ["info", str(a.path)]).output
    assert "layer4 = layer-1" in text and "layer3 = layer-2" in text
    assert "sets      pooled" in runner.invoke(cli, ["info", str(b.path)]).output


def test_yaml_feature_set_with_sets_per_store(tmp_path):
    text = PIPE.replace("      - [a, b]", "      - {stores: [a, b], layers: {a: [pooled, layer-1], b: [pooled]}}")
    pipeline = load_pipeline(_write(tmp_path, text))
    (fs,) = pipeline.feature_sets
    assert fs["layers"] == [["pooled", -1], ["pooled"]] and fs["name"] == "a.pooled_-1+b"
    bad = _write(tmp_path, PIPE.replace("      - [a, b]", "      - {stores: [a, b], layers: {b: [-1]}}"))
    with pytest.raises(FeatxUsageError, match="layer -1 is not extracted for backbone 'b'"):
        load_pipeline(bad)
    bad = _write(tmp_path, PIPE.replace("      - [a, b]", "      - {stores: [a, b], layers: {c: [pooled]}}"))
    with pytest.raises(FeatxUsageError, match="not one of this set's stores"):
        load_pipeline(bad)
