"""What a saved head's manifest must hold, and the hashes that keep it honest.

A manifest is checked against :data:`SCHEMA` before anything in it is used: a missing
or mistyped key, or a manifest that is not a JSON object, is one line naming the key,
never a traceback. Heads saved since head format 2 also carry

* ``sha256``: the sha256 of every model file, checked before a model file is read, so
  a model file swapped, truncated or damaged after saving is refused;
* ``manifest_sha256``: a sha256 over the canonical JSON of the manifest's meaningful
  fields (everything but :data:`UNHASHED`), so an edit that changes what the head means
  (class names reordered, another pooling or data config) is refused.

A manifest of format 2 or later without these hashes (a line deleted) is refused. These
are integrity checks against accidents and careless edits, not signatures: whoever can
edit the files can recompute the hashes. Heads saved before format 2 carry neither and
still load, with the schema and class-count checks only. The hashing itself is shared by
every kind of saved model (:mod:`featx.core.modeldir`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import StoreDamagedError
from ..core.modeldir import UNHASHED, manifest_digest, manifest_format, verify_files

__all__ = ["SCHEMA", "UNHASHED", "check_manifest", "manifest_digest", "check_files", "check_classes"]

# key -> (accepted JSON types, required). ``None`` in a tuple means null is allowed.
SCHEMA: dict[str, tuple[tuple, bool]] = {
    "featx_head_format": ((int,), False),  # formats 1-2; 3 and later: featx_model_format
    "featx_model_format": ((int,), False),
    "kind": ((str,), False),
    "steps": ((list,), False),
    "head": ((str,), True),
    "backbone": ((dict,), True),
    "dim": ((int,), True),
    "class_names": ((list,), True),
    "data_config": ((dict,), True),
    "files": ((dict,), True),
    "params": ((dict,), False),
    "store_id": ((str, type(None)), False),
    "per_class": ((int, type(None)), False),
    "seed": ((int,), False),
    "model_classes": ((list,), False),
    "sha256": ((dict,), False),
    "manifest_sha256": ((str,), False),
}
_FILE_KEYS = {"skops": (str, type(None)), "xgboost": (str, type(None)), "final_step": (str, type(None))}


def _bad(where: Path, what: str) -> StoreDamagedError:
    return StoreDamagedError(f"{where} is not a valid head manifest: {what}; retrain the head (featx train)")


def _type_names(types: tuple) -> str:
    names = {int: "a whole number", str: "a string", dict: "an object", list: "a list", type(None): "null"}
    return " or ".join(names[t] for t in types)


def check_manifest(doc, where: Path) -> dict:
    """Raise :class:`StoreDamagedError` naming the first key that is missing or of the wrong type."""
    if not isinstance(doc, dict):
        raise _bad(where, f"it holds a JSON {type(doc).__name__}, not an object")
    for key, (types, required) in SCHEMA.items():
        if key not in doc:
            if required:
                raise _bad(where, f"key {key!r} is missing")
            continue
        value = doc[key]
        # JSON true/false are Python bools, which are ints: never a valid count or format.
        if isinstance(value, bool) or not isinstance(value, types):
            raise _bad(where, f"{key!r} must be {_type_names(types)}, not {json.dumps(value, default=str)[:40]}")
    if manifest_format(doc) is None:
        raise _bad(where, "key 'featx_model_format' is missing")
    if doc.get("kind", "head") != "head":
        raise _bad(where, f"it is a {doc['kind']} model, not a head: load it with featx.load_model")
    if doc["dim"] < 1:
        raise _bad(where, f"'dim' must be positive, not {doc['dim']}")
    names = doc["class_names"]
    if len(names) < 2 or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise _bad(where, "'class_names' must be two or more distinct strings")
    if not isinstance(doc["backbone"].get("model"), str):
        raise _bad(where, "'backbone' names no model")
    size = doc["data_config"].get("input_size")
    imported = (doc["backbone"].get("weights") or {}).get("kind") == "imported"  # no images, no input size
    if not imported and not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)):
        raise _bad(where, "'data_config' has no valid input_size [channels, height, width]")
    for key, types in _FILE_KEYS.items():
        if not isinstance(doc["files"].get(key), types):
            raise _bad(where, f"'files.{key}' must be {_type_names(types)}")
    if "manifest_sha256" in doc and "sha256" not in doc:
        raise _bad(where, "'sha256' (the model files' hashes) is missing")
    return doc


def check_files(doc: dict, head_dir: Path) -> None:
    """Refuse a manifest edited after saving, and model files that are not the ones saved."""
    where = head_dir / "manifest.json"
    for role in ("skops", "xgboost"):
        name = doc["files"].get(role)
        if name is None:
            continue
        if Path(name).name != name:
            raise _bad(where, f"'files.{role}' must be a file name inside the head directory, not {name!r}")
        if not (head_dir / name).is_file():
            raise StoreDamagedError(f"head {head_dir} is incomplete: its model file {name} is missing; retrain the head")
        if "sha256" in doc and name not in (doc.get("sha256") or {}):
            raise StoreDamagedError(f"head {head_dir} is damaged: {name} is not the file its manifest was saved with "
                                    "(sha256 mismatch: no hash recorded for it); retrain the head")
    verify_files(doc, head_dir, "head")


def check_classes(doc: dict, estimator, head_dir: Path) -> list[int]:
    """The model's class indices; refuse a model whose classes do not match the manifest's names."""
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise StoreDamagedError(f"head {head_dir} holds a model with no classes_: not a fitted classifier")
    classes = [int(c) for c in classes]
    names = doc["class_names"]
    expected = doc.get("model_classes", list(range(len(names))))
    if classes != expected or any(not 0 <= c < len(names) for c in classes):
        raise StoreDamagedError(
            f"head {head_dir} is inconsistent: its model predicts {len(classes)} classes but the manifest "
            f"names {len(names)} ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}); retrain the head"
        )
    return classes
