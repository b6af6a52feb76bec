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
split is evaluated once. All of it runs inside ONE Ray Train worker group (one start-up
per run): every depth, its val score (each worker counts its val rows right, the counts
are summed over the workers with XGBoost's collective allreduce, so every worker picks
the same depth) and the refit. Each worker builds its ``QuantileDMatrix`` batch by batch
from ``iter_batches`` of its dataset shard (an ``xgboost.DataIter``), so no worker
concatenates its rows.

The preprocessing is the local head's: a PCA step of ``pca`` components (the head's
parameter, 128 by default; None or 0: none), fitted without gathering the rows. Before the
Ray Train run, one pass of Ray tasks over the same blocks the workers read (the same
verified reads) returns per split its row count, mean and centred ``x^T x``; the driver
merges them and takes the covariance's top eigenvectors (:mod:`._ray_pca`): train's PCA for
the depth selection, train+val's for the refit, as the local head refits its pipeline. The
workers project each batch with those arrays before XGBoost sees it; the saved head is the
local kind of pipeline (``CappedPCA``, then ``XGBClassifier``), which scores the test split.
Not on Ray: the few-shot and multi-seed modes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.errors import FeatxUsageError, missing_extra
from ..core.metrics import classification_metrics
from ..core.predictions import PREDICTIONS_FILE, prediction_record
from ..core.results import merge_results, metric_fields, write_tables
from ..core.runtime import library_versions
from ..data import splits_digest
from ..extraction import join_ray, ray_errors
from ..store import BatchReader, FeatureStore
from ._mistakes import worst_mistakes
from ._persist import save_head
from ._search import rank_candidates
from ._stream import PrecomputedProba
from ._train import _base_entry, _head_manifest, _record_splits, resolve_splits, split_record

__all__ = ["train_xgboost_ray"]

_DEPTHS, _PATIENCE, _MAX_ROUNDS = (4, 6), 20, 1000
_BATCH_ROWS = 4096  # rows per iter_batches batch fed to a worker's QuantileDMatrix
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


def _block_rows(path, entry, all_ids: np.ndarray, dim: int) -> np.ndarray:
    """One block's feature rows, read the verified way."""
    import h5py

    from ..store import read_shard_fields

    if entry:  # a shard: its sha256, ids and width checked before use (the store's one verified read)
        return read_shard_fields(Path(str(path)), json.loads(str(entry)), all_ids, dim)["features"]
    with h5py.File(str(path), "r") as h5:
        return h5["features"][:]


def _read_block(batch: dict, split_by_row: np.ndarray, labels: np.ndarray, status_done: np.ndarray, want: str,
                all_ids: np.ndarray, dim: int) -> dict:
    """Ray task: the rows of ``want`` in the given blocks, as (features, label)."""
    feats, ys = [], []
    for path, entry, start, stop in zip(batch["path"], batch["entry"], batch["start"], batch["stop"]):
        rows = _block_rows(path, entry, all_ids, dim)
        keep = status_done[int(start):int(stop)] & (split_by_row[int(start):int(stop)] == want)
        feats.append(rows[keep].astype(np.float32))
        ys.append(labels[int(start):int(stop)][keep])
    return {"features": np.concatenate(feats), "label": np.concatenate(ys)}


def _block_moments(batch: dict, split_by_row: np.ndarray, status_done: np.ndarray, all_ids: np.ndarray, dim: int,
                   names: tuple) -> dict:
    """Ray task: each split's (rows, mean, centred scatter) over the given blocks, one read per block."""
    from ._ray_pca import block_moments, merge_moments

    total = {name: block_moments(np.zeros((0, dim)), dim) for name in names}
    for path, entry, start, stop in zip(batch["path"], batch["entry"], batch["start"], batch["stop"]):
        rows = _block_rows(path, entry, all_ids, dim)
        where = split_by_row[int(start):int(stop)]
        for name in names:
            keep = status_done[int(start):int(stop)] & (where == name)
            total[name] = merge_moments(total[name], block_moments(rows[keep], dim))
    return {"n": np.array([[total[name][0] for name in names]]),
            "mean": np.stack([total[name][1] for name in names])[None],
            "scatter": np.stack([total[name][2] for name in names])[None]}


