"""How the report decides: inference cost, paired comparisons, the recommendation rule, hand-over.

The rule, stated in the report as :data:`RULE` and applied here exactly so:

1. The *best* row has the highest test accuracy (ties: cheaper at inference, then training).
2. A row is *indistinguishable* from the best when the 95% paired-bootstrap CI of their
   accuracy difference on the shared test items (:func:`featx.core.paired.compare_predictions`)
   includes 0. A row without recorded test predictions falls back to the unpaired check
   (its accuracy inside the best row's CI), and the report says so.
3. The *recommended* row is the cheapest at inference among the best and the rows
   indistinguishable from it, inference cost compared as shown (ms per image, three
   significant digits; equal shown values are ties); ties by training cost (total time to
   result), then by accuracy.

Inference cost of a head: the backbone's milliseconds per image, from its feature
store's recorded extraction throughput (decode + resize + forward at the store's batch
size; one store per backbone of a feature set, summed) plus the head's own
``predict_seconds_per_1k`` (seconds per 1,000 items is milliseconds per item). A
fine-tune: its ``predict_seconds_per_1k`` on the test split (decode + forward).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core.paired import compare_predictions, items_needed
from ..core.predictions import load_correctness

__all__ = ["RULE", "Decision", "decide", "inference_ms", "training_seconds", "fmt_ms", "compare_rows", "model_dir",
           "locate_predictions",
           "handover"]

RULE = ("Recommendation rule: among the rows that the paired test on the shared test images cannot tell apart from the "
        "most accurate one (95% paired-bootstrap CI of the accuracy difference includes 0), the cheapest at inference "
        "(ms per image as shown); ties by training cost.")


def training_seconds(entry: dict) -> float | None:
    """Compute from raw images to this result: extraction + head fit, or fine-tune training."""
    if entry.get("kind") == "finetune":
        value = entry.get("train_seconds", entry.get("fit_seconds"))
        return None if value is None else float(value)
    fit = entry.get("fit_seconds")
    if fit is None:
        return None
    return float(fit) + float(entry.get("extract_seconds") or 0.0)


def _backbone_ms(entry: dict) -> float | None:
    stores = entry.get("stores") if isinstance(entry.get("stores"), list) else []
    rates = [s.get("extract_images_per_second") for s in stores if isinstance(s, dict)] if stores else \
        [entry.get("extract_images_per_second")]
    if not rates or any(not r for r in rates):
        return None
    return sum(1000.0 / float(r) for r in rates)


def inference_ms(entry: dict) -> float | None:
    """Milliseconds per image from image file to class: backbone + head, or the fine-tune's forward."""
    head = entry.get("predict_seconds_per_1k")
    if head is None:
        return None
    if entry.get("kind") == "finetune":
        return float(head)
    backbone = _backbone_ms(entry)
    return None if backbone is None else backbone + float(head)


def fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _cost_key(entry: dict) -> tuple:
    ms, train = inference_ms(entry), training_seconds(entry)
    return (math.inf if ms is None else float(fmt_ms(ms)), math.inf if train is None else train,
            -float(entry.get("accuracy", 0.0)))


def compare_rows(a: dict, b: dict, *, seed: int = 0) -> dict | None:
    """Paired comparison A vs B on their shared test items, or None when either recorded no predictions."""
    left, right = load_correctness(a), load_correctness(b)
    if left is None or right is None:
        return None
    try:
        return compare_predictions(left[0], left[1], right[0], right[1], seed=seed)
    except ValueError:  # no shared item (rows from different test splits)
        return None


def _unpaired_close(best: dict, entry: dict) -> bool:
    low = (best.get("accuracy_ci") or [best["accuracy"]])[0]
    return entry["accuracy"] >= low


@dataclass
class Decision:
    """The outcome of the rule on one setting of one dataset."""

    best: dict
    recommended: dict
    # Rows (best included) that the test items cannot tell from the best, cheapest first.
    tied: list[dict]
    # id(row) -> paired comparison best vs row (diff = best - row), None when unpaired.
    vs_best: dict = field(default_factory=dict)
    unpaired: list[dict] = field(default_factory=list)

    def comparison(self, entry: dict) -> dict | None:
        return self.vs_best.get(id(entry))


