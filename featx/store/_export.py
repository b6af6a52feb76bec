"""``featx export``: a feature store as Parquet, for tools that do not speak featx.

One row per usable item: ``id`` (string), ``label`` (int64), ``label_name`` (string),
``split`` (train/val/test: the assignment ``featx train`` uses with its default seed and
fractions, which keeps the source's own split where it has one) and ``features``
(``fixed_size_list<float32>[D]``, which Spark, Ray Data, pandas and embedding indexes read
as one vector per row). A row kept without a label (``extract --allow-unlabelled``) has
label -1, a null ``label_name`` and the split ``""``. The store's config, fingerprint, store
id and class names go into the schema metadata under ``featx``. Rows come through the verified reader
(:func:`~featx.store.iter_verified_shards`) one shard (or 65,536 rows) at a time, so a
damaged or swapped shard is an error, never exported, and export never holds more than
one shard's features; the file appears by atomic rename, and the temporary file of an
export that was killed is removed by the next export to that OUT. OUT may not be the store
or lie inside it; an existing OUT is replaced only with ``overwrite`` and only if it is a file
featx exported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..core.errors import FeatxUsageError, missing_extra
from ..core.io import disk_errors, fsync_dir, remove_stale_temps
from ._place import check_apart
from ._store import FeatureStore, iter_verified_shards

__all__ = ["export_store", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("parquet",)


def _chunks(store: FeatureStore, splits: np.ndarray):
    """(features, labels, ids, splits) in source order, a shard (or 65,536 rows) at a time, verified."""
    offset = 0
    for ids, labels, _, feats in iter_verified_shards(store):
        yield feats, labels, ids, splits[offset:offset + len(ids)]
        offset += len(ids)


def _check_out(store: FeatureStore, out: Path, overwrite: bool) -> None:
    check_apart(out, [store.path], what="OUT")
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise FeatxUsageError(f"{out} exists; pass --overwrite to replace it, or choose another OUT")
    import pyarrow.parquet as pq

    try:
        ours = out.is_file() and not out.is_symlink() and b"featx" in (pq.read_schema(out).metadata or {})
    except Exception:  # noqa: BLE001 - not readable as Parquet: not a featx export
        ours = False
    if not ours:
        raise FeatxUsageError(f"{out} exists and is not a featx export; featx replaces only files it wrote: "
                              "choose another OUT")


def export_store(store: FeatureStore | str | os.PathLike, out: str | os.PathLike, fmt: str = "parquet",
                 overwrite: bool = False) -> Path:
    """Write the usable rows of a complete store to ``out``; returns the path.

    ``overwrite``: replace an existing ``out`` that an earlier export wrote (anything else is refused).
    """
    if fmt not in EXPORT_FORMATS:
        raise FeatxUsageError(f"export format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_extra("export to Parquet needs pyarrow", "parquet") from None
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    out = Path(out)
    _check_out(store, out, overwrite)
    store.require_complete()
    splits, rule = store.split_assignment()
    names = np.asarray(store.class_names, dtype=object)
    meta = {"config": store.config, "fingerprint": store.fingerprint, "store_id": store.store_id,
            "class_names": store.class_names, "split_rule": rule}
    schema = pa.schema([("id", pa.string()), ("label", pa.int64()), ("label_name", pa.string()),
                        ("split", pa.string()), ("features", pa.list_(pa.float32(), store.dim))],
                       metadata={"featx": json.dumps(meta, sort_keys=True, default=str)})
    out.parent.mkdir(parents=True, exist_ok=True)
    # A killed export's temporary file of this OUT (``.NAME.PID.tmp`` of a dead process; never a live one's).
    remove_stale_temps(out.parent, out.name)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with disk_errors(out, tmp):
        with pq.ParquetWriter(tmp, schema) as writer:
            for feats, labels, ids, chunk_splits in _chunks(store, np.asarray(splits)):
                flat = pa.array(np.ascontiguousarray(feats, dtype=np.float32).reshape(-1))
                writer.write_table(pa.table({
                    "id": pa.array(ids.astype(str).tolist(), pa.string()),
                    "label": pa.array(labels.astype(np.int64)),
                    # An unlabelled row (-1, --allow-unlabelled) has no name: null, never names[-1].
                    "label_name": pa.array([names[k] if k >= 0 else None for k in labels.tolist()], pa.string()),
                    "split": pa.array(np.asarray(chunk_splits).astype(str).tolist(), pa.string()),
                    "features": pa.FixedSizeListArray.from_arrays(flat, store.dim),
                }, schema=schema))
        os.replace(tmp, out)
    fsync_dir(out.parent)
    return out
