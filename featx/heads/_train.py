"""Stage 2: fit classical heads on a feature store, choose them honestly, evaluate once.

Protocol, the same for every head:

1. Splits: the store's own train/val/test when it has them (val carved from train
   if absent), otherwise a stratified, seeded split (:meth:`FeatureStore.split_assignment`),
   or a recorded ``splits.json``. The assignment is written to ``OUT/splits.json``.
2. Few-shot (``per_class=N``): N training items per class drawn from the training
   split only (:func:`featx.data.few_shot_mask`), before validation data is
   touched. Validation stays the full validation split.
3. Selection on validation accuracy, within the head's fixed budget:
   ``grid`` fits each candidate on train; ``path`` (logreg) walks the L2 grid from
   strong to weak regularisation with warm starts and stops once validation accuracy
   has not improved for ``patience`` grid points; ``early_stopping`` (boosters) lets
   the booster stop on the validation split and keeps the best number of rounds.
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
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning

from ..core.errors import FeatxError, FeatxUsageError
from ..core.io import json_text, remove_stale_temps, write_atomic
from ..core.metrics import classification_metrics, summarise_seeds
from ..core.predictions import PREDICTIONS_FILE, prediction_record
from ..core.results import RESULTS_FILE, merge_results, metric_fields, skipped_reason, write_tables
from ..core.runtime import library_versions
from ..data import SPLITS_FILE, few_shot_mask, load_splits, save_splits, splits_digest
from ..store import FeatureStore
from ._adapt import HeadUnfitError, adapt_params, check_classes_usable, factory_defaults, few_shot_shortfall
from ._featuresets import FeatureSet, open_features
from ._mistakes import worst_mistakes
from ._persist import load_head, save_head
from ._registry import HeadSpec, get_head
from ._search import select_coarse_fine

__all__ = ["train_heads", "evaluate_head", "select_and_fit", "training_rows", "resolve_splits", "RESULTS_FILE", "CONFIG_FILE", "ENTRY_FILE"]

CONFIG_FILE, ENTRY_FILE = "config.json", "result.json"
PATH_PATIENCE = 8  # grid points (two decades of C) without a better val accuracy end the path


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(f"featx: {message}", file=sys.stderr, flush=True)


# -- selection -------------------------------------------------------------------


def _fit_candidate(spec: HeadSpec, params: dict, seed: int, X, y) -> BaseEstimator:
    return spec.create(**{**params, **spec.search_only}, random_state=seed).fit(X, y)


def _select_grid(spec, candidates, seed, train, val):
    trace = []
    for params in candidates:
        started = time.perf_counter()
        try:
            model = _fit_candidate(spec, params, seed, *train)
            accuracy = float(model.score(*val))
        except ValueError as exc:  # a candidate this training set cannot support, even after adapt_params
            trace.append({"params": params, "error": str(exc).splitlines()[0]})
            continue
        trace.append({"params": params, "val_accuracy": accuracy, "seconds": round(time.perf_counter() - started, 3)})
    return trace, {}


def _select_path(spec, candidates, seed, train, val, patience: int = PATH_PATIENCE):
    """Warm-started regularisation path: C from small (strong L2) to large, stopped after the peak."""
    (X, y), (Xv, yv) = train, val
    fixed = {k: v for k, v in candidates[0].items() if k != "C"}
    model = spec.create(**fixed, random_state=seed)
    prep, clf = model[:-1], model[-1]
    Z, Zv = prep.fit_transform(X), prep.transform(Xv)
    clf.set_params(warm_start=True)
    trace, best, since_best, coefs = [], -1.0, 0, {}
    for C in sorted({float(c["C"]) for c in candidates}):
        started = time.perf_counter()
        clf.set_params(C=C)
        with warnings.catch_warnings():
            # Far along the path a step may stop at max_iter; its val accuracy is still what counts.
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Z, y)
        acc = float(clf.score(Zv, yv))
        trace.append({"params": {**fixed, "C": C}, "val_accuracy": acc, "n_iter": int(np.max(clf.n_iter_)),
                      "seconds": round(time.perf_counter() - started, 3)})
        if acc > best:
            best, since_best = acc, 0
            coefs = {"coef": clf.coef_.copy(), "intercept": clf.intercept_.copy()}
        else:
            since_best += 1
            if since_best >= patience:
                break
    return trace, coefs


def _rounds_param(clf) -> str:
    return "n_estimators" if hasattr(clf, "get_booster") else "max_iter"


def _select_early_stopping(spec, candidates, seed, train, val, rounds_patience: int = 20):
    """Each candidate's booster stops on the validation split; its best round count is kept."""
    (X, y), (Xv, yv) = train, val
    trace = []
    for params in candidates:
        started = time.perf_counter()
        model = spec.create(**params, random_state=seed)
        prep, clf = model[:-1], model[-1]
        try:
            Z = prep.fit_transform(X, y) if len(model) > 1 else X
        except ValueError as exc:
            trace.append({"params": params, "error": str(exc).splitlines()[0]})
            continue
        Zv = prep.transform(Xv) if len(model) > 1 else Xv
        if _rounds_param(clf) == "n_estimators":
            clf.set_params(early_stopping_rounds=rounds_patience, eval_metric="mlogloss")
            clf.fit(Z, y, eval_set=[(Zv, yv)], verbose=False)
            rounds = int(clf.best_iteration) + 1
        else:
            clf.set_params(early_stopping=True, n_iter_no_change=rounds_patience, scoring="loss")
            clf.fit(Z, y, X_val=Zv, y_val=yv)
            # validation_score_[i] is the score after i rounds (index 0: before any).
            rounds = max(1, int(np.argmax(clf.validation_score_)))
        trace.append({"params": {**params, _rounds_param(clf): rounds}, "val_accuracy": float(clf.score(Zv, yv)),
                      "seconds": round(time.perf_counter() - started, 3)})
    return trace, {}


