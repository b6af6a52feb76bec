"""A view added to an existing store (only the mirror pass runs) and used at train time, test time or both."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import featx
from featx.cli import cli
from featx.extraction import view_path
from featx.heads import train_heads

from .conftest import write_image_folder

KW = {"batch_size": 16, "workers": 0, "quiet": True, "crop_pct": 1.0}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    folder = write_image_folder(root / "img", n_per_class=12, classes=("r", "g", "b"), size=(20, 18))
    spec = featx.resolve_backbone("test_efficientnet", weights="random")
    plain = featx.extract(folder, spec, root / "a.h5", layers="-1", **KW)
    both = featx.extract(folder, spec, root / "both.h5", layers="-1", views="hflip", **KW)  # the all-at-once store
    return folder, spec, root, plain, both


def test_hflip_on_an_existing_store_runs_only_the_mirror_pass(stores, monkeypatch):
    folder, spec, root, plain, both = stores
    before = (root / "a.h5").read_bytes()
    source = featx.data.open_source(folder)
    read = []
    real = type(source).load_item
    monkeypatch.setattr(type(source), "load_item", lambda self, i: (read.append(i), real(self, i))[1])
    store = featx.extract(folder, spec, root / "a.h5", layers="-1", views="hflip", **KW)
    assert sorted(read) == list(range(len(source)))  # one pass over the images
    assert (root / "a.h5").read_bytes() == before and store.path == root / "a.h5"  # the store is not rewritten
    mirror = featx.FeatureStore(view_path(root / "a.h5"))
    assert mirror.config["features"]["views"] == ["mirror"]
    # plain and mirror averaged are what a store extracted with both views holds, set by set.
    for name in ("pooled", plain.feature_sets[1]["name"]):
        np.testing.assert_allclose(0.5 * (plain.feature_set(name) + mirror.feature_set(name)), both.feature_set(name),
                                   rtol=1e-4, atol=1e-5)
    read.clear()
    featx.extract(folder, spec, root / "a.h5", layers="-1", views="hflip", **KW)
    assert read == []  # added once: a rerun reuses it


def test_a_store_of_another_config_is_still_refused(stores):
    folder, spec, root, _, _ = stores
    with pytest.raises(featx.FeatxError, match="different config"):
        featx.extract(folder, spec, root / "a.h5", layers="-1", views="hflip", **{**KW, "crop_pct": 0.9})


def test_views_at_train_test_or_both_average_those_rows_and_are_keyed(stores, tmp_path):
    folder, spec, root, plain, both = stores
    featx.extract(folder, spec, root / "a.h5", layers="-1", views="hflip", **KW)
    rows = {}
    for mode in (None, "train", "test", "both"):
        rows[mode] = train_heads(root / "a.h5", ["logreg"], out=tmp_path / str(mode), views=mode, n_boot=100)[0]
    assert len({r["store_id"] for r in rows.values()}) == 4  # the mode is part of the key
    assert rows["test"]["views"] == "test" and "views" not in rows[None]
    assert rows["both"]["extract_seconds"] > plain.run_info["extract_seconds_total"]  # the mirror pass is costed
    from featx.heads import FeatureSet, resolve_splits, with_views

    split, _ = resolve_splits(plain, None, 0, 0.1, 0.2)  # the split train_heads draws
    fs = FeatureSet([plain], [["pooled"]])
    viewed = {m: with_views(plain, split, m).features for m in ("train", "test", "both")}
    np.testing.assert_allclose(viewed["both"], both.features, rtol=1e-4, atol=1e-5)
    train = np.isin(split, ["train"])
    assert np.array_equal(viewed["train"][~train], fs.features[~train])
    assert np.array_equal(viewed["test"][train], fs.features[train])
    assert not np.allclose(viewed["train"][train], fs.features[train])


def test_train_views_without_the_view_is_one_line_usage_error(tmp_path, stores):
    folder, spec, root, _, both = stores
    result = CliRunner().invoke(cli, ["train", "--features", str(root / "both.h5"), "--views", "test", "--out",
                                      str(tmp_path / "r"), "-q"])
    assert result.exit_code == 2 and "has no hflip view" in result.output and "Traceback" not in result.output


PIPE = """
name: v
source: {{path: {path}, val_fraction: 0.25, test_fraction: 0.25}}
backbones:
  - {{name: test_efficientnet, weights: random, batch_size: 16, workers: 0, crop_pct: 1.0}}
heads: [logreg]
raw_pixels: {{size: 8, heads: [logreg]}}
views: {mode}
"""


def test_pipeline_views_key_adds_the_view_and_keys_the_heads(stores, tmp_path):
    import json
    import textwrap

    folder = stores[0]
    rows = {}
    for mode in ("test", "both"):
        path = tmp_path / f"{mode}.yaml"
        path.write_text(textwrap.dedent(PIPE.format(path=folder, mode=mode)).lstrip())
        run = featx.run_pipeline(path, out=tmp_path / "o", quiet=True)
        assert not run.failed, [(s.title, s.error) for s in run.failed]
        rows[mode] = json.loads((tmp_path / "o" / "results.json").read_text())
    assert list((tmp_path / "o").rglob("*.view-hflip.h5"))  # the view was added beside the store
    views = {r.get("views") for r in rows["both"] if r.get("kind") == "head"}
    assert "both" in views and None in views  # the raw-pixel control has no views
    with pytest.raises(featx.FeatxUsageError, match="views"):
        featx.load_pipeline(path, overrides=["views=sideways"])


def test_pipeline_views_with_a_backbone_views_is_refused_at_load(tmp_path):
    # The backbone's views average the mirror into the features; the pipeline's keep it apart for
    # the heads. Together they used to fail at the first head, after the extraction.
    path = tmp_path / "p.yaml"
    path.write_text("source: digits\nbackbones:\n  - {name: test_efficientnet, weights: random, views: hflip}\n"
                    "heads: [logreg]\nviews: both\n")
    with pytest.raises(featx.FeatxUsageError, match=r"p\.yaml:3: backbones\[0\]\.views: cannot be combined"):
        featx.load_pipeline(path)
    path.write_text(path.read_text().replace("views: both\n", ""))
    assert featx.load_pipeline(path).backbones[0]["views"] == ["hflip"]