def _split_moments(ray, store: FeatureStore, split: np.ndarray, names=("train", "val")) -> dict:
    """Each split's moments in ONE pass over the blocks, read by Ray tasks as the workers' datasets read them.

    Ray Data rather than the driver's BatchReader: the reads and the D x D products (the pass's
    whole cost, n D^2) run spread over the cluster where the blocks are read, and the driver only
    merges one D x D partial per block as they stream in (Ray Data's backpressure bounds how many).
    """
    from ._ray_pca import block_moments, merge_moments

    by_row, _, done = _per_row(store, split)
    blocks = _blocks(store)
    data = ray.data.from_items(blocks, override_num_blocks=len(blocks)).map_batches(
        _block_moments, batch_size=1, fn_kwargs={"split_by_row": by_row, "status_done": done, "all_ids": store.all_ids,
                                                 "dim": store.dim, "names": tuple(names)})
    total = {name: block_moments(np.zeros((0, store.dim)), store.dim) for name in names}
    for part in data.iter_batches(batch_size=1, batch_format="numpy"):
        for i, name in enumerate(names):
            one = (int(part["n"][0][i]), np.asarray(part["mean"][0][i]), np.asarray(part["scatter"][0][i]))
            total[name] = merge_moments(total[name], one)
    return total


def _fit_pcas(ray, store: FeatureStore, split: np.ndarray, asked, seed: int) -> tuple:
    """(selection PCA on train, refit PCA on train+val), as the local protocol fits them; (None, None) without."""
    from ._ray_pca import merge_moments, pca_from_moments

    if not asked:
        return None, None
    moments = _split_moments(ray, store, split)
    return (pca_from_moments(moments["train"], asked, seed),
            pca_from_moments(merge_moments(moments["train"], moments["val"]), asked, seed))


def _arrays(pca) -> dict | None:
    """What a worker projects with: the fitted components and mean (k x D and D floats, small)."""
    return None if pca is None else {"components": pca.pca_.components_, "mean": pca.pca_.mean_}


