"""The out-of-core linear probe: the torch logreg engine fitted from streamed batches.

Same objective as :class:`TorchLogisticRegression` (the mean cross-entropy over all
rows plus ``||W||^2 / (2 C n)``), evaluated exactly: full-batch L-BFGS whose every loss
and gradient is accumulated batch by batch over a :class:`featx.extraction.BatchReader`
(each batch's mean weighted by its share of the rows, through the one loss function,
:func:`logreg_loss_and_grad`). Only the weights, the L-BFGS history and one batch are
in memory, whatever the number of rows. The standardiser is scikit-learn's
``StandardScaler`` fitted with ``partial_fit`` over the batches (Chan's parallel
update of mean and variance), so the saved head is the same pipeline as the in-memory
``logreg`` head with ``engine=torch``: ``StandardScaler`` then ``TorchLogisticRegression``.

Protocol: as the in-memory head, C is chosen on val by the coarse-to-fine walk of
:mod:`._search` (its own ranking of candidates, through its probe interface), the
candidates at the head's ``search_only`` tolerance, then a refit on train+val (the
scaler refitted on those rows) warm-started from the chosen candidate.
"""

from __future__ import annotations

import time

import numpy as np

from ._adapt import adapted_candidates
from ._search import COARSE_STEP, _Probe, _search_with_edges
from ._torch_logreg import TorchLogisticRegression, logreg_loss_and_grad

__all__ = ["stream_scaler", "fit_logreg_stream", "select_logreg_stream", "stream_scores"]


def stream_scaler(reader, reduce=None):
    """A ``StandardScaler`` fitted over the reader's batches (float32 per batch).

    ``reduce`` (data-parallel workers, each reading its share of the rows): a sum over the
    workers (:func:`featx.heads._ray_logreg` gives torch.distributed's all-reduce); every
    worker then holds the scaler of all the rows.
    """
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    for X, _ in reader:
        scaler.partial_fit(X.astype(np.float32, copy=False))
    return scaler if reduce is None else _pooled_scaler(scaler, reader.dim, reduce)


def _pooled_scaler(local, dim: int, reduce):
    """The scaler of every worker's rows from each worker's (count, mean, variance), in float64."""
    from sklearn.preprocessing import StandardScaler

    n = float(getattr(local, "n_samples_seen_", 0))  # a worker with no rows of this split has none
    mean = np.asarray(getattr(local, "mean_", np.zeros(dim)), dtype=np.float64)
    var = np.asarray(getattr(local, "var_", np.zeros(dim)), dtype=np.float64)
    total = reduce(np.concatenate([[n], n * mean, n * (var + mean * mean)]))
    count = max(total[0], 1.0)
    mean = total[1:dim + 1] / count
    var = np.maximum(total[dim + 1:] / count - mean * mean, 0.0)
    scaler = StandardScaler()
    scaler.mean_, scaler.var_, scaler.n_features_in_ = mean, var, dim
    # As scikit-learn's partial_fit: a (near-)constant feature is left unscaled.
    scaler.scale_ = np.where(var < 10 * np.finfo(np.float64).eps, 1.0, np.sqrt(var))
    scaler.n_samples_seen_ = int(round(total[0]))
    return scaler


def _standardised(reader, scaler, codes: dict, k: int):
    """(Z, Y one-hot, n) torch batches: the reader's rows scaled, labels coded 0..K-1."""
    import torch

    mean = torch.as_tensor(scaler.mean_, dtype=torch.float32)
    scale = torch.as_tensor(scaler.scale_, dtype=torch.float32)
    lookup = np.full(max(codes) + 1, -1, dtype=np.int64)
    lookup[list(codes)] = list(codes.values())
    for X, y in reader:
        Z = (torch.from_numpy(np.asarray(X, dtype=np.float32)) - mean) / scale
        Y = torch.zeros((len(y), k), dtype=torch.float32)
        Y[torch.arange(len(y)), torch.from_numpy(lookup[y])] = 1
        yield Z, Y, len(y)


