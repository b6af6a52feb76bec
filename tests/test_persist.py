"""Saved heads: safe formats, identical predictions after loading, refusals that name the problem."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from threadpoolctl import threadpool_limits

from featx import FeatxError, FeatxUsageError, load_head
from featx.core.io import file_sha256
from featx.heads._manifest import manifest_digest
from featx.heads._persist import save_head
from featx.heads._train import select_and_fit, training_rows
from tests._head_stores import CLASSES, write_store
from tests.test_train import FAST

FAST = {**FAST, "random_forest": {**FAST["random_forest"], "n_jobs": 1},  # threads would sum trees in any order
        "mlp": {"max_iter": 30, "hidden_units": 32}, "logreg_torch": {"engine": "torch", "device": "cpu"}}

HEADS = ["logreg", "linear_svm", "knn", "decision_tree", "random_forest", "gradient_boosting", "xgboost", "mlp", "rbf_svm",
         "logreg_torch"]


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("stores") / "plain.h5")


def _fit(store, name):
    split, _ = store.split_assignment()
    X, y = store.features, store.labels
    rows = training_rows(store.ids, y, split, None, 0)
    spec = "logreg" if name == "logreg_torch" else name
    model, _ = select_and_fit(spec, (X[rows["train"]], y[rows["train"]]), (X[rows["val"]], y[rows["val"]]),
                              (X[rows["refit"]], y[rows["refit"]]), params=FAST.get(name))
    return model


def _manifest(store, name):
    return {"head": name, "params": {}, "backbone": store.config["backbone"], "store_id": store.store_id,
            "dim": store.dim, "class_names": list(store.class_names), "data_config": store.config["data_config"]}


@pytest.mark.parametrize("name", HEADS)
def test_round_trip_gives_identical_predictions(store, tmp_path, name):
    model = _fit(store, name)
    save_head(tmp_path / name, model, _manifest(store, name))
    files = sorted(p.name for p in (tmp_path / name).iterdir())
    assert not any(f.endswith((".pkl", ".pickle", ".joblib")) for f in files)
    if name == "xgboost":
        assert {"model.ubj", "model.skops"} <= set(files)  # booster in XGBoost's format, PCA in skops
    head = load_head(tmp_path / name, store=store)
    assert head.name == name and head.class_names == list(CLASSES) and head.dim == store.dim
    X = store.features
    np.testing.assert_array_equal(head.predict(X), model.predict(X))
    # Parameters come back bit for bit; only an array's memory order may differ, which can
    # move a float32 dot product by an ulp (and a tree's probabilities with it). A second
    # round trip must therefore be exact, and the first one equal up to rounding.
    np.testing.assert_allclose(head.predict_proba(X), model.predict_proba(X), atol=0.02)
    again = load_head(save_head(tmp_path / f"{name}-again", head.estimator, _manifest(store, name)))
    np.testing.assert_array_equal(again.predict_proba(X), head.predict_proba(X))


def _replace_model_file(head_dir, data: bytes) -> None:
    """Swap the model file and re-hash the manifest, as someone who knows the format could."""
    (head_dir / "model.skops").write_bytes(data)
    manifest = json.loads((head_dir / "manifest.json").read_text())
    manifest["sha256"]["model.skops"] = file_sha256(head_dir / "model.skops")
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (head_dir / "manifest.json").write_text(json.dumps(manifest))


def test_untrusted_skops_file_is_refused(store, tmp_path):
    save_head(tmp_path / "h", _fit(store, "logreg"), _manifest(store, "logreg"))
    evil = Pipeline([("run", FunctionTransformer(os.system))])
    (tmp_path / "h" / "model.skops").write_bytes(sio.dumps(evil))
    with pytest.raises(FeatxError, match="sha256 mismatch"):  # first line of defence: the file hash
        load_head(tmp_path / "h")
    _replace_model_file(tmp_path / "h", sio.dumps(evil))
    with pytest.raises(FeatxError, match="refusing to load .*system"):  # second: the type allowlist
        load_head(tmp_path / "h")
    _replace_model_file(tmp_path / "h", b"not a zip file")
    with pytest.raises(FeatxError, match="not a readable skops"):
        load_head(tmp_path / "h")


def test_mismatched_features_are_refused(store, tmp_path):
    save_head(tmp_path / "h", _fit(store, "logreg"), _manifest(store, "logreg"))
    manifest = json.loads((tmp_path / "h" / "manifest.json").read_text())
    assert manifest["backbone"] == store.config["backbone"] and manifest["store_id"] == store.store_id
    other = write_store(tmp_path / "resnet.h5", backbone="test_resnet")
    with pytest.raises(FeatxError, match=r"test_efficientnet .*test_resnet"):
        load_head(tmp_path / "h", store=other)
    wide = write_store(tmp_path / "wide.h5", dim=24)
    with pytest.raises(FeatxError, match="expects 16-dim features .* 24-dim"):
        load_head(tmp_path / "h", store=wide)
    head = load_head(tmp_path / "h")
    with pytest.raises(FeatxUsageError, match=r"\(n, 16\)"):
        head.predict(np.zeros((2, 24)))
    with pytest.raises(FeatxUsageError, match="not a saved head"):
        load_head(tmp_path)
