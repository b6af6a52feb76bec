"""``featx export``: a feature store as a Parquet file that Spark, Ray, pandas read without featx."""

from __future__ import annotations

import click

__all__ = ["COMMANDS", "export"]


@click.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", default="parquet", show_default=True, type=click.Choice(["parquet"]))
@click.option("--overwrite", is_flag=True, help="Replace OUT if an earlier export wrote it.")
def export(store_path, out, fmt, overwrite):
    """Write STORE's usable rows (id, label, label_name, split, features) to OUT."""
    from ..store import FeatureStore, export_store

    store = FeatureStore(store_path)
    path = export_store(store, out, fmt=fmt, overwrite=overwrite)
    click.echo(f"{path}: {store.n_done} rows x {store.dim} features ({fmt})")


COMMANDS = [export]