def fit_logreg_stream(reader, scaler, classes: np.ndarray, *, C: float, tol: float = 1e-4, max_iter: int = 1000,
                      warm: tuple | None = None, history_size: int = 10, reduce=None) -> TorchLogisticRegression:
    """A fitted :class:`TorchLogisticRegression` on the reader's rows, scaled by ``scaler``.

    ``reduce``: data-parallel workers, each reading its share (``len(reader)`` is then the
    rows of all of them): every loss and gradient is the sum of the workers' parts, so each
    worker's L-BFGS takes the same steps on the same full-batch objective.
    """
    import torch

    k, d, n = len(classes), reader.dim, len(reader)
    codes = {int(c): i for i, c in enumerate(classes)}
    theta = torch.zeros(k * (d + 1), dtype=torch.float32)
    if warm is not None:
        theta[: k * d] = torch.as_tensor(np.asarray(warm[0]), dtype=torch.float32).reshape(-1)
        theta[k * d:] = torch.as_tensor(np.asarray(warm[1]), dtype=torch.float32)
    theta.requires_grad_(True)
    l2 = 1.0 / (float(C) * n)
    optimizer = torch.optim.LBFGS([theta], lr=1, max_iter=int(max_iter), tolerance_grad=float(tol),
                                  tolerance_change=64 * float(np.finfo(np.float64).eps), history_size=history_size,
                                  line_search_fn="strong_wolfe")
    evaluations = [0]

    def closure():
        with torch.no_grad():
            W, b = theta[: k * d].view(k, d), theta[k * d:]
            loss, dW, db = torch.zeros(()), torch.zeros_like(W), torch.zeros_like(b)
            for Z, Y, rows in _standardised(reader, scaler, codes, k):
                part, gW, gb = logreg_loss_and_grad(W, b, Z, Y, 0.0)  # the batch mean; weighted by its share
                share = rows / n
                loss += share * part
                dW += share * gW
                db += share * gb
            if reduce is not None:
                flat = reduce(torch.cat([loss.reshape(1), dW.reshape(-1), db]).to(torch.float64).numpy())
                flat = torch.from_numpy(flat).to(torch.float32)
                loss, dW, db = flat[0], flat[1:1 + k * d].view(k, d), flat[1 + k * d:]
            loss += 0.5 * l2 * (W * W).sum()
            dW += l2 * W
            theta.grad = torch.cat([dW.reshape(-1), db])
        evaluations[0] += 1
        return loss

    optimizer.step(closure)
    state = optimizer.state[optimizer._params[0]]
    result = theta.detach().to(torch.float64).numpy()
    clf = TorchLogisticRegression(C=C, max_iter=max_iter, tol=tol, device="cpu")
    clf.classes_ = np.asarray(classes)
    clf.coef_ = result[: k * d].reshape(k, d).astype(np.float32)
    clf.intercept_ = result[k * d:].astype(np.float32)
    clf.n_features_in_ = d
    clf.n_iter_ = np.array([int(state.get("n_iter", 0))])
    clf.n_evaluations_ = evaluations[0]
    return clf


def stream_scores(reader, model, reduce=None) -> dict:
    """``heldout_scores`` of ``model`` over the reader's rows, batch by batch: val accuracy and log-loss
    (``reduce``: summed over data-parallel workers, as :func:`fit_logreg_stream`)."""
    right, loss_sum, classes = 0, 0.0, np.asarray(model.classes_)
    index = {int(c): i for i, c in enumerate(classes)}
    for X, y in reader:
        proba = model.predict_proba(np.asarray(X, dtype=np.float32))
        right += int((classes[np.argmax(proba, axis=1)] == y).sum())
        cols = np.array([index.get(int(v), -1) for v in y])
        if (cols < 0).any():
            loss_sum = np.nan  # a val label the model never saw: no loss, as heldout_scores
        else:
            loss_sum += float(-np.log(np.clip(proba[np.arange(len(y)), cols], 1e-15, 1.0)).sum())
    if reduce is not None:
        right, loss_sum = reduce(np.array([right, loss_sum], dtype=np.float64))
    n = max(len(reader), 1)
    loss = None if not np.isfinite(loss_sum) else float(loss_sum) / n
    return {"val_accuracy": right / n, "val_loss": loss, "loss": "log_loss"}


