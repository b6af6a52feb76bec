"""Stage 2: fit classical heads on a feature store, choose them honestly, evaluate once.

Protocol, the same for every head:

1. Splits: the store's own train/val/test when it has them (val carved from train
   if absent), otherwise a stratified, seeded split (:meth:`FeatureStore.split_assignment`),
   or a recorded ``splits.json``. The assignment is written to ``OUT/splits.json``.
2. Few-shot (``per_class=N``): N training items per class drawn from the training
   split only (:func:`featx.data.few_shot_mask`), before validation data is
   touched. Validation stays the full validation split.
3. Selection on held-out data, within the head's fixed budget (:mod:`._select`): the
   validation split, or stratified k-fold CV on the refit rows when some class has
   fewer than 20 validation items; candidates ranked by accuracy, the loss breaking
   ties (``selection`` in the entry records the method, folds, scores and ``edge``).
4. Refit of the chosen configuration on train+val (on the few-shot training items
   alone when ``per_class`` is set, so the head still sees N items per class), then
   a single evaluation on the test split: :func:`featx.core.metrics.classification_metrics`.
5. Seeds ``0..K-1`` redraw the few-shot subset and the model's ``random_state``; the
   entry reports seed 0 and ``seed_summary`` gives mean/std over the seeds.

``fit_seconds`` is selection + refit wall time; ``predict_seconds_per_1k`` is the
head's ``predict`` on the test split, per 1,000 items.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from ..core.bars import progress_bar
from ..core.errors import FeatxError, FeatxUsageError
from ..core.io import json_text, remove_stale_temps, write_atomic
from ..core.metrics import classification_metrics, summarise_seeds
from ..core.predictions import PREDICTIONS_FILE, prediction_record
from ..core.results import RESULTS_FILE, merge_results, metric_fields, skipped_reason, write_tables
from ..core.runtime import library_versions
from ..data import SPLITS_FILE, few_shot_mask, load_splits, save_splits, splits_digest
from ..store import FeatureStore
from ._adapt import HeadUnfitError, check_classes_usable, few_shot_shortfall
from ._featuresets import FeatureSet, open_features
from ._mistakes import worst_mistakes
from ._persist import load_head, save_head
from ._registry import HeadSpec, get_head
from ._select import PATH_PATIENCE, select_and_fit
from ._stream import fit_seed_streaming, memory_fields, plan_memory, predict_streaming, score_streaming
from ._views import with_views

__all__ = ["train_heads", "evaluate_head", "select_and_fit", "training_rows", "resolve_splits", "RESULTS_FILE", "CONFIG_FILE", "ENTRY_FILE"]

CONFIG_FILE, ENTRY_FILE = "config.json", "result.json"


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(f"featx: {message}", file=sys.stderr, flush=True)


# -- splits ----------------------------------------------------------------------


def resolve_splits(store: FeatureStore, splits_file=None, split_seed: int = 0, val_fraction: float = 0.1,
                   test_fraction: float = 0.2) -> tuple[np.ndarray, dict]:
    """Train/val/test per row of ``store``: a recorded split file, or the store's assignment.

    Unlabelled rows (label -1) are in no split either way; ``rule["unlabelled"]`` counts them.
    """
    if splits_file is not None:
        return leave_out_unlabelled(store, load_splits(splits_file, store.ids), {"rule": f"loaded from {splits_file}"})
    return store.split_assignment(seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)


def leave_out_unlabelled(store: FeatureStore, split: np.ndarray, rule: dict) -> tuple[np.ndarray, dict]:
    """``split`` with every unlabelled row in no split (``""``), whatever a loaded split file says.

    The store's own assignment already does this (:func:`featx.data.assign_splits`); a split
    file written from the source without ``allow_unlabelled`` may give those rows a split.
    """
    unlabelled = store.labels < 0
    if not unlabelled.any():
        return split, rule
    return np.where(unlabelled, "", split), {**rule, "unlabelled": int(unlabelled.sum())}


def training_rows(ids, labels, split: np.ndarray, per_class: int | None, seed: int) -> dict[str, np.ndarray]:
    """Boolean row masks: ``train`` (few-shot when ``per_class``), ``val``, ``refit``, ``test``.

    The few-shot draw looks at the training split only; validation and test rows are
    the full splits whatever ``per_class`` and ``seed`` are.
    """
    train = split == "train"
    if per_class is not None:
        train = train & few_shot_mask(ids, labels, split, per_class, seed)
    val = split == "val"
    return {"train": train, "val": val, "refit": train if per_class is not None else train | val, "test": split == "test"}


def split_record(store: FeatureStore, split: np.ndarray, rule: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ids, splits) of every source item, skipped ones included, when the split was computed.

    Recording all items makes ``splits.json`` and its digest identical to the ones the
    fine-tune baseline writes from the source, and lets it reload this file.
    """
    if "seed" in rule:
        full, _ = store.split_assignment(seed=rule["seed"], val_fraction=rule["val_fraction"],
                                         test_fraction=rule["test_fraction"], usable_only=False)
        return store.all_ids, full
    return store.ids, split


