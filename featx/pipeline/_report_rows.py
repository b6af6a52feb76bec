"""Names and numbers of report rows, shared by the tables, the plots and the summary."""

from __future__ import annotations

import math
from collections.abc import Sequence

from . import _report_parts as _parts
from ._report_decide import training_seconds

__all__ = ["total_seconds", "size", "per_class_x", "is_scratch", "label", "main_setting", "rank_key", "pct", "ci",
           "secs", "seed_note", "points", "dci"]

total_seconds = training_seconds


def size(entry: dict) -> int | None:
    return entry.get("per_class")


def per_class_x(entry: dict) -> float:
    """Training images per class: the few-shot N, or the mean class size of the full training set."""
    if entry.get("per_class"):
        return float(entry["per_class"])
    n_classes = max(1, len(entry.get("class_names") or []) or 1)
    return float(entry.get("n_train") or 0) / n_classes


def is_scratch(entry: dict) -> bool:
    return entry.get("kind") == "finetune" and entry.get("mode") == "scratch"


def label(entry: dict) -> str:
    if entry.get("kind") == "finetune":
        flag = " [under-trained]" if _parts.is_under_trained(entry) else ""
        return f"{entry.get('backbone', '?')} + {_parts.describe_finetune(entry)}{flag}"
    control = " (control)" if entry.get("control") else ""
    return f"{_parts.group_of(entry)}{control} + {entry.get('head', '?')}"


def main_setting(entries: Sequence[dict]) -> list[dict]:
    full = [e for e in entries if size(e) is None]
    if full:
        return full
    largest = max(size(e) for e in entries)
    return [e for e in entries if size(e) == largest]


def rank_key(entry: dict):
    cost = total_seconds(entry)
    return (-float(entry.get("accuracy", 0.0)), math.inf if cost is None else cost)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def points(value: float) -> str:
    """An accuracy difference in points with its sign: ``+1.2`` / ``-0.4``."""
    return f"{100 * value:+.1f}"


def dci(values) -> str:
    """A CI of an accuracy difference, in signed points."""
    return f"[{100 * values[0]:+.1f}, {100 * values[1]:+.1f}]"


def ci(values) -> str:
    return f"[{100 * values[0]:.1f}, {100 * values[1]:.1f}]" if values else ""


def secs(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s" if value >= 1 else f"{value:.2f} s"


def seed_note(entry: dict) -> str:
    acc = (entry.get("seed_summary") or {}).get("accuracy")
    if acc and acc.get("n", 1) > 1:
        return f"mean {100 * acc['mean']:.1f}% ± {100 * acc['std']:.1f} over {acc['n']} seeds"
    return ""
