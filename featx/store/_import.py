"""Bring your own embeddings: arrays computed elsewhere written as a featx feature store.

:func:`write_store` writes features, labels (and optionally ids, splits, class names)
through the same writers :func:`featx.extract` uses, single-file or sharded, so every
command reads the result like any other store. Its provenance is recorded as
``imported``: the "backbone" identity is ``{"model": NAME or "imported", "weights":
{"kind": "imported"}}``, which ``featx info`` shows and ``featx predict`` on images
refuses (featx cannot embed an image for a model it does not have).

An import is all or nothing: the store is written under ``<out>.importing`` and renamed
into place once complete, so an interrupted import leaves no half store at ``out``
(the leftover is replaced by the next import). The fingerprint covers ids, labels,
splits, class names and the feature bytes, so two imports of different embeddings never
share a ``store_id``.

:func:`read_import_source` reads the two file formats of ``featx import``:

* ``npy``: a ``.npz`` file, or a folder of ``.npy`` files, with ``features`` (N, D) and
  ``labels`` (N,), optionally ``ids`` (N,), ``splits`` (N,: train/val/test/"") and
  ``class_names`` (K,). Folder ``.npy`` files are memory-mapped, so a store larger than
  RAM is imported chunk by chunk.
* ``parquet``: one file (or a folder of files) with a fixed-size or variable list column
  ``features`` (or one float column per dimension given by ``feature_columns``) and
  ``label``/``labels``, optionally ``id``/``ids`` and ``split``/``splits``; read in
  record batches with pyarrow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..core.errors import FeatxUsageError, missing_extra
from ..data import UNLABELLED
from ._lock import writer_lock
from ._place import is_featx_store, swap_in
from ._store import FeatureStore
from ._writer import ShardedWriter, StoreWriter

__all__ = ["write_store", "read_import_source", "IMPORTED", "IMPORT_FORMATS", "imported_identity"]

IMPORTED = "imported"
IMPORT_FORMATS = ("npy", "parquet")
_SPLITS = ("train", "val", "test", "")
_CHUNK_ROWS = 65536


def imported_identity(backbone: str | None = None) -> dict:
    """The "backbone" identity of imported features (a head trained on them records it)."""
    # Pooling happened wherever the embeddings were made: recorded as "imported", a string
    # like every extracted store's (concatenated feature sets join the poolings).
    return {"model": backbone or IMPORTED, "weights": {"kind": IMPORTED}, "pooling": IMPORTED}


def _labels(labels, class_names) -> tuple[np.ndarray, list[str]]:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise FeatxUsageError(f"labels must be one-dimensional; got shape {labels.shape}")
    if labels.dtype.kind in "iu":
        # -1 (UNLABELLED, as `featx export` writes a row kept without a label) is in no class and no split.
        if labels.size and labels.min() < UNLABELLED:
            raise FeatxUsageError("integer labels must be class indices 0..K-1 (or -1: unlabelled); "
                                  f"found {int(labels.min())}")
        k = int(labels.max()) + 1 if labels.size else 0
        names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
        if k > len(names):
            raise FeatxUsageError(f"label {k - 1} has no class name: class_names lists {len(names)} classes")
        return labels.astype(np.int64), names
    if labels.dtype.kind in "fb":
        raise FeatxUsageError(f"labels must be integers or class-name strings; got {labels.dtype}")
    text = labels.astype(str)
    names = [str(c) for c in class_names] if class_names is not None else sorted(set(text.tolist()))
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(text.tolist()) - set(index))
    if unknown:
        raise FeatxUsageError(f"labels {unknown[:3]} are not in class_names")
    return np.array([index[t] for t in text], dtype=np.int64), names


def _ids_splits(n: int, ids, splits) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([str(i) for i in range(n)], dtype=object) if ids is None else np.asarray(ids).astype(str).astype(object)
    if len(ids) != n:
        raise FeatxUsageError(f"ids has {len(ids)} entries for {n} feature rows")
    if len(set(ids.tolist())) != n:
        raise FeatxUsageError("ids must be unique: two rows share an id")
    splits = np.full(n, "", dtype=object) if splits is None else np.asarray(splits).astype(str).astype(object)
    if len(splits) != n:
        raise FeatxUsageError(f"splits has {len(splits)} entries for {n} feature rows")
    bad = sorted(set(splits.tolist()) - set(_SPLITS))
    if bad:
        raise FeatxUsageError(f"splits must be train, val, test or empty; found {bad[:3]}")
    return ids, splits


def _dtype(dtype) -> str:
    # float16 stays float16 (half the disk); every other input is stored as float32.
    return "float16" if np.dtype(dtype) == np.float16 else "float32"


def _array_chunks(features, rows: int = _CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Row blocks of anything sliceable with a shape (ndarray, np.memmap, h5py dataset)."""
    for start in range(0, features.shape[0], rows):
        yield np.asarray(features[start:start + rows])


