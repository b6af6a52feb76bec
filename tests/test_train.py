"""train_heads / evaluate: the selection protocol, splits, few-shot draws, results files, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from featx import FeatxError, FeatxUsageError, evaluate_head, train_heads
from featx.cli import cli
from featx.data._splits import load_splits
from featx.heads._search import rank_candidates
from featx.heads._train import PATH_PATIENCE, select_and_fit, training_rows
from tests._head_stores import CLASSES, write_store

CONTRACT = ("kind", "head", "mode", "backbone", "weights", "store_id", "dim", "per_class", "seeds", "n_train", "n_val",
            "n_test", "splits_digest", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "balanced_accuracy",
            "per_class_metrics", "confusion_matrix", "class_names", "seed_summary", "fit_seconds",
            "predict_seconds_per_1k", "params", "versions", "created")
FAST = {"random_forest": {"n_estimators": 30}, "gradient_boosting": {"pca": None, "max_iter": 40},
        "xgboost": {"pca": 8, "n_estimators": 60}, "knn": {"pca": 8}, "decision_tree": {"pca": None}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("stores") / "plain.h5")


@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    """Every head trained once into one results directory."""
    out = tmp_path_factory.mktemp("run")
    heads = ["logreg", "linear_svm", "knn", "decision_tree", "random_forest", "gradient_boosting", "xgboost"]
    entries = train_heads(store, heads=heads, params=FAST, out=out, n_boot=200)
    return out, entries


def test_every_head_end_to_end(run, store):
    out, entries = run
    assert [e["head"] for e in entries] == ["logreg", "linear_svm", "knn", "decision_tree", "random_forest",
                                            "gradient_boosting", "xgboost"]
    for entry in entries:
        assert set(CONTRACT) <= set(entry), entry["head"]
        assert entry["kind"] == "head" and entry["mode"] is None and entry["store_id"] == store.store_id
        assert entry["dim"] == 16 and entry["class_names"] == list(CLASSES)
        assert entry["n_train"] + entry["n_val"] + entry["n_test"] == 240
        assert entry["accuracy_ci"][0] <= entry["accuracy"] <= entry["accuracy_ci"][1]
        assert entry["fit_seconds"] > 0 and entry["predict_seconds_per_1k"] > 0
        assert entry["accuracy"] > 0.6, entry["head"]  # separable classes, chance is 1/3
        assert (out / entry["head"] / "manifest.json").is_file() and (out / entry["head"] / "result.json").is_file()
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(entries))
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["head"] for r in rows] == [e["head"] for e in entries]
    assert (out / "results.md").read_text().startswith("| head |")
    config = json.loads((out / "config.json").read_text())
    assert config["store_id"] == store.store_id and "sklearn" in config["versions"] and "xgboost" in config["versions"]
    boosted = {e["head"]: e["params"] for e in entries}
    assert 1 <= boosted["xgboost"]["n_estimators"] <= 60 and 1 <= boosted["gradient_boosting"]["max_iter"] <= 40


def test_logreg_path_is_chosen_on_val_and_stops_after_the_peak(store):
    # The 45-point walk (featx's reference selection since the coarse-to-fine search is the default).
    import dataclasses

    from featx.heads import get_head

    split, _ = store.split_assignment()
    X, y = store.features, store.labels
    rows = training_rows(store.ids, y, split, None, 0)
    model, record = select_and_fit(dataclasses.replace(get_head("logreg"), selection="path"), (X[rows["train"]], y[rows["train"]]), (X[rows["val"]], y[rows["val"]]),
                                   (X[rows["refit"]], y[rows["refit"]]), protocol="val")
    trace = record["candidates"]
    walked = [t["params"]["C"] for t in trace]
    assert walked == sorted(walked)  # strong to weak regularisation
    accs = [t["val_accuracy"] for t in trace]
    best = rank_candidates(trace)  # the most accurate, the lowest val loss among those
    assert record["params"]["C"] == walked[best] and record["val_accuracy"] == max(accs)
    assert record["method"] == "val" and record["loss"] == min(t["val_loss"] for t in trace if t["val_accuracy"] == max(accs))
    assert len(trace) == 45 or len(trace) - 1 - best == PATH_PATIENCE
    chosen = model[-1]
    assert chosen.get_params()["C"] == walked[best]
    assert not chosen.warm_start
    # The refit saw train+val.
    assert model[0].n_samples_seen_ == rows["refit"].sum() > rows["train"].sum()


def test_splits_are_recorded_and_reused(store, run, tmp_path):
    out, entries = run
    split, _ = store.split_assignment()
    np.testing.assert_array_equal(load_splits(out / "splits.json", store.ids), split)
    again = train_heads(store, heads=["logreg"], splits=out / "splits.json", out=tmp_path / "again", n_boot=200)
    assert again[0]["splits_digest"] == entries[0]["splits_digest"]
    assert again[0]["accuracy"] == entries[0]["accuracy"]
    # Another split into the same directory would mix results of different test sets.
    with pytest.raises(FeatxUsageError, match="another split"):
        train_heads(store, heads=["logreg"], out=out, split_seed=5, n_boot=200)


def test_source_splits_are_kept(tmp_path):
    n = 240
    splits = ["test" if i % 4 == 0 else "train" for i in range(n)]
    store = write_store(tmp_path / "split.h5", n=n, splits=splits)
    entry = train_heads(store, heads=["logreg"], n_boot=200)[0]
    assert entry["n_test"] == n // 4  # the source's own test split, untouched
    assert entry["n_val"] > 0 and "val carved from train" in entry["split_rule"]["rule"]


def test_few_shot_draws_from_train_only_and_repeat(store):
    split, _ = store.split_assignment()
    ids, y = store.ids, store.labels
    full = training_rows(ids, y, split, None, 0)
    few = training_rows(ids, y, split, 4, 0)
    assert np.all(split[few["train"]] == "train")
    assert np.bincount(y[few["train"]]).tolist() == [4, 4, 4]
    np.testing.assert_array_equal(few["val"], full["val"])
    np.testing.assert_array_equal(few["test"], full["test"])
    np.testing.assert_array_equal(few["refit"], few["train"])  # val is for selection only
    np.testing.assert_array_equal(training_rows(ids, y, split, 4, 0)["train"], few["train"])
    assert not np.array_equal(training_rows(ids, y, split, 4, 1)["train"], few["train"])

    entries = train_heads(store, heads=["logreg"], per_class=4, seeds=2, n_boot=200)
    again = train_heads(store, heads=["logreg"], per_class=4, seeds=[0], n_boot=200)
    entry = entries[0]
    assert entry["n_train"] == 12 and entry["n_val"] == full["val"].sum() and entry["seeds"] == [0, 1]
    assert entry["per_class"] == 4 and entry["refit_on"] == "train"
    assert entry["seed_summary"]["accuracy"]["n"] == 2
    assert again[0]["accuracy"] == entry["accuracy"]  # same seed, same draw, same model


def test_evaluate_reproduces_every_saved_head(run, store, tmp_path):
    out, entries = run
    for trained in entries:
        entry = evaluate_head(out / trained["head"], store, n_boot=200)
        assert entry["splits_digest"] == trained["splits_digest"]
        assert entry["confusion_matrix"] == trained["confusion_matrix"], trained["head"]
        assert entry["accuracy"] == trained["accuracy"] and entry["macro_f1"] == trained["macro_f1"]
    other = write_store(tmp_path / "resnet.h5", backbone="test_resnet")
    with pytest.raises(FeatxError, match="test_efficientnet.*test_resnet"):
        evaluate_head(out / "logreg", other)


def test_cli_exit_codes(store, run, tmp_path):
    out, _ = run
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--features", str(store.path), "--heads", "logreg,knn", "--param", "knn.pca=8",
                                 "--out", str(tmp_path / "cli"), "--bootstrap", "200", "-q"])
    assert result.exit_code == 0, result.output
    assert "logreg" in result.output and (tmp_path / "cli" / "knn" / "manifest.json").is_file()
    result = runner.invoke(cli, ["evaluate", "--model", str(out / "knn"), "--features", str(store.path)])
    assert result.exit_code == 0 and "accuracy" in result.output, result.output
    usage = [
        ["train", "--features", str(store.path), "--heads", "lgoreg", "--out", str(tmp_path / "x")],
        ["train", "--features", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "x")],
        ["train", "--features", str(store.path), "--heads", "knn", "--param", "knn.bogus=1", "--out", str(tmp_path / "x")],
        ["evaluate", "--model", str(tmp_path), "--features", str(store.path)],
    ]
    for args in usage:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    other = write_store(tmp_path / "resnet.h5", backbone="test_resnet")
    result = runner.invoke(cli, ["evaluate", "--model", str(out / "knn"), "--features", str(other.path)])
    assert result.exit_code == 1 and "test_resnet" in result.output


def test_pca_is_capped_on_tiny_training_sets():
    from featx.heads._train import select_and_fit

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 200)), np.arange(30) % 3
    model, record = select_and_fit("decision_tree", (X[:12], y[:12]), (X[12:], y[12:]), (X, y), protocol="val")
    assert record["params"]["pca"] == 12
    assert model.predict(X).shape == (30,)
    # With 6 val items per class the choice is by 5-fold CV on all 30 rows: capped to a fold's 24.
    model, record = select_and_fit("decision_tree", (X[:12], y[:12]), (X[12:], y[12:]), (X, y))
    assert record["method"] == "cv" and record["folds"] == 5 and record["params"]["pca"] == 24