_SELECTORS = {"grid": _select_grid, "path": _select_path, "coarse_fine": select_coarse_fine,
              "early_stopping": _select_early_stopping}


def select_and_fit(
    spec: HeadSpec | str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    refit: tuple[np.ndarray, np.ndarray],
    *,
    params: Mapping | None = None,
    seed: int = 0,
) -> tuple[BaseEstimator, dict]:
    """Choose a head's hyper-parameters on ``val``, refit on ``refit``; return (model, selection record).

    ``params`` are fixed (not searched). The record holds the chosen parameters, every
    candidate's validation accuracy and the selection and refit wall times.
    """
    spec = get_head(spec) if isinstance(spec, str) else spec
    # Capped to what the training set supports (PCA size, k, calibration folds); see _adapt.
    candidates = [adapt_params(c, *train)[0] for c in spec.candidates(params, seed=seed)]
    started = time.perf_counter()
    trace, state = _SELECTORS[spec.selection](spec, candidates, seed, train, val)
    scored = [t for t in trace if "val_accuracy" in t]
    if not scored:
        reasons = "; ".join(f"{t['params']}: {t['error']}" for t in trace[:3])
        raise HeadUnfitError(f"no {spec.name} configuration could be fitted on this training set ({reasons})")
    # First best wins ties: candidates are ordered simple/strongly regularised first.
    chosen = max(scored, key=lambda t: t["val_accuracy"])
    selection_seconds = time.perf_counter() - started

    started = time.perf_counter()
    # The factory's defaults count too (linear_svm calibrates with 3 folds unless told otherwise).
    adapted, caps = adapt_params({**factory_defaults(spec), **chosen["params"]}, *refit)
    refit_params = {**chosen["params"], **{name: adapted[name] for name in caps}}
    model = spec.create(**refit_params, random_state=seed)
    if state.get("coef") is not None:
        # The path's solution at the chosen C is an excellent start for the refit.
        prep, clf = model[:-1], model[-1]
        Z = prep.fit_transform(*refit)
        clf.set_params(warm_start=True)
        clf.coef_, clf.intercept_ = state["coef"], state["intercept"]
        clf.fit(Z, refit[1])
        clf.set_params(warm_start=False)
    else:
        model.fit(*refit)
    refit_seconds = time.perf_counter() - started
    record = {
        "params": refit_params,
        "val_accuracy": chosen["val_accuracy"],
        "metric": "val_accuracy",
        "method": spec.selection,
        "budget": spec.budget,
        "candidates": trace,
        "selection_seconds": round(selection_seconds, 3),
        "refit_seconds": round(refit_seconds, 3),
        **({"capped": {k: {"asked": a, "used": u} for k, (a, u) in caps.items()}} if caps else {}),
    }
    return model, record


# -- splits ----------------------------------------------------------------------


