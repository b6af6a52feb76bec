"""The raw-pixel control (issue 12): its store, its heads on digits, its place in every pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from featx import FeatxUsageError
from featx.cli import cli
from featx.data import assign_splits, open_source, splits_digest
from featx.extraction import RAW_PIXELS, extract_raw_pixels
from featx.heads import train_heads
from featx.pipeline import load_pipeline
from tests.conftest import write_image_folder


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits_pixels(tmp_path_factory):
    return extract_raw_pixels("digits", tmp_path_factory.mktemp("raw") / "raw.h5", size=8)


def test_raw_pixel_store_holds_the_source_items_downsampled(digits_pixels, tmp_path):
    source = open_source("digits")
    store = digits_pixels
    assert store.complete and store.backbone == RAW_PIXELS and store.dim == 8 * 8 * 3
    assert list(store.ids) == list(source.ids) and np.array_equal(store.labels, source.labels)
    assert store.features.min() >= 0.0 and store.features.max() <= 1.0
    again = extract_raw_pixels("digits", store.path, size=8)
    assert again.reused and again.store_id == store.store_id
    with pytest.raises(FeatxUsageError, match="1..256"):
        extract_raw_pixels("digits", tmp_path / "bad.h5", size=0)


def test_raw_pixels_on_digits_beat_chance_by_far_on_the_shared_split(digits_pixels):
    entries = train_heads(digits_pixels, heads=["logreg", "rbf_svm"], n_boot=100)
    by_head = {e["head"]: e for e in entries}
    assert by_head["logreg"]["accuracy"] > 0.85 and by_head["rbf_svm"]["accuracy"] > 0.85  # chance: 0.1
    assert all(e["backbone"] == RAW_PIXELS for e in entries)
    # The very split a backbone's store or the fine-tune computes from the source itself.
    source = open_source("digits")
    split, _ = assign_splits(source.ids, source.labels, [i.split for i in source.items], seed=0)
    assert by_head["logreg"]["splits_digest"] == splits_digest(source.ids, split)


def test_raw_pixels_key_is_validated_and_on_by_default(tmp_path):
    base = {"source": "digits", "backbones": ["test_efficientnet"], "heads": ["logreg"]}
    assert load_pipeline(base).raw_pixels == {"size": 16, "heads": [
        {"name": "logreg", "label": "logreg", "params": {}}, {"name": "rbf_svm", "label": "rbf_svm", "params": {}}]}
    assert load_pipeline({**base, "raw_pixels": False}).raw_pixels is None
    with pytest.raises(FeatxUsageError, match=r"raw_pixels\.size: must be a whole number"):
        load_pipeline({**base, "raw_pixels": {"size": 0}})
    with pytest.raises(FeatxUsageError, match="unknown head 'svc'"):
        load_pipeline({**base, "raw_pixels": {"heads": ["svc"]}})


def test_pipeline_reports_the_control_beside_the_backbone(tmp_path):
    images = write_image_folder(tmp_path / "images", n_per_class=10, classes=("red", "green", "blue"), size=(32, 32))
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump({
        "name": "ctl", "source": {"path": str(images)},
        "backbones": [{"name": "test_efficientnet", "weights": "random", "label": "tiny"}], "heads": ["logreg"],
        "raw_pixels": {"size": 8, "heads": ["logreg"]}, "device": "cpu", "out": str(tmp_path / "out"),
    }))
    result = CliRunner().invoke(cli, ["run", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    entries = json.loads((tmp_path / "out" / "results.json").read_text())
    control = [e for e in entries if e.get("control") == "raw_pixels"]
    assert len(control) == 1 and control[0]["backbone"] == RAW_PIXELS and control[0]["dim"] == 192
    assert len({e["splits_digest"] for e in entries}) == 1  # same test split as the backbone's heads
    report = (tmp_path / "out" / "report.md").read_text()
    assert "raw pixels (control)" in report
    again = CliRunner().invoke(cli, ["run", str(config)])
    assert again.exit_code == 0 and "raw pixels 8x8 (control): cached" in again.output
