"""The uint8 loader: workers decode and crop, the device converts and normalises.

The float eval transform (decode, resize, centre crop, ToTensor, Normalize) made in the
DataLoader workers ships 224x224x3 float32 tensors (600 KB an image) through shared
memory; that, not the model, limited extraction (issue 11: 2,300 img/s of loader
against 23,000 img/s of bare fp16 forward on an H100). Here the workers run only the
geometric part of timm's eval transform for the model's data config, *the very
transforms timm builds* (``create_transform(..., use_prefetcher=True)``: same resize,
interpolation, crop_pct and crop_mode), and ship uint8 CHW tensors (150 KB). The
conversion to float, /255 and mean/std run batched in the main process on the device,
like timm's ``PrefetchLoader``, with the same operations in the same order as
``ToTensor`` + ``Normalize``, so fp32 features equal the float path's.

On CUDA the batches come from pinned memory, are copied with ``non_blocking=True`` and
normalised on a side stream one batch ahead, so the copy overlaps the model.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from ..core.runtime import die_with_parent
from ..data import NO_STAT, ItemRecord, Source, draft_decoding

__all__ = ["make_uint8_transform", "draft_size", "Uint8ItemDataset", "DeviceNormalizer", "DeviceBatches", "make_loader",
           "input_dtype", "batch_records", "with_record", "BackgroundBatches", "background_decode"]


def make_uint8_transform(data_config: dict):
    """timm's eval transform for ``data_config`` without the float conversion: PIL -> uint8 CHW tensor."""
    import timm.data

    return timm.data.create_transform(**data_config, is_training=False, use_prefetcher=True)


def draft_size(data_config: dict) -> tuple[int, int]:
    """The smallest decode that loses nothing for the eval transform: the size timm resizes to
    before its crop (input size / crop_pct), square so either orientation is covered."""
    import math

    side = max(int(v) for v in data_config["input_size"][1:])
    scale = math.floor(side / float(data_config.get("crop_pct") or 1.0))
    return max(side, scale), max(side, scale)


class Uint8ItemDataset(Dataset):
    """Yields ``(index, uint8 CHW tensor, reason)``; a bad image gives zeros and its reason (as ``ItemDataset``).

    ``with_records=True`` adds the item's content hash and (3,) stat data, read with the
    image (``featx.data.ItemRecord``; '' and -1s for items without one).
    """

    def __init__(self, source: Source, transform, input_size: tuple[int, int, int], with_records: bool = False,
                 draft: tuple[int, int] | None = None):
        self.source, self.transform, self.input_size = source, transform, tuple(input_size)
        self.with_records, self.draft = with_records, draft

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        with draft_decoding(self.draft):  # None: full-size decode
            image, reason, record = self.source.load_item(index)
        tensor = torch.zeros(self.input_size, dtype=torch.uint8) if image is None else self.transform(image)
        return with_record((index, tensor, reason), record, self.with_records)


def with_record(item: tuple, record: ItemRecord | None, wanted: bool) -> tuple:
    """``item`` plus the record's digest and stat tensor when ``wanted`` (what the default collate can batch)."""
    if not wanted:
        return item
    record = record or ItemRecord()
    return (*item, record.digest, torch.tensor(record.stat, dtype=torch.int64))


def batch_records(digests, stats) -> list[ItemRecord | None]:
    """The collated digests and stats back into one record (or None) per row, for ``StoreWriter.write_batch``."""
    return [None if not d and tuple(st) == NO_STAT else ItemRecord(tuple(int(v) for v in st), d)
            for d, st in zip(digests, stats.tolist())]