def resolve_splits(store: FeatureStore, splits_file=None, split_seed: int = 0, val_fraction: float = 0.1,
                   test_fraction: float = 0.2) -> tuple[np.ndarray, dict]:
    """Train/val/test per row of ``store``: a recorded split file, or the store's assignment."""
    if splits_file is not None:
        return load_splits(splits_file, store.ids), {"rule": f"loaded from {splits_file}"}
    return store.split_assignment(seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)


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
) -> list[dict]:
    """Train, select and evaluate ``heads`` on ``store``; return one results entry per head.

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
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        return _train_heads(open_features(store, feature_set), heads, params, per_class, seeds, out, splits, split_seed,
                            val_fraction, test_fraction, n_boot, threads, quiet)


def _train_heads(store, heads, params, per_class, seeds, out, splits, split_seed, val_fraction, test_fraction, n_boot,
                 threads, quiet) -> list[dict]:
    store = _open_store(store)
    specs, params, seed_list = _check_request(heads, params, seeds, per_class)
    split, rule = resolve_splits(store, splits, split_seed, val_fraction, test_fraction)
    for name in ("train", "val", "test"):
        if not np.any(split == name):
            raise FeatxUsageError(f"the {name} split of {store.path} is empty: give a store with more items per class")
    _check_training_set(store, split, per_class, seed_list[0], quiet)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir)  # a killed train's ``.HEAD.PID.new`` / ``.results.json.PID.tmp``
        _record_splits(out_dir, store, split, rule)
    task = {"store": store, "split": split, "rule": rule, "per_class": per_class, "n_boot": n_boot,
            "digest": splits_digest(*split_record(store, split, rule)), "out": out_dir, "quiet": quiet}

    entries = []
    for spec in specs:
        try:
            entry = _fit_head(task, spec, params.get(spec.name, {}), seed_list)
        except FeatxUsageError:
            raise  # the request itself is wrong (a ValueError too): no head can help
        except (HeadUnfitError, ValueError) as exc:
            # This head cannot work on this data (scikit-learn and XGBoost say so with ValueError,
            # e.g. a class with validation items but no training items); the others still run.
            reason = str(exc).splitlines()[0] if isinstance(exc, HeadUnfitError) else _fit_failure(exc)
            entry = _skipped_entry(task, spec, seed_list, reason)
            print(f"featx: warning: {spec.name} skipped: {reason}", file=sys.stderr, flush=True)
        entries.append(entry)
        if out_dir is not None:
            # Merge after every head, so an interrupted multi-head run keeps what finished. The
            # row is already inside the head's directory (its result.json): a kill before this
            # merge leaves results.json one row behind, and every reader takes the head's own row.
            write_tables(out_dir, merge_results(out_dir, [entry]))

    if out_dir is not None:
        config = {
            "store": str(store.path), "store_id": store.store_id, "backbone": store.config["backbone"],
            "source": store.config.get("source"), "heads": [s.name for s in specs], "params": params,
            "per_class": per_class, "seeds": seed_list, "splits": str(splits) if splits is not None else None,
            "split_rule": rule, "splits_digest": task["digest"], "n_boot": n_boot, "refit_on": entries[0]["refit_on"],
            "path_patience": PATH_PATIENCE, "threads": threads, "versions": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_atomic(out_dir / CONFIG_FILE, json_text(config))
    if all(skipped_reason(e) for e in entries):
        raise FeatxError("no head could be fitted on this data: " + "; ".join(f"{e['head']}: {e['skipped']}" for e in entries))
    return entries


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


def _fit_head(task: dict, spec: HeadSpec, fixed: dict, seed_list: list[int]) -> dict:
    """Fit every seed; with an output folder, save the first seed's head with its results row inside."""
    out = task["out"]
    runs = [_fit_seed(task, spec, fixed, seed, score=out is None or seed != seed_list[0]) for seed in seed_list]
    if out is None:
        return _head_entry(task, spec, runs, seed_list)
    holder: dict = {}

    def evaluate(head) -> dict:
        # Score the saved head itself, so `featx evaluate` reproduces these numbers exactly
        # (a reloaded array's memory layout can move float sums by an ulp).
        runs[0]["model"] = head.estimator
        runs[0].update(_score(task, spec, runs[0]))
        entry = {**_head_entry(task, spec, runs, seed_list, folder=head.path), "model": spec.name}
        record = entry["test_predictions"]
        if "path" in record:  # written into the folder being built: name where it will be after the swap
            record["path"] = str((out / spec.name).resolve() / PREDICTIONS_FILE)
        holder["entry"] = entry
        return entry

    save_head(out / spec.name, runs[0]["model"], _head_manifest(task, spec, runs[0]), evaluate=evaluate)
    return holder["entry"]


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
    store, split = task["store"], task["split"]
    X, y = store.features, store.labels
    val = split == "val"
    rows = training_rows(store.ids, y, split, task["per_class"], seed)
    train, refit = rows["train"], rows["refit"]
    started = time.perf_counter()
    model, selection = select_and_fit(spec, (X[train], y[train]), (X[val], y[val]), (X[refit], y[refit]),
                                      params=fixed, seed=seed)
    run = {"seed": seed, "model": model, "selection": selection, "fit_seconds": time.perf_counter() - started,
           "n_train": int(train.sum())}
    if score:
        run.update(_score(task, spec, run))
    return run


def _score(task: dict, spec: HeadSpec, run: dict) -> dict:
    """The one test evaluation of a fitted (or saved and reloaded) head."""
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
        **_base_entry(task["store"], spec.name),
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
            split, rule = load_splits(recorded, store.ids), {"rule": f"loaded from {recorded}"}
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
