"""A one-hidden-layer MLP head in torch: dropout, AdamW, early stopping on val, GPU when present.

The frozen-network-plus-MLP protocol: Linear(D, hidden) -> ReLU -> Dropout -> Linear(hidden, K)
on standardised features, trained with AdamW on mini-batches, cross-entropy loss. The
estimator follows scikit-learn's histogram GBM for early stopping, so featx's
``early_stopping`` selection treats it like a booster: ``fit(X, y, X_val=, y_val=)`` with
``early_stopping=True`` records ``validation_score_`` (index 0: before training; ``scoring``
"loss" stores the negative val loss, "accuracy" the val accuracy) and ``validation_loss_``,
and keeps the weights of the best epoch; the refit on train+val then trains exactly that
many epochs (``max_iter``). With ``scoring="accuracy"`` (featx's selection) the best epoch
is the most accurate one, the lower val loss breaking ties: on a small val split the
loss alone peaked after one epoch, long before the accuracy did.

Fitted weights are numpy arrays (``coefs_``, ``intercepts_``): a saved head predicts in
numpy and skops stores it without pickle.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ._torch_logreg import checked_fit_data, checked_predict_data, softmax

__all__ = ["MLPClassifier"]


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """One hidden layer, ReLU, dropout; AdamW; optional early stopping on a validation set."""

    def __init__(self, hidden_units: int = 512, dropout: float = 0.5, lr: float = 1e-3, weight_decay: float = 1e-4,
                 batch_size: int = 256, max_iter: int = 100, early_stopping: bool = False, n_iter_no_change: int = 10,
                 scoring: str = "loss", validation_fraction: float = 0.1, device: str = "auto", random_state=None):
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.scoring = scoring
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state

    def _device(self) -> str:
        import torch

        if self.device != "auto":
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def _network(self, d: int, k: int):
        import torch
        from torch import nn

        torch.manual_seed(int(self.random_state or 0))
        return nn.Sequential(nn.Linear(d, int(self.hidden_units)), nn.ReLU(), nn.Dropout(float(self.dropout)),
                             nn.Linear(int(self.hidden_units), k))

    def _held_out(self, X, codes, X_val, y_val):
        """Validation data: the given set (labels mapped to class codes) or a seeded slice of train."""
        if X_val is not None:
            lookup = {c: i for i, c in enumerate(self.classes_)}
            unknown = set(np.asarray(y_val).tolist()) - set(lookup)
            if unknown:
                raise ValueError(f"validation labels not in the training labels: {sorted(unknown)[:5]}")
            return X, codes, X_val, np.array([lookup[v] for v in np.asarray(y_val)])
        rng = np.random.default_rng(self.random_state or 0)
        order = rng.permutation(len(codes))
        cut = max(1, int(len(codes) * self.validation_fraction))
        return X[order[cut:]], codes[order[cut:]], X[order[:cut]], codes[order[:cut]]

    def fit(self, X, y, X_val=None, y_val=None):
        import torch

        X, codes = checked_fit_data(self, X, y)
        if self.scoring not in ("loss", "accuracy"):
            raise ValueError(f"scoring must be 'loss' or 'accuracy'; got {self.scoring!r}")
        if X_val is not None:
            X_val = checked_predict_data(self, X_val)
        held = self._held_out(X, codes, X_val, y_val) if self.early_stopping else None
        if held is not None:
            X, codes = held[0], held[1]
        device = self._device()
        net = self._network(X.shape[1], len(self.classes_)).to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        Xt, yt = torch.tensor(X, device=device), torch.as_tensor(codes, device=device)
        val = None if held is None else (torch.tensor(held[2], device=device), torch.as_tensor(held[3], device=device))
        generator = torch.Generator().manual_seed(int(self.random_state or 0))
        best_epoch, epoch = self._train(net, optimizer, Xt, yt, val, generator)
        self.n_iter_ = best_epoch if val is not None else epoch
        layers = [net[0], net[3]]
        self.coefs_ = [layer.weight.detach().cpu().numpy().T.copy() for layer in layers]
        self.intercepts_ = [layer.bias.detach().cpu().numpy().copy() for layer in layers]
        return self

    def _train(self, net, optimizer, Xt, yt, val, generator) -> tuple[int, int]:
        """The epochs; with ``val``, stop after ``n_iter_no_change`` without a better one and keep the best."""
        history = [] if val is None else [self._score(net, *val)]
        best_state, best_epoch, epoch = None, 0, 0
        if val is not None:
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        for epoch in range(1, int(self.max_iter) + 1):
            self._epoch(net, optimizer, Xt, yt, generator)
            if val is None:
                continue
            history.append(self._score(net, *val))
            if self._better(history[-1], history[best_epoch]):
                best_epoch = epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif epoch - best_epoch >= int(self.n_iter_no_change):
                break
        if best_state is not None:
            net.load_state_dict(best_state)  # keep the best epoch, not the last
        self.validation_loss_ = np.array([loss for _, loss in history])
        self.validation_score_ = np.array([acc if self.scoring == "accuracy" else -loss for acc, loss in history])
        return best_epoch, epoch

    def _better(self, new: tuple[float, float], old: tuple[float, float]) -> bool:
        (acc, loss), (best_acc, best_loss) = new, old
        if self.scoring == "loss":
            return loss < best_loss
        return acc > best_acc or (acc == best_acc and loss < best_loss)

    def _epoch(self, net, optimizer, Xt, yt, generator) -> None:
        import torch
        from torch.nn.functional import cross_entropy

        net.train()
        order = torch.randperm(len(yt), generator=generator).to(Xt.device)
        for start in range(0, len(yt), int(self.batch_size)):
            rows = order[start:start + int(self.batch_size)]
            optimizer.zero_grad(set_to_none=True)
            cross_entropy(net(Xt[rows]), yt[rows]).backward()
            optimizer.step()

    def _score(self, net, Xv, yv) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) on the validation tensors."""
        import torch
        from torch.nn.functional import cross_entropy

        net.eval()
        with torch.no_grad():
            logits = net(Xv)
            return float((logits.argmax(dim=1) == yv).float().mean()), float(cross_entropy(logits, yv))

    def _logits(self, X) -> np.ndarray:
        X = checked_predict_data(self, X).astype(np.float64)
        hidden = np.maximum(X @ self.coefs_[0] + self.intercepts_[0], 0)
        return hidden @ self.coefs_[1] + self.intercepts_[1]

    def decision_function(self, X) -> np.ndarray:
        """Class scores, (n, K); for two classes the score of ``classes_[1]`` over ``classes_[0]``, (n,)."""
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self._logits(X))

    def predict(self, X) -> np.ndarray:
        scores = self._logits(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(scores, axis=1)]
