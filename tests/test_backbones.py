"""Weights routes: offline package checkpoints, local files, the hub (offline error), random."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import featx
from featx import FeatxError, FeatxUsageError, create_backbone, resolve_backbone

from .conftest import SHARED

# timm's ImageNet class indices.
EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO = 285, 281, 282, 967


def _classify(model, data_config, image: np.ndarray) -> int:
    from PIL import Image

    from featx.extraction import make_eval_transform

    x = make_eval_transform(data_config)(Image.fromarray(image)).unsqueeze(0)
    with torch.inference_mode():
        return int(model(x).argmax(1))


@pytest.fixture(scope="module")
def photos():
    skimage_data = pytest.importorskip("skimage.data")
    return {"chelsea": skimage_data.chelsea(), "coffee": skimage_data.coffee()}


def test_offline_efficientnet_lite0_predicts_real_imagenet_classes(photos):
    spec = resolve_backbone("efficientnet_lite0")
    assert spec.weights_kind == "offline" and spec.offline.name == "efficientnet_lite0.offline_in1k"
    model, data_config = create_backbone(spec, num_classes=None)
    assert data_config["mean"] == (0.5, 0.5, 0.5) and data_config["input_size"] == (3, 224, 224)
    # With featx's eval transform (resize + 87.5% centre crop) Chelsea is a tabby /
    # tiger / Egyptian cat by a small margin between those three; any of them is right.
    assert _classify(model, data_config, photos["chelsea"]) in (EGYPTIAN_CAT, TABBY, TIGER_CAT)
    assert _classify(model, data_config, photos["coffee"]) == ESPRESSO
    # The upstream check squashes the whole photo to 224x224: there it is "Egyptian cat".
    from PIL import Image

    squashed = np.asarray(Image.fromarray(photos["chelsea"]).resize((224, 224), Image.BILINEAR), dtype=np.float32)
    x = torch.from_numpy((squashed / 255.0 - 0.5) / 0.5).permute(2, 0, 1).unsqueeze(0)
    with torch.inference_mode():
        assert int(model(x).argmax(1)) == EGYPTIAN_CAT


def test_mobilenetv2_coral_file_gets_its_padding_and_normalisation(photos):
    path = SHARED / "weights" / "mobilenetv2_100.coral_in1k.pth"
    if not path.exists():
        pytest.skip("../shared/weights/mobilenetv2_100.coral_in1k.pth is not present")
    spec = resolve_backbone("mobilenetv2_100", weights=path)
    assert spec.offline is not None and spec.model_kwargs == {"pad_type": "same"}
    model, data_config = create_backbone(spec, num_classes=None)
    assert data_config["mean"] == (0.5, 0.5, 0.5)
    assert _classify(model, data_config, photos["chelsea"]) in (EGYPTIAN_CAT, TABBY, TIGER_CAT)
    assert _classify(model, data_config, photos["coffee"]) == ESPRESSO


def test_embedding_is_the_pooled_pre_logits():
    model, data_config = create_backbone("efficientnet_lite0")
    with torch.inference_mode():
        out = model(torch.zeros(2, *data_config["input_size"]))
    assert out.shape == (2, 1280)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_checkpoint_file_loads_strictly(tmp_path, suffix):
    reference, _ = create_backbone("test_efficientnet", weights="random", num_classes=None)
    state = {k: v + 0.01 if v.is_floating_point() else v.clone() for k, v in reference.state_dict().items()}
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)
    else:
        save_file(state, str(path))
    spec = resolve_backbone("test_efficientnet", weights=path)
    assert spec.weights_kind == "file" and len(spec.identity()["weights"]["sha256"]) == 64
    model, _ = create_backbone(spec)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_headless_checkpoint_loads_into_the_embedding_model(tmp_path):
    body, _ = create_backbone("test_efficientnet", weights="random")
    torch.save(body.state_dict(), tmp_path / "body.pth")
    model, _ = create_backbone("test_efficientnet", weights=tmp_path / "body.pth")
    assert set(model.state_dict()) == set(body.state_dict())


def test_checkpoint_that_does_not_fit_lists_the_keys(tmp_path):
    model, _ = create_backbone("test_efficientnet", weights="random", num_classes=None)
    state = model.state_dict()
    state.pop("conv_stem.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(FeatxError, match="missing keys: conv_stem.weight.*unexpected keys: extra.weight"):
        create_backbone("test_efficientnet", weights=tmp_path / "bad.pth")


def test_unreadable_checkpoint(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FeatxError, match="cannot read weights"):
        create_backbone("test_efficientnet", weights=tmp_path / "junk.pth")


def test_pickled_objects_are_refused(tmp_path):
    import collections

    torch.save({"state_dict": collections.Counter(a=1)}, tmp_path / "evil.pth")
    with pytest.raises(FeatxError, match="cannot read weights|state dict of tensors"):
        create_backbone("test_efficientnet", weights=tmp_path / "evil.pth")


def test_hub_route_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FeatxError, match="from the hub.*--weights PATH"):
        create_backbone("resnet18", weights="hub")


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(FeatxUsageError, match="unknown backbone 'efficientnet_lit0'.*efficientnet_lite0"):
        resolve_backbone("efficientnet_lit0")


def test_missing_weights_file_and_bad_pooling(tmp_path):
    with pytest.raises(FeatxUsageError, match="weights file not found"):
        resolve_backbone("test_efficientnet", weights=tmp_path / "none.pth")
    with pytest.raises(FeatxUsageError, match="pooling 'mean'"):
        resolve_backbone("test_efficientnet", pooling="mean")


@pytest.mark.parametrize("pooling, dim", [("avg", 256), ("max", 256), ("avgmax", 256), ("catavgmax", 512)])
def test_pooling_choices(pooling, dim):
    model, cfg = create_backbone("test_efficientnet", weights="random", pooling=pooling)
    with torch.inference_mode():
        assert model(torch.zeros(1, *cfg["input_size"])).shape == (1, dim)


def test_vit_token_pooling():
    model, cfg = create_backbone("test_vit", weights="random", pooling="token")
    with torch.inference_mode():
        assert model(torch.zeros(1, *cfg["input_size"])).shape[0] == 1


def test_random_weights_are_reproducible():
    a, cfg = create_backbone("test_efficientnet", weights="random")
    b, _ = create_backbone("test_efficientnet", weights="random")
    x = torch.randn(1, *cfg["input_size"])
    with torch.inference_mode():
        torch.testing.assert_close(a(x), b(x))


def test_offline_listing_covers_default():
    names = [cfg.name for cfg in featx.list_offline_weights()]
    assert "efficientnet_lite0.offline_in1k" in names and "mobilenetv2_100.coral_in1k" in names
