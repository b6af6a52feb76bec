"""``featx info --verify``: read every chunk of a feature store and report what is damaged.

The per-row arrays carry HDF5's Fletcher-32 checksum per chunk (see ``_store``), so a
flipped byte fails the read of its chunk. Verification reads each dataset chunk by chunk,
so one damaged chunk is reported with the rows it holds and the rest is still checked.
Stores written before checksums can only be checked for readability.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from ..core.errors import FeatxError
from ._store import _open_h5, header_problem

__all__ = ["verify_store", "VerifyReport"]

_REQUIRED = ("features", "labels", "ids", "splits", "status", "skip_reasons")
_JSON_ATTRS = ("config", "class_names", "versions", "run")


@dataclass
class VerifyReport:
    """What ``featx info --verify`` found: ``ok`` when nothing is damaged."""

    path: Path
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    unchecksummed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"path": str(self.path), "ok": self.ok, "problems": self.problems, "checked": self.checked,
                "without_checksum": self.unchecksummed}


def verify_store(path: str | os.PathLike) -> VerifyReport:
    """Read every attribute and every chunk of every dataset of the store at ``path``."""
    report = VerifyReport(Path(path))
    if report.path.is_dir():  # a sharded store: each shard's sha256 against the manifest
        from ._store import verify_sharded

        return verify_sharded(report)
    try:
        h5 = _open_h5(report.path, "r")
    except FeatxError as exc:
        if exc.exit_code == 2 or "in use" in str(exc):
            raise
        report.problems.append(str(exc))
        return report
    with h5:
        _check_attrs(h5, report)
        _check_header(h5, report)
        for name in _REQUIRED:
            if name not in h5:
                report.problems.append(f"/{name}: missing")
        # Every dataset, those in groups too (/feature_sets/<name> of --layers).
        h5.visititems(lambda name, obj: _check_dataset(name, obj, report) if isinstance(obj, h5py.Dataset) else None)
    return report


def _check_attrs(h5: h5py.File, report: VerifyReport) -> None:
    try:
        if h5.attrs.get("featx_format") is None:
            report.problems.append("not a featx feature store (no featx_format attribute)")
        for name in _JSON_ATTRS:
            if name in h5.attrs:
                json.loads(h5.attrs[name])
            elif name != "run":
                report.problems.append(f"attribute {name}: missing")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"attributes unreadable: {str(exc).splitlines()[0] if str(exc) else exc!r}")


def _check_header(h5: h5py.File, report: VerifyReport) -> None:
    """A format 2 file's header_sha256 against its attributes and item listing; format 1 has none."""
    try:
        if int(h5.attrs.get("featx_format", 0)) < 2:
            report.unchecksummed.append("header (format 1: no header_sha256)")
            return
        problem = header_problem(h5, h5["ids"].asstr()[:], h5["labels"][:], h5["splits"].asstr()[:])
    except (OSError, KeyError, ValueError, TypeError) as exc:
        problem = f"header unreadable: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    if problem:
        report.problems.append(f"header: {problem}")
    else:
        report.checked.append("header_sha256")


def _check_dataset(name: str, dset: h5py.Dataset, report: VerifyReport) -> None:
    # ids and splits are variable-length strings (kept in HDF5's heap): read back, never checksummed.
    if not dset.fletcher32 and dset.dtype.kind != "O":
        report.unchecksummed.append(name)
    rows = int(dset.shape[0]) if dset.shape else 0
    step = int(dset.chunks[0]) if dset.chunks else max(1, min(rows, 4096))
    bad: list[tuple[int, int]] = []
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        try:
            dset[start:stop]
        except (OSError, ValueError, RuntimeError):
            bad.append((start, stop))
    if bad:
        spans = ", ".join(f"{a}-{b - 1}" for a, b in bad[:5]) + (" ..." if len(bad) > 5 else "")
        report.problems.append(f"/{name}: {len(bad)} damaged chunk(s) (rows {spans}): checksum or read failed")
    else:
        report.checked.append(name)
