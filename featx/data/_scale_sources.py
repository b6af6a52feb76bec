"""Sources at scale: WebDataset tar shards (as img2dataset writes them) and Parquet files.

WebDataset: ``--source 'shards/{00000..00099}.tar'`` (brace expansion, ``{a..b}`` keeps
zero padding, ``{x,y}`` lists). A sample is the tar members sharing a key (the member
name up to its first dot): an image (``jpg``/``jpeg``/``png``/``webp``) and a label from
``cls`` (an integer), ``txt`` (a class name) or ``json`` (its ``label`` field). The listing
reads tar headers only; ``load`` seeks to the member's data, so no shard is ever held in
memory. Ids are ``<shard>/<key>``, the shard named by its path (without ``.tar``) relative to
the folder all shards of the pattern share, so ``'{a,b}/00000.tar'`` gives ``a/00000/KEY`` and
``b/00000/KEY``. A shard is checked while it is listed: one that ends early (cut inside a
header, or without the end-of-archive blocks) is an error; a key repeated in a shard (two
samples that would share one id) and a sample with two images are skipped with the reason.

Parquet: one or more files (same brace syntax) with an image column (``image``, HF-style
``{bytes, path}`` structs included, or ``jpg``/``png``/``image_bytes``/``bytes``) holding the
encoded bytes or a file path (relative to the Parquet file), and a label column (``label``
or ``cls``), optionally ``split`` and ``id``/``key``. Ids from an id column must be unique,
non-null and free of NUL characters.
``load`` reads one row group at a time and keeps the last one. Ids are ``<file>/<row>``
unless an id column is given.

A sample without an image, without a label (a tar sample with no ``cls``/``txt``/``json``
label, a null Parquet label), or with bytes that do not decode, is skipped and recorded
like a bad file (its item stays in the listing, so rows never shift). With
``allow_unlabelled`` a sample without a label is kept instead, with the label
:data:`~featx.data.UNLABELLED`: it is extracted and stored, but no split holds it. Numeric labels that
differ only in their spelling (``1`` and ``01``) are refused: they would be two classes.

Brace patterns are expanded lazily, and listing stops at the first shard that does not
exist, so a mistyped range answers at once; more than :data:`MAX_SHARDS` files is refused.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from PIL import Image

from ..core.errors import BadImageError, FeatxUsageError, missing_extra
from ._images import load_image
from ._sources import UNLABELLED, Item, Source, check_label_spellings

__all__ = ["WebDatasetSource", "ParquetSource", "expand_braces", "iter_braces", "looks_like_scale_source",
           "MAX_SHARDS"]

_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_BRACE = re.compile(r"\{([^{}]*)\}")
_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
           "test": "test", "testing": "test"}
# More files than this in one source is a mistyped pattern far more often than a dataset.
MAX_SHARDS = 1_000_000
_KEEP_HINT = "; --allow-unlabelled keeps such samples for extraction only"
_NO_LABEL = "sample has no label (no .cls, .txt or .json label member)" + _KEEP_HINT
_NULL_LABEL = "sample has no label (null in the label column)" + _KEEP_HINT


def iter_braces(pattern: str) -> Iterator[str]:
    """Lazily: ``a/{000..002}.tar`` -> ``a/000.tar a/001.tar a/002.tar``; ``{x,y}`` lists; nested left to right."""
    match = _BRACE.search(pattern)
    if not match:
        yield pattern
        return
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    if ".." in body:
        lo, hi = body.split("..", 1)
        if not (lo.isdigit() and hi.isdigit()):
            raise FeatxUsageError(f"brace range {{{body}}} in {pattern!r} must be two integers")
        width = len(lo) if lo.startswith("0") else 0
        options: Iterator[str] = (str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
    else:
        options = iter(body.split(","))
    for option in options:
        yield from iter_braces(head + option + tail)


def expand_braces(pattern: str, limit: int = MAX_SHARDS) -> list[str]:
    """Every name of a brace pattern, in order; more than ``limit`` is a usage error."""
    out = []
    for name in iter_braces(pattern):
        if len(out) == limit:
            raise FeatxUsageError(f"pattern {pattern!r} expands to more than {limit} names; narrow the range")
        out.append(name)
    return out


def looks_like_scale_source(text: str) -> bool:
    lowered = text.lower()
    return lowered.endswith((".tar", ".parquet")) or ("{" in text and ("tar" in lowered or "parquet" in lowered))


def _existing(pattern: str, what: str) -> list[Path]:
    """The files of a pattern, stopping at the first one missing (a huge range answers at once)."""
    paths = []
    for name in iter_braces(pattern):
        path = Path(name).expanduser()
        if not path.is_file():
            raise FeatxUsageError(f"{what} source {pattern!r}: file not found: {path}"
                                  + (f" (after {len(paths)} that exist)" if paths else ""))
        if len(paths) == MAX_SHARDS:
            raise FeatxUsageError(f"{what} source {pattern!r}: more than {MAX_SHARDS} files; narrow the pattern")
        paths.append(path)
    return paths


def _class_index(raw_labels: list[str | None], where: str, keep_unlabelled: bool) -> tuple[list[str], list[int]]:
    """Class names from the labels seen: integers sort numerically, names alphabetically.

    A missing label (``None``) is never a class: kept, it gets :data:`UNLABELLED`; else class 0
    (as stores made before ``allow_unlabelled`` record it), and its item is skipped with the reason.
    """
    names = sorted({lab for lab in raw_labels if lab is not None},
                   key=lambda v: (0, int(v), v) if v.lstrip("-").isdigit() else (1, 0, v))
    if not names and not keep_unlabelled:
        raise FeatxUsageError(f"{where}: no sample has a label (.cls/.txt/.json member, or a non-null label column)"
                              f"{_KEEP_HINT}")
    check_label_spellings(names, where)
    index = {name: i for i, name in enumerate(names)}
    missing = UNLABELLED if keep_unlabelled else 0
    return names, [missing if lab is None else index[lab] for lab in raw_labels]


def _decode(data: bytes | None, max_pixels: int | None) -> Image.Image:
    if data is None:
        raise BadImageError("sample has no image (no jpg/jpeg/png/webp member or empty image column)")
    return load_image(data, max_pixels=max_pixels)


def _check_ids(ids: list, where: str) -> None:
    """Ids are unique, non-null text without NUL: one line naming the first that is not."""
    seen: set[str] = set()
    for row, value in enumerate(ids):
        if value is None:
            raise FeatxUsageError(f"{where}: the id of row {row} is null; every item needs an id")
        if "\x00" in value:
            raise FeatxUsageError(f"{where}: the id of row {row} ({value!r}) contains a NUL character")
        if value in seen:
            raise FeatxUsageError(f"{where}: the id {value!r} appears twice (row {row}); ids must be unique")
        seen.add(value)


def _make_items(ids: list[str], raw_labels: list[str | None], splits: list[str], where: str, keep_unlabelled: bool):
    _check_ids(ids, where)
    class_names, labels = _class_index(raw_labels, where, keep_unlabelled)
    return class_names, [Item(i, lab, s) for i, lab, s in zip(ids, labels, splits)]


def _label_of(members: dict[str, bytes]) -> tuple[str | None, str]:
    """(label, split) of a WebDataset sample from its cls/txt/json members; an empty label is none."""
    meta: dict = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            meta = {}
    split = _SPLITS.get(str(meta.get("split", "")).lower(), "") if isinstance(meta, dict) else ""
    for key in ("cls", "txt"):
        if key in members:
            return members[key].decode("utf-8", "replace").strip() or None, split
    if isinstance(meta, dict) and meta.get("label", meta.get("cls")) is not None:
        return str(meta.get("label", meta.get("cls"))).strip() or None, split
    return None, split


def _check_tar_end(path: Path, handle, offset: int, members: int) -> None:
    """A shard must end with the end-of-archive blocks: tarfile stops quietly at a cut header."""
    handle.seek(offset)
    rest = handle.read(512)
    if len(rest) < 512 or rest.count(0) != 512:
        raise FeatxUsageError(f"{path}: the shard ends early (cut or damaged after {members} members, at byte "
                              f"{offset}); re-create it or leave it out of the pattern")


def _scan_tar(path: Path) -> list[tuple[str, tuple[int, int] | None, str | None, str, str]]:
    """(key, (offset, size) of the image or None, label, split, why unusable or '') per sample."""
    samples: dict[str, dict] = {}
    last_key = None
    try:
        with open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            count = 0
            for member in tar:
                count += 1
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                if base.startswith(".") or "." not in base:
                    continue
                key = member.name[: len(member.name) - len(base)] + base.split(".", 1)[0]
                ext = base.split(".", 1)[1].lower()
                sample = samples.setdefault(key, {"image": None, "small": {}, "exts": set(), "problem": ""})
                # A member name seen before: a second sample under the same key (members of one key
                # may lie apart, as `tar cf x.tar *.png *.cls` writes them; only a repeat is wrong).
                if ext in sample["exts"] and not sample["problem"]:
                    sample["problem"] = (f"key {key!r} is repeated in the shard (two samples share it, so neither "
                                         "can have its own id); rename one" if key != last_key
                                         else f"sample has the member {key}.{ext} twice")
                last_key = key
                sample["exts"].add(ext)
                if ext in _IMAGE_KEYS:
                    if sample["image"] is not None and not sample["problem"]:
                        sample["problem"] = f"sample has more than one image ({', '.join(sorted(sample['exts'] & set(_IMAGE_KEYS)))})"
                    sample["image"] = sample["image"] or (member.offset_data, member.size)
                elif ext in ("cls", "txt", "json") and member.size < 1 << 20:
                    sample["small"][ext] = tar.extractfile(member).read()
            _check_tar_end(path, handle, tar.offset, count)
    except (tarfile.TarError, OSError) as exc:
        raise FeatxUsageError(f"{path}: not a readable uncompressed tar shard ({exc})") from None
    out = []
    for key, s in samples.items():
        label, split = _label_of(s["small"])
        problem = s["problem"] or ("" if s["image"] is None or label is not None else _NO_LABEL)
        out.append((key, s["image"], label, split, problem))
    return out


def _shard_names(shards: list[Path]) -> list[str]:
    """Each shard's path without ``.tar``, relative to the folder all of them share (POSIX)."""
    folders = [os.path.abspath(p.parent) for p in shards]
    common = os.path.commonpath(folders)
    return [Path(os.path.relpath(os.path.abspath(p), common)).with_suffix("").as_posix() for p in shards]


