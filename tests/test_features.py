"""Extraction options of issue 12: extra layers (one forward pass), the hflip view, preprocessing overrides."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import featx
from featx import ArraySource, FeatureStore, FeatxUsageError, StoreMismatchError, extract
from featx.cli import cli
from featx.extraction import FeatureRecipe, create_backbone, embed_batch, make_eval_transform

# 32 px images with img_size 32 and crop_pct 1.0: the eval transform neither resizes nor crops,
# so a mirrored source image is exactly a mirrored input tensor.
FAST = {"img_size": 32, "crop_pct": 1.0, "quiet": True, "batch_size": 4}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)


def _source(images, name="arr"):
    return ArraySource(images, labels=[i % 2 for i in range(len(images))], name=name)


def _model_and_batch(spec, store, images):
    model, _ = create_backbone(spec)
    dc = {k: tuple(v) if isinstance(v, list) else v for k, v in store.config["data_config"].items()}
    transform = make_eval_transform(dc)
    src = _source(images)
    return model, torch.stack([transform(src.load(i)) for i in range(len(src))])


def test_layer_sets_equal_separate_forward_intermediates(tmp_path, tiny_spec, images):
    store = extract(_source(images), tiny_spec, tmp_path / "l.h5", layers="-1,-2", **FAST)
    names = [s["name"] for s in store.feature_sets]
    assert names == ["pooled", "layer4", "layer3"]
    model, batch = _model_and_batch(tiny_spec, store, images)
    with torch.inference_mode():
        pooled = model(batch).numpy()
        _, maps = model.forward_intermediates(batch, indices=[3, 4])
    np.testing.assert_allclose(store.features, pooled, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(store.feature_set("layer3"), maps[0].mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(store.feature_set("layer4"), maps[1].mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    assert store.config["features"] == {"layers": [-1, -2], "views": []}


def test_layers_cost_one_forward_pass_per_batch(tmp_path, tiny_spec, images, monkeypatch):
    from timm.models.efficientnet import EfficientNet

    calls = {"forward": 0, "intermediates": 0}
    forward, intermediates = EfficientNet.forward, EfficientNet.forward_intermediates

    def count(name, original):
        def wrapped(self, *args, **kwargs):
            calls[name] += 1
            return original(self, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(EfficientNet, "forward", count("forward", forward))
    monkeypatch.setattr(EfficientNet, "forward_intermediates", count("intermediates", intermediates))
    extract(_source(images), tiny_spec, tmp_path / "c.h5", layers="-1,-3", **FAST)
    batches = -(-len(images) // FAST["batch_size"])
    # One pass per batch, plus one on a blank image that measures each set's width.
    assert calls == {"forward": 0, "intermediates": batches + 1}


def test_embed_batch_counts_and_hflip_is_the_mean_of_both_views(tiny_spec):
    model, _ = create_backbone(tiny_spec)
    x = torch.randn(3, 3, 32, 32)
    plain = embed_batch(model, x, FeatureRecipe.create("-1", None))
    mirrored = embed_batch(model, torch.flip(x, dims=[3]), FeatureRecipe.create("-1", None))
    both = embed_batch(model, x, FeatureRecipe.create("-1", "hflip"))
    for name in ("pooled", "layer4"):
        torch.testing.assert_close(both[name], 0.5 * (plain[name] + mirrored[name]))
    assert not torch.allclose(plain["pooled"], mirrored["pooled"])  # the view changes something


def test_hflip_store_is_mean_of_image_and_mirror_stores(tmp_path, tiny_spec, images):
    plain = extract(_source(images), tiny_spec, tmp_path / "p.h5", **FAST)
    mirror = extract(_source(images[:, :, ::-1].copy()), tiny_spec, tmp_path / "m.h5", **FAST)
    both = extract(_source(images), tiny_spec, tmp_path / "h.h5", views="hflip", **FAST)
    np.testing.assert_allclose(both.features, 0.5 * (plain.features + mirror.features), rtol=1e-4, atol=1e-5)
    assert both.config["features"] == {"layers": [], "views": ["hflip"]}
    assert both.store_id != plain.store_id
    # On the plain store the view is added beside it (only the mirror pass; tests/test_views.py), not refused.
    assert extract(_source(images), tiny_spec, tmp_path / "p.h5", views="hflip", **FAST).store_id == plain.store_id
    assert (tmp_path / "p.view-hflip.h5").is_file()


def test_preprocessing_overrides_change_data_config_and_key(tmp_path, tiny_spec, images):
    default = extract(_source(images), tiny_spec, tmp_path / "d.h5", quiet=True, batch_size=5)
    assert "preprocessing" not in default.config and "features" not in default.config
    assert default.config["data_config"]["input_size"] == [3, 160, 160]
    custom = extract(_source(images), tiny_spec, tmp_path / "o.h5", img_size=48, crop_pct=1.0,
                     interpolation="bilinear", quiet=True, batch_size=5)
    dc = custom.config["data_config"]
    assert (dc["input_size"], dc["crop_pct"], dc["interpolation"]) == ([3, 48, 48], 1.0, "bilinear")
    assert custom.config["preprocessing"] == {"img_size": 48, "crop_pct": 1.0, "interpolation": "bilinear"}
    assert custom.store_id != default.store_id
    # The same options reuse the store; other ones are refused with what differs.
    again = extract(_source(images), tiny_spec, tmp_path / "o.h5", img_size=48, crop_pct=1.0, interpolation="bilinear",
                    quiet=True)
    assert again.reused
    with pytest.raises(StoreMismatchError, match="crop_pct"):
        extract(_source(images), tiny_spec, tmp_path / "o.h5", img_size=48, crop_pct=0.9, interpolation="bilinear",
                quiet=True)
    # Automatic store names tell the options apart.
    src = _source(images)
    assert featx.extraction.default_store_path(src, tiny_spec) != featx.extraction.default_store_path(
        src, tiny_spec, extra=custom.config["preprocessing"])


def test_resume_fills_the_extra_sets(tmp_path, tiny_spec, images):
    path = tmp_path / "r.h5"
    whole = extract(_source(images), tiny_spec, tmp_path / "w.h5", layers="-2", views="hflip", **FAST)
    extract(_source(images), tiny_spec, path, layers="-2", views="hflip", **FAST)
    with h5py.File(path, "r+") as h5:  # as if killed after the first batch
        h5["status"][4:] = 0
        h5["features"][4:] = 0
        h5["feature_sets"]["layer3"][4:] = 0
        h5.attrs["complete"] = False
    assert not FeatureStore(path).complete
    resumed = extract(_source(images), tiny_spec, path, layers="-2", views="hflip", **FAST)
    assert resumed.complete and not resumed.reused
    np.testing.assert_array_equal(resumed.feature_set("layer3"), whole.feature_set("layer3"))
    np.testing.assert_array_equal(resumed.features, whole.features)
    from featx.store import verify_store

    assert "feature_sets/layer3" in verify_store(path).checked  # the extra sets are checksummed and verified


def test_bad_layer_and_view_options_are_usage_errors(tmp_path, tiny_spec, images):
    with pytest.raises(FeatxUsageError, match="out of range"):
        extract(_source(images), tiny_spec, tmp_path / "x.h5", layers="7", **FAST)
    with pytest.raises(FeatxUsageError, match="not a layer index"):
        extract(_source(images), tiny_spec, tmp_path / "x.h5", layers="-1,top", **FAST)
    with pytest.raises(FeatxUsageError, match="unknown view"):
        extract(_source(images), tiny_spec, tmp_path / "x.h5", views="vflip", **FAST)
    with pytest.raises(FeatxUsageError, match="crop_pct"):
        extract(_source(images), tiny_spec, tmp_path / "x.h5", crop_pct=1.5, quiet=True)
    assert not (tmp_path / "x.h5").exists()


def test_cli_extract_layers_and_info_lists_sets(tmp_path):
    runner = CliRunner()
    out = tmp_path / "d.h5"
    args = ["extract", "--source", "digits", "--backbone", "test_efficientnet", "--weights", "random", "--out", str(out),
            "--img-size", "32", "--crop-pct", "1.0", "--batch-size", "64", "--quiet"]
    bad = runner.invoke(cli, [*args, "--layers", "-9"])
    assert bad.exit_code == 2 and "out of range" in bad.output and "Traceback" not in bad.output
    token = runner.invoke(cli, [*args, "--layers", "-1", "--pooling", "token"])
    assert token.exit_code == 2 and "--layers" in token.output
    result = runner.invoke(cli, [*args, "--layers", "-1", "--views", "hflip"])
    assert result.exit_code == 0, result.output
    info = runner.invoke(cli, ["info", str(out), "--json"])
    sets = json.loads(info.output)["feature_sets"]
    assert [(s["name"], s["layer"]) for s in sets] == [("pooled", None), ("layer4", 4)]
    assert sets[1]["dim"] == FeatureStore(out).feature_set("layer4").shape[1]
    text = runner.invoke(cli, ["info", str(out)]).output
    assert "layer4" in text and "hflip" in text and "32px" in text