def _record_splits(out: Path, store: FeatureStore, splits: np.ndarray, rule: dict) -> None:
    path = out / SPLITS_FILE
    ids, full = split_record(store, splits, rule)
    digest = splits_digest(ids, full)
    if path.exists():
        try:
            previous = json.loads(path.read_text()).get("digest")
        except ValueError:
            previous = None
        if previous not in (None, digest):
            raise FeatxUsageError(
                f"{out} holds results made on another split ({path}); use another --out, "
                f"or --splits {path} to train on that same split"
            )
    save_splits(path, ids, full, rule)


# -- evaluation and results ------------------------------------------------------


def _predict_timed(model, X) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    pred = model.predict(X)
    seconds = time.perf_counter() - started
    return np.asarray(pred), seconds / max(len(X), 1) * 1000.0


def _base_entry(store: FeatureStore, head: str) -> dict:
    return {
        "kind": "head", "head": head, "mode": None, "backbone": store.backbone,
        "weights": store.config["backbone"]["weights"], "store_id": store.store_id, "dim": store.dim,
        # Lets a report add the store's extraction time and size to this head's cost.
        "store_path": str(store.path),
        # Concatenated stores: each store with its cost, and their summed extraction time.
        **(store.entry_fields() if isinstance(store, FeatureSet) else {}),
        # A --per-class/--limit store: `evaluate --source` draws the same subset before the split.
        **({"store_subset": subset} if (subset := store.config.get("subset")) else {}),
    }


# -- the stage -------------------------------------------------------------------


def _open_store(store, manifest: dict | None = None) -> FeatureStore | FeatureSet:
    """The features to evaluate on: for a head trained on a feature set, the same sets of the given stores."""
    inputs = (manifest or {}).get("inputs")
    if inputs and not isinstance(store, FeatureSet):
        paths = [s.strip() for s in store.split(",")] if isinstance(store, str) else store
        paths = list(paths) if isinstance(paths, (list, tuple)) else [paths]
        if len(paths) != len(inputs):
            raise FeatxUsageError(f"this head was trained on {len(inputs)} concatenated store(s) "
                                  f"({', '.join(i['backbone']['model'] for i in inputs)}); give as many, in that order")
        return FeatureSet(paths, [list(i["sets"]) for i in inputs])
    return open_features(store)