def decide(entries: Sequence[dict]) -> Decision:
    """Apply :data:`RULE` to the rows of one setting."""
    if not entries:
        raise ValueError("no entries to recommend from")
    best = min(entries, key=lambda e: (-float(e.get("accuracy", 0.0)),) + _cost_key(e)[:2])
    tied, vs_best, unpaired = [best], {}, []
    for entry in entries:
        if entry is best:
            continue
        result = compare_rows(best, entry)
        vs_best[id(entry)] = result
        if result is None:
            if _unpaired_close(best, entry):
                tied.append(entry)
                unpaired.append(entry)
        elif not result["separated"]:
            tied.append(entry)
    tied.sort(key=_cost_key)
    return Decision(best, tied[0], tied, vs_best, unpaired)


def needed_sentence(decision: Decision) -> str:
    """How many test images would separate the tied rows' gap to the best (or one point)."""
    pairs = [(e, decision.comparison(e)) for e in decision.tied if e is not decision.best and decision.comparison(e)]
    if not pairs:
        return ""
    entry, result = max(pairs, key=lambda p: p[1]["diff"])
    gap = result["diff"] if result["diff"] > 0 else 0.01
    disagreement = max(result["disagreement"], gap)
    n = items_needed(gap, disagreement)
    return (f"Separating a gap of {100 * gap:.1f} points at a disagreement rate of {100 * disagreement:.0f}% "
            f"(the share of test images exactly one of the two gets right) would take about {n:,} test images "
            "(McNemar's test, 5% level, 80% power).")


# --------------------------------------------------------------------------- hand-over


def model_dir(entry: dict, out: Path) -> Path | None:
    """The row's saved model: its ``model`` field (relative to the report's folder) when that folder
    exists, else the saved head folder that holds its test predictions (heads written by
    `featx train`), else the ``model`` field as given."""
    model = entry.get("model")
    named = None
    if isinstance(model, str) and model:
        named = Path(model) if Path(model).is_absolute() else out / model
        if named.is_dir():
            return named
    record = entry.get("test_predictions")
    if entry.get("kind") != "finetune" and isinstance(record, dict) and record.get("path"):
        folder = Path(record["path"]).parent
        if (folder / "manifest.json").is_file():
            return folder
    return named  # as the row names it, even if this report cannot see it


def locate_predictions(entries: Sequence[dict], out: Path) -> None:
    """Point rows whose predictions file moved (a run folder copied or renamed) at the copy inside their
    model folder; the sha256 recorded with the row decides whether that copy is theirs."""
    from ..core.io import file_sha256

    for entry in entries:
        record = entry.get("test_predictions")
        if not isinstance(record, dict) or not record.get("path") or Path(record["path"]).is_file():
            continue
        folder = model_dir(entry, out)
        candidate = folder / Path(record["path"]).name if folder is not None else None
        if candidate is not None and candidate.is_file() and file_sha256(candidate) == record.get("sha256"):
            entry["test_predictions"] = {**record, "path": str(candidate.resolve())}


def _head_name(entry: dict, folder: Path | None) -> str:
    if folder is not None:
        try:
            return str(json.loads((folder / "manifest.json").read_text()).get("head") or entry.get("head"))
        except (OSError, ValueError, AttributeError):
            pass
    return str(entry.get("head", "?"))


def handover(entry: dict, out: Path) -> dict:
    """What a user runs next with the recommended row: model path, predict and export commands."""
    from ..heads import EXPORTABLE_HEADS  # export-model's own list: the report offers what it does

    folder = model_dir(entry, out)
    if folder is None:
        return {"model": None, "predict": None, "export": None,
                "note": "this row names no saved model folder that `featx predict --model` can load (no `model` "
                        "field and no saved head beside its predictions), so there is nothing to hand over yet"}
    path = shlex.quote(str(folder))
    kind = "finetune" if entry.get("kind") == "finetune" else _head_name(entry, folder)
    exports = kind == "finetune" or kind in EXPORTABLE_HEADS
    return {
        "model": str(folder),
        "predict": f"featx predict --model {path} IMAGES",
        "python": f"featx.load_model({str(folder)!r}).predict(images)",
        "export": f"featx export-model {path} --format onnx --out model.onnx" if exports else None,
        "note": None if exports else (f"{kind} heads do not export to ONNX (kinds that export: "
                                      f"{', '.join(EXPORTABLE_HEADS)} and fine-tunes); ship the model "
                                      "folder and use featx predict or featx.load_model"),
    }
