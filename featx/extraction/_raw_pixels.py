"""The raw-pixel control: a feature store of downsampled source images, no network at all.

Each image is converted to RGB (the source's own decoding and skip rules), resized to
``size`` x ``size`` with box (area) filtering, with no crop, and flattened to
``size * size * 3`` values in [0, 1]. The heads standardise these features themselves,
as they do with embeddings. The store has the same ids, labels and splits as every
backbone's store of the same source, so its heads are fitted and tested on exactly the
same items; its ``backbone`` is ``"raw pixels"``, which is how the report names the rows.

A store of this kind answers "are frozen ImageNet features worth it here?": on
scikit-learn's 8x8 digits an RBF SVM on raw pixels beats every frozen-feature head.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..core.errors import BadImageError, FeatxUsageError, StoreDamagedError, StoreMismatchError
from ..core.io import remove_path
from ..data import open_source
from ..store import FeatureStore, StoreWriter, build_target, check_apart, check_existing, swap_in, writer_lock
from ._inputs import source_locations

__all__ = ["extract_raw_pixels", "RAW_PIXELS", "RAW_PIXELS_SIZE", "raw_pixels_identity", "raw_pixel_features"]

RAW_PIXELS = "raw pixels"
RAW_PIXELS_SIZE = 16  # 16 x 16 x RGB = 768 values: digits are 8x8, CIFAR-10 32x32
_BATCH = 256


def raw_pixels_identity(size: int = RAW_PIXELS_SIZE) -> dict:
    """The "backbone" identity recorded for a raw-pixel store (and in its heads' manifests)."""
    return {"model": RAW_PIXELS, "weights": {"kind": "none"}, "pooling": None, "size": int(size)}


def _pixels(image, size: int) -> np.ndarray:
    from PIL import Image

    small = image.convert("RGB").resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0


def raw_pixel_features(images, size: int) -> np.ndarray:
    """(N, size * size * 3) features of decoded PIL images, exactly as the raw-pixel store holds them."""
    return np.stack([_pixels(image, int(size)) for image in images]) if len(images) else np.zeros((0, 3 * size * size), np.float32)


def extract_raw_pixels(source, out: str | os.PathLike, *, size: int = RAW_PIXELS_SIZE, overwrite: bool = False,
                       quiet: bool = True) -> FeatureStore:
    """Write (or reuse) the raw-pixel store of ``source`` at ``out``; bad images are skipped as in extract."""
    if not 1 <= int(size) <= 256:
        raise FeatxUsageError(f"raw-pixel size must be 1..256 pixels; got {size}")
    src = open_source(source)
    path = Path(out)
    config = {"source": {"kind": src.kind, "name": src.name}, "backbone": raw_pixels_identity(size),
              "data_config": {"input_size": [3, int(size), int(size)], "interpolation": "box", "crop_pct": 1.0},
              "precision": "fp32", "dtype": "float32"}
    fingerprint = src.fingerprint()
    check_apart(path, *source_locations(src))
    with writer_lock(path):
        # --overwrite replaces only a featx store, built beside it and swapped in when complete.
        target = build_target(path, overwrite)
        store = _existing(target, config, src, rebuild=target != path)
        if store is not None and store.complete:
            store.reused = True
            return store if target == path else (swap_in(target, path), FeatureStore(path))[1]
        if store is not None:
            writer = StoreWriter.reopen(target)
        else:
            writer = StoreWriter.create(target, config=config, fingerprint=fingerprint, ids=src.ids, labels=src.labels,
                                        splits=[item.split for item in src.items], class_names=src.class_names,
                                        dim=3 * int(size) ** 2, dtype="float32")
        try:
            started = time.perf_counter()
            _fill(writer, src, int(size))
            seconds = time.perf_counter() - started
            writer.finish({"device": "cpu", "seconds_this_run": round(seconds, 3),
                           "images_per_second": round(len(src) / max(seconds, 1e-9), 1)})
        finally:
            writer.close()
        if target != path:
            swap_in(target, path)
    return FeatureStore(path)


def _existing(target: Path, config: dict, src, rebuild: bool) -> FeatureStore | None:
    """The store at ``target`` if it matches (no per-item records here: compared by the source's
    fingerprint); None when there is none, or it is an --overwrite build of another config (removed)."""
    if not target.exists():
        return None
    try:
        return check_existing(target, config, src)
    except (StoreMismatchError, StoreDamagedError):
        if not rebuild:
            raise
        remove_path(target)
        return None


def _fill(writer: StoreWriter, src, size: int) -> None:
    """Every pending row, in blocks; a bad image becomes a skipped row with its reason."""
    pending = writer.pending_rows()
    for start in range(0, len(src), _BATCH):
        stop = min(start + _BATCH, len(src))
        if not np.any((pending >= start) & (pending < stop)):
            continue
        rows, reasons = np.zeros((stop - start, 3 * size * size), dtype=np.float32), []
        for i in range(start, stop):
            try:
                rows[i - start] = _pixels(src.load(i), size)
                reasons.append(None)
            except BadImageError as exc:
                reasons.append(str(exc))
        writer.write_batch(start, rows, reasons)
