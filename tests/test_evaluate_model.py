"""``featx evaluate --source``: any saved model, a fine-tune included, re-scored from the images of the
test split it was scored on; another source (whose split differs) is refused, not scored."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from featx import evaluate_model, extract, finetune, train_heads
from featx.cli import cli
from featx.core.errors import FeatxUsageError

from .conftest import write_image_folder

FAST = {"image_size": 32, "batch_size": 8, "workers": 0, "n_boot": 50, "quiet": True, "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("evaluate")
    images = write_image_folder(root / "images", n_per_class=10, classes=("r", "g", "b"))
    tuned = finetune(str(images), tiny_spec, root / "ft", mode="linear", epochs=1, **FAST)
    store = extract(str(images), tiny_spec, root / "f.h5", quiet=True, workers=0)
    head = train_heads(store, ["logreg"], out=root / "heads", n_boot=50)[0]
    return {"root": root, "images": images, "finetune": tuned, "head": head}


def test_a_fine_tune_is_evaluated_on_its_own_test_split_from_the_images(trained):
    entry = evaluate_model(trained["root"] / "ft" / "model", str(trained["images"]), n_boot=50, device="cpu")
    recorded = trained["finetune"]
    assert entry["kind"] == "finetune" and entry["splits_digest"] == recorded["splits_digest"]
    assert entry["n_test"] == recorded["n_test"] and entry["accuracy"] == pytest.approx(recorded["accuracy"])


def test_a_head_is_evaluated_from_the_images_as_it_scored_on_features(trained):
    entry = evaluate_model(trained["root"] / "heads" / "logreg", str(trained["images"]), n_boot=50, device="cpu")
    assert entry["n_test"] == trained["head"]["n_test"]
    assert entry["accuracy"] == pytest.approx(trained["head"]["accuracy"])


def test_cli_evaluate_takes_a_source_and_says_what_a_fine_tune_needs(trained):
    runner = CliRunner()
    model = str(trained["root"] / "ft" / "model")
    ok = runner.invoke(cli, ["evaluate", "--model", model, "--source", str(trained["images"]), "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert f"({trained['finetune']['n_test']} test items): accuracy" in ok.output
    on_features = runner.invoke(cli, ["evaluate", "--model", model, "--features", str(trained["root"] / "f.h5")])
    assert on_features.exit_code == 2 and "is a fine-tune: it reads images" in on_features.output
    neither = runner.invoke(cli, ["evaluate", "--model", model])
    assert neither.exit_code == 2 and "--features STORE" in neither.output


def test_another_source_is_refused_not_scored_on_another_split(trained, tmp_path):
    other = tmp_path / "images"
    shutil.copytree(trained["images"], other)
    shutil.copy(other / "r" / "000.png", other / "g" / "extra.png")  # one more item: another split
    with pytest.raises(FeatxUsageError, match="not the one .* was scored on"):
        evaluate_model(trained["root"] / "ft" / "model", str(other), device="cpu")


def test_a_head_of_a_per_class_subset_store_is_evaluated_on_the_same_subset(trained, tiny_spec, tmp_path):
    # The row records the store's subset, so the source is drawn the same way before its split.
    store = extract(str(trained["images"]), tiny_spec, tmp_path / "sub.h5", quiet=True, workers=0, per_class=6)
    head = train_heads(store, ["logreg"], out=tmp_path / "heads", n_boot=50)[0]
    assert head["store_subset"] == {"per_class": 6, "seed": 0}
    entry = evaluate_model(tmp_path / "heads" / "logreg", str(trained["images"]), n_boot=50, device="cpu")
    assert entry["splits_digest"] == head["splits_digest"] and entry["n_test"] == head["n_test"]
    assert entry["accuracy"] == pytest.approx(head["accuracy"])
