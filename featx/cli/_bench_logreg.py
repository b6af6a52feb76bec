"""``featx bench logreg`` (issue 12): the linear-probe selection, reference vs featx vs torch."""

from __future__ import annotations

import json

import click

from ..core.errors import FeatxUsageError

__all__ = ["COMMANDS", "bench_logreg_command"]


@click.command("logreg")
@click.option("--n", "n", type=int, default=45_000, show_default=True, help="training rows (val and test: n/9 each)")
@click.option("--dim", type=int, default=1280, show_default=True, help="feature dimension (synthetic data)")
@click.option("--classes", type=int, default=10, show_default=True)
@click.option("--features", "features", type=click.Path(dir_okay=False), default=None,
              help="time on a feature store's own train/val/test split instead of synthetic data")
@click.option("--threads", type=int, default=None, help="BLAS/torch threads [the cores this process may use]")
@click.option("--device", default="auto", show_default=True, help="torch engine device: auto, cpu, cuda, cuda:N")
@click.option("--no-reference", is_flag=True, help="skip the slow 45-point reference path")
@click.option("--quick", is_flag=True, help="a small problem (5,000 x 256) for a look in seconds")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def bench_logreg_command(n, dim, classes, features, threads, device, no_reference, quick, as_json) -> None:
    """Time logreg selection + refit: the 45-point reference path, featx's default and the torch engine."""
    from ..heads import bench_logreg

    if quick:
        n, dim = 5000, 256
    if n < classes * 10 or dim < 1 or classes < 2:
        raise FeatxUsageError("--n must be at least 10 rows per class, --dim >= 1 and --classes >= 2")
    doc = bench_logreg(n, dim, classes, features=features, threads=threads, device=device, reference=not no_reference)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    s = doc["settings"]
    click.echo(f"logreg probe on {s['n_train']} train / {s['n_val']} val / {s['n_test']} test rows, {s['dim']} features, "
               f"{s['classes']} classes ({s['data']}); {doc['machine']['threads']} thread(s), torch on {doc['device']['torch']}")
    for name, run in doc["runs"].items():
        click.echo(f"  {name:9s} {run['seconds']:8.2f} s  test acc {run['accuracy']:.4f}  C={run['C']:.3g}  "
                   f"({run['fits']} fits, refit {run['refit_seconds']:.2f} s)")
    if "speedup" in doc:
        click.echo(f"  featx vs reference: {doc['speedup']:.2f}x faster, accuracy {doc['acc_gap_points']:+.2f} points")
    m = doc["machine"]
    click.echo(f"  cpu/wall {m['cpu_per_wall']:.2f} on {m['cores']} core(s), load {m['loadavg_after'][:1]}"
               + (f"; WARNING: {m['note']}" if m["note"] else ""))


COMMANDS: list = [bench_logreg_command]
