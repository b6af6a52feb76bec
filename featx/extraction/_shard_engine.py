"""Extraction into a sharded store, with the local engine or the Ray engine.

Both engines share the driver's part: resolve the config exactly as the single-file
extractor does (so a store's identity does not depend on the engine), create or resume
the store under the writer lock, hand the pending shards to the engine, and mark the
store complete only after its ids check out (``ShardedWriter.finish``). The local
engine runs the same DataLoader + model loop as ``_extractor``, one shard at a time;
the Ray engine lives in ``_ray``.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.errors import FeatxError, FeatxUsageError
from ..core.runtime import autocast_context, resolve_device, resolve_precision, tune_malloc
from ..data import Source
from ..store import FeatureStore, ShardedFeatureStore, ShardedWriter, check_existing, write_shard, writer_lock
from ._backbones import BackboneSpec, create_backbone
from ._inputs import (
    FEATURE_DTYPES,
    ItemDataset,
    default_store_path,
    embedding_dim,
    make_eval_transform,
    store_config,
)

__all__ = ["extract_sharded", "extract_sharded_call", "DEFAULT_SHARD_SIZE", "ENGINES"]

DEFAULT_SHARD_SIZE = 1024
ENGINES = ("local", "ray")


def extract_sharded_call(source, backbone, out, *, shard_size: int | None, engine: str, ray_options: dict | None,
                         weights=None, pooling: str = "avg", batch_size: int | str = 8, device: str = "auto",
                         workers: int | str = 1, precision: str = "auto", dtype: str = "float32",
                         channels_last: bool | None = None, strict: bool = False, overwrite: bool = False,
                         quiet: bool = False, max_pixels: int | None = None, **options) -> FeatureStore:
    """:func:`featx.extract`'s arguments, checked as it checks them, for a sharded store."""
    from ..data import open_source
    from ._backbones import resolve_backbone
    from ._sizing import resolve_workers

    unsupported = sorted(k for k, v in options.items() if v not in (None, False, "cpu"))
    if unsupported:
        raise FeatxUsageError(f"sharded stores (--shard-size, --engine ray) do not support {', '.join(unsupported)} yet")
    if dtype not in FEATURE_DTYPES:
        raise FeatxUsageError(f"feature dtype {dtype!r} is not one of {', '.join(FEATURE_DTYPES)}")
    src = open_source(source, max_pixels=max_pixels)
    spec = backbone if isinstance(backbone, BackboneSpec) else resolve_backbone(backbone, weights=weights, pooling=pooling)
    path = Path(out) if out is not None else default_store_path(src, spec).with_suffix("")
    return extract_sharded(src, spec, path, device=device, precision=precision, batch_size=batch_size,
                           workers=resolve_workers(workers), dtype=dtype, channels_last=channels_last, strict=strict,
                           overwrite=overwrite, quiet=quiet, shard_size=shard_size, engine=engine,
                           ray_options=ray_options)