def train_heads(
    store: FeatureStore | FeatureSet | str | os.PathLike | Sequence[FeatureStore | str | os.PathLike],
    heads: Sequence[str] = ("logreg",),
    *,
    params: Mapping[str, Mapping] | None = None,
    per_class: int | None = None,
    seeds: int | Sequence[int] = 1,
    out: str | os.PathLike | None = None,
    splits: str | os.PathLike | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    n_boot: int = 1000,
    threads: int | None = None,
    quiet: bool = True,
    feature_set: str | Sequence[str] | None = None,
    repeats: int = 1,
    return_models: bool = False,
    max_memory: int | str | None = None,
    engine: str = "local",
    ray_options: Mapping | None = None,
    views: str | None = None,
) -> list[dict] | tuple[list[dict], dict[str, BaseEstimator]]:
    """Train, select and evaluate ``heads`` on ``store``; return one results entry per head.

    ``repeats`` R > 1 (small data): the whole protocol again on R - 1 more splits drawn with
    split seeds ``split_seed + 1 ..``; each entry's ``repeats`` gives every split's test
    accuracy and their mean and spread. The saved heads and the entry's own metrics are
    those of the first split.

    With ``return_models``, return ``(entries, models)``: ``models`` maps each fitted
    head's name to its fitted estimator (the first seed's; the one saved under ``out``).

    ``store`` may list several stores (or be a :class:`FeatureSet`): their features are
    concatenated, aligned by id. ``feature_set`` picks a store's named set(s)
    (``"layer4"``, ``"concat:pooled,layer4"``; ``featx info`` lists them).
    ``params`` maps a head name to fixed parameters (not searched). ``seeds`` is a
    count K (seeds 0..K-1) or a list. With ``out``, each head is saved under
    ``out/<head>/`` and ``results.json`` / ``results.csv`` / ``results.md``,
    ``splits.json`` and ``config.json`` are written next to them (atomically).

    ``threads`` caps the BLAS and OpenMP threads of the fits (``None``: library
    defaults). Set it to 1 on a machine busy with other work: there the spinning
    threads of OpenBLAS and OpenMP made fits far slower than one thread (on a 2-core
    machine at load 8, a digits logreg fit took 16 s instead of 0.5 s, 20
    gradient-boosting rounds 37 s instead of 4 s); joblib-parallel forests still use
    every core.

    ``max_memory`` (bytes or a size such as ``"256MB"``; default: half the available
    memory) bounds the features a head holds: past it, ``logreg`` and ``xgboost`` stream
    the store batch by batch and the other heads are skipped with the reason
    (:func:`featx.core.memory.memory_plan`). Each results row records ``memory_path``.

    ``engine="ray"`` fits the ``logreg`` head by the streaming path as one Ray Train
    ``TorchTrainer`` task (``ray_options``: ``workers``, ``address``; :mod:`._ray_logreg`);
    selection, scoring and saving are this function's own.

    ``views`` (``train``, ``test`` or ``both``): average each row with its mirror view (added to
    the store with ``featx extract ... --views hflip``) on the train rows, on val and test, or on
    all (:func:`featx.heads.with_views`); recorded in the row (``views``) and its store id.
    """
    from threadpoolctl import threadpool_limits

    ray = _ray_task(engine, ray_options, heads, feature_set, store, repeats)
    if ray is not None and views:
        raise FeatxUsageError("engine ray reads the store shard by shard; views need engine local")
    with threadpool_limits(threads):
        entries, models = _train_heads(open_features(store, feature_set), heads, params, per_class, seeds, out, splits,
                                       split_seed, val_fraction, test_fraction, n_boot, threads, quiet, repeats,
                                       max_memory, ray, views)
    return (entries, models) if return_models else entries


def _ray_task(engine: str, ray_options, heads, feature_set, store, repeats: int) -> dict | None:
    """The Ray options of an ``engine="ray"`` run (None for local), after checking it can run on Ray."""
    if engine not in ("local", "ray"):
        raise FeatxUsageError(f"engine {engine!r} is not local or ray")
    if engine == "local":
        return None
    if list(heads) != ["logreg"] or feature_set or repeats != 1 or not isinstance(store, (str, os.PathLike, FeatureStore)):
        raise FeatxUsageError("engine ray fits the logreg head alone, on one store, without a feature set or repeats "
                              "(xgboost on Ray: train_xgboost_ray)")
    return dict(ray_options or {})


