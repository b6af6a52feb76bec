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
Two strategies (``--param xgboost.strategy``, :func:`choose_strategy`): ``data`` is the above;
``candidates`` (chosen by ``auto`` when one process can hold the quantised train+val matrix) boosts
each candidate depth in its own Ray task over all the (projected, materialised) rows, with no
collective, and each refits its depth right away; the chosen one's refit is the head. Same
protocol, same kind of saved model.
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

__all__ = ["train_xgboost_ray", "choose_strategy", "STRATEGIES"]

_DEPTHS, _PATIENCE, _MAX_ROUNDS = (4, 6), 20, 1000
STRATEGIES = ("auto", "candidates", "data")
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
                all_ids: np.ndarray, dim: int, pca: dict | None = None) -> dict:
    """Ray task: the rows of ``want`` in the given blocks, as (features, label); projected with ``pca``
    (components, mean) when given, as the saved head's PCA step projects them.

    Projecting here, where the block is read, rather than in the Ray Train worker: the blocks that
    travel through the object store to the workers are then k wide instead of D (128 of 1,280 by
    default, a tenth of the bytes), and every pass XGBoost makes over the rows moves that tenth."""
    from ._ray_pca import project

    feats = [np.zeros((0, dim if pca is None else len(pca["components"])), np.float32)]
    ys = [np.zeros(0, np.int64)]
    for path, entry, start, stop in zip(batch["path"], batch["entry"], batch["start"], batch["stop"]):
        if int(stop) <= int(start):  # the placeholder of a worker that has no block (see _datasets)
            continue
        rows = _block_rows(path, entry, all_ids, dim)
        keep = status_done[int(start):int(stop)] & (split_by_row[int(start):int(stop)] == want)
        rows = rows[keep].astype(np.float32)
        feats.append(rows if pca is None else project(rows, pca["components"], pca["mean"]))
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


def _shard_iterator(shard, dim: int, batch_rows: int):
    """An ``xgboost.DataIter`` over a Ray Train dataset shard (rows already projected by the read tasks,
    ``dim`` wide), one ``iter_batches`` pass per XGBoost pass."""
    import xgboost

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
                    input_data(data=np.zeros((0, dim), np.float32), label=np.zeros(0))
                    return True
                return False
            self._empty = False
            input_data(data=batch["features"], label=batch["label"])
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


def _select_depth(dtrain, dval, depth: int, config: dict) -> dict:
    """One candidate depth boosted on train with early stopping on val: its selection trace entry
    (as the local head records it). Inside a collective the matrices are each worker's share."""
    import xgboost

    booster = xgboost.train({**config["params"], "max_depth": depth}, dtrain, num_boost_round=config["rounds"],
                            evals=[(dval, "val")], early_stopping_rounds=_PATIENCE, verbose_eval=False)
    rounds = int(booster.best_iteration) + 1 if booster.attr("best_iteration") is not None \
        else booster.num_boosted_rounds()
    # best_score: val log-loss at the best round (reduced over the workers by XGBoost in a collective).
    loss = float(booster.best_score) if booster.attr("best_score") is not None else float("nan")
    return {"params": {"max_depth": depth, "n_estimators": rounds, "pca": config["select_size"]},
            "val_accuracy": _val_accuracy(booster, dval, rounds, config["n_classes"]), "val_loss": loss}


def _fit_candidate(data: dict, depth: int, config: dict) -> dict:
    """Ray task of the ``candidates`` strategy: one depth on ALL the rows, no collective. It boosts on train
    with early stopping on val, then at once refits that depth on train+val for its best round count, so
    the candidates' wall time is one candidate's (the refit of a depth not chosen is discarded).
    Returns its trace entry, the refit booster (UBJSON bytes) and its clock."""
    import xgboost

    def matrix(name, ref=None):
        return xgboost.QuantileDMatrix(_shard_iterator(data[name], config["dims"][name], config["batch_rows"]),
                                       ref=ref, max_bin=256)

    started = time.perf_counter()
    dtrain = matrix("train")
    entry = _select_depth(dtrain, matrix("val", ref=dtrain), depth, config)
    del dtrain
    selected = time.perf_counter()
    booster = xgboost.train({**config["params"], "max_depth": depth}, matrix("refit"),
                            num_boost_round=entry["params"]["n_estimators"], verbose_eval=False)
    return {"trace": entry, "model": bytes(booster.save_raw("ubj")),
            "clock": {"selection": selected - started, "refit": time.perf_counter() - selected}}