class WebDatasetSource(Source):
    """WebDataset tar shards; see the module docstring."""

    kind = "webdataset"

    def __init__(self, pattern: str, max_pixels: int | None = None, allow_unlabelled: bool = False):
        self.pattern, self.max_pixels, self.allow_unlabelled = pattern, max_pixels, allow_unlabelled
        self.shards = _existing(pattern, "WebDataset")
        self.name = self.shards[0].parent.resolve().name or "webdataset"
        ids, labels, splits, self._where, self._unusable = [], [], [], [], {}
        for shard_no, (path, shard_name) in enumerate(zip(self.shards, _shard_names(self.shards))):
            for key, where, label, split, problem in _scan_tar(path):
                if problem == _NO_LABEL and allow_unlabelled:
                    problem = ""
                if problem:
                    self._unusable[len(ids)] = problem
                ids.append(f"{shard_name}/{key}")
                labels.append(label)
                splits.append(split)
                self._where.append((shard_no, where))
        if not ids:
            raise FeatxUsageError(f"WebDataset source {pattern!r} holds no samples")
        self.class_names, self.items = _make_items(ids, labels, splits, f"WebDataset source {pattern!r}",
                                                   allow_unlabelled)

    def load(self, index: int) -> Image.Image:
        shard_no, where = self._where[index]
        if index in self._unusable:
            raise BadImageError(self._unusable[index])
        if where is None:
            return _decode(None, self.max_pixels)
        offset, size = where
        with open(self.shards[shard_no], "rb") as handle:
            handle.seek(offset)
            return _decode(handle.read(size), self.max_pixels)

    def _content_markers(self, indices: Sequence[int] | None = None) -> Sequence[str]:
        where = self._where if indices is None else [self._where[int(i)] for i in indices]
        stats = {s: self.shards[s].stat() for s in {s for s, _ in where}}  # the shards holding these items
        return [f"{stats[s].st_size}:{stats[s].st_mtime_ns}:{w}" for s, w in where]

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, "n_items": len(self.items), "shards": len(self.shards)}


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_extra("Parquet sources need pyarrow (also in the ray extra)", "parquet") from None
    return pq


