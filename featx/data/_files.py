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
from dataclasses import dataclass, field
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


@dataclass
class _Walk:
    """One walk's state: the real path of the tree it lists, and every real folder already entered."""

    base: Path
    tree: str
    seen: set = field(default_factory=set)


def walk_files(root: str | os.PathLike, rel_to: str | os.PathLike | None = None,
               tree: str | os.PathLike | None = None, seen: set | None = None) -> list[FoundFile]:
    """Every non-hidden file below ``root``, sorted by path, plus the entries that cannot be used.

    Symbolic links are resolved to real paths and every real folder is entered once. A link
    that leads to a folder above it is a loop; one that leads anywhere else inside ``tree``
    (default ``root``; an image folder source passes its own root) is skipped with that
    reason, as what it points to is listed under its own path (and label). Links that leave
    the tree are followed. ``rel`` is relative to ``rel_to`` (default ``root``); ``seen``
    (real folders' (device, inode)) is shared by the walks of one source.
    """
    root = Path(root)
    base = Path(rel_to) if rel_to is not None else root
    walk = _Walk(base, os.path.realpath(tree if tree is not None else root), set() if seen is None else seen)
    found: list[FoundFile] = []
    try:
        top = os.stat(root)
    except OSError as exc:
        return [FoundFile(root, _rel(root, base) + "/", f"cannot read folder: {exc.strerror or exc}")]
    if root.is_symlink() and tree is not None:
        problem = _inside_problem(root, walk)
        if problem:
            return [FoundFile(root, _rel(root, base) + "/", problem)]
    if (top.st_dev, top.st_ino) in walk.seen:
        return [FoundFile(root, _rel(root, base) + "/", "folder already listed under another name")]
    walk.seen.add((top.st_dev, top.st_ino))
    _walk(root, walk, found)
    return found


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _inside_problem(link: Path, walk: _Walk) -> str:
    """Why a (followable) symbolic link is skipped: a loop, or a second name for part of the tree; '' if neither."""
    real = os.path.realpath(link)
    if os.path.isdir(real) and _within(os.path.realpath(link.parent), real):
        return "symbolic link loop (points to a folder above it)"
    if _within(real, walk.tree):
        target = safe_id(os.path.relpath(real, walk.tree))
        return (f"symbolic link to {target!r} inside the source folder; skipped, as that is listed under its own "
                "path and label")
    return ""


def _walk(folder: Path, walk: _Walk, found: list[FoundFile]) -> None:
    base = walk.base
    try:
        with os.scandir(folder) as handle:
            entries = sorted((e for e in handle if not _hidden(e.name)), key=lambda e: e.name)
    except OSError as exc:
        found.append(FoundFile(folder, _rel(folder, base) + "/", f"cannot read folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            problem = _link_problem(path) or _inside_problem(path, walk)
            if problem:
                found.append(FoundFile(path, _rel(path, base) + ("/" if os.path.isdir(path) else ""), problem))
                continue
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError as exc:
            found.append(FoundFile(path, _rel(path, base), f"cannot read: {exc.strerror or exc}"))
            continue
        if is_dir:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
            if key in walk.seen:
                found.append(FoundFile(path, _rel(path, base) + "/", "folder already listed under another name"))
                continue
            walk.seen.add(key)
            _walk(path, walk, found)
        elif is_file:
            found.append(FoundFile(path, _rel(path, base)))
        else:
            found.append(FoundFile(path, _rel(path, base), "not a regular file"))
