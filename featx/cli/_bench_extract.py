"""``featx bench extract`` and ``featx bench finetune`` (issue 11): the data path against the model.

The measuring code lives in ``featx.extraction.bench_extract`` and
``featx.finetuning.bench_finetune``; this module only parses options and prints.
"""

from __future__ import annotations

import json

import click

from ._extract import DECODE_HELP, WORKERS_HELP, IntOrAuto

__all__ = ["COMMANDS", "bench_extract", "bench_finetune"]


def _common(command):
    options = [
        click.option("--source", default="digits", show_default=True, help="Image folder, CSV manifest, WebDataset .tar shards, .parquet files or built-in."),
        click.option("--backbone", default="efficientnet_lite0", show_default=True),
        click.option("--weights", default=None, help="As for featx extract ('random' for a quick check)."),
        click.option("--device", default="auto", show_default=True),
        click.option("--workers", default="auto", show_default=True, type=IntOrAuto(0), help=WORKERS_HELP),
        click.option("--limit", default=None, type=click.IntRange(min=1), help="Use N images (every k-th) for a quick run."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command("extract")
@_common
@click.option("--batch-size", default="8", show_default=True, type=IntOrAuto(1))
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "fp16", "bf16"]))
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model (bare and end to end).")
@click.option("--decode", default="cpu", show_default=True, type=click.Choice(["cpu", "draft", "gpu"]), help=DECODE_HELP)
@click.option("--no-float-loader", is_flag=True, help="Skip timing the old float loader.")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="ray: local engine vs Ray local mode end to end, and 1 vs --actors actors (CPU).")
@click.option("--actors", default=2, show_default=True, type=click.IntRange(min=1), help="--engine ray: most actors.")
def bench_extract(source, backbone, weights, device, workers, limit, as_json, batch_size, precision, compile_model,
                  decode, no_float_loader, engine, actors):
    """Bare forward vs loader alone vs extraction end to end, img/s and ratios, in one process."""
    from ..extraction import bench_extract as run
    from ..extraction import format_table

    if engine == "ray":
        from ..extraction import bench_ray_extract, format_ray_table

        result = bench_ray_extract(source, backbone, weights=weights, batch_size=8 if batch_size == "auto" else int(batch_size),
                                   workers=workers, limit=limit, actors=actors)
        click.echo(json.dumps(result, indent=2) if as_json else format_ray_table(result))
        return

    result = run(source, backbone, weights=weights, batch_size=batch_size, workers=workers, device=device,
                 precision=precision, compile=compile_model, decode=decode, limit=limit,
                 float_loader=not no_float_loader)
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))


@click.command("finetune")
@_common
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=2))
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16"]))
def bench_finetune(source, backbone, weights, device, workers, limit, as_json, batch_size, precision):
    """A full fine-tune's bare train step vs a whole epoch from the files, img/s and ratio."""
    from ..finetuning import bench_finetune as run

    result = run(source, backbone, weights=weights, batch_size=batch_size, workers=workers, device=device,
                 precision=precision, limit=limit)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    s = result["settings"]
    click.echo(f"{s['backbone']} full fine-tune on {result['device']}: batch {s['batch_size']}, {s['precision']}, "
               f"workers {s['workers']}, {s['n_images']} images, {s['torch_threads']} torch threads")
    click.echo(f"bare train step  {result['bare_step_img_s']:>10.1f} img/s")
    click.echo(f"epoch end to end {result['epoch_img_s']:>10.1f} img/s  ({result['ratio']:.2f}x the bare step)")
    if result["machine_busy"]:
        click.echo("machine busy: numbers unreliable (" + "; ".join(result["warnings"]) + ")")


COMMANDS = [bench_extract, bench_finetune]