def _pick(columns: list[str], wanted: Sequence[str], what: str, path: Path, required: bool = True) -> str | None:
    for name in wanted:
        if name in columns:
            return name
    if required:
        raise FeatxUsageError(f"{path}: no {what} column (looked for {', '.join(wanted)}; columns: {', '.join(columns)})")
    return None


def _open_parquet(pq, path: Path):
    """``pq.ParquetFile(path)``, or one line when the file is not Parquet (or is damaged)."""
    import pyarrow as pa

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise FeatxUsageError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None


def _is_text(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _read_path(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadImageError(f"cannot read image file {path}: {exc.strerror or exc}") from None


class ParquetSource(Source):
    """Parquet files with an image column (bytes or file paths) and a label column; see the module docstring."""

    kind = "parquet"

    def __init__(self, pattern: str, max_pixels: int | None = None, allow_unlabelled: bool = False):
        pq = _pyarrow()
        self.pattern, self.max_pixels, self.allow_unlabelled = pattern, max_pixels, allow_unlabelled
        self.files = _existing(pattern, "Parquet")
        self.name = self.files[0].stem if len(self.files) == 1 else self.files[0].parent.resolve().name
        self._where, self._unusable = [], {}
        self._image_column: list[str] = []
        # Per file: the image path of every row when the image column holds paths, else None.
        self._paths: list[list[Path | None] | None] = []
        ids, labels, splits, self._starts = [], [], [], []
        for file_no, path in enumerate(self.files):
            self._starts.append(len(ids))
            file_ids, file_labels, file_splits = self._list_file(pq, file_no, path)
            for row, label in enumerate(file_labels):
                if label is None and not allow_unlabelled:
                    self._unusable[len(ids) + row] = _NULL_LABEL
            ids.extend(file_ids)
            labels.extend(file_labels)
            splits.extend(file_splits)
        if not ids:
            raise FeatxUsageError(f"Parquet source {pattern!r} has no rows")
        self.class_names, self.items = _make_items(ids, labels, splits, f"Parquet source {pattern!r}", allow_unlabelled)
        self._cached: tuple[tuple[int, int], list] | None = None

    def _list_file(self, pq, file_no: int, path: Path) -> tuple[list, list, list]:
        """(ids, raw labels, splits) of one file; records its image column and row positions."""
        meta = _open_parquet(pq, path)
        schema = meta.schema_arrow
        columns = schema.names
        image = _pick(columns, ("image", "jpg", "png", "image_bytes", "bytes"), "image", path)
        label = _pick(columns, ("label", "cls"), "label", path)
        split = _pick(columns, ("split",), "split", path, required=False)
        key = _pick(columns, ("id", "key"), "id", path, required=False)
        self._image_column.append(image)
        by_path = _is_text(schema.field(image).type)
        try:
            table = meta.read(columns=[c for c in dict.fromkeys((label, split, key, image if by_path else None)) if c])
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise FeatxUsageError(f"{path}: cannot read the Parquet file ({str(exc).splitlines()[0]})") from None
        n = table.num_rows
        self._paths.append([None if v is None else path.parent / v for v in table[image].to_pylist()] if by_path else None)
        ids = [None if v is None else str(v) for v in table[key].to_pylist()] if key else [f"{path.stem}/{i}" for i in range(n)]
        labels = [None if v is None or not str(v).strip() else str(v).strip() for v in table[label].to_pylist()]
        splits = [_SPLITS.get(str(v or "").lower(), "") for v in (table[split].to_pylist() if split else [""] * n)]
        for group in range(meta.num_row_groups):
            rows = meta.metadata.row_group(group).num_rows
            self._where.extend((file_no, group, r) for r in range(rows))
        return ids, labels, splits

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cached": None}  # a row group does not travel to a worker

    def _row_of(self, index: int) -> int:
        return index - self._starts[self._where[index][0]]

    def load(self, index: int) -> Image.Image:
        if index in self._unusable:
            raise BadImageError(self._unusable[index])
        file_no, group, row = self._where[index]
        paths = self._paths[file_no]
        if paths is not None:
            image_path = paths[self._row_of(index)]
            return _decode(None if image_path is None else _read_path(image_path), self.max_pixels)
        if self._cached is None or self._cached[0] != (file_no, group):
            pq = _pyarrow()
            column = self._image_column[file_no]
            values = pq.ParquetFile(self.files[file_no]).read_row_group(group, columns=[column])[column].to_pylist()
            self._cached = ((file_no, group), values)
        return _decode(self._image_bytes(self._cached[1][row], file_no), self.max_pixels)

    def _image_bytes(self, value, file_no: int) -> bytes | None:
        if isinstance(value, dict):  # Hugging Face datasets' Image feature: {"bytes": ..., "path": ...}
            if not value.get("bytes") and value.get("path"):
                return _read_path(self.files[file_no].parent / value["path"])
            value = value.get("bytes")
        return bytes(value) if value else None

    def _content_markers(self, indices: Sequence[int] | None = None) -> Sequence[str]:
        indices = range(len(self._where)) if indices is None else [int(i) for i in indices]
        stats = {f: self.files[f].stat() for f in {self._where[i][0] for i in indices}}
        markers = []
        for index in indices:
            f, g, r = self._where[index]
            marker = f"{stats[f].st_size}:{stats[f].st_mtime_ns}:{g}:{r}"
            paths = self._paths[f]
            if paths is not None:  # an image held by path: its own file's stat data too
                image_path = paths[self._row_of(index)]
                try:
                    st = os.stat(image_path) if image_path is not None else None
                    marker += f":{st.st_size}:{st.st_mtime_ns}" if st else ":none"
                except OSError:
                    marker += ":missing"
            markers.append(marker)
        return markers

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, "n_items": len(self.items), "files": len(self.files)}