def _train_heads(store, heads, params, per_class, seeds, out, splits, split_seed, val_fraction, test_fraction, n_boot,
                 threads, quiet, repeats=1, max_memory=None, ray=None, views=None) -> tuple[list[dict], dict]:
    store = _open_store(store)
    plan = plan_memory(store, max_memory, quiet)
    if ray is not None:  # the Ray Train workers stream their shares: nothing is held in memory
        plan = {**plan, "memory_path": "streaming"}
    specs, params, seed_list = _check_request(heads, params, seeds, per_class)
    split, rule = resolve_splits(store, splits, split_seed, val_fraction, test_fraction)
    for name in ("train", "val", "test"):
        if not np.any(split == name):
            raise FeatxUsageError(f"the {name} split of {store.path} is empty: give a store with more items per class")
    if views is not None:
        if repeats != 1:
            raise FeatxUsageError("--views averages by the first split's rows; drop --repeats")
        store = with_views(store, split, views)
        plan = plan_memory(store, max_memory, quiet)
    _check_training_set(store, split, per_class, seed_list[0], quiet)
    if rule.get("unlabelled"):
        _say(quiet, f"{rule['unlabelled']} unlabelled row(s) of {store.path} left out of every split "
                    "(kept by --allow-unlabelled for predict and export; never trained or scored)")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir)  # a killed train's ``.HEAD.PID.new`` / ``.results.json.PID.tmp``
        _record_splits(out_dir, store, split, rule)
    task = {"store": store, "split": split, "rule": rule, "per_class": per_class, "n_boot": n_boot,
            "digest": splits_digest(*split_record(store, split, rule)), "out": out_dir, "quiet": quiet, "plan": plan,
            "ray": ray}
    others = _repeat_tasks(task, repeats, val_fraction, test_fraction)

    entries, models = [], {}
    # Fits done (one per head and seed): a bar on a terminal, plain lines in a log.
    bar = progress_bar(len(specs) * len(seed_list), "train", "fit", disable=quiet)
    for spec in specs:
        try:
            entry, first = _fit_head(task, spec, params.get(spec.name, {}), seed_list, others, bar)
            models[spec.name] = first["model"]
        except FeatxUsageError:
            raise  # the request itself is wrong (a ValueError too): no head can help
        except (HeadUnfitError, ValueError) as exc:
            # This head cannot work on this data (scikit-learn and XGBoost say so with ValueError,
            # e.g. a class with validation items but no training items); the others still run.
            reason = str(exc).splitlines()[0] if isinstance(exc, HeadUnfitError) else _fit_failure(exc)
            entry = _skipped_entry(task, spec, seed_list, reason)
            print(f"featx: warning: {spec.name} skipped: {reason}", file=sys.stderr, flush=True)
        entry.update(memory_fields(plan))
        entries.append(entry)
        if out_dir is not None:
            # Merge after every head, so an interrupted multi-head run keeps what finished. The
            # row is already inside the head's directory (its result.json): a kill before this
            # merge leaves results.json one row behind, and every reader takes the head's own row.
            write_tables(out_dir, merge_results(out_dir, [entry]))
    bar.close()

    if out_dir is not None:
        config = {
            "store": str(store.path), "store_id": store.store_id, "backbone": store.config["backbone"],
            "source": store.config.get("source"), "heads": [s.name for s in specs], "params": params,
            "per_class": per_class, "seeds": seed_list, "splits": str(splits) if splits is not None else None,
            "split_rule": rule, "splits_digest": task["digest"], "n_boot": n_boot, "refit_on": entries[0]["refit_on"],
            "path_patience": PATH_PATIENCE, "threads": threads, "repeats": repeats, **memory_fields(plan),
            "versions": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_atomic(out_dir / CONFIG_FILE, json_text(config))
    if all(skipped_reason(e) for e in entries):
        raise FeatxError("no head could be fitted on this data: " + "; ".join(f"{e['head']}: {e['skipped']}" for e in entries))
    return entries, models


def _repeat_tasks(task: dict, repeats: int, val_fraction: float, test_fraction: float) -> list[dict]:
    """The tasks of the repeated splits (split seeds after the first), nothing saved."""
    if repeats < 1:
        raise FeatxUsageError("--repeats must be at least 1")
    if repeats == 1:
        return []
    store, rule = task["store"], task["rule"]
    if "seed" not in rule:
        raise FeatxUsageError(f"--repeats draws new splits, but {store.path} has its own split or --splits was given "
                              f"({rule.get('rule', 'a fixed split')}); drop --repeats or --splits")
    tasks = []
    for seed in range(rule["seed"] + 1, rule["seed"] + repeats):
        split, rule_r = resolve_splits(store, None, seed, val_fraction, test_fraction)
        if not all(np.any(split == name) for name in ("train", "val", "test")):
            raise FeatxUsageError(f"--repeats: the split with seed {seed} has an empty part; give more items per class")
        tasks.append({**task, "split": split, "rule": rule_r, "out": None, "quiet": True,
                      "digest": splits_digest(*split_record(store, split, rule_r))})
    return tasks


def _repeat_summary(task: dict, others: list[dict], spec: HeadSpec, fixed: dict, seed: int, first: dict) -> dict:
    """Test accuracy and macro-F1 of the first split's run and of every repeated split: values, mean, spread."""
    runs = [first] + [_fit_seed(t, spec, fixed, seed) for t in others]
    acc = [float(r["metrics"]["accuracy"]) for r in runs]
    f1 = [float(r["metrics"]["macro_f1"]) for r in runs]
    return {"split_seeds": [task["rule"]["seed"]] + [t["rule"]["seed"] for t in others],
            "accuracy": acc, "accuracy_mean": float(np.mean(acc)), "accuracy_std": float(np.std(acc, ddof=1)),
            "macro_f1": f1, "macro_f1_mean": float(np.mean(f1)), "macro_f1_std": float(np.std(f1, ddof=1)),
            "params": [r["selection"]["params"] for r in runs]}


def _check_training_set(store: FeatureStore, split: np.ndarray, per_class: int | None, seed: int, quiet: bool) -> None:
    """One clear line for a training split with one usable class; a warning when --per-class exceeds a class."""
    check_classes_usable(store.labels[split == "train"], store.class_names, f"the training split of {store.path}")
    if per_class is not None:
        rows = training_rows(store.ids, store.labels, split, per_class, seed)
        warning = few_shot_shortfall(store.labels[rows["train"]], store.class_names, per_class)
        if warning:
            print(f"featx: warning: {warning}", file=sys.stderr, flush=True)


def _fit_failure(exc: BaseException) -> str:
    """One line for a library's refusal to fit, without its source-location prefix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if "Check failed:" in text:  # XGBoost: "[time] path/file.cu:34: Check failed: ..."
        text = text[text.index("Check failed:"):]
    return f"cannot be fitted on this data ({type(exc).__name__}: {text[:200]})"


def _skipped_entry(task: dict, spec: HeadSpec, seed_list: list[int], reason: str) -> dict:
    """A results row for a head that could not be fitted: no metrics, the reason instead."""
    split = task["split"]
    return {
        **_base_entry(task["store"], spec.name), "per_class": task["per_class"], "seeds": seed_list,
        "skipped": reason, "n_train": None, "n_val": int((split == "val").sum()), "n_test": int((split == "test").sum()),
        "refit_on": "train" if task["per_class"] is not None else "train+val", "splits_digest": task["digest"],
        "split_rule": task["rule"], "accuracy": None, "fit_seconds": None, "params": {},
        "versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _check_request(heads, params, seeds, per_class) -> tuple[list[HeadSpec], dict, list[int]]:
    """The head specs, their fixed params and the seeds, or a usage error naming what is wrong."""
    heads = list(heads)
    if not heads:
        raise FeatxUsageError("no heads given; choose from `featx heads`")
    specs = [get_head(h) for h in heads]
    params = {k: dict(v) for k, v in (params or {}).items()}
    for name in params:
        get_head(name)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise FeatxUsageError("seeds must be at least 1")
    if per_class is not None and per_class < 1:
        raise FeatxUsageError("--per-class must be a positive number of training items per class")
    return specs, params, seed_list


def _fit_head(task: dict, spec: HeadSpec, fixed: dict, seed_list: list[int], others: list[dict],
              bar=None) -> tuple[dict, dict]:
    """Fit every seed (and the repeated splits); with an output folder, save the first seed's head
    with its results row inside. Returns (entry, the first seed's run). ``bar`` counts the fits."""
    out = task["out"]
    runs = []
    for seed in seed_list:
        if bar is not None:
            bar.set_postfix_str(f"{spec.name} seed {seed}")
        runs.append(_fit_seed(task, spec, fixed, seed, score=out is None or seed != seed_list[0]))
        if bar is not None:
            bar.update(1)

    def finish(folder=None) -> dict:
        entry = _head_entry(task, spec, runs, seed_list, folder=folder)
        if others:
            entry["repeats"] = _repeat_summary(task, others, spec, fixed, seed_list[0], runs[0])
        return entry

    if out is None:
        return finish(), runs[0]

    def evaluate(head) -> dict:
        # Score the saved head itself, so `featx evaluate` reproduces these numbers exactly
        # (a reloaded array's memory layout can move float sums by an ulp).
        runs[0]["model"] = head.estimator
        runs[0].update(_score(task, spec, runs[0]))
        entry = {**finish(head.path), "model": spec.name}
        record = entry["test_predictions"]
        if "path" in record:  # written into the folder being built: name where it will be after the swap
            record["path"] = str((out / spec.name).resolve() / PREDICTIONS_FILE)
        runs[0]["entry"] = entry
        return entry

    save_head(out / spec.name, runs[0]["model"], _head_manifest(task, spec, runs[0]), evaluate=evaluate)
    return runs[0].pop("entry"), runs[0]


def _head_manifest(task: dict, spec: HeadSpec | str, run: dict) -> dict:
    store = task["store"]
    return {
        "head": spec if isinstance(spec, str) else spec.name, "params": run["selection"]["params"], "backbone": store.config["backbone"],
        "store_id": store.store_id, "store_path": str(store.path), "dim": store.dim,
        "class_names": list(store.class_names), "data_config": store.config["data_config"],
        # How features were made beyond the backbone (layers, views); every input of a concatenation.
        "features": store.config.get("features"),
        **({"inputs": store.inputs} if isinstance(store, FeatureSet) else {}),
        "precision": store.config.get("precision"), "source": store.config.get("source"),
        "per_class": task["per_class"], "seed": run["seed"], "splits_digest": task["digest"],
        "split_rule": task["rule"], "versions": library_versions(),
    }


def _fit_seed(task: dict, spec: HeadSpec, fixed: dict, seed: int, score: bool = True) -> dict:
    """Select on val and refit for one seed; with ``score``, also score the test split once."""
    if task["plan"]["memory_path"] == "streaming":
        rows = training_rows(task["store"].ids, task["store"].labels, task["split"], task["per_class"], seed)
        run = fit_seed_streaming(task, spec, fixed, seed, rows)
        if score:
            run.update(_score(task, spec, run))
        return run
    store, split = task["store"], task["split"]
    X, y = store.features, store.labels
    val = split == "val"
    rows = training_rows(store.ids, y, split, task["per_class"], seed)
    train, refit = rows["train"], rows["refit"]
    started = time.perf_counter()
    model, selection = select_and_fit(spec, (X[train], y[train]), (X[val], y[val]), (X[refit], y[refit]),
                                      params=fixed, seed=seed)
    fit_seconds = time.perf_counter() - started
    if selection["edge"]:
        named = ", ".join(f"{p}={selection['params'][p]:g}" for p in selection["edge_params"])
        print(f"featx: warning: {spec.name} seed {seed}: the chosen {named} is on the edge of the searched range "
              "even after extending it; the best value may lie beyond (fix it with --param to try one)",
              file=sys.stderr, flush=True)
    run = {"seed": seed, "model": model, "selection": selection, "fit_seconds": fit_seconds, "n_train": int(train.sum())}
    if score:
        run.update(_score(task, spec, run))
    return run


def _score(task: dict, spec: HeadSpec, run: dict) -> dict:
    """The one test evaluation of a fitted (or saved and reloaded) head."""
    if task["plan"]["memory_path"] == "streaming":
        return score_streaming(task, spec, run)
    store, test = task["store"], task["split"] == "test"
    X, y, names, model = store.features, store.labels, store.class_names, run["model"]
    pred, per_1k = _predict_timed(model, X[test])
    metrics = classification_metrics(y[test], pred, names, n_boot=task["n_boot"], seed=run["seed"])
    mistakes = worst_mistakes(model, X[test], y[test], pred, store.ids[test], names)  # the report's gallery
    _say(task["quiet"], f"{spec.name} seed {run['seed']}: val {run['selection']['val_accuracy']:.4f} with "
                        f"{json.dumps(run['selection']['params'], default=str)}; test accuracy {metrics['accuracy']:.4f}, "
                        f"fit {run['fit_seconds']:.1f} s")
    # "test": the per-item outcome, for the report's paired comparisons of rows.
    return {"metrics": metrics, "predict_seconds_per_1k": per_1k, "mistakes": mistakes,
            "test": (store.ids[test], y[test], pred)}


def _head_entry(task: dict, spec: HeadSpec, runs: list[dict], seed_list: list[int], folder: Path | None = None) -> dict:
    """The results entry of one head: the first seed's model and metrics, the spread over seeds.

    ``folder``: the head directory being built, where the per-item test predictions go.
    """
    split, first = task["split"], runs[0]
    entry = {
        **_base_entry(task["store"], spec.name), **first.get("entry_fields", {}),
        "per_class": task["per_class"], "seeds": seed_list,
        "n_train": first["n_train"], "n_val": int((split == "val").sum()), "n_test": int((split == "test").sum()),
        "refit_on": "train" if task["per_class"] is not None else "train+val",
        "splits_digest": task["digest"], "split_rule": task["rule"],
        **metric_fields(first["metrics"]),
        "seed_summary": summarise_seeds([r["metrics"] for r in runs]) if len(runs) > 1 else {},
        "fit_seconds": round(first["fit_seconds"], 3),
        "predict_seconds_per_1k": round(first["predict_seconds_per_1k"], 5),
        "params": first["selection"]["params"],
        "mistakes": first["mistakes"],
        # Per-item test predictions, for paired comparisons between rows (a file beside result.json).
        "test_predictions": prediction_record(*first["test"], path=None if folder is None else folder / PREDICTIONS_FILE),
        "selection": {k: v for k, v in first["selection"].items() if k != "params"},
        "versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if len(runs) > 1:
        entry["seed_runs"] = [{"seed": r["seed"], "params": r["selection"]["params"],
                               "accuracy": r["metrics"]["accuracy"], "macro_f1": r["metrics"]["macro_f1"],
                               "fit_seconds": round(r["fit_seconds"], 3)} for r in runs]
    return entry


def evaluate_head(
    model_dir: str | os.PathLike,
    store: FeatureStore | str | os.PathLike,
    *,
    splits: str | os.PathLike | None = None,
    n_boot: int = 1000,
) -> dict:
    """Re-evaluate a saved head on the test split of ``store``; return a results entry.

    The test split is ``splits`` if given, else the ``splits.json`` of the run the head
    was saved in (when it covers this store), else the store's split recomputed with the
    rule recorded in the head's manifest.
    """
    head = load_head(model_dir)
    store = _open_store(store, head.manifest)
    head.check_store(store)
    recorded = Path(model_dir).resolve().parent / SPLITS_FILE
    if splits is None and recorded.is_file():
        try:
            split, rule = leave_out_unlabelled(store, load_splits(recorded, store.ids),
                                               {"rule": f"loaded from {recorded}"})
        except FeatxError:
            split = None
    else:
        split = None
    if split is None:
        if splits is not None:
            split, rule = resolve_splits(store, splits)
        else:
            old = head.manifest.get("split_rule") or {}
            split, rule = resolve_splits(store, None, old.get("seed", 0), old.get("val_fraction", 0.1),
                                         old.get("test_fraction", 0.2))
    test = split == "test"
    if not test.any():
        raise FeatxUsageError(f"the test split of {store.path} is empty")
    plan = plan_memory(store, None)
    if plan["memory_path"] == "streaming":  # a test split past the budget is predicted batch by batch
        pred, per_1k = predict_streaming(head.estimator, store, test, plan)
    else:
        pred, per_1k = _predict_timed(head.estimator, store.features[test])
    metrics = classification_metrics(store.labels[test], pred, store.class_names, n_boot=n_boot)
    return {
        **_base_entry(store, head.name), "per_class": head.manifest.get("per_class"), "seeds": [head.manifest.get("seed", 0)],
        "n_train": None, "n_val": int((split == "val").sum()), "n_test": int(test.sum()),
        "splits_digest": splits_digest(*split_record(store, split, rule)), "split_rule": rule, **metric_fields(metrics),
        "seed_summary": {}, "fit_seconds": None, "predict_seconds_per_1k": round(per_1k, 5),
        "params": head.manifest.get("params", {}), "model": str(model_dir), "trained_on_store_id": head.manifest.get("store_id"),
        "versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
