"""``featx train --engine ray --heads xgboost``: XGBoost on Ray Train, over the store's shards.

The features never gather in one process: each Ray Train worker reads its share of the
shards (a Ray Data ``map_batches`` over shard descriptors) and XGBoost's collective,
set up by Ray Train's ``XGBoostTrainer``, builds one model from all of them. The driver
holds ids, labels and the split assignment only, and scores val and test by streaming the
shards one at a time.

Same protocol as the local ``xgboost`` head (``_train``): the same splits (``splits.json``
written the same way), each ``max_depth`` of the head's grid boosts on train with early
stopping on val (20 rounds patience, mlogloss) and is scored by val accuracy at its best
round; the chosen depth is refit on train+val for exactly that many rounds; the test
split is evaluated once. Differences, recorded in the entry: no PCA step (a PCA fitted on
data larger than one machine's RAM is another project; XGBoost's ``hist`` samples
columns itself), and no few-shot or multi-seed mode.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from ..core.errors import FeatxError, FeatxUsageError
from ..core.metrics import classification_metrics
from ..core.results import merge_results, metric_fields, write_tables
from ..core.runtime import library_versions
from ..data import splits_digest
from ..extraction import join_ray, ray_errors
from ..store import FeatureStore, iter_verified_shards
from ._persist import save_head
from ._train import _base_entry, _head_manifest, _record_splits, resolve_splits, split_record

__all__ = ["train_xgboost_ray"]

_DEPTHS, _PATIENCE, _MAX_ROUNDS = (4, 6), 20, 1000
# Ray Train's checkpoints (the booster) go beside the results: on a cluster that path must be
# shared, like the shards; without --out, a temporary folder.
_TRAIN_DIR = ".ray-train"


def _blocks(store: FeatureStore) -> list[dict]:
    """Shard descriptors (store, manifest entry, rows) a worker can read and verify on its own;
    a file store is one block (its HDF5 checksums are checked as it is read)."""
    if hasattr(store, "shards"):
        return [{"path": str(store.path), "entry": json.dumps(e), "start": e["start"], "stop": e["stop"]}
                for e in store.shards]
    return [{"path": str(store.path), "entry": "", "start": 0, "stop": store.n_items}]


def _read_block(batch: dict, split_by_row: np.ndarray, labels: np.ndarray, status_done: np.ndarray, want: str,
                all_ids: np.ndarray, dim: int) -> dict:
    """Ray task: the rows of ``want`` in the given blocks, as (features, label)."""
    import h5py

    from ..store import read_shard

    feats, ys = [], []
    for path, entry, start, stop in zip(batch["path"], batch["entry"], batch["start"], batch["stop"]):
        if entry:  # a shard: its sha256, ids and width checked before use (the store's one verified read)
            _, rows = read_shard(Path(str(path)), json.loads(str(entry)), all_ids, dim)
        else:
            with h5py.File(str(path), "r") as h5:
                rows = h5["features"][:]
        keep = status_done[int(start):int(stop)] & (split_by_row[int(start):int(stop)] == want)
        feats.append(rows[keep].astype(np.float32))
        ys.append(labels[int(start):int(stop)][keep])
    return {"features": np.concatenate(feats), "label": np.concatenate(ys)}


def _per_row(store: FeatureStore, split: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split, label and done-mask per source row (split/labels come aligned with done rows)."""
    done = store._done if hasattr(store, "_done") else np.ones(store.n_items, bool)
    by_row = np.full(store.n_items, "", dtype=object)
    by_row[done] = split
    labels = np.zeros(store.n_items, dtype=np.int64)
    labels[done] = store.labels
    return by_row, labels, done


