"""Where and how models run: device and precision resolution, autocast, malloc tuning, and
the library versions recorded next to every output.

torch is imported inside the functions that need it: the pipeline's cache checks resolve
a device type and a precision (:func:`device_type`) without paying for torch where the
answer is certain.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.metadata
import os
import sys
from typing import TYPE_CHECKING

from .errors import FeatxUsageError

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "resolve_device", "device_type", "resolve_precision", "autocast_context", "tune_malloc", "library_versions",
           "die_with_parent"]

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_device(device: str = "auto") -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise FeatxUsageError(f"device {device!r} is not one of auto, cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FeatxUsageError("device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(device)


def _no_gpu_here() -> bool:
    """True where torch certainly sees no GPU: on Linux CUDA needs the NVIDIA driver's device nodes
    (and ROCm ``/dev/kfd``); elsewhere (or with them present) only torch can tell."""
    return sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/kfd")


def device_type(device: str = "auto") -> str:
    """``resolve_device(device).type`` ('cpu' or 'cuda'), without importing torch when the answer is certain."""
    if device == "cpu" or (device == "auto" and _no_gpu_here()):
        return "cpu"
    return resolve_device(device).type


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` is fp16 autocast on CUDA and fp32 on CPU.

    On CUDA, against CPU fp32 features of the same images (EfficientNet-Lite0, measured
    on an H100 by issue 11's author): fp16 autocast moved the embeddings by 0.69% mean /
    1.7% max relative L2, bf16 autocast by 8.1% / 21% (bf16 keeps 8 mantissa bits, fp16
    11, and activations here stay well inside fp16's range), so fp16 is the CUDA default
    and bf16 an option. On a 2-core CPU bf16 ran the bare model 1.48x and the whole
    extraction 1.23x faster but moved the embeddings by 8% (cosine 0.997 on average,
    0.979 at worst); fp32 stays the CPU default so cached features do not depend on the
    CPU's reduced-precision support. ``precision="bf16"``/``"fp16"`` opt in.
    """
    if precision not in PRECISIONS:
        raise FeatxUsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if (device if isinstance(device, str) else device.type) == "cuda" else "fp32"
    return precision


def autocast_context(device: torch.device, precision: str):
    """The autocast context for a resolved precision: fp16 or bf16 autocast, or nothing for fp32."""
    import torch

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def tune_malloc() -> None:
    """Keep freed activation buffers in the heap instead of returning them to the OS.

    With glibc's defaults every batch re-faults its large activation buffers (mmap +
    page faults); measured up to 2.7x on a 2-core VM. Same effect as the
    MALLOC_MMAP_MAX_/MALLOC_TRIM_THRESHOLD_/MALLOC_TOP_PAD_ variables, applied at run
    time. ``FEATX_NO_MALLOC_TUNING=1`` turns it off.
    """
    if not sys.platform.startswith("linux") or os.environ.get("FEATX_NO_MALLOC_TUNING"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 2**30)
        libc.mallopt(m_top_pad, 1 << 28)


def library_versions(*, xgboost: bool = True) -> dict:
    """Versions of featx and the libraries whose behaviour its outputs depend on."""
    import h5py
    import numpy as np
    import sklearn
    import timm
    import torch

    from .version import __version__

    found = {"featx": __version__, "timm": timm.__version__, "torch": torch.__version__,
             "h5py": h5py.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__}
    if xgboost:
        try:
            found["xgboost"] = importlib.metadata.version("xgboost")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            found["xgboost"] = None
    return found


def die_with_parent(*_args) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere).

    Used as a DataLoader ``worker_init_fn``: without it, workers of a SIGKILLed featx
    linger for a second or two and keep its inherited file descriptors (the store's
    lock) open.
    """
    import signal

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The parent may have died between fork and prctl: then nobody would signal us.
    if os.getppid() == 1:
        os._exit(1)
