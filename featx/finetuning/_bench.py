"""``featx bench finetune``: a full fine-tune's train step alone vs a whole epoch from the files.

Same model (the classifier sized for the source's classes, every layer trainable),
batch size, precision and memory layout: ``bare_step_img_s`` runs forward, backward and
an AdamW step on batches already on the device (augmented and normalised once, cycled);
``epoch_img_s`` runs a training epoch as ``featx finetune`` does: the uint8 loader, the
device-side random resized crop, flip and normalisation, then the same step.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..core.cpus import usable_cpus
from ..core.runtime import autocast_context, resolve_device, tune_malloc
from ..data import Source, open_source
from ..extraction import DEFAULT_BACKBONE, check_cores, resolve_backbone, resolve_workers, subset_source
from ._augment import DeviceAugment, make_train_resize
from ._data import FinetuneData, train_loader
from ._finetune import _build_model, set_trainable, training_precision
from ._modes import CROP_SCALE

__all__ = ["bench_finetune"]

_DISTINCT_BATCHES = 8


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class _Step:
    def __init__(self, model, dev, precision):
        self.model, self.dev = model, dev
        self.autocast = autocast_context(dev, precision)
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        self.criterion = torch.nn.CrossEntropyLoss()

    def __call__(self, images: torch.Tensor, target: torch.Tensor) -> None:
        with self.autocast:
            logits = self.model(images)
        loss = self.criterion(logits.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def _bare_steps(step: _Step, batches, steps: int, dev) -> tuple[float, float, float]:
    for images, target in batches[:2]:
        step(images, target)  # warm-up
    _sync(dev)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for k in range(steps):
        step(*batches[k % len(batches)])
    _sync(dev)
    return time.process_time() - cpu0, time.perf_counter() - wall0, float(steps * len(batches[0][1]))


def _epoch(step: _Step, data: FinetuneData, data_config, batch_size, workers, dev, channels_last) -> tuple[float, int]:
    generator = torch.Generator().manual_seed(0)
    loader = train_loader(data, make_train_resize(data_config), data_config["input_size"], batch_size, workers,
                          generator, pin_memory=dev.type == "cuda")
    augment = DeviceAugment(data_config, CROP_SCALE, torch.Generator().manual_seed(1), dev, channels_last=channels_last)
    labels = torch.as_tensor(data.labels)
    started, n = time.perf_counter(), 0
    for indices, images, reasons in loader:
        good = [i for i, r in enumerate(reasons) if not r]
        if len(good) < 2:
            continue
        step(augment(images[good].to(dev, non_blocking=True)), labels[indices[good]].to(dev, non_blocking=True))
        n += len(good)
    _sync(dev)
    return time.perf_counter() - started, n


def bench_finetune(source: str | os.PathLike | Source = "digits", backbone: str = DEFAULT_BACKBONE, *,
                   weights: str | None = None, batch_size: int = 32, workers: int | str = "auto", device: str = "auto",
                   precision: str = "auto", limit: int | None = None) -> dict:
    """Bare train-step img/s vs end-to-end epoch img/s, the ratio, and the settings."""
    tune_malloc()
    dev = resolve_device(device)
    prec = training_precision(precision, dev)
    workers = resolve_workers(workers, dev)
    spec = resolve_backbone(backbone, weights=weights)
    channels_last = dev.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="featx-bench-") as tmp:
        src = subset_source(open_source(source), limit, Path(tmp))
        model, data_config, _ = _build_model(spec, "full", len(src.class_names), None)
        set_trainable(model, "full")
        model.to(dev).train()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        step = _Step(model, dev, prec)
        augment = DeviceAugment(data_config, CROP_SCALE, torch.Generator().manual_seed(0), dev, channels_last=channels_last)
        resize = make_train_resize(data_config)
        n_pre = min(len(src), batch_size * _DISTINCT_BATCHES)
        crops = torch.stack([resize(src.load(i)) for i in range(n_pre)])
        labels = torch.as_tensor(src.labels[:n_pre])
        batches = [(augment(crops[i:i + batch_size].to(dev)), labels[i:i + batch_size].to(dev))
                   for i in range(0, n_pre - batch_size + 1, batch_size)] or [(augment(crops.to(dev)), labels.to(dev))]
        steps = max(1, len(src) // len(batches[0][1]))
        load_before = os.getloadavg()[0]
        cpu, wall, images = _bare_steps(step, batches, steps, dev)
        load_after = os.getloadavg()[0]
        n = len(src)
        data = FinetuneData(src, np.array(["train"] * n), {}, np.arange(n), np.zeros(0, np.int64), np.zeros(0, np.int64))
        epoch_seconds, epoch_images = _epoch(step, data, data_config, batch_size, workers, dev, channels_last)
    bare = images / wall
    epoch = epoch_images / epoch_seconds if epoch_seconds > 0 else 0.0
    warnings = check_cores(cpu, wall, torch.get_num_threads(), load_before, load_after, usable_cpus(), dev)
    return {"bare_step_img_s": round(bare, 2), "epoch_img_s": round(epoch, 2), "ratio": round(epoch / bare, 3),
            "device": str(dev) if dev.type == "cpu" else f"{dev} ({torch.cuda.get_device_name(dev)})",
            "settings": {"backbone": spec.display_name, "input_size": list(data_config["input_size"]),
                         "batch_size": batch_size, "workers": workers, "precision": prec, "channels_last": channels_last,
                         "n_images": n, "torch_threads": torch.get_num_threads(), "usable_cores": usable_cpus()},
            "machine_busy": bool(warnings), "warnings": warnings}
