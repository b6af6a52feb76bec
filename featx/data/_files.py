"""Listing image files: one walk and one file filter for every command that reads a folder.

``featx extract`` (image folders) and ``featx predict`` (folders given on the command
line) list files with :func:`walk_files` and open them with :func:`load_image_file`, so
both accept and reject exactly the same files. Nothing found during a walk is dropped
silently: an unreadable folder, a broken symbolic link, a symbolic link loop or a
special file becomes an entry with the reason it cannot be used, which the store
records as a skipped item.

File names that are not valid UTF-8 (possible on Linux) are kept losslessly: the path
itself stays the OS-level name (``os.fsdecode``'s surrogate escapes), and :func:`safe_id`
gives the text used as the item's id in the store, CSV and JSON (invalid bytes written
as ``\\xNN``).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..core.errors import BadImageError
from ._images import IMAGE_EXTENSIONS, load_image

__all__ = ["FoundFile", "walk_files", "load_image_file", "safe_id", "check_extension"]


@dataclass(frozen=True)
class FoundFile:
    """One entry of a walk: its path, its path relative to the walk's root, and why it is unusable ('' if usable)."""

    path: Path
    rel: str
    reason: str = ""


def safe_id(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes that are not UTF-8 (surrogate escapes) become ``\\xNN``."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_extension(path: str | os.PathLike) -> None:
    """Raise :class:`BadImageError` for a file whose extension is outside the image allowlist."""
    suffix = Path(path).suffix
    if suffix.lower() not in IMAGE_EXTENSIONS:
        raise BadImageError(f"unsupported file extension {safe_id(suffix) or '(none)'!r}")


def load_image_file(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """The one file filter: the extension allowlist, then :func:`load_image`'s byte checks."""
    check_extension(path)
    return load_image(path, max_pixels=max_pixels)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _link_problem(path: Path) -> str:
    """'' when the symbolic link's target exists, else why it cannot be followed."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if exc.errno == errno.ENOENT:
            return "broken symbolic link (its target does not exist)"
        return f"cannot follow symbolic link: {exc.strerror or exc}"
    return ""


def walk_files(root: str | os.PathLike, rel_to: str | os.PathLike | None = None) -> list[FoundFile]:
    """Every non-hidden file below ``root``, sorted by path, plus the entries that cannot be used.

    Symbolic links to folders are followed unless they point back to a folder above them
    (a loop, recorded with its reason). ``rel`` is relative to ``rel_to`` (default ``root``).
    """
    root = Path(root)
    base = Path(rel_to) if rel_to is not None else root
    found: list[FoundFile] = []
    try:
        top = os.stat(root)
    except OSError as exc:
        return [FoundFile(root, _rel(root, base) + "/", f"cannot read folder: {exc.strerror or exc}")]
    _walk(root, base, {(top.st_dev, top.st_ino)}, found)
    return found


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _walk(folder: Path, base: Path, ancestors: set, found: list[FoundFile]) -> None:
    try:
        with os.scandir(folder) as handle:
            entries = sorted((e for e in handle if not _hidden(e.name)), key=lambda e: e.name)
    except OSError as exc:
        found.append(FoundFile(folder, _rel(folder, base) + "/", f"cannot read folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            problem = _link_problem(path)
            if problem:
                found.append(FoundFile(path, _rel(path, base), problem))
                continue
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError as exc:
            found.append(FoundFile(path, _rel(path, base), f"cannot read: {exc.strerror or exc}"))
            continue
        if is_dir:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                found.append(FoundFile(path, _rel(path, base) + "/", "symbolic link loop (points to a folder above it)"))
                continue
            _walk(path, base, ancestors | {key}, found)
        elif is_file:
            found.append(FoundFile(path, _rel(path, base)))
        else:
            found.append(FoundFile(path, _rel(path, base), "not a regular file"))