def input_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The dtype the model's input is normalised in: the autocast dtype on CUDA, else float32.

    On CUDA autocast casts the first layer's input to fp16/bf16 anyway, so normalising in
    that dtype halves the bytes moved. On CPU the input stays float32 so fp32 features are
    bit-for-bit the float path's.
    """
    if device.type == "cuda" and precision == "fp16":
        return torch.float16
    if device.type == "cuda" and precision == "bf16":
        return torch.bfloat16
    return torch.float32


class DeviceNormalizer:
    """uint8 NCHW batch on the device -> float (x / 255 - mean) / std, optionally channels_last."""

    def __init__(self, mean, std, device: torch.device, dtype: torch.dtype = torch.float32, channels_last: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.dtype, self.channels_last = dtype, channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # The order of ToTensor (float, then /255) and Normalize (sub mean, div std), in
        # float32, then the model's input dtype: fp32 results equal the float path's.
        x = images.float().div_(255.0).sub_(self.mean).div_(self.std)
        if self.dtype != torch.float32:
            x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def worker_init(worker_id: int) -> None:
    # A worker's torch ops (uint8 stacking) need no intra-op threads; more would fight the
    # main process's model threads for the same cores.
    torch.set_num_threads(1)
    die_with_parent(worker_id)


def make_loader(dataset: Dataset, batches: list[list[int]], workers: int, device: torch.device,
                collate_fn=None) -> DataLoader:
    """The DataLoader over fixed batches: pinned memory on CUDA, 4 batches ahead per worker."""
    return DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=False, prefetch_factor=4 if workers else None,
        worker_init_fn=worker_init if workers else None, collate_fn=collate_fn,
    )


class DeviceBatches:
    """Iterate ``(indices, images, reasons[, digests, stats])`` with images normalised on the device.

    ``prepare(images_on_device)`` turns the loader's uint8 batch into the model input
    (a :class:`DeviceNormalizer`, or GPU decode + crop + normalise). On CUDA the next
    batch is copied and prepared on a side stream while the consumer runs the current
    one (timm's ``PrefetchLoader`` scheme, including waiting for the consumer stream
    before reusing its freed blocks); on CPU batches are prepared in turn.
    """

    def __init__(self, loader: Iterable, prepare, device: torch.device):
        self.loader, self.prepare, self.device = loader, prepare, device
        self.stream = torch.cuda.Stream(device=device) if device.type == "cuda" else None

    def _to_device(self, images):
        if isinstance(images, torch.Tensor):
            return images.to(self.device, non_blocking=True)
        return images  # GPU decode: a list of byte tensors, moved by ``prepare``

    def _prepare(self, indices, images, reasons, *extra) -> tuple:
        ready = self.prepare(self._to_device(images))
        if isinstance(ready, tuple):  # GPU decode also reports the files nvjpeg could not decode
            ready, failed = ready
            reasons = list(reasons)
            for i, reason in failed.items():
                reasons[i] = reason
        return (indices, ready, reasons, *extra)

    def __iter__(self) -> Iterator[tuple]:
        if self.stream is None:
            for batch in self.loader:
                yield self._prepare(*batch)
            return
        consumer = torch.cuda.current_stream(self.device)
        pending = None
        for batch in self.loader:
            self.stream.wait_stream(consumer)
            with torch.cuda.stream(self.stream):
                ready = self._prepare(*batch)
            if pending is not None:
                yield pending
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_stream(self.stream)
            # Tell the allocator the consumer stream uses this block, so it is not handed
            # back to the side stream while the model still reads it.
            ready[1].record_stream(consumer)
            pending = ready
        if pending is not None:
            yield pending


def background_decode() -> bool:
    """Whether 0-worker loading decodes in a background thread (``FEATX_DECODE_THREAD=0`` turns it off)."""
    return os.environ.get("FEATX_DECODE_THREAD", "1") not in ("0", "")


class BackgroundBatches:
    """Iterate ``loader`` in a background thread, ``depth`` batches ahead.

    With no loader workers (the default on a 2-core CPU) the batches were decoded in
    turn with the forward pass. Pillow's decode and resize release the GIL, so a thread
    decoding the next batch runs while torch computes the current one: the decode is
    hidden instead of added. An error in the loader is raised in the consumer; a consumer
    that stops early (an error, Ctrl-C) stops the thread at its next batch.
    """

    _DONE = object()

    def __init__(self, loader: Iterable, depth: int = 2):
        self.loader, self.depth = loader, depth

    def __iter__(self) -> Iterator:
        ready: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in self.loader:
                    if not put((batch, None)):
                        return
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                put((None, exc))
                return
            put((self._DONE, None))

        thread = threading.Thread(target=produce, name="featx-decode", daemon=True)
        thread.start()
        try:
            while True:
                batch, error = ready.get()
                if error is not None:
                    raise error
                if batch is self._DONE:
                    return
                yield batch
        finally:
            stop.set()
            thread.join(timeout=5)
