"""Timing the logistic-regression probe: the reference path vs featx's default vs the torch engine.

Three ways to choose C on val and refit on train+val, timed on the same data in one run:

* ``reference``: the DINOv2-style walk of the 45-point grid (1e-6 .. 1e5) with scikit-learn,
  warm-started from strong to weak regularisation and stopped two decades after the peak
  (featx's ``path`` selection, what featx did before the coarse-to-fine search);
* ``featx``: the ``logreg`` head as registered (coarse-to-fine search, ``engine=auto``);
* ``torch``: the same search with ``engine=torch`` on ``device`` (GPU when present).

Data: a synthetic problem (class centroids in correlated, badly conditioned noise with an
offset, like pooled CNN embeddings) or a feature store's own train/val/test split. The
machine check compares the process CPU time with wall time and reads ``/proc/loadavg``, so
a number measured on a busy machine says so.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from ._registry import get_head
from ._train import select_and_fit

__all__ = ["bench_logreg", "synthetic_problem"]


def synthetic_problem(n: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 rows of ``dim`` features in ``classes`` classes with a weak linear signal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centroids = rng.standard_normal((classes, dim)).astype(np.float32) * 0.05
    rank = min(64, dim)
    # A strong low-rank component shared by all classes makes the features correlated
    # and the problem badly conditioned, as pooled CNN embeddings are.
    factors = rng.standard_normal((rank, dim)).astype(np.float32) * np.linspace(0.3, 0.03, rank, dtype=np.float32)[:, None]
    noise = rng.standard_normal((n, dim), dtype=np.float32) + rng.standard_normal((n, rank), dtype=np.float32) @ factors
    return (centroids[y] + noise + 1.0).astype(np.float32), y


def _load(features, n: int, dim: int, classes: int, seed: int) -> tuple[dict, dict]:
    """(train/val/test arrays, description of the data)."""
    if features is not None:
        from ..store import FeatureStore

        store = FeatureStore(features).require_complete()
        split, _ = store.split_assignment()
        X, y = store.features, store.labels
        parts = {name: (X[split == name], y[split == name]) for name in ("train", "val", "test")}
        return parts, {"data": str(features), "backbone": store.backbone}
    # n training rows; val and test each a ninth of that (CIFAR-10: 45,000 / 5,000 / 5,000).
    extra = max(n // 9, classes * 5)
    X, y = synthetic_problem(n + 2 * extra, dim, classes, seed)
    parts = {"train": (X[:n], y[:n]), "val": (X[n:n + extra], y[n:n + extra]), "test": (X[n + extra:], y[n + extra:])}
    return parts, {"data": "synthetic", "seed": seed}


def _timed(spec, params: dict, parts: dict, refit) -> dict:
    started = time.perf_counter()
    model, record = select_and_fit(spec, parts["train"], parts["val"], refit, params=params)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "accuracy": float(model.score(*parts["test"])), "C": record["params"]["C"],
            "val_accuracy": record["val_accuracy"], "fits": len(record["candidates"]),
            "selection_seconds": record["selection_seconds"], "refit_seconds": record["refit_seconds"]}


def _machine(threads: int, cpu: float, wall: float, load_before: list[float]) -> dict:
    load_after = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    others = max(0.0, (load_after[0] if load_after else 0.0) - threads)
    ok = others <= max(0.5, cores - threads)
    note = "" if ok else (f"the machine was busy (1-min load {load_after[0]:.1f} on {cores} cores while using "
                          f"{threads} thread(s)): timings are pessimistic")
    return {"cores": cores, "threads": threads, "cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3),
            "cpu_per_wall": round(cpu / max(wall, 1e-9), 2), "loadavg_before": load_before, "loadavg_after": load_after,
            "cores_ok": ok, "note": note}


def bench_logreg(n: int = 45_000, dim: int = 1280, classes: int = 10, *, features=None, threads: int | None = None,
                 device: str = "auto", seed: int = 0, reference: bool = True) -> dict:
    """Time the three probes on one problem; returns the ``featx bench logreg --json`` document."""
    import torch
    from threadpoolctl import threadpool_limits

    from ._registry import xgboost_device

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = threads or cores
    parts, data = _load(features, n, dim, classes, seed)
    refit = (np.concatenate([parts["train"][0], parts["val"][0]]), np.concatenate([parts["train"][1], parts["val"][1]]))
    spec = get_head("logreg")
    torch_device = xgboost_device(device)
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    torch.set_num_threads(threads)
    result: dict = {}
    with threadpool_limits(threads):
        # One tiny fit first: torch's first call pays for kernel set-up, not for the probe.
        # Rows drawn across the split: a store's rows are often grouped by class.
        warm = np.random.default_rng(seed).permutation(len(parts["val"][1]))[:200]
        select_and_fit(spec, (parts["val"][0][warm], parts["val"][1][warm]), parts["val"], parts["val"],
                       params={"engine": "torch", "device": torch_device})
        cpu, wall = time.process_time(), time.perf_counter()
        if reference:
            result["reference"] = _timed(dataclasses.replace(spec, selection="path"), {"engine": "sklearn"}, parts, refit)
        result["featx"] = _timed(spec, {"device": device}, parts, refit)
        result["torch"] = _timed(spec, {"engine": "torch", "device": torch_device}, parts, refit)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    doc = {f"{name}_s": r["seconds"] for name, r in result.items()}
    doc.update({f"{name}_acc": r["accuracy"] for name, r in result.items()})
    if reference:
        doc["speedup"] = round(result["reference"]["seconds"] / max(result["featx"]["seconds"], 1e-9), 2)
        doc["acc_gap_points"] = round(100 * (result["featx"]["accuracy"] - result["reference"]["accuracy"]), 2)
    doc.update({
        "runs": result,
        "settings": {"n_train": len(parts["train"][1]), "n_val": len(parts["val"][1]), "n_test": len(parts["test"][1]),
                     "dim": int(parts["train"][0].shape[1]), "classes": int(len(np.unique(parts["train"][1]))), **data,
                     "featx_engine": "torch" if torch_device.startswith("cuda") else "sklearn"},
        "device": {"torch": torch_device, "cuda_name": torch.cuda.get_device_name(0) if torch_device.startswith("cuda") else None},
        "machine": _machine(threads, cpu, wall, load_before),
    })
    return doc
