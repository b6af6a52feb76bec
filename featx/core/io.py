"""Atomic file writes and the JSON encoding featx uses for every file it writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["write_atomic", "json_default", "json_text", "write_json_atomic"]


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write a file under a temporary name and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def json_default(value):
    """JSON encoder fallback for NumPy scalars and arrays (and paths, as strings)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def json_text(data) -> str:
    return json.dumps(data, indent=2, default=json_default)


def write_json_atomic(path: Path, data) -> Path:
    return write_atomic(path, json_text(data))