def _per_row(store: FeatureStore, split: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split, label and done-mask per source row (split/labels come aligned with done rows)."""
    done = store._done if hasattr(store, "_done") else np.ones(store.n_items, bool)
    by_row = np.full(store.n_items, "", dtype=object)
    by_row[done] = split
    labels = np.zeros(store.n_items, dtype=np.int64)
    labels[done] = store.labels
    return by_row, labels, done


def _shard_iterator(shard, dim: int, batch_rows: int, pca: dict | None = None):
    """An ``xgboost.DataIter`` over a Ray Train dataset shard, one ``iter_batches`` pass per XGBoost pass;
    each batch projected with ``pca`` (components, mean) first when given, as the saved head's PCA step does."""
    import xgboost

    from ._ray_pca import project

    def prepared(features):
        return features if pca is None else project(features, pca["components"], pca["mean"])

    class _Batches(xgboost.DataIter):
        def __init__(self):
            super().__init__(release_data=True)
            self._it, self._empty = None, True

        def next(self, input_data) -> bool:
            if self._it is None:
                self._it = iter(shard.iter_batches(batch_format="numpy", batch_size=batch_rows))
            batch = next(self._it, None)
            if batch is None:
                self._it = None
                if self._empty:  # a worker with no rows still joins the collective, with an empty matrix
                    self._empty = False
                    input_data(data=prepared(np.zeros((0, dim), np.float32)), label=np.zeros(0))
                    return True
                return False
            self._empty = False
            input_data(data=prepared(batch["features"]), label=batch["label"])
            return True

        def reset(self) -> None:
            self._it, self._empty = None, True

    return _Batches()


def _val_accuracy(booster, dval, rounds: int, k: int) -> float:
    """Val accuracy over every worker's val rows: local counts summed by the collective."""
    from xgboost import collective

    labels = dval.get_label()
    if len(labels):
        proba = booster.predict(dval, iteration_range=(0, rounds))
        pred = (proba > 0.5).astype(int) if k == 2 else np.argmax(proba.reshape(len(labels), -1), axis=1)
        right = float((pred == labels).sum())
    else:
        right = 0.0
    counts = collective.allreduce(np.array([right, float(len(labels))]), collective.Op.SUM)
    return float(counts[0] / max(counts[1], 1.0))


def _worker_loop(config: dict) -> None:
    """Ray Train worker: every candidate depth, the choice on val and the refit, in one worker group."""
    import os
    import tempfile

    import ray.train
    import xgboost

    def matrix(name, pca, ref=None):
        shard = ray.train.get_dataset_shard(name)
        return xgboost.QuantileDMatrix(_shard_iterator(shard, config["dim"], config["batch_rows"], pca), ref=ref,
                                       max_bin=256)

    # Train and val projected with train's PCA (the selection), the refit rows with train+val's.
    dtrain = matrix("train", config["pca"]["select"])
    dval = matrix("val", config["pca"]["select"], ref=dtrain)
    trace = []
    for depth in config["depths"]:
        booster = xgboost.train({**config["params"], "max_depth": depth}, dtrain, num_boost_round=config["rounds"],
                                evals=[(dval, "val")], early_stopping_rounds=_PATIENCE, verbose_eval=False)
        rounds = int(booster.best_iteration) + 1 if booster.attr("best_iteration") is not None \
            else booster.num_boosted_rounds()
        # best_score: val log-loss at the best round, already reduced over the workers by XGBoost.
        loss = float(booster.best_score) if booster.attr("best_score") is not None else float("nan")
        trace.append({"params": {"max_depth": depth, "n_estimators": rounds, "pca": config["pca"]["select_size"]},
                      "val_accuracy": _val_accuracy(booster, dval, rounds, config["n_classes"]), "val_loss": loss})
    chosen = trace[rank_candidates(trace)]  # accuracy, ties to the lower val loss, as the local heads
    del dtrain, dval
    booster = xgboost.train({**config["params"], "max_depth": chosen["params"]["max_depth"]},
                            matrix("refit", config["pca"]["refit"]),
                            num_boost_round=chosen["params"]["n_estimators"], verbose_eval=False)
    # One report at the end (a report per round is a synchronous round trip: seconds per round here).
    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as folder:
            booster.save_model(os.path.join(folder, "model.ubj"))
            with open(os.path.join(folder, "trace.json"), "w", encoding="utf-8") as fh:
                json.dump(trace, fh)
            ray.train.report({"rounds": booster.num_boosted_rounds()},
                             checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report({})


def _boost(datasets: dict, config: dict, workers: int, storage: str):
    """One Ray Train run (one worker-group start-up): (refit booster, selection trace)."""
    import xgboost
    from ray.train import RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    trainer = XGBoostTrainer(
        _worker_loop, train_loop_config=config, datasets=datasets,
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=storage),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        booster = xgboost.Booster()
        booster.load_model(str(Path(folder) / "model.ubj"))
        trace = json.loads((Path(folder) / "trace.json").read_text(encoding="utf-8"))
    return booster, trace


def _predict(store: FeatureStore, split: np.ndarray, want: str, model) -> tuple:
    """Predictions of the head as saved (PCA step, then the classifier) on ``want`` rows, streamed in
    bounded, verified batches (:class:`BatchReader`)."""
    preds, ys, probas = [], [], []
    for feats, labels in BatchReader(store, split == want, batch_rows=_BATCH_ROWS * 4):
        proba = model.predict_proba(np.asarray(feats, dtype=np.float32))
        preds.append(np.argmax(proba, axis=1))
        ys.append(labels)
        probas.append(proba)
    return np.concatenate(preds), np.concatenate(ys), np.concatenate(probas)


def _asked_pca(params: dict | None):
    """The PCA size asked: ``params["pca"]`` (None or 0: no PCA step), else the local head's own;
    any other parameter is refused (the Ray head searches its depths and rounds itself)."""
    from ._registry import get_head

    params = dict(params or {})
    other = sorted(set(params) - {"pca"})
    if other:
        raise FeatxUsageError(f"xgboost on Ray takes the parameter pca only, not {', '.join(other)}")
    asked = params.get("pca", get_head("xgboost").search_space["pca"][0])
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 0):
        raise FeatxUsageError(f"xgboost.pca={asked!r}: expected a number of components (0 or None: no PCA)")
    return asked


def train_xgboost_ray(store: FeatureStore | str, out: str | Path | None = None, *, workers: int = 2,
                      address: str | None = None, splits=None, split_seed: int = 0, val_fraction: float = 0.1,
                      test_fraction: float = 0.2, n_boot: int = 1000, seed: int = 0, quiet: bool = True,
                      params: dict | None = None) -> dict:
    """Select, refit and test the ``xgboost`` head with Ray Train; return its results entry.

    ``params``: the head's parameters; ``pca`` only (the local head's 128 by default; None or 0: none).
    """
    try:
        import ray
        import ray.train.xgboost  # noqa: F401
    except ImportError:
        raise missing_extra("--engine ray needs Ray Train", "ray") from None
    asked = _asked_pca(params)
    store = (store if isinstance(store, FeatureStore) else FeatureStore(store)).require_complete()
    split, rule = resolve_splits(store, splits, split_seed, val_fraction, test_fraction)
    for name in ("train", "val", "test"):
        if not np.any(split == name):
            raise FeatxUsageError(f"the {name} split of {store.path} is empty")
    # The extract engine's way in: an unreachable address is one line at once, not minutes of retries.
    started_here = join_ray(ray, address)
    # Ray Train's storage is featx's own folder: a failed or killed run's is removed, and so is a
    # leftover of an earlier killed run before this one starts. Without --out it is a temporary
    # folder, removed after the run whatever its outcome (the booster is read from it first).
    if out is not None:
        storage = Path(out).resolve() / _TRAIN_DIR
        shutil.rmtree(storage, ignore_errors=True)
    else:
        storage = Path(tempfile.mkdtemp(prefix="featx-ray-train-"))
    try:
        with ray_errors("xgboost on Ray Train", cleanup=storage):
            return _run(ray, store, split, rule, out, storage, workers, n_boot, seed, quiet, asked)
    finally:
        if out is None:
            shutil.rmtree(storage, ignore_errors=True)
        if started_here:
            ray.shutdown()


def _datasets(ray, store, split, names) -> dict:
    by_row, labels, done = _per_row(store, split)
    blocks = _blocks(store)
    return {name: ray.data.from_items(blocks, override_num_blocks=len(blocks)).map_batches(
        _read_block, batch_size=1, fn_kwargs={"split_by_row": by_row, "labels": labels, "status_done": done,
                                              "want": name, "all_ids": store.all_ids, "dim": store.dim})
        for name in names}


def _booster_params(n_classes: int, seed: int) -> dict:
    base = {"objective": "multi:softprob", "num_class": n_classes, "eval_metric": "mlogloss", "tree_method": "hist",
            "eta": 0.1, "subsample": 0.8, "colsample_bytree": 0.8, "seed": seed}
    if n_classes == 2:
        base = {**{k: v for k, v in base.items() if k != "num_class"}, "objective": "binary:logistic",
                "eval_metric": "logloss"}
    return base


def _run(ray, store, split, rule, out, storage: Path, workers, n_boot, seed, quiet, asked=None) -> dict:
    n_classes = len(store.class_names)
    data = _datasets(ray, store, split, ("train", "val"))
    # "refit" rows: train and val together (the split array relabelled for the reader).
    refit_split = np.where(np.isin(split, ("train", "val")), "refit", split)
    data["refit"] = _datasets(ray, store, refit_split, ("refit",))["refit"]
    started = time.perf_counter()
    select_pca, refit_pca = _fit_pcas(ray, store, split, asked, seed)
    pca = {"select": _arrays(select_pca), "refit": _arrays(refit_pca),
           "select_size": select_pca.n_components_ if select_pca is not None else asked}
    config = {"params": _booster_params(n_classes, seed), "depths": list(_DEPTHS), "rounds": _MAX_ROUNDS,
              "dim": store.dim, "n_classes": n_classes, "batch_rows": _BATCH_ROWS, "pca": pca}
    booster, trace = _boost(data, config, workers, str(storage))
    fit_seconds = time.perf_counter() - started
    chosen = trace[rank_candidates(trace)]
    model = _as_head(booster, refit_pca)
    t0 = time.perf_counter()
    pred, y_test, proba = _predict(store, split, "test", model)
    per_1k = (time.perf_counter() - t0) / max(len(y_test), 1) * 1000
    metrics = classification_metrics(y_test, pred, store.class_names, n_boot=n_boot, seed=seed)
    entry = _entry(store, split, rule, chosen, trace, metrics, fit_seconds, per_1k, workers, seed)
    entry["params"]["pca"] = refit_pca.n_components_ if refit_pca is not None else asked
    if refit_pca is not None and refit_pca.n_components_ < asked:  # recorded as the local head records a cap
        entry["selection"]["capped"] = {"pca": {"asked": asked, "used": refit_pca.n_components_}}
    # The test items' predictions, as the local head records them (paired comparisons in the report).
    test = (store.ids[split == "test"], y_test, pred)
    if out is None:  # else written inside the head's folder as it is saved (see _save)
        entry["test_predictions"] = prediction_record(*test, path=None)
    # The report's gallery, as for the local head (probabilities already computed above).
    entry["mistakes"] = worst_mistakes(PrecomputedProba(proba, np.arange(proba.shape[1])), np.arange(len(y_test)),
                                       y_test, pred, store.ids[split == "test"], store.class_names)
    if out is not None:
        _save(Path(out), store, split, rule, model, entry, test)
    if not quiet:
        print(f"featx: xgboost (ray, {workers} workers, one Ray Train run): val {chosen['val_accuracy']:.4f} with "
              f"{json.dumps(chosen['params'])}; test accuracy {metrics['accuracy']:.4f}")
    return entry


def _entry(store, split, rule, chosen, trace, metrics, fit_seconds, per_1k, workers, seed) -> dict:
    return {
        **_base_entry(store, "xgboost"), "engine": "ray", "ray_workers": workers, "per_class": None, "seeds": [seed],
        "n_train": int((split == "train").sum()), "n_val": int((split == "val").sum()),
        "n_test": int((split == "test").sum()), "refit_on": "train+val",
        "splits_digest": splits_digest(*split_record(store, split, rule)), "split_rule": rule,
        **metric_fields(metrics), "seed_summary": {},
        "fit_seconds": round(fit_seconds, 3), "predict_seconds_per_1k": round(per_1k, 5), "ray_train_runs": 1,
        # Every worker streams its shard of the rows: no process holds the features.
        "memory_path": "streaming", "max_memory": None,
        "params": dict(chosen["params"]),
        "selection": {"val_accuracy": chosen["val_accuracy"], "metric": "val_accuracy", "tie_break": "val_loss", "method": "val",
                      "search": "early_stopping", "budget": len(_DEPTHS), "candidates": trace,
                      # Selection and refit run in one worker group: their split of the wall time is not measured.
                      "selection_seconds": None, "refit_seconds": None},
        "versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _as_head(booster, pca=None):
    """The refit booster as the local head's kind of model: ``Pipeline([("pca", CappedPCA), ("clf",
    XGBClassifier)])``, or the classifier step alone when no PCA was asked."""
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    clf = XGBClassifier()
    clf.load_model(booster.save_raw("ubj"))
    return clf if pca is None else Pipeline([("pca", pca), ("clf", clf)])


def _save(out: Path, store, split, rule, model, entry, test: tuple | None = None) -> None:
    """Save the head (:func:`_as_head`) through the same path as the local one (:func:`save_head`),
    its results row and test predictions inside the folder being built, so the three commit together.

    Its manifest's ``steps`` say what it applies: ``["pca", "clf"]`` as the local head, ``["clf"]``
    when no PCA was asked.
    """
    out.mkdir(parents=True, exist_ok=True)
    _record_splits(out, store, split, rule)
    task = {"store": store, "per_class": None, "digest": entry["splits_digest"], "rule": rule}
    run = {"selection": {"params": entry["params"]}, "seed": entry["seeds"][0]}
    manifest = {**_head_manifest(task, "xgboost", run), "engine": "ray"}
    entry["model"] = "xgboost"

    def evaluate(head) -> dict:
        if test is not None:  # (ids, true, predicted) of the test items
            record = prediction_record(*test, path=Path(head.path) / PREDICTIONS_FILE)
            # Named where it will be after the swap.
            entry["test_predictions"] = {**record, "path": str((out / "xgboost").resolve() / PREDICTIONS_FILE)}
        return entry

    save_head(out / "xgboost", model, manifest, evaluate=evaluate)
    write_tables(out, merge_results(out, [entry]))
