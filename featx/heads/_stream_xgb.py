"""The ``xgboost`` head from streamed batches: ``QuantileDMatrix`` over an ``xgboost.DataIter``.

XGBoost builds its quantised matrix from the batches of a
:class:`featx.extraction.BatchReader` (one pass for the quantile sketch, one to fill
the bins), so the float features never gather in memory; only the bins (about one byte
per value) do. When even those are over the memory budget, ``ExtMemQuantileDMatrix``
keeps them in a cache on disk beside the results (or a temporary folder).

The preprocessing is the in-memory head's: a PCA step of ``pca`` components, here
scikit-learn's ``IncrementalPCA`` fitted with ``partial_fit`` over the training batches
(the in-memory head fits a randomised ``PCA`` on the same rows); the saved model is the
same kind of pipeline (PCA step, then ``XGBClassifier``). The protocol is the
``early_stopping`` selection of ``_train``: each candidate boosts on train with early
stopping on val (20 rounds patience, mlogloss), is scored by val accuracy at its best
round; the chosen one is refit on train+val (PCA refitted on those rows) for exactly
that many rounds.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from ._adapt import adapted_candidates

__all__ = ["select_xgboost_stream", "fit_ipca"]

_PATIENCE = 20


def fit_ipca(reader, n_components: int, seed: int):
    """An ``IncrementalPCA`` over the reader's batches, every row used.

    ``partial_fit`` needs at least ``n_components`` rows a call: small batches are pooled,
    and the last block is held back so a short tail joins it instead of being dropped.
    """
    from sklearn.decomposition import IncrementalPCA

    pca = IncrementalPCA(n_components=n_components)
    held: list[np.ndarray] = []
    pending = None
    for X, _ in reader:
        held.append(np.asarray(X, dtype=np.float32))
        if sum(len(h) for h in held) >= n_components:
            if pending is not None:
                pca.partial_fit(pending)
            pending, held = np.concatenate(held), []
    tail = [b for b in ([pending] if pending is not None else []) + held]
    rows = np.concatenate(tail) if tail else np.zeros((0, reader.dim), np.float32)
    if len(rows) < n_components:
        raise ValueError(f"PCA with {n_components} components needs at least {n_components} training rows")
    return pca.partial_fit(rows)


def _iterator(reader, transform, cache: str | None):
    import xgboost

    class _Batches(xgboost.DataIter):
        def __init__(self):
            super().__init__(cache_prefix=cache, release_data=True)
            self._it = None

        def next(self, input_data) -> bool:
            if self._it is None:
                self._it = iter(reader)
            try:
                X, y = next(self._it)
            except StopIteration:
                self._it = None
                return False
            X = np.asarray(X, dtype=np.float32)
            input_data(data=transform(X) if transform is not None else X, label=y)
            return True

        def reset(self) -> None:
            self._it = None

    return _Batches()


def _matrix(reader, transform, budget: int, cache_dir: str, ref=None):
    """A quantised matrix of the reader's rows: in memory if its bins fit half the budget, else on disk."""
    import xgboost

    dim = transform.n_components_ if transform is not None else reader.dim
    if len(reader) * dim <= budget // 2:
        return xgboost.QuantileDMatrix(_iterator(reader, _tf(transform), None), ref=ref, max_bin=256)
    prefix = tempfile.mkdtemp(prefix="matrix-", dir=cache_dir)  # one cache per matrix
    return xgboost.ExtMemQuantileDMatrix(_iterator(reader, _tf(transform), f"{prefix}/cache"), ref=ref, max_bin=256)


def _tf(pca):
    return None if pca is None else pca.transform


def _booster_params(clf, k: int) -> dict:
    p = clf.get_params()
    params = {"eta": p["learning_rate"], "max_depth": p["max_depth"], "subsample": p["subsample"],
              "colsample_bytree": p["colsample_bytree"], "tree_method": "hist", "device": p["device"],
              "seed": p["random_state"] or 0}
    if p.get("n_jobs"):
        params["nthread"] = p["n_jobs"]
    if k > 2:
        return {**params, "objective": "multi:softprob", "num_class": k, "eval_metric": "mlogloss"}
    return {**params, "objective": "binary:logistic", "eval_metric": "logloss"}


