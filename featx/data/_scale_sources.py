"""Sources at scale: WebDataset tar shards (as img2dataset writes them) and Parquet files.

WebDataset: ``--source 'shards/{00000..00099}.tar'`` (brace expansion, ``{a..b}`` keeps
zero padding, ``{x,y}`` lists). A sample is the tar members sharing a key (the member
name up to its first dot): an image (``jpg``/``jpeg``/``png``/``webp``) and a label from
``cls`` (an integer), ``txt`` (a class name) or ``json`` (its ``label`` field). The listing
reads tar headers only; ``load`` seeks to the member's data, so no shard is ever held in
memory. Ids are ``<shard>/<key>``.

Parquet: one or more files (same brace syntax) with an image-bytes column (``image``,
HF-style ``{bytes, path}`` structs included, or ``jpg``/``png``/``image_bytes``/``bytes``)
and a label column (``label`` or ``cls``), optionally ``split`` and ``id``/``key``.
``load`` reads one row group at a time and keeps the last one. Ids are ``<file>/<row>``
unless an id column is given.

A sample without an image, or with bytes that do not decode, is skipped and recorded
like a bad file (its item stays in the listing, so rows never shift).
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..core.errors import BadImageError, FeatxError, FeatxUsageError
from ._images import load_image
from ._sources import Item, Source

__all__ = ["WebDatasetSource", "ParquetSource", "expand_braces", "looks_like_scale_source"]

_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_BRACE = re.compile(r"\{([^{}]*)\}")
_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
           "test": "test", "testing": "test"}


def expand_braces(pattern: str) -> list[str]:
    """``a/{000..002}.tar`` -> ``a/000.tar a/001.tar a/002.tar``; ``{x,y}`` lists; nested left to right."""
    match = _BRACE.search(pattern)
    if not match:
        return [pattern]
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    if ".." in body:
        lo, hi = body.split("..", 1)
        if not (lo.isdigit() and hi.isdigit()):
            raise FeatxUsageError(f"brace range {{{body}}} in {pattern!r} must be two integers")
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


def looks_like_scale_source(text: str) -> bool:
    lowered = text.lower()
    return lowered.endswith((".tar", ".parquet")) or ("{" in text and ("tar" in lowered or "parquet" in lowered))


def _existing(pattern: str, what: str) -> list[Path]:
    paths = [Path(p).expanduser() for p in expand_braces(pattern)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FeatxUsageError(f"{what} source {pattern!r}: {len(missing)} file(s) not found, e.g. {missing[0]}")
    return paths


def _class_index(raw_labels: list[str | None]) -> tuple[list[str], list[int]]:
    """Class names from the labels seen: integers sort numerically, names alphabetically."""
    names = sorted({lab for lab in raw_labels if lab is not None},
                   key=lambda v: (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v))
    if any(lab is None for lab in raw_labels):
        names.append("unlabelled")
    index = {name: i for i, name in enumerate(names)}
    return names, [index["unlabelled" if lab is None else lab] for lab in raw_labels]


def _decode(data: bytes | None, max_pixels: int | None) -> Image.Image:
    if data is None:
        raise BadImageError("sample has no image (no jpg/jpeg/png/webp member or empty image column)")
    return load_image(data, max_pixels=max_pixels)


def _make_items(ids: list[str], raw_labels: list[str | None], splits: list[str]):
    class_names, labels = _class_index(raw_labels)
    return class_names, [Item(i, lab, s) for i, lab, s in zip(ids, labels, splits)]


def _label_of(members: dict[str, bytes]) -> tuple[str | None, str]:
    """(label, split) of a WebDataset sample from its cls/txt/json members."""
    meta: dict = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            meta = {}
    split = _SPLITS.get(str(meta.get("split", "")).lower(), "") if isinstance(meta, dict) else ""
    for key in ("cls", "txt"):
        if key in members:
            return members[key].decode("utf-8", "replace").strip(), split
    if isinstance(meta, dict) and meta.get("label", meta.get("cls")) is not None:
        return str(meta.get("label", meta.get("cls"))), split
    return None, split


def _scan_tar(path: Path) -> list[tuple[str, tuple[int, int] | None, str | None, str]]:
    """(key, (offset, size) of the image or None, label, split) per sample, from the headers."""
    samples: dict[str, dict] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                if base.startswith(".") or "." not in base:
                    continue
                key = member.name[: len(member.name) - len(base)] + base.split(".", 1)[0]
                ext = base.split(".", 1)[1].lower()
                sample = samples.setdefault(key, {"image": None, "small": {}})
                if ext in _IMAGE_KEYS and sample["image"] is None:
                    sample["image"] = (member.offset_data, member.size)
                elif ext in ("cls", "txt", "json") and member.size < 1 << 20:
                    sample["small"][ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as exc:
        raise FeatxUsageError(f"{path}: not a readable uncompressed tar shard ({exc})") from None
    return [(key, s["image"], *_label_of(s["small"])) for key, s in samples.items()]


class WebDatasetSource(Source):
    """WebDataset tar shards; see the module docstring."""

    kind = "webdataset"

    def __init__(self, pattern: str, max_pixels: int | None = None):
        self.pattern, self.max_pixels = pattern, max_pixels
        self.shards = _existing(pattern, "WebDataset")
        self.name = self.shards[0].parent.resolve().name or "webdataset"
        ids, labels, splits, self._where = [], [], [], []
        for shard_no, path in enumerate(self.shards):
            for key, where, label, split in _scan_tar(path):
                ids.append(f"{path.name.rsplit('.', 1)[0]}/{key}")
                labels.append(label)
                splits.append(split)
                self._where.append((shard_no, where))
        if not ids:
            raise FeatxUsageError(f"WebDataset source {pattern!r} holds no samples")
        self.class_names, self.items = _make_items(ids, labels, splits)

    def load(self, index: int) -> Image.Image:
        shard_no, where = self._where[index]
        if where is None:
            return _decode(None, self.max_pixels)
        offset, size = where
        with open(self.shards[shard_no], "rb") as handle:
            handle.seek(offset)
            return _decode(handle.read(size), self.max_pixels)

    def _content_markers(self) -> Sequence[str]:
        stats = [p.stat() for p in self.shards]
        return [f"{stats[s].st_size}:{stats[s].st_mtime_ns}:{w}" for s, w in self._where]

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, "n_items": len(self.items), "shards": len(self.shards)}


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FeatxError("Parquet sources need pyarrow: pip install 'featx[parquet]' (or 'featx[ray]')") from None
    return pq


def _pick(columns: list[str], wanted: Sequence[str], what: str, path: Path, required: bool = True) -> str | None:
    for name in wanted:
        if name in columns:
            return name
    if required:
        raise FeatxUsageError(f"{path}: no {what} column (looked for {', '.join(wanted)}; columns: {', '.join(columns)})")
    return None


def _image_bytes(value) -> bytes | None:
    if isinstance(value, dict):  # Hugging Face datasets' Image feature: {"bytes": ..., "path": ...}
        value = value.get("bytes")
    return bytes(value) if value else None


class ParquetSource(Source):
    """Parquet files with an image-bytes column and a label column; see the module docstring."""

    kind = "parquet"

    def __init__(self, pattern: str, max_pixels: int | None = None):
        pq = _pyarrow()
        self.pattern, self.max_pixels = pattern, max_pixels
        self.files = _existing(pattern, "Parquet")
        self.name = self.files[0].stem if len(self.files) == 1 else self.files[0].parent.resolve().name
        ids, labels, splits, self._where = [], [], [], []
        self._image_column: list[str] = []
        for file_no, path in enumerate(self.files):
            meta = pq.ParquetFile(path)
            columns = meta.schema_arrow.names
            image = _pick(columns, ("image", "jpg", "png", "image_bytes", "bytes"), "image-bytes", path)
            label = _pick(columns, ("label", "cls"), "label", path)
            split = _pick(columns, ("split",), "split", path, required=False)
            key = _pick(columns, ("id", "key"), "id", path, required=False)
            self._image_column.append(image)
            table = meta.read(columns=[c for c in (label, split, key) if c])
            n = table.num_rows
            file_ids = [str(v) for v in table[key].to_pylist()] if key else [f"{path.stem}/{i}" for i in range(n)]
            ids.extend(file_ids)
            labels.extend(None if v is None else str(v) for v in table[label].to_pylist())
            splits.extend(_SPLITS.get(str(v or "").lower(), "") for v in (table[split].to_pylist() if split else [""] * n))
            for group in range(meta.num_row_groups):
                rows = meta.metadata.row_group(group).num_rows
                self._where.extend((file_no, group, r) for r in range(rows))
        if len(set(ids)) != len(ids):
            raise FeatxUsageError(f"Parquet source {pattern!r}: ids are not unique")
        if not ids:
            raise FeatxUsageError(f"Parquet source {pattern!r} has no rows")
        self.class_names, self.items = _make_items(ids, labels, splits)
        self._cached: tuple[tuple[int, int], list] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cached": None}  # a row group does not travel to a worker

    def load(self, index: int) -> Image.Image:
        file_no, group, row = self._where[index]
        if self._cached is None or self._cached[0] != (file_no, group):
            pq = _pyarrow()
            column = self._image_column[file_no]
            values = pq.ParquetFile(self.files[file_no]).read_row_group(group, columns=[column])[column].to_pylist()
            self._cached = ((file_no, group), values)
        return _decode(_image_bytes(self._cached[1][row]), self.max_pixels)

    def _content_markers(self) -> Sequence[str]:
        stats = [p.stat() for p in self.files]
        return [f"{stats[f].st_size}:{stats[f].st_mtime_ns}:{g}:{r}" for f, g, r in self._where]

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, "n_items": len(self.items), "files": len(self.files)}
