"""Training augmentation on the device, in batches, from uint8 images of one fixed size.

The workers decode each training image and resize it (uint8, with the model's
interpolation) to the model's input size, a cheap step; everything else runs batched on
the device: a random resized crop per image (scale ``crop_scale``, aspect ratio 3/4..4/3,
as timm's ``RandomResizedCrop``), applied with ``roi_align`` so crop and resize are one
kernel for the whole batch; a horizontal flip with probability 0.5; /255 and mean/std.
Crop boxes and flips are drawn on the host from a generator seeded per (seed, epoch), so
an epoch's augmentations do not depend on where a run was interrupted, nor on the
number of workers.

Differences from timm's PIL pipeline, by design: the crop is taken from the image
resized to the input size (an image of another aspect ratio is squashed to it first),
and the crop is resampled bilinearly by ``roi_align`` (averaging 2+ samples per output
pixel when it shrinks). The validation and test images use the eval transform exactly.
"""

from __future__ import annotations

import math

import torch

__all__ = ["make_train_resize", "DeviceAugment", "RATIO"]

RATIO = (3 / 4, 4 / 3)


def make_train_resize(data_config: dict):
    """Worker transform for training: PIL image -> uint8 CHW tensor of the input size (squashed)."""
    from timm.data.transforms import MaybePILToTensor, str_to_interp_mode
    from torchvision import transforms

    size = tuple(int(v) for v in data_config["input_size"][1:])
    interpolation = str_to_interp_mode(data_config.get("interpolation", "bilinear"))
    return transforms.Compose([transforms.Resize(size, interpolation=interpolation), MaybePILToTensor()])


class DeviceAugment:
    """uint8 (N, C, H, W) batch on the device -> augmented, normalised model input."""

    def __init__(self, data_config: dict, crop_scale: tuple[float, float], generator: torch.Generator,
                 device: torch.device, *, hflip: float = 0.5, channels_last: bool = False):
        self.size = tuple(int(v) for v in data_config["input_size"][1:])
        self.scale, self.hflip, self.generator = tuple(crop_scale), hflip, generator
        self.mean = torch.tensor(data_config["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(data_config["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.device, self.channels_last = device, channels_last

    def draw(self, n: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(boxes (n, 4) as x1, y1, x2, y2, flips (n,) bool)``, from the seeded host generator.

        torchvision's ``RandomResizedCrop.get_params``, vectorised: ten tries per image,
        the first that fits wins; none fitting gives the central crop clamped to the ratio.
        """
        tries = 10
        u = torch.rand((n, tries, 4), generator=self.generator, dtype=torch.float64)
        area = height * width * (self.scale[0] + u[..., 0] * (self.scale[1] - self.scale[0]))
        log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
        ratio = torch.exp(log_lo + u[..., 1] * (log_hi - log_lo))
        w = torch.round(torch.sqrt(area * ratio))
        h = torch.round(torch.sqrt(area / ratio))
        fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
        # The first try that fits, per image (vectorised: no Python loop over the batch).
        found = fits.any(1)
        pick = fits.float().argmax(1).view(n, 1)
        bw, bh = w.gather(1, pick).squeeze(1), h.gather(1, pick).squeeze(1)
        x = torch.floor(u[..., 2].gather(1, pick).squeeze(1) * (width - bw + 1))
        y = torch.floor(u[..., 3].gather(1, pick).squeeze(1) * (height - bh + 1))
        fw, fh = _fallback(width, height)
        bw, bh = torch.where(found, bw, float(fw)), torch.where(found, bh, float(fh))
        x = torch.where(found, x, float((width - fw) // 2))
        y = torch.where(found, y, float((height - fh) // 2))
        boxes = torch.stack([x, y, x + bw, y + bh], 1)
        flips = torch.rand((n,), generator=self.generator) < self.hflip
        return boxes.float(), flips

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import roi_align

        n, _, height, width = images.shape
        boxes, flips = self.draw(n, height, width)
        rois = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], boxes], 1).to(self.device, non_blocking=True)
        x = images.float()
        # aligned=True: box edges are pixel edges, as in PIL's crop-then-resize.
        x = roi_align(x, rois, output_size=self.size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        flips = flips.to(self.device, non_blocking=True)
        x = torch.where(flips.view(-1, 1, 1, 1), x.flip(-1), x)
        x = x.div_(255.0).sub_(self.mean).div_(self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _fallback(width: int, height: int) -> tuple[int, int]:
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        return width, int(round(width / RATIO[0]))
    if in_ratio > RATIO[1]:
        return int(round(height * RATIO[1])), height
    return width, height
