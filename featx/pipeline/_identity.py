"""Backbone identities for the stage keys, recorded in ``state.json`` so a warm run needs no timm.

A stage key holds the backbone's identity (model, weights and their sha256, pooling;
:meth:`featx.extraction.BackboneSpec.identity`). Resolving it checks the name against
timm's registry, which costs timm's and torch's imports, and hashes the checkpoint. A
run records, per backbone label, what it resolved and what that depended on:

* the request: name, weights (a path made absolute), pooling;
* every file read for it (the checkpoint) with its size and mtime;
* the package that shipped the checkpoint, with its version.

The next run reuses the identity only when all three are unchanged, the same rule as the
in-process sha256 cache of :mod:`featx.extraction` (a file replaced in place changes its
mtime); anything else resolves again, with timm.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

__all__ = ["IDENTITIES", "cached_identity", "record_identity"]

IDENTITIES = "backbones"  # the key of the records in state.json


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _request(bb: dict) -> dict:
    weights = bb.get("weights")
    absolute = None if weights is None else str(Path(str(weights)).expanduser().absolute())
    return {"name": bb["name"], "weights": weights, "weights_absolute": absolute, "pooling": bb["pooling"]}


def cached_identity(state: dict, bb: dict) -> dict | None:
    """The identity recorded for ``bb`` when nothing it was resolved from has changed, else None."""
    record = (state.get(IDENTITIES) or {}).get(bb["label"])
    if not isinstance(record, dict) or record.get("request") != _request(bb) or "identity" not in record:
        return None
    if any(_stat(path) != stat for path, stat in record.get("files") or []):
        return None
    if any(_version(dist) != version for dist, version in (record.get("packages") or {}).items()):
        return None
    return record["identity"]


def record_identity(state: dict, bb: dict, spec) -> dict:
    """Record ``spec``'s identity for ``bb`` in ``state`` (not written here) and return it."""
    identity = spec.identity()
    files = [[spec.weights_path, _stat(spec.weights_path)]] if spec.weights_path else []
    package = spec.offline.package if spec.offline is not None else None
    state.setdefault(IDENTITIES, {})[bb["label"]] = {
        "request": _request(bb), "files": files, "packages": {package: _version(package)} if package else {},
        "identity": identity,
    }
    return identity
