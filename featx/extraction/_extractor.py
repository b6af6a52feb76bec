"""Stage 1: push a source's images through a frozen backbone into a feature store.

The loop is resumable by construction: rows are processed in fixed, batch-aligned
blocks ``[k*B, (k+1)*B)``, so after an interruption the same blocks are recomputed
with the same batch composition and the finished file equals an uninterrupted one.
A store whose config and source fingerprint match is reused without running the
backbone; one that differs is never reused silently (see ``_store.check_existing``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.errors import DiskError, FeatxUsageError, StoreDamagedError, StoreMismatchError
from ..core.io import fsync_dir
from ..core.runtime import resolve_device, resolve_precision
from ..data import Source, open_source
from ..store import FeatureStore, ProgressFile, StoreWriter, check_existing, check_store_items, writer_lock
from ._backbones import DEFAULT_BACKBONE, BackboneSpec, create_backbone, resolve_backbone
from ._engine import prepare_model, run_extraction
from ._features import (
    FeatureRecipe,
    data_config_with,
    feature_options,
    feature_set_layout,
    preprocessing_overrides,
)
from ._gpu_decode import check_gpu_decode
from ._inputs import FEATURE_DTYPES, default_store_path, store_config
from ._sizing import resolve_batch_size, resolve_workers

__all__ = ["extract"]


def _block_batches(pending: np.ndarray, batch_size: int, n: int) -> list[list[int]]:
    blocks = np.unique(pending // batch_size)
    return [list(range(int(b) * batch_size, min((int(b) + 1) * batch_size, n))) for b in blocks]


def _check_arguments(batch_size: int | str, workers: int | str, dtype: str) -> int:
    """Check the run options; the number of loader workers (``"auto"`` resolved)."""
    if batch_size != "auto":
        resolve_batch_size(batch_size)
    workers = resolve_workers(workers)
    if dtype not in FEATURE_DTYPES:
        raise FeatxUsageError(f"feature dtype {dtype!r} is not one of {', '.join(FEATURE_DTYPES)}")
    return workers


def _shardable(function):
    """Route ``extract(..., shard_size=N | engine="ray")``, or a directory ``out``, to a sharded store.

    Kept outside :func:`extract` so the single-file path stays as it is; see ``_shard_engine``.
    """
    import functools

    @functools.wraps(function)
    def wrapper(source, backbone=DEFAULT_BACKBONE, out=None, *, shard_size: int | None = None, engine: str = "local",
                ray_options: dict | None = None, **options):
        if shard_size is None and engine == "local" and not (out is not None and Path(out).is_dir()):
            return function(source, backbone, out, **options)
        from ._shard_engine import extract_sharded_call

        return extract_sharded_call(source, backbone, out, shard_size=shard_size, engine=engine,
                                    ray_options=ray_options, **options)

    wrapper.__doc__ = (function.__doc__ or "") + (
        "\n    ``shard_size=N``, ``engine=\"ray\"`` (with ``ray_options``: address, actors, gpus_per_actor)\n"
        "    or a directory ``out`` write a sharded store (see ``featx.store``).\n")
    return wrapper


@_shardable
def extract(
    source: str | os.PathLike | Source,
    backbone: str | BackboneSpec = DEFAULT_BACKBONE,
    out: str | os.PathLike | None = None,
    *,
    weights: str | os.PathLike | None = None,
    pooling: str = "avg",
    batch_size: int | str = 8,
    device: str = "auto",
    workers: int | str = 1,
    precision: str = "auto",
    dtype: str = "float32",
    channels_last: bool | None = None,
    strict: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    max_pixels: int | None = None,
    compile: bool = False,
    decode: str = "cpu",
    layers: str | Sequence[int] | None = None,
    views: str | Sequence[str] | None = None,
    img_size: int | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
) -> FeatureStore:
    """Extract embeddings of every image in ``source`` into an HDF5 store and return it.

    Re-running with the same arguments reuses a complete store and resumes an
    incomplete one. Bad images are skipped and recorded (``strict=True`` raises on
    the first one instead). Batch size 8 was the fastest on a 2-core CPU; on a GPU use
    ``"auto"`` (the largest power of two <= 1024 that fits); ``workers="auto"``: the
    usable cores less one. ``compile=True``: ``torch.compile``; ``decode="gpu"``: nvjpeg.

    ``layers="-1,-2"`` adds those ``forward_intermediates`` layers, pooled, as named sets
    (same forward pass); ``views="hflip"`` averages with the mirror image; ``img_size`` /
    ``crop_pct`` / ``interpolation`` override the eval preprocessing. Each is in the store
    config (so its id and cache key) only when used.
    """
    workers = _check_arguments(batch_size, workers, dtype)
    src = open_source(source, max_pixels=max_pixels)
    spec = backbone if isinstance(backbone, BackboneSpec) else resolve_backbone(backbone, weights=weights, pooling=pooling)
    recipe = FeatureRecipe.create(layers, views, spec.pooling)
    overrides = preprocessing_overrides(img_size, crop_pct, interpolation)
    options = feature_options(recipe, overrides)
    prec = resolve_precision(precision, dev := resolve_device(device))
    check_gpu_decode(decode, dev)
    path = Path(out) if out is not None else default_store_path(src, spec, extra=options)

    model, data_config = create_backbone(spec)
    data_config = data_config_with(model, data_config, overrides)
    config = store_config(src, spec, data_config, prec, dtype, options, decode)
    with writer_lock(path):
        target = path.with_name(path.name + ".new") if overwrite and path.exists() else path
        writer = _open_writer(target, src, config, model, data_config, dev, dtype, rebuild=target != path, quiet=quiet,
                              recipe=recipe)
        if isinstance(writer, FeatureStore):
            if target == path:
                return writer
            # An --overwrite build that an interrupted run finished: replace the old store now.
            _replace(target, path)
            return FeatureStore(path)
        progress = ProgressFile(path)
        writer.on_progress = progress
        try:
            try:
                run_info = _run(writer, src, model, data_config, dev, prec, batch_size, workers, channels_last, strict,
                                quiet, compile, decode, recipe)
                writer.finish(run_info)
            finally:
                _close_quietly(writer)
                progress.remove()
        except DiskError:
            # A full disk must not be filled further by a half-built replacement; the old store stays.
            if target != path:
                target.unlink(missing_ok=True)
            raise
        if target != path:
            # --overwrite: the old store is replaced only now that the new one is complete.
            _replace(target, path)
    return FeatureStore(path)


def _replace(new: Path, path: Path) -> None:
    os.replace(new, path)
    fsync_dir(path.parent)


def _close_quietly(writer: StoreWriter) -> None:
    # Closing after a failed write fails too; the first error is the one to report.
    import contextlib

    with contextlib.suppress(Exception):
        writer.close()


def _open_writer(target: Path, src, config, model, data_config, dev, dtype, *, rebuild: bool, quiet: bool,
                 recipe: FeatureRecipe | None = None):
    """A writer for ``target`` (created, resumed or refreshed), or the complete store to reuse.

    ``rebuild``: ``target`` is the ``.new`` file of an --overwrite; one left by an
    interrupted --overwrite is resumed when it matches, else started again.
    """
    if target.exists():
        try:
            store = check_existing(target, config, src)
        except (StoreMismatchError, StoreDamagedError):
            if not rebuild:
                raise
            target.unlink()
        else:
            return _reuse_or_resume(target, store, src, quiet)
    model.to(dev)
    # Every set's width from one pass on a blank image (just the pooled one without --layers).
    layout = feature_set_layout(model, data_config["input_size"], dev, recipe or FeatureRecipe())
    return StoreWriter.create(
        target, config=config, fingerprint=src.structure_fingerprint(), ids=src.ids, labels=src.labels,
        splits=[item.split for item in src.items], class_names=src.class_names, dim=layout[0]["dim"], dtype=dtype,
        item_records=src.item_paths() is not None, extra_sets=layout[1:],
    )


def _reuse_or_resume(target: Path, store: FeatureStore, src, quiet: bool):
    check = check_store_items(store, src)
    if check is None or not (check.touched or check.changed):
        if store.complete:
            store.reused = True
            return store
        return StoreWriter.reopen(target)
    writer = StoreWriter.reopen(target)
    writer.refresh_items(check.touched, check.changed)
    if check.changed and not quiet:
        first = store.all_ids[check.changed[0]]
        print(f"featx: {len(check.changed)} file(s) changed since extraction (first: {first}); extracting them again",
              file=sys.stderr)
    if not check.changed and store.complete:
        _close_quietly(writer)
        reused = FeatureStore(target)
        reused.reused = True
        return reused
    return writer


def _run(writer, src, model, data_config, dev, prec, batch_size, workers, channels_last, strict, quiet, compile,
         decode, recipe: FeatureRecipe | None = None) -> dict:
    if channels_last is None:
        channels_last = dev.type == "cuda"
    model = prepare_model(model, dev, bool(channels_last), compile=False)
    input_size = tuple(data_config["input_size"])
    batch_size, auto = resolve_batch_size(batch_size, model, input_size, dev, prec, bool(channels_last))
    if auto and not quiet:
        why = "largest power of two that fits" if dev.type == "cuda" else "the measured-best CPU default"
        print(f"featx: batch size auto -> {batch_size} ({why})", file=sys.stderr)
    if compile:
        # Compiled after sizing: the trial batches would each trigger a recompilation.
        model = torch.compile(model)
    batches = _block_batches(writer.pending_rows(), batch_size, len(src))
    info = run_extraction(writer, src, model, data_config, batches, dev=dev, precision=prec, workers=workers,
                          channels_last=bool(channels_last), strict=strict, quiet=quiet, decode=decode,
                          recipe=recipe)
    # compile, decode and sizing are how the run went, not what the features are: kept
    # here, out of the config (the cache key); see README "Performance".
    return {"device": str(dev), "batch_size": batch_size, "batch_size_auto": auto, "workers": workers,
            "channels_last": bool(channels_last), "compile": bool(compile), "decode": decode, "precision": prec,
            **info}
