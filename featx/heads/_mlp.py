"""A one-hidden-layer MLP head in torch: dropout, AdamW, early stopping on val, GPU when present.

The frozen-network-plus-MLP protocol: Linear(D, hidden) -> ReLU -> Dropout -> Linear(hidden, K)
on standardised features, trained with AdamW on mini-batches, cross-entropy loss. The
estimator follows scikit-learn's histogram GBM for early stopping, so featx's
``early_stopping`` selection treats it like a booster: ``fit(X, y, X_val=, y_val=)`` with
``early_stopping=True`` records ``validation_score_`` (index 0: before training; ``scoring``
"loss" stores the negative val loss, "accuracy" the val accuracy) and keeps the weights of
the best epoch; the refit on train+val then trains exactly that many epochs (``max_iter``).

Fitted weights are numpy arrays (``coefs_``, ``intercepts_``): a saved head predicts in
numpy and skops stores it without pickle.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ._torch_logreg import softmax

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
            return X, codes, np.asarray(X_val, dtype=np.float32), np.array([lookup[v] for v in np.asarray(y_val)])
        rng = np.random.default_rng(self.random_state or 0)
        order = rng.permutation(len(codes))
        cut = max(1, int(len(codes) * self.validation_fraction))
        return X[order[cut:]], codes[order[cut:]], X[order[:cut]], codes[order[:cut]]

    def fit(self, X, y, X_val=None, y_val=None):
        import torch

        X = np.asarray(X, dtype=np.float32)
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"needs samples of at least 2 classes; got {len(self.classes_)}")
        if self.scoring not in ("loss", "accuracy"):
            raise ValueError(f"scoring must be 'loss' or 'accuracy'; got {self.scoring!r}")
        held = self._held_out(X, codes, X_val, y_val) if self.early_stopping else None
        if held is not None:
            X, codes = held[0], held[1]
        device = self._device()
        net = self._network(X.shape[1], len(self.classes_)).to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        Xt, yt = torch.as_tensor(X, device=device), torch.as_tensor(codes, device=device)
        val = None if held is None else (torch.as_tensor(held[2], device=device), torch.as_tensor(held[3], device=device))
        generator = torch.Generator().manual_seed(int(self.random_state or 0))
        self.validation_score_ = [] if val is None else [self._score(net, *val)]
        best_state, best_epoch, epoch = None, 0, 0
        if val is not None:
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        for epoch in range(1, int(self.max_iter) + 1):
            self._epoch(net, optimizer, Xt, yt, generator)
            if val is None:
                continue
            self.validation_score_.append(self._score(net, *val))
            if self.validation_score_[-1] > self.validation_score_[best_epoch]:
                best_epoch = epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif epoch - best_epoch >= int(self.n_iter_no_change):
                break
        if best_state is not None:
            net.load_state_dict(best_state)  # keep the best epoch, not the last
        self.n_iter_ = best_epoch if val is not None else epoch
        self.validation_score_ = np.asarray(self.validation_score_)
        layers = [net[0], net[3]]
        self.coefs_ = [layer.weight.detach().cpu().numpy().T.copy() for layer in layers]
        self.intercepts_ = [layer.bias.detach().cpu().numpy().copy() for layer in layers]
        self.n_features_in_ = X.shape[1]
        return self

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

    def _score(self, net, Xv, yv) -> float:
        import torch
        from torch.nn.functional import cross_entropy

        net.eval()
        with torch.no_grad():
            logits = net(Xv)
            if self.scoring == "loss":
                return -float(cross_entropy(logits, yv))
            return float((logits.argmax(dim=1) == yv).float().mean())

    def decision_function(self, X) -> np.ndarray:
        hidden = np.maximum(np.asarray(X, dtype=np.float32) @ self.coefs_[0] + self.intercepts_[0], 0)
        return hidden @ self.coefs_[1] + self.intercepts_[1]

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.decision_function(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]
