"""FeatureExtractor follows the scikit-learn transformer contract and caches embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import featx
from featx import FeatureExtractor


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (12, 20, 20, 3), dtype=np.uint8)
    y = np.arange(12) % 2
    x[y == 1, :, :, 0] = 255
    return x, y


def tiny(**kwargs):
    return FeatureExtractor("test_efficientnet", weights="random", **kwargs)


def test_contract(images):
    x, _ = images
    est = tiny()
    assert est.get_params()["backbone"] == "test_efficientnet" and not hasattr(est, "model_")
    with pytest.raises(NotFittedError):
        est.transform(x)
    assert est.fit(x) is est
    out = est.transform(x)
    assert out.shape == (12, 256) and out.dtype == np.float32 and est.n_features_out_ == 256
    assert clone(est).get_params() == est.get_params()
    assert est.get_feature_names_out().shape == (256,)


def test_paths_and_arrays_give_the_same_embeddings(image_folder):
    src = featx.open_source(image_folder)
    paths = [str(image_folder / i) for i in src.ids]
    arrays = np.stack([np.asarray(src.load(i)) for i in range(len(src))])
    est = tiny().fit(None)
    np.testing.assert_allclose(est.transform(paths), est.transform(arrays), rtol=1e-5, atol=1e-6)


def test_matches_the_feature_store(image_folder, tiny_spec, tmp_path):
    store = featx.extract(image_folder, tiny_spec, tmp_path / "f.h5", quiet=True)
    paths = [str(image_folder / i) for i in store.ids]
    np.testing.assert_allclose(tiny().fit(None).transform(paths), store.features, rtol=1e-4, atol=1e-5)


def test_cache_reuses_embeddings(images, tmp_path, monkeypatch):
    x, _ = images
    est = tiny(cache=str(tmp_path / "cache.h5")).fit(x)
    first = est.transform(x)
    monkeypatch.setattr(FeatureExtractor, "_embed", lambda self, items: (_ for _ in ()).throw(AssertionError("ran")))
    np.testing.assert_array_equal(est.transform(x[::-1]), first[::-1])


def test_bad_inputs(tmp_path):
    est = tiny().fit(None)
    with pytest.raises(featx.FeatxUsageError):
        est.transform(np.zeros((2, 8, 8), dtype=np.float32))
    (tmp_path / "bad.png").write_bytes(b"")
    with pytest.raises(featx.FeatxError, match="bad image .*bad.png"):
        est.transform([str(tmp_path / "bad.png")])


def test_grid_search_in_a_pipeline(images, tmp_path):
    x, y = images
    pipe = Pipeline([("features", tiny(cache=str(tmp_path / "c.h5"))), ("head", LogisticRegression(max_iter=500))])
    search = GridSearchCV(pipe, {"head__C": [0.1, 10.0]}, cv=3).fit(x, y)
    assert search.best_params_["head__C"] in (0.1, 10.0)
    assert search.predict(x).shape == (12,)
