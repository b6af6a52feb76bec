"""Heads past the memory budget: the streaming path of :func:`featx.heads.train_heads`.

:func:`plan_memory` decides, per run, whether the features fit in memory under
``--max-memory`` (:func:`featx.core.memory.memory_plan`); past it,
:func:`fit_seed_streaming` fits a head from :class:`featx.extraction.BatchReader`
batches with the same protocol (selection on val, refit on train+val, one test
evaluation), and saves it the same way. Heads with a streaming fit: ``logreg``
(:mod:`._stream_logreg`) and ``xgboost`` (:mod:`._stream_xgb`); any other head past the
budget is skipped with the reason in its results row.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from ..core.memory import format_size, memory_plan
from ..core.metrics import classification_metrics
from ..store import BatchReader, FeatureStore
from ._adapt import HeadUnfitError
from ._mistakes import worst_mistakes
from ._stream_logreg import select_logreg_stream
from ._stream_xgb import select_xgboost_stream

__all__ = ["plan_memory", "memory_fields", "fit_seed_streaming", "score_streaming", "STREAMING_HEADS", "PrecomputedProba", "predict_streaming"]

STREAMING_HEADS = ("logreg", "xgboost")


def plan_memory(store, max_memory, quiet: bool = True) -> dict:
    """The run's memory plan; concatenated feature sets are always held in memory (said when over budget)."""
    plan = memory_plan(len(store.labels), store.dim, max_memory)
    if plan["memory_path"] == "streaming" and not isinstance(store, FeatureStore):
        print(f"featx: warning: these concatenated features ({format_size(plan['estimated_in_memory_bytes'])} in memory) "
              f"are over --max-memory {format_size(plan['max_memory'])}, but only a single store can be streamed: "
              "holding them in memory", file=sys.stderr, flush=True)
        plan = {**plan, "memory_path": "in_memory", "over_budget": True}
    return plan


def memory_fields(plan: dict) -> dict:
    """What a results row records of the plan."""
    return {"memory_path": plan["memory_path"], "max_memory": plan["max_memory"]}


def _selectors() -> dict:
    return {"logreg": select_logreg_stream, "xgboost": select_xgboost_stream}


class PrecomputedProba:
    """Probabilities already computed for the test rows, indexed by position (for worst_mistakes)."""

    def __init__(self, proba: np.ndarray, classes):
        self.proba, self.classes_ = proba, np.asarray(classes)

    def predict_proba(self, positions) -> np.ndarray:
        return self.proba[np.asarray(positions, dtype=np.int64)]


def _predict_stream(model, reader) -> tuple[np.ndarray, np.ndarray, float]:
    preds, probas, seconds = [], [], 0.0
    for X, _ in reader:
        started = time.perf_counter()
        proba = np.asarray(model.predict_proba(np.asarray(X, dtype=np.float32)))
        seconds += time.perf_counter() - started
        probas.append(proba)
        preds.append(np.asarray(model.classes_)[np.argmax(proba, axis=1)])
    k = len(model.classes_)
    proba = np.concatenate(probas) if probas else np.zeros((0, k))
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return pred, proba, seconds / max(len(reader), 1) * 1000.0


def predict_streaming(model, store, rows: np.ndarray, plan: dict) -> tuple[np.ndarray, float]:
    """(predicted labels, seconds per 1,000) of ``model`` on the selected rows, read in bounded batches."""
    reader = BatchReader(store, rows, batch_rows=plan["batch_rows"])
    preds, seconds = [], 0.0
    for X, _ in reader:
        started = time.perf_counter()
        preds.append(np.asarray(model.predict(np.asarray(X, dtype=np.float32))))
        seconds += time.perf_counter() - started
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return pred, seconds / max(len(reader), 1) * 1000.0


def fit_seed_streaming(task: dict, spec, fixed: dict, seed: int, rows: dict) -> dict:
    """``_fit_seed`` of the streaming path: the same protocol, features read in batches; the run
    (seed, model, selection, fit time) without its test score (:func:`score_streaming`).

    ``rows``: the train/val/refit/test masks of ``training_rows``.
    """
    store, plan = task["store"], task["plan"]
    selectors = _selectors()
    if spec.name not in selectors:
        raise HeadUnfitError(
            f"{spec.name} needs its features in memory (about {format_size(plan['estimated_in_memory_bytes'])}, over "
            f"--max-memory {format_size(plan['max_memory'])}); the streaming heads are {', '.join(STREAMING_HEADS)}, "
            "or raise --max-memory")
    readers = {name: BatchReader(store, rows[name], batch_rows=plan["batch_rows"]) for name in ("train", "val", "refit")}
    select, extra, fields = selectors[spec.name], {}, {}
    if task.get("ray") is not None:  # engine "ray": the logreg fit as a Ray Train task (train_heads checked the head)
        from ._ray_logreg import select_logreg_ray

        select, extra = select_logreg_ray, {"ray_options": task["ray"]}
    started = time.perf_counter()
    model, selection = select(spec, fixed, seed, readers["train"], readers["val"], readers["refit"],
                              budget=plan["max_memory"], cache_dir=task["out"], **extra)
    if extra:
        fields = {"engine": "ray", "ray_workers": selection["ray_workers"], "ray_train_runs": selection["ray_train_runs"]}
    return {"seed": seed, "model": model, "selection": selection, "fit_seconds": time.perf_counter() - started,
            "n_train": int(rows["train"].sum()), "test_rows": rows["test"], "entry_fields": fields}


def score_streaming(task: dict, spec, run: dict) -> dict:
    """The one test evaluation of a streamed head (fitted, or saved and reloaded), batch by batch."""
    store, plan, model, seed = task["store"], task["plan"], run["model"], run["seed"]
    test = run["test_rows"]
    reader = BatchReader(store, test, batch_rows=plan["batch_rows"])
    pred, proba, per_1k = _predict_stream(model, reader)
    y_test, names = reader.labels, store.class_names
    metrics = classification_metrics(y_test, pred, names, n_boot=task["n_boot"], seed=seed)
    mistakes = worst_mistakes(PrecomputedProba(proba, model.classes_), np.arange(len(y_test)), y_test, pred,
                              store.ids[test], names)
    if not task["quiet"]:
        print(f"featx: {spec.name} seed {seed} (streamed, {plan['batch_rows']} rows a batch): val "
              f"{run['selection']['val_accuracy']:.4f} with {json.dumps(run['selection']['params'], default=str)}; "
              f"test accuracy {metrics['accuracy']:.4f}, fit {run['fit_seconds']:.1f} s", file=sys.stderr, flush=True)
    return {"metrics": metrics, "predict_seconds_per_1k": per_1k, "mistakes": mistakes,
            "test": (store.ids[test], y_test, pred)}
