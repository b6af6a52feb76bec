"""``featx search``: a budgeted search over backbones and extraction options, chosen on val, then
the winner extracted on the full source and its heads fitted."""

from __future__ import annotations

import click

from ._extract import WORKERS_HELP, IntOrAuto

__all__ = ["COMMANDS", "search"]


def _backbones(text: str) -> list[dict]:
    """``lite0,mnv2=FILE`` -> ``[{name: lite0}, {name: mnv2, weights: FILE}]``."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            name, sep, weights = part.partition("=")
            out.append({"name": name.strip(), **({"weights": weights.strip()} if sep else {})})
    return out


def _space(values: tuple[str, ...]) -> dict:
    """``--space crop_pct=0.875,1.0 --space "layers=;-1,-2"``: one key per option; values split on ``;``
    when given, else on ``,`` (layers hold commas: ``layers=;-1,-2`` is pooled only, then pooled + two layers)."""
    import yaml

    from ..core.errors import FeatxUsageError

    out: dict = {}
    for raw in values:
        key, sep, text = raw.partition("=")
        if not sep or not key.strip():
            raise FeatxUsageError(f"--space {raw!r}: expected KEY=V1,V2 (e.g. crop_pct=0.875,1.0 or 'layers=;-1,-2')")
        items = text.split(";") if ";" in text else text.split(",")
        parsed = []
        for item in items:
            item = item.strip()
            value = yaml.safe_load(item) if item and key.strip() not in ("layers", "views") else item
            parsed.append(value)
        out[key.strip()] = parsed
    return out


@click.command()
@click.option("--source", required=True, help="Image folder, CSV manifest, WebDataset/Parquet files or a built-in (digits).")
@click.option("--backbones", required=True,
              help="Candidate backbones, comma-separated; NAME=FILE for local weights (mobilenetv2_100=weights.pth).")
@click.option("--space", "space", multiple=True, metavar="KEY=V1,V2",
              help="Values to try: img_size, crop_pct, interpolation, layers, views (e.g. --space crop_pct=0.875,1.0 "
                   "--space 'layers=;-1,-2'). Repeatable; a key left out keeps each model's own value.")
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True), default=30, show_default=True,
              help="Bounds the search (the final extraction on the full source is extra).")
@click.option("--min-per-class", type=click.IntRange(min=2), default=20, show_default=True,
              help="First rung: train and val items per class.")
@click.option("--eta", type=click.IntRange(min=2), default=3, show_default=True,
              help="Keep the best 1/eta per rung; each rung has eta times the items.")
@click.option("--combine/--no-combine", default=True, show_default=True,
              help="Try concatenating the winner with the best of each other backbone.")
@click.option("--proxy", default="logreg", show_default=True, type=click.Choice(["logreg", "logme"]),
              help="Candidate score: logreg's val accuracy, or the LogME evidence of train + val (fits no head).")
@click.option("--heads", "heads_", default="logreg", show_default=True, help="Heads fitted on the chosen configuration.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Results directory.")
@click.option("--search-only", is_flag=True, help="Stop after the search (write search.json); no full extraction.")
@click.option("--split-seed", type=int, default=0, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--test-fraction", type=float, default=0.2, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the subsamples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--workers", default="auto", show_default=True, type=IntOrAuto(0), help=WORKERS_HELP)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def search(source, backbones, space, budget_minutes, min_per_class, eta, combine, proxy, heads_, out, search_only, split_seed,
           val_fraction, test_fraction, seed, batch_size, workers, threads, device, quiet):
    """Find the best frozen configuration on val by successive halving, then fit heads on it.

    Every candidate (backbone x space) is extracted on a small stratified subsample of
    train and val and scored by logreg on val; the best 1/eta go on to a subsample eta
    times larger, until one is left. Each extraction is cached, so a rerun or a widened
    space extracts only what is new. Test items are never read until the final fit.
    """
    from pathlib import Path

    from ..pipeline import SearchFit, parse_search, search_and_fit
    from ._heads import _head_names

    spec = parse_search({"backbones": _backbones(backbones), "space": _space(space) or None,
                         "budget_minutes": budget_minutes, "min_per_class": min_per_class, "eta": eta,
                         "combine": combine, "seed": seed, "batch_size": batch_size,
                         "workers": workers, "threads": threads, "proxy": proxy})
    heads = tuple(_head_names(heads_))  # checked before the search spends its budget
    options = SearchFit(heads=heads, split_seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction,
                        device=device, quiet=quiet, final=not search_only)
    doc, entries = search_and_fit(source, spec, out, options)
    click.echo(doc["summary"])
    final = sum(s.get("extract_seconds") or 0 for s in (entries[0].get("stores") or [])) if entries else 0
    if final:
        cost = doc["cost_seconds"]
        click.echo(f"cost: search {cost:.0f} s (its extractions as recorded, plus proxy fits; this run "
                   f"{doc['seconds']:.0f} s), final extraction {final:.0f} s (search / final = {cost / final:.2f})")
    for entry in entries:
        ci = entry["accuracy_ci"]
        click.echo(f"{entry['head']}: test accuracy {entry['accuracy']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]")
    click.echo(f"search: {Path(out) / 'search' / 'search.json'}"
               + (f"; results: {Path(out) / 'results.json'}" if entries else ""))


COMMANDS = [search]
