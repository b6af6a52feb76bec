"""A saved model directory: its files, and a manifest that records the sha256 of each.

Every model featx saves (a head on frozen features, a raw-pixel-control head, a
fine-tune, a head trained on Ray) is one directory::

    manifest.json   what the model is (``kind``, backbone(s) and weights, preprocessing,
                    classes, library versions), ``sha256`` of every other file in the
                    directory and ``manifest_sha256``, a hash over its own meaningful fields
    result.json     the results row of the run that produced it
    ...             the model files of its kind (``model.skops``, ``model.ubj``,
                    ``model.safetensors``)

The directory is built under a temporary sibling name and swapped in whole
(:func:`featx.core.io.atomic_dir`), with its results row inside, so the model on disk and
the row describing it are always committed together. :func:`verify_files` checks the
manifest hash and every file before anything is loaded. These are integrity checks
against accidents and careless edits, not signatures.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import FeatxError, FeatxUsageError, StoreDamagedError
from .io import file_sha256, json_default, json_text, recover_dir

__all__ = ["MODEL_FORMAT", "MANIFEST_FILE", "RESULT_FILE", "UNHASHED", "manifest_digest", "seal_manifest",
           "read_manifest", "verify_files", "manifest_format", "is_model_dir", "write_row"]

# 3: ``kind`` and ``featx_model_format``; ``sha256`` covers every file, result.json included.
# 2 (heads only, ``featx_head_format``): model files' sha256 and ``manifest_sha256``. 1: neither.
MODEL_FORMAT = 3
MANIFEST_FILE = "manifest.json"
RESULT_FILE = "result.json"
# Informational fields an edit may change without changing what the model computes.
UNHASHED = frozenset({"manifest_sha256", "saved", "versions", "store_path"})


def manifest_format(doc: dict) -> int | None:
    """The format a manifest declares (``featx_model_format``, or ``featx_head_format`` before 3)."""
    fmt = doc.get("featx_model_format", doc.get("featx_head_format"))
    return fmt if isinstance(fmt, int) and not isinstance(fmt, bool) else None


def manifest_digest(doc: dict) -> str:
    """sha256 over the canonical JSON (sorted keys, no spaces) of the fields that carry meaning."""
    meaningful = {k: v for k, v in doc.items() if k not in UNHASHED}
    text = json.dumps(meaningful, sort_keys=True, separators=(",", ":"), default=json_default, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal_manifest(folder: Path, doc: dict) -> dict:
    """Write ``folder/manifest.json``: ``doc`` plus the sha256 of every other file and its own hash."""
    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    doc = {**doc, "sha256": {name: file_sha256(folder / name) for name in files}}
    doc.pop("manifest_sha256", None)
    doc = json.loads(json_text(doc))  # hash exactly what reads back
    doc["manifest_sha256"] = manifest_digest(doc)
    (folder / MANIFEST_FILE).write_text(json_text(doc), encoding="utf-8")
    return doc


def write_row(folder: Path, entry: dict) -> dict:
    """Write the results row into a model directory being built; ``entry`` gets this save's ``commit`` id.

    The id tells a row of ``results.json`` copied from this save from one left by an earlier
    save of the same model (:func:`featx.core.results.read_results`).
    """
    import secrets

    entry["commit"] = secrets.token_hex(8)
    (Path(folder) / RESULT_FILE).write_text(json_text(entry), encoding="utf-8")
    return entry


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST_FILE).is_file()


def read_manifest(path: str | os.PathLike, what: str = "saved model") -> dict:
    """The parsed manifest of a model directory; one line for a missing, unreadable or too new one."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        recover_dir(path)  # a save killed between its two renames left the previous model aside
    if not manifest_path.is_file():
        if not path.exists():
            raise FeatxUsageError(f"{path} does not exist: give a model directory (the `model` of a results row)")
        nested = sorted(p.parent.name for p in path.glob(f"*/{MANIFEST_FILE}"))
        hint = f" (it holds the model(s) {', '.join(nested[:4])}: give {path}/{nested[0]})" if nested else ""
        raise FeatxUsageError(f"{path} is not a {what} (no {MANIFEST_FILE}){hint}; give the `model` "
                              "directory a results row names")
    try:
        doc = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreDamagedError(f"{manifest_path} is not valid JSON ({str(exc).splitlines()[0]}); retrain the model") from None
    if not isinstance(doc, dict):
        raise StoreDamagedError(f"{manifest_path} is not a valid model manifest: it holds a JSON "
                                f"{type(doc).__name__}, not an object; retrain the model")
    fmt = manifest_format(doc)
    if fmt is not None and fmt > MODEL_FORMAT:
        raise FeatxError(f"{path} holds model format {fmt}; this featx reads up to {MODEL_FORMAT}: upgrade featx")
    return doc


def verify_files(doc: dict, folder: str | os.PathLike, what: str = "model") -> None:
    """Refuse a manifest edited after saving and files that are not the ones saved.

    Formats 2 and later carry hashes: a manifest of such a format without them (a line
    deleted) is refused, never loaded unchecked.
    """
    folder = Path(folder)
    where = folder / MANIFEST_FILE
    fmt = manifest_format(doc) or 1
    if fmt >= 2:
        for key in ("manifest_sha256", "sha256"):
            if not isinstance(doc.get(key), (str if key == "manifest_sha256" else dict)):
                raise StoreDamagedError(f"{where} is damaged: format {fmt} carries {key!r} but it is missing or "
                                        f"not valid; the manifest was edited; retrain the {what}")
    if "manifest_sha256" in doc and manifest_digest(doc) != doc["manifest_sha256"]:
        raise StoreDamagedError(
            f"{where} was changed after the {what} was saved (its manifest_sha256 no longer matches): "
            f"class names, data config or other meaningful fields may have been edited; retrain the {what}"
        )
    for name, expected in (doc.get("sha256") or {}).items():
        if Path(name).name != name:
            raise StoreDamagedError(f"{where} is not a valid model manifest: {name!r} is not a file name inside "
                                    f"the model directory; retrain the {what}")
        file = folder / name
        if not file.is_file():
            raise StoreDamagedError(f"{what} {folder} is incomplete: its model file {name} is missing; retrain the {what}")
        if file_sha256(file) != expected:
            raise StoreDamagedError(
                f"{what} {folder} is damaged: {name} is not the file its manifest was saved with "
                f"(sha256 mismatch: truncated, corrupted, or from another save); retrain the {what}"
            )
