"""The extraction loop: uint8 loader -> device normalisation -> model -> background store writes.

Split out of ``_extractor`` so the entry point stays about what is extracted and where,
and this module about moving bytes fast (issue 11): workers decode and crop to uint8,
the device normalises batched, the next batch is prefetched on a side CUDA stream,
embeddings come back by an asynchronous copy and a writer thread stores them.
"""

from __future__ import annotations

import sys
import time

import torch

from ..core.errors import FeatxError
from ..core.interrupts import check_interrupt
from ..core.runtime import autocast_context, tune_malloc
from ..data import Source
from ._features import DEFAULT_SET, FeatureRecipe, embed_batch
from ._gpu_decode import GpuDecodeDataset, GpuDecoder, collate_payloads
from ._loader import (
    BackgroundBatches,
    DeviceBatches,
    DeviceNormalizer,
    Uint8ItemDataset,
    background_decode,
    batch_records,
    draft_size,
    input_dtype,
    make_loader,
    make_uint8_transform,
)
from ._writer import BackgroundWriter, to_host

__all__ = ["prepare_model", "device_batches", "run_extraction"]


def prepare_model(model: torch.nn.Module, dev: torch.device, channels_last: bool, compile: bool) -> torch.nn.Module:
    """The model on its device, in its memory layout, compiled when asked (``torch.compile``)."""
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return model


def device_batches(src: Source, data_config: dict, batches: list[list[int]], *, dev: torch.device, precision: str,
                   workers: int, channels_last: bool, decode: str = "cpu", max_pixels: int | None = None,
                   with_records: bool = False) -> DeviceBatches:
    """``(indices, model-ready images, reasons[, digests, stats])`` batches for ``batches`` of ``src``'s rows."""
    normalizer = DeviceNormalizer(data_config["mean"], data_config["std"], dev, input_dtype(dev, precision),
                                  channels_last)
    transform = make_uint8_transform(data_config)
    input_size = tuple(data_config["input_size"])
    if decode == "gpu":
        dataset = GpuDecodeDataset(src, transform, input_size, max_pixels=max_pixels, with_records=with_records)
        loader = make_loader(dataset, batches, workers, dev, collate_fn=collate_payloads)
        return DeviceBatches(loader, GpuDecoder(data_config, normalizer, dev), dev)
    draft = draft_size(data_config) if decode == "draft" else None
    loader = make_loader(Uint8ItemDataset(src, transform, input_size, with_records, draft), batches, workers, dev)
    if workers == 0 and background_decode():
        loader = BackgroundBatches(loader)  # decode the next batches while the model runs this one
    return DeviceBatches(loader, normalizer, dev)


def run_extraction(writer, src: Source, model, data_config: dict, batches: list[list[int]], *, dev: torch.device,
                   precision: str, workers: int, channels_last: bool, strict: bool, quiet: bool,
                   decode: str = "cpu", recipe: FeatureRecipe | None = None) -> dict:
    """Run ``batches`` through ``model`` into ``writer``; the run's timings and counts.

    ``recipe`` adds the named sets (layers, views) of each batch, from the same forward pass.
    """
    from ..core.bars import progress_bar

    recipe = recipe or FeatureRecipe()
    tune_malloc()
    stream = device_batches(src, data_config, batches, dev=dev, precision=precision, workers=workers,
                            channels_last=channels_last, decode=decode, max_pixels=getattr(src, "max_pixels", None),
                            with_records=True)
    autocast = autocast_context(dev, precision)
    total = sum(len(b) for b in batches)
    n_skipped = 0
    started = time.perf_counter()
    bar = progress_bar(total, "extract", "img", disable=quiet, smoothing=0.1)
    background = BackgroundWriter(writer)
    try:
        with torch.inference_mode():
            for indices, images, reasons, digests, stats in stream:
                check_interrupt()  # a Ctrl-C swallowed while the workers started still stops the run
                start = int(indices[0])
                bad = [r or None for r in reasons]
                if strict and any(bad):
                    first = next(i for i, r in enumerate(bad) if r)
                    raise FeatxError(f"bad image {src.items[start + first].id}: {bad[first]} (--strict)")
                with autocast:
                    sets = embed_batch(model, images, recipe)
                extra = {name: to_host(value, len(bad))[0] for name, value in sets.items() if name != DEFAULT_SET}
                # Copied last, so its event also marks the extra sets' copies as done.
                host, event = to_host(sets[DEFAULT_SET], len(bad))
                background.submit(start, host, event, bad, batch_records(digests, stats), extra=extra or None)
                n_skipped += sum(1 for r in bad if r)
                bar.update(len(bad))
                if n_skipped:
                    bar.set_postfix(skipped=n_skipped, refresh=False)
    finally:
        bar.close()
        # Writes everything queued before an error or interrupt, so finished batches stay done.
        background.close()
    seconds = time.perf_counter() - started
    if n_skipped and not quiet:
        print(f"featx: skipped {n_skipped} bad image(s); `featx info {writer.path}` lists them with reasons", file=sys.stderr)
    return {"rows_this_run": total, "seconds_this_run": round(seconds, 3),
            "images_per_second": round(total / seconds, 2) if seconds > 0 and total else None}
