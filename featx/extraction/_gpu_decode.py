"""``decode="gpu"``: JPEG files decoded in batches by nvjpeg, resized and cropped on the GPU.

For sources of full-size JPEGs CPU decoding is the limit however many workers run.
Here the workers only read the file's bytes and check its header with Pillow (format,
pixel limit, colour mode, EXIF orientation: nothing is decoded), and the main process
decodes the whole batch with ``torchvision.io.decode_jpeg(list, device="cuda")``, then
resizes (antialiased) and centre-crops each image on the GPU as timm's eval transform
does, and normalises the batch there.

Files that are not plain JPEGs (PNG and other formats, CMYK JPEGs, JPEGs with an EXIF
rotation, which nvjpeg does not apply) fall back to the CPU path in the worker: decoded
with the usual rules and cropped by timm's transform, so they are never lost; a bad
file is skipped with the same reason as on the CPU path. A JPEG whose header reads but
whose data nvjpeg cannot decode is skipped with nvjpeg's reason. GPU resizing is not
bit-identical to Pillow's, so features differ slightly from ``decode="cpu"``; the
decode mode is part of the store's config for that reason.
"""

from __future__ import annotations

import io
import math

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..core.errors import FeatxUsageError
from ..data import ItemRecord, Source, read_item_file
from ._loader import with_record

__all__ = ["DECODES", "check_gpu_decode", "GpuDecodeDataset", "collate_payloads", "GpuDecoder"]

# cpu: Pillow at full size; draft: Pillow, large JPEGs at reduced DCT scale; gpu: nvjpeg.
DECODES = ("cpu", "draft", "gpu")
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_EXIF_ORIENTATION = 0x0112


def check_gpu_decode(decode: str, device: torch.device, data_config: dict | None = None) -> None:
    """Raise a one-line usage error when ``decode`` is not possible here."""
    if decode not in DECODES:
        raise FeatxUsageError(f"decode {decode!r} is not one of {', '.join(DECODES)}")
    if decode != "gpu":
        return
    if device.type != "cuda" or not torch.cuda.is_available():
        raise FeatxUsageError("--decode gpu needs a CUDA GPU (torch sees none, or --device is not cuda); use --decode cpu")
    if data_config is not None:
        size = data_config["input_size"]
        if (data_config.get("crop_mode") or "center") not in ("center", "squash") or size[1] != size[2]:
            raise FeatxUsageError("--decode gpu supports square inputs with crop_mode center or squash; use --decode cpu")


class GpuDecodeDataset(Dataset):
    """Yields ``(index, (kind, tensor), reason)``: ``("jpeg", bytes)`` or ``("pixels", uint8 CHW)``."""

    def __init__(self, source: Source, cpu_transform, input_size, max_pixels: int | None = None,
                 with_records: bool = False):
        self.source, self.cpu_transform, self.input_size = source, cpu_transform, tuple(input_size)
        self.with_records = with_records
        self.max_pixels = max_pixels if max_pixels is not None else int(Image.MAX_IMAGE_PIXELS or 2**31)

    def __len__(self) -> int:
        return len(self.source)

    def _jpeg_bytes(self, index: int) -> tuple[bytes, ItemRecord] | None:
        # File sources only; an item found unusable while listing goes to ``load_item``, which says why.
        path_of = getattr(self.source, "path_of", None)
        if path_of is None or getattr(self.source, "_unusable", {}).get(index):
            return None
        path = path_of(index)
        if path.suffix.lower() not in _JPEG_SUFFIXES:
            return None
        try:
            data, record = read_item_file(path)
            with Image.open(io.BytesIO(data)) as img:
                plain = (img.format == "JPEG" and img.mode in ("RGB", "L")
                         and img.width * img.height <= self.max_pixels
                         and img.getexif().get(_EXIF_ORIENTATION, 1) == 1)
        except Exception:  # noqa: BLE001 - the CPU path decides and records the reason
            return None
        # A JPEG ends with the EOI marker; a truncated one goes to the CPU path, which rejects it.
        return (data, record) if plain and data.rstrip(b"\x00").endswith(b"\xff\xd9") else None

    def __getitem__(self, index: int):
        found = self._jpeg_bytes(index)
        if found is not None:
            payload = ("jpeg", torch.frombuffer(bytearray(found[0]), dtype=torch.uint8))
            return with_record((index, payload, ""), found[1], self.with_records)
        image, reason, record = self.source.load_item(index)
        pixels = torch.zeros(self.input_size, dtype=torch.uint8) if image is None else self.cpu_transform(image)
        return with_record((index, ("pixels", pixels), reason), record, self.with_records)


def collate_payloads(items):
    """Batches of mixed sizes: ``(indices, [(kind, tensor)], [reason][, [digest], stats])``, images not stacked."""
    indices = torch.tensor([item[0] for item in items], dtype=torch.int64)
    batch = (indices, [item[1] for item in items], [item[2] for item in items])
    if len(items[0]) > 3:
        batch = (*batch, [item[3] for item in items], torch.stack([item[4] for item in items]))
    return batch


class GpuDecoder:
    """``prepare`` for :class:`DeviceBatches`: decode, resize, crop and normalise a batch on the GPU."""

    def __init__(self, data_config: dict, normalizer, device: torch.device):
        from torchvision.transforms import InterpolationMode

        self.size = int(data_config["input_size"][1])
        crop_pct = data_config.get("crop_pct") or 0.875
        self.scale = math.floor(self.size / crop_pct)
        self.squash = (data_config.get("crop_mode") or "center") == "squash"
        modes = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
                 "nearest": InterpolationMode.NEAREST}
        self.interpolation = modes.get(data_config.get("interpolation", "bilinear"), InterpolationMode.BILINEAR)
        self.normalizer, self.device = normalizer, device

    def __call__(self, payloads: list) -> tuple[torch.Tensor, dict[int, str]]:
        from torchvision.io import ImageReadMode, decode_jpeg

        jpeg_at = [i for i, (kind, _) in enumerate(payloads) if kind == "jpeg"]
        decoded, failed = {}, {}
        if jpeg_at:
            datas = [payloads[i][1] for i in jpeg_at]
            try:
                images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)
                decoded = dict(zip(jpeg_at, images))
            except RuntimeError:
                # One bad file fails the batch: decode one by one to find it.
                for i, data in zip(jpeg_at, datas):
                    try:
                        decoded[i] = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
                    except RuntimeError as exc:
                        failed[i] = f"cannot decode image (nvjpeg): {str(exc).splitlines()[0]}"
        out = []
        for i, (kind, tensor) in enumerate(payloads):
            if kind == "pixels":
                out.append(tensor.to(self.device, non_blocking=True))
            elif i in failed:
                out.append(torch.zeros((3, self.size, self.size), dtype=torch.uint8, device=self.device))
            else:
                out.append(self._crop(decoded[i]))
        return self.normalizer(torch.stack(out)), failed

    def _crop(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        if self.squash:
            image = F.resize(image, [self.scale, self.scale], interpolation=self.interpolation, antialias=True)
        else:
            image = F.resize(image, self.scale, interpolation=self.interpolation, antialias=True)
        return F.center_crop(image, [self.size, self.size])
