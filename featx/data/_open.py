"""Resolving a source spec (a path, a pattern, a built-in name) to a :class:`Source`.

Kept apart from the source kinds so that ``_sources`` (files, arrays) and ``_scale_sources``
(tar shards, Parquet) import nothing from each other but the base classes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import FeatxUsageError
from ._scale_sources import ParquetSource, WebDatasetSource, looks_like_scale_source
from ._sources import CsvSource, DigitsSource, ImageFolderSource, Source

__all__ = ["open_source", "list_builtin_sources"]

_BUILTINS = {"digits": DigitsSource}


def list_builtin_sources() -> list[str]:
    return sorted(_BUILTINS)


def open_source(spec: str | os.PathLike | Source, max_pixels: int | None = None,
                allow_unlabelled: bool = False) -> Source:
    """Resolve a source spec: a :class:`Source`, a built-in name, a folder, a ``.csv`` file, WebDataset
    ``.tar`` shards or ``.parquet`` files (``{00000..00099}`` brace patterns).

    ``allow_unlabelled``: keep samples without a label (an empty CSV label, a tar sample without a
    label member, a null Parquet label) with the label :data:`~featx.data.UNLABELLED` instead of
    skipping them; folders always label every image. A :class:`Source` object is returned as is.
    """
    if isinstance(spec, Source):
        return spec
    text = str(spec)
    if text in _BUILTINS:
        return _BUILTINS[text]()
    if looks_like_scale_source(text):  # tar shards or Parquet files, brace patterns included
        cls = ParquetSource if "parquet" in text.lower() else WebDatasetSource
        return cls(text, max_pixels=max_pixels, allow_unlabelled=allow_unlabelled)
    path = Path(text).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, max_pixels=max_pixels)
    if path.is_file() and path.suffix.lower() == ".csv":
        return CsvSource(path, max_pixels=max_pixels, allow_unlabelled=allow_unlabelled)
    if path.is_file():
        raise FeatxUsageError(f"source {text!r} is a file but not a .csv manifest, .tar shard or .parquet file")
    raise FeatxUsageError(
        f"source {text!r} not found: give an image folder, a .csv manifest, WebDataset .tar shards, "
        f".parquet files (brace patterns allowed) or a built-in ({', '.join(list_builtin_sources())})"
    )