def _predict_codes(booster, dmatrix, rounds: int, k: int) -> np.ndarray:
    proba = booster.predict(dmatrix, iteration_range=(0, rounds))
    return (proba > 0.5).astype(np.int64) if k == 2 else np.argmax(proba.reshape(-1, k), axis=1)


def _fit(spec, params: dict, seed: int, train, val, k: int, budget: int, cache_dir: str, early: bool,
         pcas: dict):
    """(pca, booster, rounds) of one configuration; ``pcas`` caches the PCA fitted per (reader, size)."""
    import xgboost

    model = spec.create(**params, random_state=seed)
    clf = model[-1]
    n_pca = params.get("pca")
    key = (id(train), n_pca)
    if key not in pcas:
        pcas[key] = fit_ipca(train, min(int(n_pca), train.dim, len(train)), seed) if n_pca else None
    pca = pcas[key]
    dtrain = _matrix(train, pca, budget, cache_dir)
    evals = [(_matrix(val, pca, budget, cache_dir, ref=dtrain), "val")] if early else []
    booster = xgboost.train(_booster_params(clf, k), dtrain, num_boost_round=int(clf.get_params()["n_estimators"]),
                            evals=evals, early_stopping_rounds=_PATIENCE if early else None, verbose_eval=False)
    rounds = int(booster.best_iteration) + 1 if early and booster.attr("best_iteration") is not None \
        else booster.num_boosted_rounds()
    return pca, booster, rounds, (evals[0][0] if evals else None), clf


def select_xgboost_stream(spec, fixed: dict, seed: int, train, val, refit, *, budget: int | None = None,
                          cache_dir=None) -> tuple:
    """(model, selection record) of the xgboost head from three readers (train, val, refit).

    ``budget``: bytes the quantised matrices may take in memory (past half of it they go to
    disk under ``cache_dir``, a temporary folder removed afterwards).
    """
    from ..core.memory import default_max_memory

    classes = np.unique(train.labels)
    if not np.array_equal(classes, np.arange(len(classes))):
        # As XGBClassifier in memory: classes must be 0..K-1 in the training rows.
        raise ValueError(f"Invalid classes inferred from unique values of `y`. Expected: {np.arange(len(classes))}, "
                         f"got {classes}")
    with tempfile.TemporaryDirectory(prefix=".featx-xgb-cache-", dir=cache_dir) as folder:
        return _select(spec, fixed, seed, (train, val, refit), len(classes), budget or default_max_memory(), folder)


def _select(spec, fixed, seed, readers, k: int, budget: int, cache_dir: str) -> tuple:
    from sklearn.pipeline import Pipeline

    train, val, refit = readers
    started, trace, pcas = time.perf_counter(), [], {}
    for params in adapted_candidates(spec, fixed, seed, train):
        t0 = time.perf_counter()
        _, booster, rounds, dval, _ = _fit(spec, params, seed, train, val, k, budget, cache_dir, True, pcas)
        acc = float((_predict_codes(booster, dval, rounds, k) == val.labels).mean())
        trace.append({"params": {**params, "n_estimators": rounds}, "val_accuracy": acc,
                      "seconds": round(time.perf_counter() - t0, 3)})
    chosen = max(trace, key=lambda t: t["val_accuracy"])  # first best wins ties, as in _train
    selection_seconds = time.perf_counter() - started
    started = time.perf_counter()
    pca, booster, _, _, clf = _fit(spec, chosen["params"], seed, refit, val, k, budget, cache_dir, False, {})
    settings = {name: value for name, value in clf.get_params().items() if value is not None and name != "objective"}
    clf.load_model(bytearray(booster.save_raw("ubj")))
    for name, value in settings.items():
        # Loading a bare booster leaves the wrapper's parameters unset; recorded on the wrapper
        # only (set_params would push them into the trained booster).
        setattr(clf, name, value)
    model = Pipeline([*([("pca", pca)] if pca is not None else []), ("clf", clf)])
    record = {"params": chosen["params"], "val_accuracy": chosen["val_accuracy"], "metric": "val_accuracy",
              "method": "val", "search": spec.selection, "budget": spec.budget, "candidates": trace,
              "selection_seconds": round(selection_seconds, 3), "refit_seconds": round(time.perf_counter() - started, 3),
              "pca_kind": "IncrementalPCA" if pca is not None else None}
    return model, record