class _StreamProbe(_Probe):
    """The selection walk's probe (see ``_search``) with its fits and scores made from batches."""

    def __init__(self, grid, fixed: dict, train, val, scaler, classes, tol: float, max_iter: int, reduce=None):
        super().__init__(None, grid, None, None, None, None, fixed)
        self.train, self.val, self.scaler, self.classes = train, val, scaler, classes
        self.tol, self.max_iter, self.reduce = tol, max_iter, reduce

    def _fit(self, C: float) -> None:
        import math

        from sklearn.pipeline import Pipeline

        started = time.perf_counter()
        warm = None
        if self.coefs:
            warm = self.coefs[min(self.coefs, key=lambda c: (abs(math.log(c / C)), c))]
        clf = fit_logreg_stream(self.train, self.scaler, self.classes, C=C, tol=self.tol, max_iter=self.max_iter,
                                warm=warm, reduce=self.reduce)
        self.scores[C] = stream_scores(self.val, Pipeline([("scale", self.scaler), ("clf", clf)]), self.reduce)
        self.coefs[C] = (clf.coef_.copy(), clf.intercept_.copy())
        self.trace.append({"params": {**self.fixed, "C": C}, **self.scores[C], "n_iter": int(clf.n_iter_[0]),
                           "seconds": round(time.perf_counter() - started, 3)})


def select_logreg_stream(spec, fixed: dict, seed: int, train, val, refit, reduce=None, **_) -> tuple:
    """(model, selection record) of the logreg head from three readers (train, val, refit).

    ``reduce``: run by data-parallel workers, each with its share of every split's rows (the
    readers' ``len`` and ``labels`` those of the whole split); every worker makes the same choices.
    """
    from sklearn.pipeline import Pipeline

    candidates = adapted_candidates(spec, fixed, seed, train)
    grid = sorted({float(c["C"]) for c in candidates})
    rest = {k: v for k, v in candidates[0].items() if k != "C"}
    tol = float(rest.get("tol", 1e-4))
    max_iter = int(rest.get("max_iter", 1000))
    search_tol = float(spec.search_only.get("tol", tol))
    classes = np.unique(train.labels)
    started = time.perf_counter()
    scaler = stream_scaler(train, reduce)
    probe = _StreamProbe(grid, rest, train, val, scaler, classes, search_tol, max_iter, reduce)
    on_edge = _search_with_edges(probe, COARSE_STEP)
    chosen = probe.grid[probe.best()]
    selection_seconds = time.perf_counter() - started
    started = time.perf_counter()
    refit_scaler = stream_scaler(refit, reduce)
    clf = fit_logreg_stream(refit, refit_scaler, classes, C=chosen, tol=tol, max_iter=max_iter,
                            warm=probe.coefs[chosen], reduce=reduce)
    model = Pipeline([("scale", refit_scaler), ("clf", clf)])
    record = {
        "params": {**rest, "C": chosen, "engine": "torch"},
        "val_accuracy": probe.scores[chosen]["val_accuracy"], "method": "val",
        "score": probe.scores[chosen]["val_accuracy"], "loss": probe.scores[chosen]["val_loss"], "loss_name": "log_loss",
        "edge": on_edge, **({"edge_params": ["C"]} if on_edge else {}),
        "metric": "val_accuracy", "search": spec.selection, "budget": spec.budget,
        "candidates": sorted(probe.trace, key=lambda t: t["params"]["C"]),
        "selection_seconds": round(selection_seconds, 3), "refit_seconds": round(time.perf_counter() - started, 3),
    }
    return model, record
