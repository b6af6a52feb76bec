"""``featx import``: embeddings computed elsewhere (``.npz``/``.npy``, Parquet) -> a feature store."""

from __future__ import annotations

import click

__all__ = ["COMMANDS", "import_"]


@click.command("import")
@click.argument("src", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", required=True, type=click.Choice(["npy", "parquet"]),
              help="npy: a .npz file or a folder of features.npy, labels.npy [ids.npy, splits.npy, class_names.npy]; "
                   "parquet: a file or folder with a features list column and label [id, split] columns.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Write a sharded store (a directory) of this many rows per shard; default: one .h5 file.")
@click.option("--backbone", default=None, help="What made the embeddings (recorded as provenance, shown by featx info).")
@click.option("--feature-columns", default=None,
              help="Parquet: comma-separated float columns, one per dimension, instead of a features list column.")
@click.option("--overwrite", is_flag=True, help="Replace an existing feature store at OUT.")
def import_(src, out, fmt, shard_size, backbone, feature_columns, overwrite):
    """Write embeddings made outside featx (SRC) as a feature store (OUT) every command reads."""
    from ..store import read_import_source, write_store

    columns = [c.strip() for c in feature_columns.split(",") if c.strip()] if feature_columns else None
    kwargs = read_import_source(src, fmt, feature_columns=columns)
    store = write_store(out, **kwargs, shard_size=shard_size, backbone=backbone, overwrite=overwrite)
    layout = f"{store.manifest['n_shards']} shards" if shard_size else "one file"
    click.echo(f"imported {store.n_done} x {store.dim} {store.feature_dtype} features, {len(store.class_names)} classes "
               f"-> {out} ({layout}); train with: featx train --features {out} --out RESULTS")


COMMANDS = [import_]
