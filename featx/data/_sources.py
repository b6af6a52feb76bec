"""Image sources: where the images and labels come from.

Every source is a list of :class:`Item` in a fixed order; each item keeps a stable
``id`` (its path relative to the source root, or its index for in-memory data) so a
feature row can always be mapped back to the image it came from. Sources know how to
load one item as an RGB PIL image (raising :class:`BadImageError` with a reason for a
file that cannot be used) and how to fingerprint themselves so a feature store can
tell whether the images changed since it was written.

Kinds: an image folder (``ROOT/<class>/<img>`` or ``ROOT/<split>/<class>/<img>``), a
CSV manifest (``path,label[,split]``), the built-in ``digits`` set, and in-memory
arrays or PIL images (Python API only).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import BadImageError, FeatxUsageError
from ._files import check_extension, safe_id, walk_files
from ._fingerprint import UNREAD, ItemRecord, file_stat, read_item_file
from ._images import load_image, to_rgb

__all__ = [
    "Item",
    "Source",
    "ImageFolderSource",
    "CsvSource",
    "DigitsSource",
    "ArraySource",
    "SPLIT_NAMES",
    "check_label_spellings",
    "UNLABELLED",
]

SPLIT_NAMES = ("train", "val", "test")
#: The label of a sample kept without one (``allow_unlabelled``): extracted and stored, never a
#: class. Splits leave it out (:func:`featx.data.assign_splits`), so no head trains or scores on it.
UNLABELLED = -1
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class Item:
    """One image of a source: a stable id, an integer label, a split ('' if the source has none)."""

    id: str
    label: int
    split: str = ""


class Source:
    """Base class: ``items``, ``class_names``, ``load(i)``, ``fingerprint()``, ``describe()``."""

    kind = "source"
    name = "source"
    items: list[Item]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def load_item(self, index: int) -> tuple[Image.Image | None, str, ItemRecord | None]:
        """(image or None, why it is unusable or '', what was read: stat data and hash, for file items)."""
        try:
            return self.load(index), "", None
        except BadImageError as exc:
            return None, str(exc), None

    def item_paths(self) -> list[Path] | None:
        """The file behind each item (for per-item content checks), or None for in-memory sources."""
        return None

    def structure_fingerprint(self) -> str:
        """What a store with per-item content hashes compares: the fingerprint without per-file stat data.

        Sources without files have no per-item hashes; their content markers stay in.
        """
        return self.fingerprint()

    def fingerprint(self) -> str:
        """A hash of what the source holds: ids, labels, splits and per-item content markers."""
        digest = hashlib.sha256()
        digest.update(("\x1f".join(self.class_names)).encode())
        for item, marker in zip(self.items, self._content_markers()):
            digest.update(f"{item.id}\x1f{item.label}\x1f{item.split}\x1f{marker}\n".encode())
        return digest.hexdigest()

    def _content_markers(self, indices: Sequence[int] | None = None) -> Sequence[str]:
        """A marker of each item's content (all items, or those at ``indices``, in that order).

        Each marker depends on its own item alone (and the file holding it), so the markers of a
        few items are the very strings the full list holds for them (a subset's cache key).
        """
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, "n_items": len(self.items)}

    @property
    def has_splits(self) -> bool:
        return any(item.split for item in self.items)

    @property
    def labels(self) -> np.ndarray:
        return np.array([item.label for item in self.items], dtype=np.int64)

    @property
    def n_unlabelled(self) -> int:
        """Items kept without a label (``allow_unlabelled``); 0 for every other source."""
        return sum(item.label == UNLABELLED for item in self.items)

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]


class _FileSource(Source):
    """A source whose items are files below ``root``; ids are POSIX paths relative to it.

    ``_files`` holds the OS-level path of each item (which may not be valid UTF-8; the id
    is its :func:`safe_id` text) and ``_unusable`` the items found unusable while listing
    (unreadable folders, broken links), recorded as skipped with their reason.
    """

    root: Path
    max_pixels: int | None = None
    _files: list[Path]
    _unusable: dict[int, str]

    def path_of(self, index: int) -> Path:
        return self._files[index]

    def item_paths(self) -> list[Path]:
        return list(self._files)

    def load(self, index: int) -> Image.Image:
        image, reason, _ = self._read_item(index)
        if image is None:
            raise BadImageError(reason)
        return image

    def load_item(self, index: int) -> tuple[Image.Image | None, str, ItemRecord | None]:
        if type(self).load is not _FileSource.load:
            return self._load_item_via_override(index)
        return self._read_item(index)

    def _read_item(self, index: int) -> tuple[Image.Image | None, str, ItemRecord | None]:
        # The bytes are read once: hashed for the store's staleness check, then decoded.
        if index in self._unusable:
            return None, self._unusable[index], None
        path = self.path_of(index)
        try:
            check_extension(path)
        except BadImageError as exc:
            return None, str(exc), ItemRecord(file_stat(path), UNREAD)
        try:
            data, record = read_item_file(path)
        except OSError as exc:
            return None, f"cannot read file: {exc.strerror or exc}", None
        try:
            return load_image(data, max_pixels=self.max_pixels), "", record
        except BadImageError as exc:
            return None, str(exc), record

    def _load_item_via_override(self, index: int) -> tuple[Image.Image | None, str, ItemRecord | None]:
        # A subclass that decodes in its own ``load``: keep it, and hash the file separately.
        image, reason, _ = Source.load_item(self, index)
        try:
            record = read_item_file(self.path_of(index))[1]
        except OSError:
            record = None
        return image, reason, record

    def structure_fingerprint(self) -> str:
        return structure_digest(self.class_names, self.items)

    def _content_markers(self, indices: Sequence[int] | None = None) -> Sequence[str]:
        # Size and mtime: cheap, and they change whenever a file is rewritten.
        markers = []
        for path in self._files if indices is None else [self._files[int(i)] for i in indices]:
            try:
                st = path.stat()
                markers.append(f"{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                markers.append("missing")
        return markers

    def describe(self) -> dict:
        return {**super().describe(), "root": str(self.root)}


def structure_digest(class_names: Sequence[str], items: Sequence[Item]) -> str:
    """What a file source's structure fingerprint covers: class names, ids, labels and splits
    (the content is checked per item)."""
    digest = hashlib.sha256(b"structure\n")
    digest.update(("\x1f".join(class_names)).encode())
    for item in items:
        digest.update(f"{item.id}\x1f{item.label}\x1f{item.split}\n".encode())
    return digest.hexdigest()


def _visible(entries) -> list[Path]:
    return sorted((p for p in entries if not p.name.startswith(".")), key=lambda p: p.name)


class ImageFolderSource(_FileSource):
    """``ROOT/<class>/<image>``, or ``ROOT/<split>/<class>/<image>`` with split in train/val/test.

    Files with extensions outside the image allowlist are kept as items (so they are
    recorded as skipped, never silently dropped); hidden files are ignored.
    """

    kind = "folder"

    def __init__(self, root: str | os.PathLike, max_pixels: int | None = None):
        self.root = Path(root)
        self.name = self.root.resolve().name
        self.max_pixels = max_pixels
        if not self.root.is_dir():
            raise FeatxUsageError(f"image folder not found: {self.root}")
        top = [p for p in _visible(self.root.iterdir()) if p.is_dir()]
        if not top:
            raise FeatxUsageError(f"{self.root} has no class sub-folders; expected ROOT/<class>/<image>")
        split_dirs = [p for p in top if p.name.lower() in _SPLIT_ALIASES]
        if split_dirs and len(split_dirs) == len(top):
            layout = [(_SPLIT_ALIASES[p.name.lower()], p) for p in split_dirs]
        else:
            layout = [("", self.root)]
        classes = sorted({safe_id(c.name) for _, base in layout for c in _visible(base.iterdir()) if c.is_dir()})
        if not classes:
            raise FeatxUsageError(f"{self.root} has split folders but no class sub-folders inside them")
        self.class_names = classes
        index = {name: i for i, name in enumerate(classes)}
        items, self._files, self._unusable = [], [], {}
        seen: set = set()  # real folders entered, shared by every class folder's walk
        files_seen: dict = {}  # (device, inode) -> id of the first name of each file
        for split, base in sorted(layout, key=lambda pair: SPLIT_NAMES.index(pair[0]) if pair[0] else 0):
            for class_dir in _visible(base.iterdir()):
                if not class_dir.is_dir():
                    continue
                for found in walk_files(class_dir, rel_to=self.root, tree=self.root, seen=seen):
                    reason = found.reason or _hard_link_reason(found, files_seen)
                    if reason:
                        self._unusable[len(items)] = reason
                    items.append(Item(safe_id(found.rel), index[safe_id(class_dir.name)], split))
                    self._files.append(found.path)
        if not items:
            raise FeatxUsageError(f"no files found below {self.root}")
        _require_unique_ids(items, self.root)
        self.items = items


def _hard_link_reason(found, files_seen: dict) -> str:
    """Why a file is skipped as a second name (hard link) of a file listed already, else ''."""
    try:
        st = os.stat(found.path)
    except OSError:
        return ""  # reading it later records why
    key = (st.st_dev, st.st_ino)
    if key in files_seen:
        return (f"hard link to {files_seen[key]!r} (the same file, listed there); skipped so one image "
                "is never two items")
    files_seen[key] = safe_id(found.rel)
    return ""


def _require_unique_ids(items: list[Item], where: Path) -> None:
    # Escaped ids of undecodable names could in principle collide with a real name.
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise FeatxUsageError(f"{where}: two files have the id {item.id!r} (a name that is not UTF-8 "
                                  "escapes to the name of another file); rename one")
        seen.add(item.id)


def check_label_spellings(names: Sequence[str], where: str | os.PathLike) -> None:
    """Refuse two labels that are one number written two ways (``1`` and ``01``, ``+1``): two classes
    the user almost certainly meant as one. Pad or unpad them all the same way."""
    seen: dict[int, str] = {}
    for name in names:
        text = name.strip()
        if not text.lstrip("+-").isdigit():
            continue
        number = int(text)
        if number in seen and seen[number] != name:
            raise FeatxUsageError(f"{where}: labels {seen[number]!r} and {name!r} are the same number written two "
                                  "ways and would be two classes; write every label the same way")
        seen[number] = name


class CsvSource(_FileSource):
    """A CSV manifest with a header ``path,label`` and optional ``split``; paths relative to the CSV."""

    kind = "csv"

    def __init__(self, csv_path: str | os.PathLike, max_pixels: int | None = None, allow_unlabelled: bool = False):
        self.csv_path = Path(csv_path)
        self.allow_unlabelled = allow_unlabelled
        self.root = self.csv_path.parent
        self.name = self.csv_path.stem
        self.max_pixels = max_pixels
        if not self.csv_path.is_file():
            raise FeatxUsageError(f"CSV manifest not found: {self.csv_path}")
        rows = self._read_rows()
        if not rows:
            raise FeatxUsageError(f"{self.csv_path}: no rows")
        _refuse_aliases(self.csv_path, self.root, rows)
        # An empty label (allowed with allow_unlabelled only) is no class: its item gets UNLABELLED.
        self.class_names = sorted({label for _, _, label, _ in rows} - {""})
        check_label_spellings(self.class_names, self.csv_path)
        index = {name: i for i, name in enumerate(self.class_names)} | {"": UNLABELLED}
        self.items = [Item(path, index[label], split) for _, path, label, split in rows]
        self._files = [self.root / path for _, path, _, _ in rows]
        self._unusable = {}

    def _read_rows(self) -> list[tuple[int, str, str, str]]:
        """(line number, path, label, split) for every row; a malformed file is one clear error."""
        rows = []
        try:
            with self.csv_path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                try:
                    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
                    missing = {"path", "label"} - set(fields)
                    if missing:
                        raise FeatxUsageError(
                            f"{self.csv_path}: header must have columns path,label[,split]; missing {sorted(missing)}"
                        )
                    reader.fieldnames = fields
                    for row in reader:
                        rows.append(self._parse_row(reader.line_num, row))
                except csv.Error as exc:
                    # line_num counts the lines read before the failing record.
                    raise FeatxUsageError(f"{self.csv_path}:{reader.line_num + 1}: malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise FeatxUsageError(f"{self.csv_path}: not a UTF-8 text CSV ({exc.reason})") from None
        return rows

    def _parse_row(self, line_no: int, row: dict) -> tuple[int, str, str, str]:
        path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not path or not (label or self.allow_unlabelled):
            hint = "" if label else " (--allow-unlabelled keeps a row without a label, for extraction only)"
            raise FeatxUsageError(f"{self.csv_path}:{line_no}: empty path or label{hint}")
        if "\x00" in path:
            raise FeatxUsageError(f"{self.csv_path}:{line_no}: path contains a NUL character")
        split = (row.get("split") or "").strip().lower()
        if split and split not in _SPLIT_ALIASES:
            raise FeatxUsageError(f"{self.csv_path}:{line_no}: split {split!r} is not one of train/val/test")
        return line_no, Path(path).as_posix(), label, _SPLIT_ALIASES.get(split, "")

    def describe(self) -> dict:
        return {**super().describe(), "csv": str(self.csv_path)}


def _refuse_aliases(csv_path: Path, root: Path, rows: list[tuple[int, str, str, str]]) -> None:
    """One image listed twice, under any spelling (``img/0.png``, ``./img/sub/../0.png``, an absolute
    path, a symbolic link, a hard link: same real path, or same device and inode): always an error
    naming both rows, as one file cannot be two items."""
    first: dict[object, tuple[int, str, str]] = {}
    for line_no, path, label, _ in rows:
        keys: list[object] = [os.path.realpath(root / path)]
        try:
            st = os.stat(root / path)
            keys.append((st.st_dev, st.st_ino))
        except OSError:
            pass  # a missing file is recorded as skipped later; it has no inode to share
        for key in keys:
            if key in first:
                line0, path0, label0 = first[key]
                same = "with the same label" if label == label0 else f"with different labels ({label0!r} and {label!r})"
                how = " (hard links to one file)" if isinstance(key, tuple) else ""
                raise FeatxUsageError(
                    f"{csv_path}: one image listed twice{how}, at line {line0} ({path0!r}) and line {line_no} "
                    f"({path!r}), {same}; keep one row per image"
                )
        for key in keys:
            first[key] = (line_no, path, label)


def _array_labels(labels, n: int, class_names, allow_unlabelled: bool) -> tuple[np.ndarray, list[str]]:
    """Class indices and names of an :class:`ArraySource`; ``None`` or -1 is "no label".

    Without labels every image used to become class "0", a class no one asked for: a missing
    label is now an error unless ``allow_unlabelled`` keeps it as UNLABELLED (never a class).
    """
    values = [None] * n if labels is None else np.asarray(labels, dtype=object).tolist()
    if len(values) != n:
        raise FeatxUsageError(f"{n} images but {len(values)} labels")
    missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, int) and v == UNLABELLED)]
    if missing and not allow_unlabelled:
        what = "no labels were given" if labels is None else f"{len(missing)} label(s) are None or -1 (index {missing[0]})"
        raise FeatxUsageError(f"{what}; pass labels, or allow_unlabelled=True to keep those images for "
                              "extraction only (never a class)")
    skip = set(missing)
    known = [v for i, v in enumerate(values) if i not in skip]
    if class_names is None:
        try:
            uniques = sorted(set(known))
        except TypeError:
            raise FeatxUsageError("labels mix numbers and names; give one kind, or class_names") from None
        mapping = {u: i for i, u in enumerate(uniques)}
        class_names = [str(u) for u in uniques]
    else:
        k = len(class_names)
        if any(not isinstance(v, int) or not 0 <= v < k for v in known):
            raise FeatxUsageError(f"labels must lie in [0, {k}) to index class_names")
        mapping = {i: i for i in range(k)}
    codes = np.array([UNLABELLED if i in skip else mapping[v] for i, v in enumerate(values)], dtype=np.int64)
    return codes, list(class_names)


class ArraySource(Source):
    """In-memory images: an (N, H, W, 3) uint8 array or a list of PIL images, with labels.

    ``allow_unlabelled``: ``labels`` may be omitted, or hold ``None`` / -1 for some images;
    those are kept with :data:`UNLABELLED` for extraction only, as the file sources keep theirs.
    """

    kind = "array"

    def __init__(
        self,
        images: np.ndarray | Sequence[Image.Image],
        labels: Sequence[int] | np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        splits: Sequence[str] | None = None,
        name: str = "array",
        allow_unlabelled: bool = False,
    ):
        self.name, self.allow_unlabelled = name, allow_unlabelled
        if isinstance(images, np.ndarray):
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise FeatxUsageError(
                    f"array images must be uint8 with shape (N, H, W, 3); got {images.dtype} {images.shape}"
                )
        elif not all(isinstance(im, Image.Image) for im in images):
            raise FeatxUsageError("images must be a uint8 (N, H, W, 3) array or a list of PIL images")
        self.images = images
        n = len(images)
        labels, self.class_names = _array_labels(labels, n, class_names, allow_unlabelled)
        ids = [f"{i:06d}" for i in range(n)] if ids is None else [safe_id(str(i)) for i in ids]
        if len(set(ids)) != n:
            raise FeatxUsageError("ids must be unique, one per image")
        splits = [""] * n if splits is None else [_SPLIT_ALIASES.get(str(s).lower(), "") for s in splits]
        self.items = [Item(i, int(lab), s) for i, lab, s in zip(ids, labels.tolist(), splits)]

    def load(self, index: int) -> Image.Image:
        image = self.images[index]
        if isinstance(image, Image.Image):
            return to_rgb(image)
        return Image.fromarray(np.ascontiguousarray(image), mode="RGB")

    def _content_markers(self, indices: Sequence[int] | None = None) -> Sequence[str]:
        return [hashlib.sha1(np.asarray(self.load(int(i))).tobytes()).hexdigest()
                for i in (range(len(self)) if indices is None else indices)]


class DigitsSource(ArraySource):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes) as RGB images.

    Intensities 0..16 are scaled to 0..255 (light ink on black, as scikit-learn ships
    them; inverting to dark-on-white measured no better for a linear probe on the
    EfficientNet-Lite0 features). No split of its own: the heads make a stratified,
    seeded one and record it.
    """

    kind = "builtin"

    def __init__(self):
        images, target = _digits_arrays()
        gray = np.rint(images * (255.0 / 16.0)).astype(np.uint8)
        rgb = np.repeat(gray[..., None], 3, axis=-1)
        super().__init__(
            rgb,
            labels=target,
            class_names=[str(i) for i in range(10)],
            ids=[f"digits/{i:04d}" for i in range(len(rgb))],
            name="digits",
        )

    def _content_markers(self, indices: Sequence[int] | None = None) -> Sequence[str]:
        # The data ships inside scikit-learn; hashing the whole array once is enough.
        whole = hashlib.sha1(np.ascontiguousarray(self.images).tobytes()).hexdigest()
        return [whole] * (len(self.items) if indices is None else len(indices))


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float, labels) of scikit-learn's digits, read from the file it ships.

    ``sklearn.datasets`` costs about a second of imports (most of scikit-learn) for a
    65-column gzipped CSV; a warm ``featx run`` on digits needs only the data. Read the
    same file the way ``load_digits`` does (``np.loadtxt`` on the gzip stream), and use
    ``load_digits`` itself wherever that file is not where this scikit-learn keeps it.
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FeatxUsageError("the built-in digits set ships with scikit-learn: pip install scikit-learn")
    data_file = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not data_file.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    with gzip.open(data_file, mode="rt", encoding="utf-8") as handle:
        data = np.loadtxt(handle, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