def _checked(chunks: Iterable[np.ndarray], n: int, dim: int, dtype: str, digest) -> Iterator[np.ndarray]:
    """Validate each block (shape, finite), cast it to the store dtype and feed the content digest."""
    seen = 0
    for block in chunks:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != dim:
            raise FeatxUsageError(f"features must be (N, {dim}); got a block of shape {block.shape}")
        if block.dtype.kind not in "fiu":
            raise FeatxUsageError(f"features must be numbers; got {block.dtype}")
        if seen + len(block) > n:
            raise FeatxUsageError(f"features have more rows than the {n} labels")
        out = np.ascontiguousarray(block, dtype=dtype)
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            row = seen + int(np.flatnonzero(~finite)[0])
            raise FeatxUsageError(f"feature row {row} holds NaN or infinity (after conversion to {dtype}); "
                                  "fix or drop it before importing")
        digest.update(out.tobytes())
        seen += len(out)
        yield out
    if seen != n:
        raise FeatxUsageError(f"features have {seen} rows for {n} labels")


def _rechunk(chunks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Blocks of exactly ``size`` rows (the last may be shorter): one per shard."""
    pending: list[np.ndarray] = []
    held = 0
    for block in chunks:
        while len(block):
            take = min(size - held, len(block))
            pending.append(block[:take])
            held, block = held + take, block[take:]
            if held == size:
                yield np.concatenate(pending)
                pending, held = [], 0
    if held:
        yield np.concatenate(pending)


def write_store(
    path: str | os.PathLike,
    features,
    labels,
    *,
    ids=None,
    splits=None,
    class_names=None,
    shard_size: int | None = None,
    backbone: str | None = None,
    overwrite: bool = False,
    source_name: str | None = None,
) -> FeatureStore:
    """Write embeddings computed elsewhere as a feature store; return it opened.

    ``features``: (N, D) array-like (an ndarray, ``np.memmap`` or h5py dataset is read
    in row blocks), or an iterable of (n_i, D) blocks whose rows add up to N.
    ``labels``: N class indices (with ``class_names`` naming them, else ``"0".."K-1"``; -1 for a
    row without a label, kept in no split) or N class-name strings. ``ids``: N unique ids (default ``"0".."N-1"``). ``splits``:
    N of train/val/test/"" (default: none, so featx computes a seeded split).
    ``shard_size``: write a sharded store (a directory) of that many rows per shard;
    ``None``: one HDF5 file. ``backbone``: what made the embeddings, recorded as provenance.
    """
    path = Path(path)
    codes, names = _labels(labels, class_names)
    n = len(codes)
    ids, splits = _ids_splits(n, ids, splits)
    if len(names) < 2:
        raise FeatxUsageError(f"a store needs at least 2 classes; these labels have {len(names)}")
    if shard_size is not None and shard_size < 1:
        raise FeatxUsageError("shard size must be at least 1")
    if hasattr(features, "shape"):
        if len(features.shape) != 2:
            raise FeatxUsageError(f"features must be a 2-D (N, D) array; got shape {tuple(features.shape)}")
        if int(features.shape[0]) != n:
            raise FeatxUsageError(f"features have {features.shape[0]} rows for {n} labels")
        dim, dtype, chunks = int(features.shape[1]), _dtype(features.dtype), _array_chunks(features)
    else:
        chunks = iter(features)
        first = np.asarray(next(chunks, np.zeros((0, 0), np.float32)))
        if first.ndim != 2:
            raise FeatxUsageError(f"feature blocks must be 2-D (n, D); got shape {first.shape}")
        dim, dtype = int(first.shape[1]), _dtype(first.dtype)
        chunks = _prepend(first, chunks)
    if dim < 1:
        raise FeatxUsageError("features have no columns")
    config = {"source": {"kind": IMPORTED, "name": source_name or "array"}, "backbone": imported_identity(backbone),
              "data_config": {}, "precision": None, "dtype": dtype, "provenance": IMPORTED}
    started = time.perf_counter()
    with writer_lock(path):
        _check_target(path, overwrite)
        tmp = path.with_name(path.name + ".importing")
        _remove_featx_leftover(tmp)
        digest = hashlib.sha256()
        for part in (ids, codes.astype(str), splits, np.asarray(names, dtype=object)):
            digest.update("\x1f".join(map(str, part)).encode("utf-8") + b"\x1e")
        blocks = _checked(chunks, n, dim, dtype, digest)
        meta = {"config": config, "ids": ids, "labels": codes, "splits": splits, "class_names": names, "dim": dim,
                "dtype": dtype}
        run = {"device": "none", "imported": True}
        try:
            _write(tmp, meta, blocks, shard_size, digest, run, started)
        except BaseException:
            _remove_featx_leftover(tmp)  # all or nothing: a failed import leaves nothing behind
            raise
        _swap(tmp, path)
    return FeatureStore(path)


def _prepend(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    if first.size:
        yield first
    yield from rest


def _check_target(path: Path, overwrite: bool) -> None:
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise FeatxUsageError(f"{path} already exists; use --overwrite to replace it, or another OUT")
    if not is_featx_store(path):  # featx never deletes what it did not write
        raise FeatxUsageError(f"{path} exists and is not a featx feature store; not replacing it")


def _remove_featx_leftover(tmp: Path) -> None:
    """A ``.importing`` leftover is featx's own half-written import: removed before a new one."""
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists() or tmp.is_symlink():
        tmp.unlink()


def _run_info(run: dict, started: float, n: int) -> dict:
    seconds = time.perf_counter() - started
    return {**run, "seconds_this_run": round(seconds, 3), "rows_per_second": round(n / max(seconds, 1e-9), 1)}


def _write(tmp: Path, meta: dict, blocks: Iterable[np.ndarray], shard_size: int | None, digest, run: dict,
           started: float) -> None:
    """Every row through the store's own writer (either layout, the same ``write_batch`` loop)."""
    common = {"config": meta["config"], "fingerprint": "", "ids": meta["ids"], "labels": meta["labels"],
              "splits": meta["splits"], "class_names": meta["class_names"], "dim": meta["dim"], "dtype": meta["dtype"]}
    if shard_size is None:
        writer = StoreWriter.create(tmp, **common)
    else:
        writer = ShardedWriter.create(tmp, **common, shard_size=shard_size)
        blocks = _rechunk(blocks, shard_size)  # write_batch takes rows inside one shard
    try:
        start = 0
        for block in blocks:
            writer.write_batch(start, block, [None] * len(block))
            start += len(block)
        # The fingerprint is only known once every byte was read; the store is still private here.
        if shard_size is None:
            writer.h5.attrs["fingerprint"] = digest.hexdigest()
        else:
            writer.manifest["fingerprint"] = digest.hexdigest()
        writer.finish(_run_info(run, started, start))
    finally:
        writer.close()


def _swap(tmp: Path, path: Path) -> None:
    """Put the finished import at ``path``, replacing an old store only now (the store's own swap)."""
    from ..core.io import fsync_dir

    if path.exists() or path.is_symlink():
        swap_in(tmp, path)
    else:
        os.replace(tmp, path)
        fsync_dir(path.parent)


# -- featx import: the file formats --------------------------------------------------


def read_import_source(src: str | os.PathLike, fmt: str, *, feature_columns: list[str] | None = None) -> dict:
    """Keyword arguments for :func:`write_store` read from a ``.npz``/``.npy`` folder or Parquet."""
    src = Path(src)
    if fmt not in IMPORT_FORMATS:
        raise FeatxUsageError(f"--format must be one of {', '.join(IMPORT_FORMATS)}; got {fmt!r}")
    if not src.exists():
        raise FeatxUsageError(f"import source not found: {src}")
    return _read_npy(src) if fmt == "npy" else _read_parquet(src, feature_columns)


def _read_npy(src: Path) -> dict:
    if src.is_dir():
        files = {p.stem: p for p in src.glob("*.npy")}
        missing = [k for k in ("features", "labels") if k not in files]
        if missing:
            raise FeatxUsageError(f"{src} has no {', '.join(k + '.npy' for k in missing)} (an npy import folder holds "
                                  "features.npy and labels.npy, optionally ids.npy, splits.npy, class_names.npy)")
        arrays = {k: np.load(p, mmap_mode="r" if k == "features" else None, allow_pickle=False) for k, p in files.items()}
    else:
        try:
            with np.load(src, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise FeatxUsageError(f"{src} is not a readable .npz file ({str(exc).splitlines()[0]})") from None
        missing = [k for k in ("features", "labels") if k not in arrays]
        if missing:
            raise FeatxUsageError(f"{src} has no array {' or '.join(missing)} (an npz import holds features and "
                                  "labels, optionally ids, splits, class_names)")
    return {"features": arrays["features"], "labels": arrays["labels"], "ids": arrays.get("ids"),
            "splits": arrays.get("splits"), "class_names": _optional_list(arrays.get("class_names")),
            "source_name": src.name}


def _optional_list(values) -> list[str] | None:
    return None if values is None else [str(v) for v in np.asarray(values).tolist()]


def _column(names: list[str], *choices: str) -> str | None:
    return next((c for c in choices if c in names), None)


def _read_parquet(src: Path, feature_columns: list[str] | None) -> dict:
    try:
        import pyarrow.dataset as ds
    except ImportError:
        raise missing_extra("--format parquet needs pyarrow", "parquet") from None
    try:
        dataset = ds.dataset(str(src), format="parquet")
        names = dataset.schema.names
    except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError family
        raise FeatxUsageError(f"{src} is not readable as Parquet ({str(exc).splitlines()[0]})") from None
    label = _column(names, "label", "labels")
    if label is None:
        raise FeatxUsageError(f"{src} has no label column (label or labels); its columns: {', '.join(names[:10])}")
    features = feature_columns or [_column(names, "features", "embedding", "embeddings")]
    if features == [None] or any(c not in names for c in features):
        raise FeatxUsageError(f"{src} has no features column (features or embedding, or give --feature-columns); "
                              f"its columns: {', '.join(names[:10])}")
    name_col = _column(names, "label_name", "class_name")
    meta = [c for c in (label, _column(names, "id", "ids"), _column(names, "split", "splits"), name_col) if c]
    table = dataset.to_table(columns=meta)  # ids, labels, splits: small; the features are streamed
    get = {c: table.column(c).to_numpy(zero_copy_only=False) for c in meta}
    return {"features": _parquet_blocks(dataset, features), "labels": get[label],
            "ids": get.get(_column(names, "id", "ids")), "splits": get.get(_column(names, "split", "splits")),
            "class_names": _parquet_class_names(dataset.schema, get[label], get.get(name_col)),
            "source_name": src.name}


def _parquet_class_names(schema, labels: np.ndarray, label_names: np.ndarray | None) -> list[str] | None:
    """The class names a Parquet file carries: ``featx export``'s schema metadata, else a name column.

    Without them integer labels would come back as classes "0".."K-1", and a round trip
    through export and import would lose what the classes are.
    """
    with contextlib.suppress(ValueError, TypeError, AttributeError):  # someone else's "featx" key: ignore it
        found = json.loads((schema.metadata or {}).get(b"featx", b"{}")).get("class_names")
        if isinstance(found, list) and found:
            return [str(c) for c in found]
    if label_names is None or labels.dtype.kind not in "iu" or not len(labels):
        return None  # string labels name themselves
    k = int(labels.max()) + 1
    named: dict[int, str] = {}
    for code, name in zip(labels.tolist(), label_names.tolist()):
        if code < 0 or name is None:
            continue  # an unlabelled row has no name
        if named.setdefault(code, str(name)) != str(name):
            raise FeatxUsageError(f"label {code} is named both {named[code]!r} and {name!r} in the name column")
    out = [named.get(i, str(i)) for i in range(k)]
    if len(set(out)) < k:
        raise FeatxUsageError(f"the name column gives two labels one name ({', '.join(out[:10])})")
    return out


def _parquet_blocks(dataset, columns: list[str]) -> Iterator[np.ndarray]:
    import pyarrow.compute as pc

    for batch in dataset.to_batches(columns=columns, batch_size=_CHUNK_ROWS):
        if len(columns) > 1:
            yield np.column_stack([batch.column(c).to_numpy(zero_copy_only=False) for c in columns])
            continue
        col = batch.column(0)
        with contextlib.suppress(AttributeError):
            col = col.combine_chunks()
        if not hasattr(col, "flatten"):
            raise FeatxUsageError(f"column {columns[0]!r} must hold one list of numbers per row; got {col.type}")
        lengths = np.asarray(pc.list_value_length(col).to_numpy(zero_copy_only=False))
        if len(lengths) and (lengths.min() != lengths.max()):
            raise FeatxUsageError(f"column {columns[0]!r} holds vectors of different lengths "
                                  f"({int(lengths.min())} to {int(lengths.max())}); every row needs the same dimension")
        values = col.flatten().to_numpy(zero_copy_only=False)
        yield values.reshape(len(batch), -1) if len(batch) else values.reshape(0, 0)