def _boost_candidates(ray, data: dict, config: dict) -> tuple:
    """The ``candidates`` strategy: (chosen refit booster, trace, clock), one Ray task per candidate depth.

    The projected datasets are materialised first (k columns wide, and the tasks then hold every CPU
    they asked for, so no read task could run beside them), and each task reads them whole.
    """
    import xgboost

    cpus = _cpus_per_candidate(ray, len(config["depths"]))
    data = {name: dataset.materialize() for name, dataset in data.items()}
    fit = ray.remote(num_cpus=cpus)(_fit_candidate)
    config = {**config, "params": {**config["params"], "nthread": max(1, int(cpus))}}
    results = ray.get([fit.remote(data, depth, config) for depth in config["depths"]])
    trace = [r["trace"] for r in results]
    best = results[rank_candidates(trace)]
    booster = xgboost.Booster()
    booster.load_model(bytearray(best["model"]))
    # The slowest candidate's selection fit (they run side by side when the cluster has the CPUs) and the
    # chosen one's refit.
    return booster, trace, {"selection_seconds": round(max(r["clock"]["selection"] for r in results), 3),
                            "refit_seconds": round(best["clock"]["refit"], 3)}


def _cpus_per_candidate(ray, n: int) -> float:
    """CPUs per candidate task: the cluster's CPUs shared out, at most one node's, at least one."""
    largest = max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")), default=1.0)
    return float(max(1, min(largest, ray.cluster_resources().get("CPU", 1.0) // n)))


def _worker_loop(config: dict) -> None:
    """Ray Train worker: every candidate depth, the choice on val and the refit, in one worker group."""
    import os
    import tempfile

    import ray.train
    import xgboost

    def matrix(name, ref=None):
        shard = ray.train.get_dataset_shard(f"{name}_{ray.train.get_context().get_world_rank()}")
        return xgboost.QuantileDMatrix(_shard_iterator(shard, config["dims"][name], config["batch_rows"]), ref=ref,
                                       max_bin=256)

    # Train and val come projected with train's PCA (the selection), the refit rows with train+val's.
    started = time.perf_counter()
    dtrain = matrix("train")
    dval = matrix("val", ref=dtrain)
    trace = [_select_depth(dtrain, dval, depth, config) for depth in config["depths"]]
    chosen = trace[rank_candidates(trace)]  # accuracy, ties to the lower val loss, as the local heads
    del dtrain, dval
    selected = time.perf_counter()
    booster = xgboost.train({**config["params"], "max_depth": chosen["params"]["max_depth"]}, matrix("refit"),
                            num_boost_round=chosen["params"]["n_estimators"], verbose_eval=False)
    # Rank 0's clock: the workers run in lockstep (every round waits on the collective).
    clock = {"selection_seconds": round(selected - started, 3), "refit_seconds": round(time.perf_counter() - selected, 3)}
    # One report at the end (a report per round is a synchronous round trip: seconds per round here).
    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as folder:
            booster.save_model(os.path.join(folder, "model.ubj"))
            with open(os.path.join(folder, "trace.json"), "w", encoding="utf-8") as fh:
                json.dump({"candidates": trace, "clock": clock}, fh)
            ray.train.report({"rounds": booster.num_boosted_rounds()},
                             checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report({})


def _boost(datasets: dict, config: dict, workers: int, storage: str):
    """One Ray Train run (one worker-group start-up): (refit booster, selection trace, the worker's clock)."""
    import xgboost
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    trainer = XGBoostTrainer(
        # Each worker reads its own datasets whole (see _datasets): none is split by Ray Train.
        _worker_loop, train_loop_config=config, datasets=datasets, dataset_config=DataConfig(datasets_to_split=[]),
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=storage),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        booster = xgboost.Booster()
        booster.load_model(str(Path(folder) / "model.ubj"))
        trace = json.loads((Path(folder) / "trace.json").read_text(encoding="utf-8"))
    return booster, trace["candidates"], trace["clock"]


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
    any parameter but ``pca`` and ``strategy`` is refused (the Ray head searches its depths and rounds itself)."""
    from ._registry import get_head

    params = dict(params or {})
    other = sorted(set(params) - {"pca", "strategy"})
    if other:
        raise FeatxUsageError(f"xgboost on Ray takes the parameters pca and strategy only, not {', '.join(other)}")
    asked = params.get("pca", get_head("xgboost").search_space["pca"][0])
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 0):
        raise FeatxUsageError(f"xgboost.pca={asked!r}: expected a number of components (0 or None: no PCA)")
    return asked


def _asked_strategy(params: dict | None) -> str:
    asked = (params or {}).get("strategy", "auto")
    if asked not in STRATEGIES:
        raise FeatxUsageError(f"xgboost.strategy={asked!r}: expected one of {', '.join(STRATEGIES)}")
    return asked


def choose_strategy(asked: str, rows: int, width: int, n_classes: int, budget: int | None = None) -> dict:
    """How the candidates are boosted: ``candidates`` when one process can hold the quantised train+val
    matrix (``rows`` x ``width`` bins, a byte each, plus XGBoost's per-row gradients and predictions per class,
    doubled for what it allocates beside them) within ``budget`` (default: the memory budget of the heads,
    a fraction of this machine's available memory); else ``data``.

    Why not always ``data`` (the rows split over the workers, one model through XGBoost's collective): the
    collective allreduces histograms at every level of every tree, and on 2 workers of 1 CPU at 20k-50k
    rows the boosting ran 1.5-2.8x slower than one process with both CPUs (``docs/cluster.md``). A candidate
    that fits one process waits on nobody.
    """
    from ..core.memory import default_max_memory

    budget = default_max_memory() if budget is None else int(budget)
    estimate = 2 * int(rows) * (int(width) + 24 * int(n_classes) + 16)
    chosen = asked if asked != "auto" else ("candidates" if estimate <= budget else "data")
    return {"strategy": chosen, "asked": asked, "estimated_matrix_bytes": estimate, "max_memory": budget}


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
    asked, strategy = _asked_pca(params), _asked_strategy(params)
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
        with ray_errors("xgboost on Ray", cleanup=storage):
            return _run(ray, store, split, rule, out, storage, workers, n_boot, seed, quiet, asked, strategy)
    finally:
        if out is None:
            shutil.rmtree(storage, ignore_errors=True)
        if started_here:
            ray.shutdown()


def _datasets(ray, store, split, names, pca: dict | None, workers: int | None = None) -> dict:
    """One Ray Data dataset per split name: the verified block reads, the rows projected with ``pca``.

    ``workers``: one dataset per worker instead, ``<name>_<rank>``, over blocks ``rank, rank + workers, ...``.
    Ray Train's own split of a dataset (``streaming_split(equal=True)``) drops rows to give every worker
    the same count, and hands out blocks in whatever order they finish; this one keeps every row, and the
    same store gives every worker the same rows on every run. A worker without a block gets a placeholder
    that reads nothing (it joins the collective with an empty matrix).
    """
    by_row, labels, done = _per_row(store, split)
    blocks = _blocks(store)
    parts = {"": blocks} if workers is None else {
        f"_{rank}": blocks[rank::workers] or [{"path": "", "entry": "", "start": 0, "stop": 0}]
        for rank in range(workers)}
    kwargs = {"split_by_row": by_row, "labels": labels, "status_done": done, "all_ids": store.all_ids,
              "dim": store.dim, "pca": pca}
    return {name + part: ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _read_block, batch_size=1, fn_kwargs={**kwargs, "want": name})
        for name in names for part, items in parts.items()}


def _booster_params(n_classes: int, seed: int) -> dict:
    base = {"objective": "multi:softprob", "num_class": n_classes, "eval_metric": "mlogloss", "tree_method": "hist",
            "eta": 0.1, "subsample": 0.8, "colsample_bytree": 0.8, "seed": seed}
    if n_classes == 2:
        base = {**{k: v for k, v in base.items() if k != "num_class"}, "objective": "binary:logistic",
                "eval_metric": "logloss"}
    return base


def _fit(ray, store, split, storage: Path, workers: int, seed: int, asked, strategy: str) -> tuple:
    """The PCAs, then every candidate and the refit by the strategy chosen: (booster, trace, clock, plan,
    refit PCA, seconds)."""
    n_classes = len(store.class_names)
    started = time.perf_counter()
    select_pca, refit_pca = _fit_pcas(ray, store, split, asked, seed)
    # Each matrix's width as the workers receive it (the two PCAs can be capped apart on tiny data).
    width = {"select": store.dim if select_pca is None else select_pca.n_components_,
             "refit": store.dim if refit_pca is None else refit_pca.n_components_}
    fit_rows = np.isin(split, ("train", "val"))
    plan = choose_strategy(strategy, int(fit_rows.sum()), width["refit"], n_classes)
    ranks = workers if plan["strategy"] == "data" else None
    data = _datasets(ray, store, split, ("train", "val"), _arrays(select_pca), ranks)
    # "refit" rows: train and val together (the split array relabelled for the reader).
    refit_split = np.where(fit_rows, "refit", split)
    data.update(_datasets(ray, store, refit_split, ("refit",), _arrays(refit_pca), ranks))
    config = {"params": _booster_params(n_classes, seed), "depths": list(_DEPTHS), "rounds": _MAX_ROUNDS,
              "dims": {"train": width["select"], "val": width["select"], "refit": width["refit"]},
              "n_classes": n_classes, "batch_rows": _BATCH_ROWS,
              "select_size": select_pca.n_components_ if select_pca is not None else asked}
    if plan["strategy"] == "candidates":
        booster, trace, clock = _boost_candidates(ray, data, config)
    else:
        booster, trace, clock = _boost(data, config, workers, str(storage))
    return booster, trace, clock, plan, refit_pca, time.perf_counter() - started


def _run(ray, store, split, rule, out, storage: Path, workers, n_boot, seed, quiet, asked=None,
         strategy: str = "auto") -> dict:
    booster, trace, clock, plan, refit_pca, fit_seconds = _fit(ray, store, split, storage, workers, seed, asked,
                                                               strategy)
    chosen = trace[rank_candidates(trace)]
    model = _as_head(booster, refit_pca)
    t0 = time.perf_counter()
    pred, y_test, proba = _predict(store, split, "test", model)
    per_1k = (time.perf_counter() - t0) / max(len(y_test), 1) * 1000
    metrics = classification_metrics(y_test, pred, store.class_names, n_boot=n_boot, seed=seed)
    entry = _entry(store, split, rule, chosen, trace, metrics, (fit_seconds, per_1k, clock), workers, seed, plan)
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
        how = (f"{len(_DEPTHS)} candidate tasks" if plan["strategy"] == "candidates"
               else f"{workers} workers, one Ray Train run")
        print(f"featx: xgboost (ray, {how}): val {chosen['val_accuracy']:.4f} with "
              f"{json.dumps(chosen['params'])}; test accuracy {metrics['accuracy']:.4f}")
    return entry


def _entry(store, split, rule, chosen, trace, metrics, timing: tuple, workers, seed, plan: dict) -> dict:
    """The results row; ``timing``: (fit seconds, predict seconds per 1k, the clock of the selection and refit,
    measured where they ran: in the worker group, or in the candidate tasks)."""
    fit_seconds, per_1k, clock = timing
    return {
        **_base_entry(store, "xgboost"), "engine": "ray", "ray_workers": workers, "per_class": None, "seeds": [seed],
        "n_train": int((split == "train").sum()), "n_val": int((split == "val").sum()),
        "n_test": int((split == "test").sum()), "refit_on": "train+val",
        "splits_digest": splits_digest(*split_record(store, split, rule)), "split_rule": rule,
        **metric_fields(metrics), "seed_summary": {},
        "fit_seconds": round(fit_seconds, 3), "predict_seconds_per_1k": round(per_1k, 5),
        "ray_strategy": plan, "ray_train_runs": int(plan["strategy"] == "data"),
        # The rows stream into XGBoost's quantised matrices (a worker's share, or a candidate's whole): no process
        # holds the float features.
        "memory_path": "streaming", "max_memory": None,
        "params": dict(chosen["params"]),
        "selection": {"val_accuracy": chosen["val_accuracy"], "metric": "val_accuracy", "tie_break": "val_loss", "method": "val",
                      "search": "early_stopping", "budget": len(_DEPTHS), "candidates": trace,
                      # The PCA pass and Ray's start-up are in fit_seconds only.
                      "selection_seconds": clock["selection_seconds"], "refit_seconds": clock["refit_seconds"]},
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
