"""``featx bench heads``: in-memory versus streaming heads, wall time, peak RSS and accuracy."""

from __future__ import annotations

import json

import click

from ..core.errors import FeatxUsageError

__all__ = ["COMMANDS", "bench_heads_command"]


@click.command("heads")
@click.option("--rows", type=int, default=200_000, show_default=True, help="rows of the synthetic store")
@click.option("--dim", type=int, default=128, show_default=True, help="feature dimension")
@click.option("--classes", type=int, default=10, show_default=True)
@click.option("--max-memory", "max_memory", default="256MB", show_default=True, help="budget of the streaming run")
@click.option("--heads", "heads_", default="logreg", show_default=True, help="comma-separated heads (logreg, xgboost)")
@click.option("--shard-size", type=int, default=None, help="rows per shard [rows/20, at least 1,000]")
@click.option("--threads", type=int, default=1, show_default=True, help="BLAS/OpenMP threads of each run")
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="keep the store and results here")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def bench_heads_command(rows, dim, classes, max_memory, heads_, shard_size, threads, workdir, as_json) -> None:
    """Train on one synthetic sharded store twice, in memory and streamed under --max-memory; side by side."""
    from ..core.memory import format_size, parse_size
    from ..heads import bench_heads

    if rows < classes * 30 or dim < 1 or classes < 2:
        raise FeatxUsageError("--rows must be at least 30 per class, --dim >= 1 and --classes >= 2")
    parse_size(max_memory)
    doc = bench_heads(rows, dim, classes, max_memory, heads=heads_, shard_size=shard_size, threads=threads,
                      workdir=workdir, quiet=as_json is False)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    s = doc["settings"]
    click.echo(f"{heads_} on {s['rows']:,} x {s['dim']} float32, {s['classes']} classes "
               f"({format_size(s['store_bytes'])} sharded store), --max-memory {format_size(s['max_memory'])}")
    for path, run in doc["runs"].items():
        for row in run["rows"]:
            acc = "skipped" if row["accuracy"] is None else f"acc {row['accuracy']:.4f}"
            click.echo(f"  {path:9s} {row['head']:8s} {run['wall_s']:8.1f} s  peak RSS {format_size(run['peak_rss_bytes'])}"
                       f"  {acc}  ({row['memory_path']})")
    for head, gap in doc["accuracy_gap_points"].items():
        click.echo(f"  {head}: streaming - in-memory accuracy {gap:+.2f} points")
    click.echo(f"  {doc['machine']['cores']} core(s), load {doc['machine']['loadavg'][0]:.1f}")


COMMANDS: list = [bench_heads_command]
