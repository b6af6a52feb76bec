"""The rows of ``results.json``: the metric fields every entry carries (head or fine-tune),
the tables written beside it, and the merge that keeps other runs' rows."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from .errors import FeatxError
from .io import folder_lock, json_text, write_atomic

__all__ = ["RESULTS_FILE", "skipped_reason", "metric_fields", "results_table", "write_tables", "merge_results"]

RESULTS_FILE = "results.json"


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
    """Replace this run's (head, store, per_class) entries in ``out/results.json``, keep the rest."""
    path = out / RESULTS_FILE
    with folder_lock(out):  # no results.json.lock file left behind
        try:
            existing = json.loads(path.read_text()) if path.exists() else []
        except ValueError:
            raise FeatxError(f"{path} is not valid JSON; move it away and run again") from None

        def key(e):
            return e.get("kind"), e.get("head"), e.get("store_id"), e.get("per_class")

        new_keys = {key(e) for e in entries}
        merged = [e for e in existing if key(e) not in new_keys] + list(entries)
        write_atomic(path, json_text(merged))
    return merged