def _worker_loop(config: dict) -> None:
    """Ray Train worker: its shard of train (and val) -> one collective XGBoost model."""
    import os
    import tempfile

    import ray.train
    import xgboost

    def matrix(name):
        batches = list(ray.train.get_dataset_shard(name).iter_batches(batch_format="numpy", batch_size=None))
        X = np.concatenate([b["features"] for b in batches]) if batches else np.zeros((0, config["dim"]), np.float32)
        y = np.concatenate([b["label"] for b in batches]) if batches else np.zeros(0)
        return xgboost.DMatrix(X, label=y)

    dtrain = matrix("train")
    evals = [(matrix("val"), "val")] if config["early_stopping"] else []
    booster = xgboost.train(config["params"], dtrain, num_boost_round=config["rounds"], evals=evals,
                            early_stopping_rounds=_PATIENCE if evals else None, verbose_eval=False)
    # One report at the end (a report per round is a synchronous round trip: seconds per round here).
    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as folder:
            booster.save_model(os.path.join(folder, "model.ubj"))
            ray.train.report({"rounds": booster.num_boosted_rounds()},
                             checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report({})


def _boost(ray, datasets: dict, params: dict, rounds: int, dim: int, workers: int, early_stopping: bool,
           storage: str):
    import xgboost
    from ray.train import RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    trainer = XGBoostTrainer(
        _worker_loop, train_loop_config={"params": params, "rounds": rounds, "dim": dim, "early_stopping": early_stopping},
        datasets=datasets, scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=storage),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        booster = xgboost.Booster()
        booster.load_model(str(Path(folder) / "model.ubj"))
    return booster


def _predict(store: FeatureStore, split: np.ndarray, want: str, booster, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions on ``want`` rows, one shard in memory at a time."""
    import xgboost

    preds, ys, offset = [], [], 0
    for _, labels, _, feats in iter_verified_shards(store):
        mask = split[offset:offset + len(labels)] == want
        offset += len(labels)
        if mask.any():
            proba = booster.predict(xgboost.DMatrix(feats[mask]), iteration_range=(0, rounds))
            preds.append(np.argmax(proba.reshape(int(mask.sum()), -1), axis=1))
            ys.append(labels[mask])
    return np.concatenate(preds), np.concatenate(ys)


def train_xgboost_ray(store: FeatureStore | str, out: str | Path | None = None, *, workers: int = 2,
                      address: str | None = None, splits=None, split_seed: int = 0, val_fraction: float = 0.1,
                      test_fraction: float = 0.2, n_boot: int = 1000, seed: int = 0, quiet: bool = True) -> dict:
    """Select, refit and test the ``xgboost`` head with Ray Train; return its results entry."""
    try:
        import ray
        import ray.train.xgboost  # noqa: F401
    except ImportError:
        raise FeatxError("--engine ray needs Ray Train: pip install 'featx[ray]'") from None
    store = (store if isinstance(store, FeatureStore) else FeatureStore(store)).require_complete()
    split, rule = resolve_splits(store, splits, split_seed, val_fraction, test_fraction)
    for name in ("train", "val", "test"):
        if not np.any(split == name):
            raise FeatxUsageError(f"the {name} split of {store.path} is empty")
    # The extract engine's way in: an unreachable address is one line at once, not minutes of retries.
    started_here = join_ray(ray, address)
    # Ray Train's storage is featx's own folder: a failed or killed run's is removed, and so is a
    # leftover of an earlier killed run before this one starts.
    storage = Path(out).resolve() / _TRAIN_DIR if out is not None else None
    if storage is not None:
        shutil.rmtree(storage, ignore_errors=True)
    try:
        with ray_errors("xgboost on Ray Train", cleanup=storage):
            return _run(ray, store, split, rule, out, workers, n_boot, seed, quiet)
    finally:
        if started_here:
            ray.shutdown()


def _datasets(ray, store, split, names) -> dict:
    by_row, labels, done = _per_row(store, split)
    blocks = _blocks(store)
    return {name: ray.data.from_items(blocks, override_num_blocks=len(blocks)).map_batches(
        _read_block, batch_size=1, fn_kwargs={"split_by_row": by_row, "labels": labels, "status_done": done,
                                              "want": name, "all_ids": store.all_ids, "dim": store.dim})
        for name in names}


def _run(ray, store, split, rule, out, workers, n_boot, seed, quiet) -> dict:
    import tempfile

    storage = str(Path(out).resolve() / _TRAIN_DIR) if out is not None else tempfile.mkdtemp(prefix="featx-ray-train-")
    n_classes = len(store.class_names)
    base = {"objective": "multi:softprob", "num_class": n_classes, "eval_metric": "mlogloss", "tree_method": "hist",
            "eta": 0.1, "subsample": 0.8, "colsample_bytree": 0.8, "seed": seed}
    data = _datasets(ray, store, split, ("train", "val", "refit"))
    started, trace = time.perf_counter(), []
    for depth in _DEPTHS:
        booster = _boost(ray, {"train": data["train"], "val": data["val"]}, {**base, "max_depth": depth},
                         _MAX_ROUNDS, store.dim, workers, early_stopping=True, storage=storage)
        rounds = int(booster.best_iteration) + 1 if booster.attr("best_iteration") is not None else booster.num_boosted_rounds()
        pred, y = _predict(store, split, "val", booster, rounds)
        trace.append({"params": {"max_depth": depth, "n_estimators": rounds}, "val_accuracy": float((pred == y).mean())})
    chosen = max(trace, key=lambda t: t["val_accuracy"])
    selection_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # "refit" rows: train and val together (the split array relabelled for the reader).
    refit_split = np.where(np.isin(split, ("train", "val")), "refit", split)
    refit_ds = _datasets(ray, store, refit_split, ("refit",))["refit"]
    booster = _boost(ray, {"train": refit_ds}, {**base, "max_depth": chosen["params"]["max_depth"]},
                     chosen["params"]["n_estimators"], store.dim, workers, early_stopping=False, storage=storage)
    refit_seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    pred, y_test = _predict(store, split, "test", booster, chosen["params"]["n_estimators"])
    per_1k = (time.perf_counter() - t0) / max(len(y_test), 1) * 1000
    metrics = classification_metrics(y_test, pred, store.class_names, n_boot=n_boot, seed=seed)
    entry = _entry(store, split, rule, chosen, trace, metrics, selection_seconds, refit_seconds, per_1k, workers, seed)
    if out is not None:
        _save(Path(out), store, split, rule, booster, entry)
    if not quiet:
        print(f"featx: xgboost (ray, {workers} workers): val {chosen['val_accuracy']:.4f} with "
              f"{json.dumps(chosen['params'])}; test accuracy {metrics['accuracy']:.4f}")
    return entry


def _entry(store, split, rule, chosen, trace, metrics, selection_seconds, refit_seconds, per_1k, workers, seed) -> dict:
    return {
        **_base_entry(store, "xgboost"), "engine": "ray", "ray_workers": workers, "per_class": None, "seeds": [seed],
        "n_train": int((split == "train").sum()), "n_val": int((split == "val").sum()),
        "n_test": int((split == "test").sum()), "refit_on": "train+val",
        "splits_digest": splits_digest(*split_record(store, split, rule)), "split_rule": rule,
        **metric_fields(metrics), "seed_summary": {},
        "fit_seconds": round(selection_seconds + refit_seconds, 3), "predict_seconds_per_1k": round(per_1k, 5),
        "params": {**chosen["params"], "pca": None},
        "selection": {"val_accuracy": chosen["val_accuracy"], "metric": "val_accuracy", "method": "val", "search": "early_stopping",
                      "budget": len(_DEPTHS), "candidates": trace, "selection_seconds": round(selection_seconds, 3),
                      "refit_seconds": round(refit_seconds, 3)},
        "versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _save(out: Path, store, split, rule, booster, entry) -> None:
    """Save the booster as a head through the same path as the local one (:func:`save_head`).

    Its manifest's ``steps`` say what it applies: the classifier alone, no PCA.
    """
    from xgboost import XGBClassifier

    out.mkdir(parents=True, exist_ok=True)
    _record_splits(out, store, split, rule)
    model = XGBClassifier()
    model.load_model(booster.save_raw("ubj"))
    task = {"store": store, "per_class": None, "digest": entry["splits_digest"], "rule": rule}
    run = {"selection": {"params": entry["params"]}, "seed": entry["seeds"][0]}
    manifest = {**_head_manifest(task, "xgboost", run), "engine": "ray"}
    entry["model"] = "xgboost"
    save_head(out / "xgboost", model, manifest, evaluate=lambda head: entry)
    write_tables(out, merge_results(out, [entry]))