def _clear_for_overwrite(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _open_writer(path: Path, src: Source, config: dict, fingerprint: str, dim_of, dtype: str,
                 shard_size: int, overwrite: bool) -> tuple[ShardedWriter | None, FeatureStore | None]:
    """Under the lock: reuse a complete store, resume an incomplete one, or create a new one."""
    if overwrite:
        _clear_for_overwrite(path)
    if path.exists() and not path.is_dir():
        raise FeatxUsageError(
            f"{path} is a single-file store; a sharded store (--shard-size, --engine ray) is a directory: "
            "use another --out, or --overwrite to replace it"
        )
    if path.is_dir() and any(path.iterdir()):
        if not (path / "manifest.json").is_file():
            raise FeatxUsageError(f"{path} exists and is not a featx store; use another --out or --overwrite")
        check_existing(path, config, src)
        # Reopening checks every listed shard's sha256 (a damaged one is dropped and rebuilt), so a
        # reused store is one whose bytes are what was committed, not one that only says so.
        writer = ShardedWriter.reopen(path)
        if writer.manifest["complete"] and not writer.pending_shards():
            store = ShardedFeatureStore(path)
            store.reused = True
            return None, store
        return writer, None
    writer = ShardedWriter.create(
        path, config=config, fingerprint=fingerprint, ids=src.ids, labels=src.labels,
        splits=[item.split for item in src.items], class_names=src.class_names, dim=dim_of(), dtype=dtype,
        shard_size=shard_size,
    )
    return writer, None


def extract_sharded(src: Source, spec: BackboneSpec, path: Path, *, device: str, precision: str, batch_size: int,
                    workers: int, dtype: str, channels_last: bool | None, strict: bool, overwrite: bool, quiet: bool,
                    shard_size: int | None, engine: str = "local", ray_options: dict | None = None) -> FeatureStore:
    """Extract ``src`` into the sharded store at ``path`` with the given engine; resumable shard by shard."""
    if engine not in ENGINES:
        raise FeatxUsageError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    # "auto" sizes a batch for one GPU in this process; the shards' actors may sit elsewhere.
    batch_size = 8 if batch_size == "auto" else int(batch_size)
    if batch_size < 1:
        raise FeatxUsageError("batch size must be at least 1")
    shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
    if shard_size < 1:
        raise FeatxUsageError("shard size must be at least 1")
    cluster = None
    if engine == "ray":
        from ._ray import connect

        # Connect (and check the cluster can serve the device) before anything is written.
        cluster = connect(device=device, **(ray_options or {}))
        dev = torch.device(cluster.device_type)
    else:
        dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model, data_config = create_backbone(spec)
    # The same identity the single-file extractor writes (sharded stores take no extra feature options).
    config = store_config(src, spec, data_config, prec, dtype, {}, "cpu")
    fingerprint = src.fingerprint()

    def dim_of() -> int:
        return embedding_dim(model, data_config["input_size"], torch.device("cpu"))

    with writer_lock(path):
        writer, reused = _open_writer(path, src, config, fingerprint, dim_of, dtype, shard_size, overwrite)
        if reused is not None:
            return reused
        started = time.perf_counter()
        if cluster is not None:
            from ._ray import run_ray_shards

            run_info = run_ray_shards(writer, src, spec, data_config, cluster, prec=prec, dtype=dtype,
                                      batch_size=batch_size, strict=strict, quiet=quiet)
        else:
            run_info = _run_local_shards(writer, src, model, data_config, dev, prec, dtype, batch_size, workers,
                                         channels_last, strict, quiet)
        seconds = time.perf_counter() - started
        rows = run_info["rows_this_run"]
        run_info.update(seconds_this_run=round(seconds, 3),
                        images_per_second=round(rows / seconds, 2) if rows and seconds > 0 else None)
        writer.finish(run_info)
    return ShardedFeatureStore(path)


def _shard_batches(writer: ShardedWriter, batch_size: int) -> list[list[int]]:
    """Batches aligned inside each pending shard, so a shard never waits on another's rows."""
    batches = []
    for index in writer.pending_shards():
        start, stop = writer.shard_range(index)
        batches.extend(list(range(s, min(s + batch_size, stop))) for s in range(start, stop, batch_size))
    return batches


class _ShardAssembler:
    """Collect batch results per shard and commit each shard as soon as all its rows are in."""

    def __init__(self, writer: ShardedWriter, src: Source, dtype: str):
        self.writer, self.src, self.dtype = writer, src, dtype
        self.open: dict[int, dict] = {}

    def add(self, start: int, feats: np.ndarray, reasons: list[str | None]) -> None:
        index = start // self.writer.manifest["shard_size"]
        lo, hi = self.writer.shard_range(index)
        slot = self.open.setdefault(index, {"feats": None, "reasons": [None] * (hi - lo), "filled": 0})
        if slot["feats"] is None:
            slot["feats"] = np.zeros((hi - lo, feats.shape[1]), dtype=np.float32)
        slot["feats"][start - lo:start - lo + len(reasons)] = feats
        slot["reasons"][start - lo:start - lo + len(reasons)] = reasons
        slot["filled"] += len(reasons)
        if slot["filled"] == hi - lo:
            del self.open[index]
            entry = write_shard(self.writer.path, index, lo, self.src.ids[lo:hi], slot["feats"], slot["reasons"],
                                self.dtype)
            self.writer.record(entry)


def _run_local_shards(writer, src, model, data_config, dev, prec, dtype, batch_size, workers, channels_last,
                      strict, quiet) -> dict:
    from tqdm.auto import tqdm

    tune_malloc()
    batches = _shard_batches(writer, batch_size)
    channels_last = dev.type == "cuda" if channels_last is None else channels_last
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dataset = ItemDataset(src, make_eval_transform(data_config), tuple(data_config["input_size"]))
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=dev.type == "cuda",
                        prefetch_factor=4 if workers else None)
    assembler = _ShardAssembler(writer, src, dtype)
    autocast = autocast_context(dev, prec)
    total, n_skipped = sum(len(b) for b in batches), 0
    bar = tqdm(total=total, unit="img", desc="extract", disable=quiet, dynamic_ncols=True, smoothing=0.1)
    try:
        with torch.inference_mode():
            for indices, images, reasons in loader:
                bad = [r or None for r in reasons]
                if strict and any(bad):
                    first = next(i for i, r in enumerate(bad) if r)
                    raise FeatxError(f"bad image {src.items[int(indices[first])].id}: {bad[first]} (--strict)")
                images = images.to(dev, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast:
                    feats = model(images)
                feats = feats.float().reshape(len(bad), -1).cpu().numpy()
                feats[[i for i, r in enumerate(bad) if r]] = 0.0
                assembler.add(int(indices[0]), feats, bad)
                n_skipped += sum(1 for r in bad if r)
                bar.update(len(bad))
    finally:
        bar.close()
    if n_skipped and not quiet:
        print(f"featx: skipped {n_skipped} bad image(s); `featx info {writer.path}` lists them with reasons",
              file=sys.stderr)
    return {"engine": "local", "device": str(dev), "batch_size": batch_size, "workers": workers,
            "shard_size": writer.manifest["shard_size"], "rows_this_run": total}
