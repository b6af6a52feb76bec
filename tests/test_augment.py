"""Fine-tuning's device-side augmentation (issue 11): seeded boxes in bounds, identity when the
crop is the whole image, flips exact, normalisation equal to timm's eval normalisation."""

from __future__ import annotations

import torch

from featx.finetuning import DeviceAugment

CONFIG = {"input_size": (3, 16, 16), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "interpolation": "bilinear"}


def _augment(seed=0, scale=(0.25, 1.0), hflip=0.5):
    return DeviceAugment(CONFIG, scale, torch.Generator().manual_seed(seed), torch.device("cpu"), hflip=hflip)


def _normalise(x):
    mean = torch.tensor(CONFIG["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(CONFIG["std"]).view(1, -1, 1, 1)
    return (x.float() / 255 - mean) / std


def test_boxes_are_seeded_in_bounds_and_follow_the_scale():
    boxes, flips = _augment(seed=1).draw(500, 40, 30)
    again, flips_again = _augment(seed=1).draw(500, 40, 30)
    other, _ = _augment(seed=2).draw(500, 40, 30)
    assert torch.equal(boxes, again) and torch.equal(flips, flips_again) and not torch.equal(boxes, other)
    x1, y1, x2, y2 = boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 30).all() and (y2 <= 40).all()
    area = (x2 - x1) * (y2 - y1) / (40 * 30)
    assert area.min() > 0.2 and area.max() <= 1.0 and 0.35 < flips.float().mean() < 0.65


def test_whole_image_crop_without_flip_is_just_normalisation():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    out = _augment(scale=(1.0, 1.0), hflip=0.0)(images)
    torch.testing.assert_close(out, _normalise(images), rtol=0, atol=1e-5)


def test_flip_is_exact():
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    out = _augment(scale=(1.0, 1.0), hflip=1.0)(images)
    torch.testing.assert_close(out, _normalise(images).flip(-1), rtol=0, atol=1e-5)


def test_crops_change_the_images_and_keep_the_shape():
    images = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8)
    out = _augment(seed=3)(images)
    assert out.shape == (6, 3, 16, 16) and out.dtype == torch.float32
    assert not torch.allclose(out, _normalise(torch.nn.functional.interpolate(images.float(), size=16)))
