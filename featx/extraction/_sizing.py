"""``batch_size="auto"`` and ``workers="auto"``: sized once, from what this machine has.

Batch size on CUDA: the largest power of two up to 1024 whose forward pass (in the run's
precision and memory layout) fits with headroom, found by trying forward passes from
the top down and catching out-of-memory. On CPU larger batches are not faster (on 2
cores EfficientNet-Lite0 at 224 px ran fastest at batch 8; bigger batches push the
activations out of cache), so ``auto`` is the measured-best default, 8.

Workers (``auto``, the default): 0, decoding in the model's process, for a CPU model
on at most 2 usable cores (affinity and cgroup quota, see
:func:`featx.core.cpus.usable_cpus`), where a worker would take a core from the
forward pass; otherwise the usable cores less one, at least 1.
"""

from __future__ import annotations

import torch

from ..core.cpus import auto_workers
from ..core.errors import FeatxUsageError
from ..core.runtime import autocast_context

__all__ = ["CPU_BATCH_SIZE", "MAX_AUTO_BATCH", "HEADROOM", "auto_batch_size", "resolve_batch_size", "resolve_workers"]

CPU_BATCH_SIZE = 8
MAX_AUTO_BATCH = 1024
# Fraction of the GPU's memory a trial batch may peak at: the rest is left for the
# prefetched batches, the host copies and anything else sharing the GPU.
HEADROOM = 0.7


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def auto_batch_size(model: torch.nn.Module, input_size, device: torch.device, precision: str,
                    channels_last: bool = False) -> int:
    """The largest power of two <= 1024 whose forward pass fits in ``HEADROOM`` of the GPU; 8 on CPU."""
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    total = torch.cuda.get_device_properties(device).total_memory
    size = MAX_AUTO_BATCH
    while size > 1:
        try:
            peak = _trial_peak(model, input_size, device, precision, channels_last, size)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            peak = None
        torch.cuda.empty_cache()
        if peak is not None and peak <= HEADROOM * total:
            return size
        size //= 2
    return 1


def _trial_peak(model, input_size, device, precision, channels_last, size) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    x = torch.zeros((size, *input_size), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast_context(device, precision):
        model(x)
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def resolve_batch_size(batch_size: int | str, model=None, input_size=None, device=None, precision="fp32",
                       channels_last=False) -> tuple[int, bool]:
    """``(batch size, was_auto)`` for an int or ``"auto"``."""
    if batch_size == "auto":
        return auto_batch_size(model, input_size, device, precision, channels_last), True
    try:
        value = int(batch_size)
    except (TypeError, ValueError):
        raise FeatxUsageError(f"batch size must be a positive integer or 'auto', not {batch_size!r}") from None
    if value < 1:
        raise FeatxUsageError("batch size must be at least 1")
    return value, False


def resolve_workers(workers: int | str, device: torch.device | str | None = None) -> int:
    """An int, or ``"auto"``: see :func:`featx.core.cpus.auto_workers` (``device`` None: CPU)."""
    if workers == "auto":
        return auto_workers(device_type=torch.device(device).type if device is not None else "cpu")
    try:
        value = int(workers)
    except (TypeError, ValueError):
        raise FeatxUsageError(f"workers must be 0 or more, or 'auto', not {workers!r}") from None
    if value < 0:
        raise FeatxUsageError("workers must be 0 or more")
    return value
