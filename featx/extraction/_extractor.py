"""Stage 1: push a source's images through a frozen backbone into a feature store.

One driver for both layouts of a store (one file, or a directory of shards) and both
engines (local, or Ray actors that write the shards themselves): resolve the config (the
store's identity, whatever writes it), create, resume or reuse the store under the writer
lock, run the pending rows, and mark it complete only after it checks out. The local loop
is resumable by construction: rows are processed in fixed blocks (batch-aligned in a file,
shard-aligned in a directory), so after an interruption the same blocks are recomputed
with the same batch composition and the result equals an uninterrupted run. A store whose
config and source fingerprint match is reused without running the backbone; one that
differs is never reused silently (see ``featx.store.check_existing``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..core.errors import DiskError, FeatxUsageError, StoreDamagedError, StoreMismatchError
from ..core.io import remove_path
from ..core.runtime import resolve_device, resolve_precision
from ..data import Source, open_source, subset_record, subset_source
from ..store import (
    MANIFEST,
    FeatureStore,
    ProgressFile,
    ShardedWriter,
    StoreWriter,
    build_target,
    check_apart,
    check_existing,
    check_store_items,
    swap_in,
    writer_lock,
)
from ._backbones import DEFAULT_BACKBONE, BackboneSpec, create_backbone, resolve_backbone
from ._engine import prepare_model, run_extraction
from ._features import (
    FeatureRecipe,
    check_input_size,
    data_config_with,
    feature_options,
    feature_set_layout,
    preprocessing_overrides,
)
from ._gpu_decode import check_gpu_decode
from ._inputs import FEATURE_DTYPES, default_store_path, source_locations, store_config
from ._sizing import resolve_batch_size, resolve_workers
from ._views import ADDED_VIEW, COMPANION_VIEW, announce, plain_store, view_path

__all__ = ["extract", "ENGINES", "DEFAULT_SHARD_SIZE"]

ENGINES = ("local", "ray")
DEFAULT_SHARD_SIZE = 1024


def _check_arguments(batch_size: int | str, workers: int | str, dtype: str, threads: int | None, out,
                     shard_size: int | None, engine: str) -> tuple[int | str, int | None]:
    """Check the run options; the number of loader workers (or ``"auto"``), and the layout: None for one
    file (local engine only), else the shard size (0: the existing store's, else the default)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise FeatxUsageError(f"threads must be a whole number >= 1, got {threads!r}")
    if batch_size != "auto":
        resolve_batch_size(batch_size)
    if workers != "auto":  # "auto" is resolved once the device is known
        workers = resolve_workers(workers)
    if dtype not in FEATURE_DTYPES:
        raise FeatxUsageError(f"feature dtype {dtype!r} is not one of {', '.join(FEATURE_DTYPES)}")
    if engine not in ENGINES:
        raise FeatxUsageError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    if shard_size is not None and shard_size < 1:
        raise FeatxUsageError("shard size must be at least 1")
    if shard_size is None and (engine == "ray" or (out is not None and Path(out).is_dir())):
        shard_size = 0  # sharded: a directory, or the Ray engine's shards
    return workers, shard_size


def _subset(src: Source, per_class: int | None, limit: int | None, seed: int) -> tuple[Source, dict]:
    """The source to extract and what its config records of the subset and of unlabelled samples kept
    (``{}`` for the whole source, every sample labelled: such a store keeps the config and id it had)."""
    record = {}
    if per_class is not None or limit is not None:
        src = subset_source(src, per_class=per_class, limit=limit, seed=seed)
        record["subset"] = subset_record(per_class, limit, seed)
    if src.n_unlabelled:
        record["unlabelled"] = "kept"
    return src, record


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` for a block (``None``: as it is), then the previous count again."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def extract(
    source: str | os.PathLike | Source,
    backbone: str | BackboneSpec = DEFAULT_BACKBONE,
    out: str | os.PathLike | None = None,
    *,
    weights: str | os.PathLike | None = None,
    pooling: str = "avg",
    batch_size: int | str = 8,
    device: str = "auto",
    workers: int | str = "auto",
    precision: str = "auto",
    dtype: str = "float32",
    channels_last: bool | None = None,
    strict: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    max_pixels: int | None = None,
    compile: bool = False, decode: str = "cpu",
    layers: str | Sequence[int] | None = None,
    views: str | Sequence[str] | None = None,
    img_size: int | None = None, crop_pct: float | None = None, interpolation: str | None = None,
    per_class: int | None = None, limit: int | None = None, subset_seed: int = 0, threads: int | None = None,
    shard_size: int | None = None, engine: str = "local", ray_options: dict | None = None,
    allow_unlabelled: bool = False,
) -> FeatureStore:
    """Extract embeddings of every image in ``source`` into an HDF5 store and return it.

    Re-running with the same arguments reuses a complete store and resumes an
    incomplete one. Bad images are skipped and recorded (``strict=True`` raises on
    the first one instead). Batch size 8 was the fastest on a 2-core CPU; on a GPU use
    ``"auto"`` (the largest power of two <= 1024 that fits); ``workers="auto"`` (default):
    0 (in-process decoding) for a CPU model on <= 2 usable cores, else the usable cores less one. ``compile=True``: ``torch.compile``; ``decode="gpu"``: nvjpeg.

    ``layers="-1,-2"`` adds those ``forward_intermediates`` layers, pooled, as named sets
    (same forward pass); ``views="hflip"`` averages with the mirror image (on a plain store of this
    config: only the mirror pass, beside it, :mod:`featx.extraction._views`); ``img_size`` /
    ``crop_pct`` / ``interpolation`` override the eval preprocessing; ``per_class`` / ``limit``: a stratified
    seeded subset; ``allow_unlabelled``: samples without a label kept (label -1, no split; ``open_source``).
    Each is in the store config (id, cache key) only when used. ``threads``: torch's CPU threads (run info).

    ``shard_size=N``, ``engine="ray"`` (with ``ray_options``: address, actors, gpus_per_actor)
    or a directory ``out`` write a sharded store (``docs/store-format.md``).
    """
    workers, sharding = _check_arguments(batch_size, workers, dtype, threads, out, shard_size, engine)
    src, subset = _subset(open_source(source, max_pixels, allow_unlabelled), per_class, limit, subset_seed)
    spec = backbone if isinstance(backbone, BackboneSpec) else resolve_backbone(backbone, weights=weights, pooling=pooling)
    recipe = FeatureRecipe.create(layers, views, spec.pooling)
    overrides = check_input_size(spec.model, spec.model_kwargs, preprocessing_overrides(img_size, crop_pct, interpolation))
    options = feature_options(recipe, overrides)
    run_options = {"compile": compile, "decode": decode, "threads": threads, **options}
    dev, cluster = _connect(engine, ray_options, device, run_options)
    options.update(subset)
    prec = resolve_precision(precision, dev)
    check_gpu_decode(decode, dev)
    path = Path(out) if out is not None else default_store_path(src, spec, extra=options)
    path = path.with_suffix("") if out is None and sharding is not None else path
    check_apart(path, *source_locations(src))

    model, data_config = create_backbone(spec)
    data_config = data_config_with(model, data_config, overrides)
    config = store_config(src, spec, data_config, prec, dtype, options, decode)
    added = _add_view(dict(locals()), recipe, overrides, subset, (data_config, prec, dtype, decode))
    if added is not None:
        return added
    with writer_lock(path):
        target = build_target(path, overwrite)
        writer = _open_writer(target, src, config, model, data_config, dev if cluster is None else "cpu",
                              dtype, sharding, rebuild=target != path, quiet=quiet, recipe=recipe)
        if isinstance(writer, FeatureStore):
            return _reused(writer, path, target, cluster)
        if cluster is not None:
            _write(writer, path, target, lambda: _run_ray(writer, src, spec, data_config, cluster, prec,
                                                          dtype, batch_size, strict, quiet))
        else:
            _write(writer, path, target, lambda: _run(writer, src, model, data_config, dev, prec, batch_size, workers,
                                                      channels_last, strict, quiet, compile, decode, recipe, threads))
    return FeatureStore(path)


_COMPANION_ARGS = ("batch_size", "device", "workers", "precision", "dtype", "channels_last", "strict", "quiet", "compile",
                   "decode", "layers", "img_size", "crop_pct", "interpolation", "threads", "shard_size", "allow_unlabelled")


def _add_view(call: dict, recipe: FeatureRecipe, overrides: dict, subset: dict, rest: tuple) -> FeatureStore | None:
    """``--views hflip`` on a complete store of this config without views (at ``out`` or its default path): only
    the mirror pass runs, into its companion (:mod:`featx.extraction._views`); None when there is no such store."""
    if recipe.views != (ADDED_VIEW,) or call["overwrite"] or call["cluster"] is not None:
        return None
    src, spec, (data_config, prec, dtype, decode) = call["src"], call["spec"], rest
    plain = {**feature_options(FeatureRecipe(recipe.layers, (), recipe.pooling), overrides), **subset}
    base = Path(call["out"]) if call["out"] is not None else default_store_path(src, spec, extra=plain)
    if plain_store(base, store_config(src, spec, data_config, prec, dtype, plain, decode), src) is None:
        return None
    companion = extract(src, spec, view_path(base), views=COMPANION_VIEW, **{k: call[k] for k in _COMPANION_ARGS})
    announce(base, companion, call["quiet"])
    return FeatureStore(base)


def _reused(store: FeatureStore, path: Path, target: Path, cluster) -> FeatureStore:
    """A store reused without running the backbone; an --overwrite build that an interrupted run
    finished replaces the old store now."""
    if cluster is not None and cluster.started_here:
        import ray

        ray.shutdown()
    ProgressFile(path).remove()  # a sidecar a run killed after finishing left behind
    return store if target == path else (swap_in(target, path), FeatureStore(path))[1]


def _write(writer, path: Path, target: Path, run) -> None:
    """Run the pending rows into ``writer`` and finish it; for --overwrite, then swap ``target`` in."""
    progress = ProgressFile(path)
    writer.on_progress = progress
    try:
        try:
            writer.finish(run())
        finally:
            _close_quietly(writer)
            progress.remove()
    except DiskError:
        # A full disk must not be filled further by a half-built replacement; the old store stays.
        if target != path:
            remove_path(target)
        raise
    if target != path:
        # --overwrite: the old store is replaced only now that the new one is complete.
        swap_in(target, path)


def _connect(engine: str, ray_options: dict | None, device: str, options: dict) -> tuple:
    """The device the features are computed on, and for Ray the cluster, joined (and checked) first."""
    if engine != "ray":
        return resolve_device(device), None
    unsupported = sorted(k for k, v in options.items() if v not in (None, False, "cpu", {}))
    if unsupported:
        raise FeatxUsageError(f"--engine ray does not support {', '.join(unsupported)} yet; use --engine local")
    from ._ray import connect

    # Connect (and check the cluster can serve the device) before anything is written.
    cluster = connect(device=device, **(ray_options or {}))
    return torch.device(cluster.device_type), cluster


def _close_quietly(writer) -> None:
    # Closing after a failed write fails too; the first error is the one to report.
    with contextlib.suppress(Exception):
        writer.close()


def _open_writer(target: Path, src, config, model, data_config, dev, dtype, sharding: int | None, *,
                 rebuild: bool, quiet: bool, recipe: FeatureRecipe | None = None):
    """A writer for ``target`` (created, resumed or refreshed), or the complete store to reuse.

    ``rebuild``: ``target`` is the ``.new`` sibling of an --overwrite; one left by an
    interrupted --overwrite is resumed when it matches, else started again.
    """
    exists = target.is_file() or (target / MANIFEST).is_file()
    if exists and target.is_dir() != (sharding is not None):
        if not rebuild:
            writes = "--shard-size and --engine ray write" if sharding is not None else "this run writes"
            raise FeatxUsageError(
                f"{target} is a {'sharded store (a directory)' if target.is_dir() else 'single-file store'}; "
                f"{writes} the other layout: use another --out, or --overwrite to replace it")
        exists = False
    if exists:
        try:
            store = check_existing(target, config, src)
        except (StoreMismatchError, StoreDamagedError):
            if not rebuild:
                raise
        else:
            return _reuse_or_resume(target, store, src, quiet, sharding)
    remove_path(target)  # nothing, an empty folder, or featx's own leftovers (build_target checked)
    model.to(dev)
    # Every set's width from one pass on a blank image (just the pooled one without --layers).
    sets = feature_set_layout(model, data_config["input_size"], next(model.parameters()).device,
                              recipe or FeatureRecipe())
    # Per-item content hashes for file sources, whichever engine writes the shards (both read each
    # file's bytes once, hash them and decode them), so either engine can resume the other's store.
    records = src.item_paths() is not None
    common = dict(config=config, fingerprint=src.structure_fingerprint(), ids=src.ids, labels=src.labels,
                  splits=[item.split for item in src.items], class_names=src.class_names, dim=sets[0]["dim"],
                  dtype=dtype, item_records=records, extra_sets=sets[1:])
    if sharding is not None:
        return ShardedWriter.create(target, shard_size=sharding or DEFAULT_SHARD_SIZE, **common)
    return StoreWriter.create(target, **common)


def _reuse_or_resume(target: Path, store: FeatureStore, src, quiet: bool, sharding: int | None):
    writer, records = None, None
    if target.is_dir():
        kept = store.manifest["shard_size"]
        if sharding and sharding != kept:
            print(f"featx: {target} was written with --shard-size {kept}; keeping that (not {sharding}) "
                  "for this store (--overwrite rewrites it)", file=sys.stderr)
        # Reopening reads every listed shard once, through the verified read (a damaged one is dropped and
        # rebuilt), and keeps its item records: a reused store's bytes are what was committed.
        writer = ShardedWriter.reopen(target)
        store, records = FeatureStore(target), writer.records
    check = check_store_items(store, src, records)
    touched, changed = (check.touched, check.changed) if check is not None else ({}, [])
    if writer is None and (touched or changed or not store.complete):
        writer = StoreWriter.reopen(target)
    if touched or changed:
        writer.refresh_items(touched, changed)
    if changed and not quiet:
        print(f"featx: {len(changed)} file(s) changed since extraction (first: {store.all_ids[changed[0]]}); "
              "extracting them again", file=sys.stderr)
    if not (store.complete and not changed):
        return writer
    if writer is not None:  # at most stat data (and so shard hashes) were refreshed: read the store again
        _close_quietly(writer)
        store = FeatureStore(target)
    store.reused = True
    return store


def _run_ray(writer, src, spec, data_config, cluster, prec, dtype, batch_size, strict, quiet) -> dict:
    from ._ray import run_ray_shards

    # "auto" sizes a batch for one GPU in this process; the actors may sit elsewhere.
    batch_size = 8 if batch_size == "auto" else int(batch_size)
    started = time.perf_counter()
    info = run_ray_shards(writer, src, spec, data_config, cluster, prec=prec, dtype=dtype, batch_size=batch_size,
                          strict=strict, quiet=quiet)
    seconds, rows = time.perf_counter() - started, info["rows_this_run"]
    return {**info, "seconds_this_run": round(seconds, 3),
            "images_per_second": round(rows / seconds, 2) if rows and seconds > 0 else None}


def _run(writer, src, model, data_config, dev, prec, batch_size, workers, channels_last, strict, quiet, compile,
         decode, recipe: FeatureRecipe | None = None, threads: int | None = None) -> dict:
    if channels_last is None:
        channels_last = dev.type == "cuda"
    with _torch_threads(threads):
        model = prepare_model(model, dev, bool(channels_last), compile=False)
        workers = resolve_workers(workers, dev)
        input_size = tuple(data_config["input_size"])
        batch_size, auto = resolve_batch_size(batch_size, model, input_size, dev, prec, bool(channels_last))
        if auto and not quiet:
            why = "largest power of two that fits" if dev.type == "cuda" else "the measured-best CPU default"
            print(f"featx: batch size auto -> {batch_size} ({why})", file=sys.stderr)
        if compile:
            # Compiled after sizing: the trial batches would each trigger a recompilation.
            model = torch.compile(model)
        info = run_extraction(writer, src, model, data_config, writer.batches(batch_size), dev=dev, precision=prec,
                              workers=workers, channels_last=bool(channels_last), strict=strict, quiet=quiet,
                              decode=decode, recipe=recipe)
        used_threads = torch.get_num_threads()
    # compile, decode and sizing are how the run went, not what the features are: kept
    # here, out of the config (the cache key); see README "Performance".
    return {"device": str(dev), "batch_size": batch_size, "batch_size_auto": auto, "workers": workers,
            "channels_last": bool(channels_last), "compile": bool(compile), "decode": decode, "precision": prec,
            **info, "threads": used_threads}
