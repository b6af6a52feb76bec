"""The rows of ``results.json``: the metric fields every entry carries (head or fine-tune),
the tables written beside it, and the merge that keeps other runs' rows.

A scored row names its saved model in ``model``: a path relative to the folder holding
that ``results.json`` (absolute only when given so). The model directory holds its own
copy of the row (``result.json``), committed with the model in one swap; ``results.json``
is an index rebuilt from those copies. :func:`read_results` and :func:`merge_results`
take each model directory's own row, so ``results.json`` can never describe a model
other than the one on disk, even after a kill between the two writes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .errors import FeatxError
from .io import folder_lock, json_text, write_atomic

__all__ = ["RESULTS_FILE", "skipped_reason", "metric_fields", "results_table", "write_tables", "merge_results",
           "read_results", "model_path"]

RESULTS_FILE = "results.json"
_ROW_FILE, _MANIFEST = "result.json", "manifest.json"  # as in core.modeldir


def model_path(out: str | os.PathLike, entry: dict) -> Path | None:
    """The model directory a row of ``out/results.json`` names, or None for a row without one."""
    model = entry.get("model")
    if not isinstance(model, str) or not model:
        return None
    path = Path(model)
    return path if path.is_absolute() else Path(out) / path


def _own_row(folder: Path) -> dict | None:
    if not (folder / _MANIFEST).is_file():
        return None
    try:
        doc = json.loads((folder / _ROW_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _key(e: dict) -> tuple:
    return e.get("kind"), e.get("head"), e.get("store_id"), e.get("per_class")


def _committed(out: Path, entries: list[dict]) -> list[dict]:
    """Each row as committed with its model; rows of model directories the index lacks are added."""
    rows = []
    for entry in entries:
        folder = model_path(out, entry)
        own = _own_row(folder) if folder is not None else None
        stale = own is not None and own.get("commit") != entry.get("commit")
        # A stale row gives way to the model's own; fields only the index has (a pipeline's tags) stay.
        rows.append({**entry, **own, "model": entry["model"]} if stale else entry)
    named = {model_path(out, e).resolve() for e in rows if model_path(out, e) is not None}
    keys = {_key(e) for e in rows}
    for folder in sorted(p.parent for p in out.glob(f"*/{_ROW_FILE}")):
        own = _own_row(folder)
        if own is not None and folder.resolve() not in named and isinstance(own.get("model"), str):
            own = {**own, "model": folder.name}
            rows = [e for e in rows if _key(e) != _key(own)] if _key(own) in keys else rows
            rows.append(own)
    return rows


def read_results(out: str | os.PathLike) -> list[dict]:
    """The rows of ``out/results.json``, each as committed with its model directory."""
    out = Path(out)
    path = out / RESULTS_FILE
    try:
        entries = json.loads(path.read_text()) if path.exists() else []
    except ValueError:
        raise FeatxError(f"{path} is not valid JSON; move it away and run again") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FeatxError(f"{path} is not a featx results list (expected a JSON list of entries)")
    return _committed(out, entries)


def metric_fields(metrics: dict) -> dict:
    keys = ("accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "balanced_accuracy", "per_class_metrics",
            "confusion_matrix", "class_names", "n_test", "ci_level", "n_boot")
    return {k: metrics[k] for k in keys}


def skipped_reason(entry: dict) -> str | None:
    """Why a head was skipped (the data could not support it), or None for a scored entry.

    A skipped head's ``skipped`` is its reason (a string); a fine-tune's ``skipped`` is the
    list of bad images it left out, and that entry is scored like any other.
    """
    reason = entry.get("skipped")
    return reason if isinstance(reason, str) else None


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def results_table(entries: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["head", "per_class", "seeds", "n_train", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci",
              "balanced_accuracy", "fit_seconds", "predict_seconds_per_1k", "params"]
    rows = []
    for e in entries:
        if skipped_reason(e):  # a head the data could not support: its reason instead of metrics
            rows.append([str(e["head"]), "all" if e.get("per_class") is None else str(e["per_class"]),
                         str(len(e.get("seeds") or [])), "", "skipped", "", "", "", "", "", "", str(e["skipped"])])
            continue
        rows.append([
            str(e["head"]), "all" if e.get("per_class") is None else str(e["per_class"]), str(len(e.get("seeds") or [])),
            str(e.get("n_train")), f"{e['accuracy']:.4f}", _fmt_ci(e["accuracy_ci"]), f"{e['macro_f1']:.4f}",
            _fmt_ci(e["macro_f1_ci"]), f"{e['balanced_accuracy']:.4f}", f"{e['fit_seconds']:.2f}",
            f"{e['predict_seconds_per_1k']:.4f}" if e.get("predict_seconds_per_1k") is not None else "",
            json.dumps(e.get("params", {}), sort_keys=True, default=str),
        ])
    return header, rows


def write_tables(out: Path, entries: Sequence[dict]) -> None:
    header, rows = results_table(entries)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(out / "results.csv", buffer.getvalue())
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    write_atomic(out / "results.md", "\n".join(md) + "\n")


def merge_results(out: Path, entries: Sequence[dict]) -> list[dict]:
    """Replace this run's (head, store, per_class) entries in ``out/results.json``, keep the rest.

    The index is rebuilt from the model directories' own rows (:func:`read_results`).
    """
    path = out / RESULTS_FILE
    with folder_lock(out):  # no results.json.lock file left behind
        existing = read_results(out)
        new_keys = {_key(e) for e in entries}
        merged = [e for e in existing if _key(e) not in new_keys] + list(entries)
        write_atomic(path, json_text(merged))
    return merged
