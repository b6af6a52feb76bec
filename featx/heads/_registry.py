"""The registry of classical heads: scikit-learn estimators for cached features.

Each head is a factory returning an unfitted scikit-learn estimator (a ``Pipeline``
with the preprocessing that head needs) plus a small search space and a fixed
budget. The factories take flat keyword parameters (``create_head("knn",
n_neighbors=5)``); inside the returned pipeline the classifier step is always named
``clf``, so ``GridSearchCV(pipe, {"head__clf__C": [...]})`` reaches it.

Preprocessing choices:

* linear heads standardise features (the L2 penalty then treats every dimension
  alike and L-BFGS converges in far fewer iterations);
* trees and boosting need no scaling; on 1,280-dim embeddings they get a PCA step
  (``pca=N`` components, ``None`` to skip) that keeps the search affordable on a
  small CPU: a booster's cost grows with the number of features it bins;
* kNN standardises, projects with PCA and L2-normalises, i.e. cosine distance on
  decorrelated features, the usual choice for retrieval-style heads.

How a head's search runs (``selection``) is the business of :mod:`featx.heads._select`:
``"grid"`` tries the candidates, ``"path"`` / ``"coarse_fine"`` walk the linear probe's
regularisation grid, ``"early_stopping"`` lets the booster stop on held-out data and then
fixes the number of rounds; held-out means the validation split, or k-fold CV on the
refit rows when the validation split is small (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import FeatxUsageError

if TYPE_CHECKING:
    # scikit-learn is imported where a head is built or searched, not to list heads or check a
    # config (a warm ``featx run`` does only that).
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

__all__ = ["HeadSpec", "register_head", "create_head", "check_head_params", "list_heads", "get_head", "LOGREG_C_GRID", "SELECTIONS"]

SELECTIONS = ("grid", "path", "coarse_fine", "early_stopping")

# The 45 log-spaced L2 strengths of the linear-probe literature (Kornblith et al.,
# "Do Better ImageNet Models Transfer Better?", 2019), in scikit-learn's C (inverse
# strength, loss summed over samples).
LOGREG_C_GRID = tuple(float(c) for c in np.logspace(-6, 5, 45))


@dataclass(frozen=True)
class HeadSpec:
    """A registered head: how to build it and how its hyper-parameters are chosen."""

    name: str
    description: str  # one line, shown by ``featx heads``
    factory: Callable[..., BaseEstimator]
    search_space: Mapping[str, Sequence] | Sequence[Mapping[str, Sequence]] = field(default_factory=dict)
    budget: int = 1  # most candidates fitted on the validation split
    selection: str = "grid"
    search_only: Mapping = field(default_factory=dict)  # parameters used while searching, not in the final refit

    def create(self, **params) -> BaseEstimator:
        return self.factory(**params)

    def candidates(self, fixed: Mapping | None = None, seed: int = 0) -> list[dict]:
        """The parameter sets the search tries, in order; ``fixed`` parameters are not searched.

        A grid larger than the budget is subsampled (seeded) down to the budget.
        """
        fixed = dict(fixed or {})
        space = self.search_space if isinstance(self.search_space, Sequence) else [self.search_space]
        space = [{k: list(v) for k, v in grid.items() if k not in fixed} for grid in space]
        from sklearn.model_selection import ParameterGrid, ParameterSampler

        grid = ParameterGrid(space)
        if len(grid) > self.budget:
            chosen = list(ParameterSampler(space, n_iter=self.budget, random_state=seed))
        else:
            chosen = list(grid)
        return [{**c, **fixed} for c in chosen] or [fixed]


_HEADS: dict[str, HeadSpec] = {}


def register_head(
    name: str,
    description: str,
    *,
    search_space: Mapping[str, Sequence] | Sequence[Mapping[str, Sequence]] | None = None,
    budget: int | None = None,
    selection: str = "grid",
    search_only: Mapping | None = None,
) -> Callable:
    """Register the decorated factory as head ``name``; ``budget`` defaults to the grid's size.

    ``search_only`` parameters apply to the candidates fitted during the search only
    (e.g. skipping probability calibration, which does not change the ranking).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}")

    def wrap(factory: Callable[..., BaseEstimator]) -> Callable[..., BaseEstimator]:
        space = search_space or {}
        size = _grid_size(space)
        _HEADS[name] = HeadSpec(name, description, factory, space, budget or size, selection, dict(search_only or {}))
        return factory

    return wrap


def _grid_size(space) -> int:
    """``len(ParameterGrid(space))`` (a mapping: the product of its lists' lengths; a list of
    mappings: their sum), without importing scikit-learn at registration."""
    if not space:
        return 1
    grids = [space] if isinstance(space, Mapping) else list(space)
    return sum(int(np.prod([len(v) for v in grid.values()])) if grid else 1 for grid in grids)


def list_heads() -> list[str]:
    return list(_HEADS)


def get_head(name: str) -> HeadSpec:
    try:
        return _HEADS[name]
    except KeyError:
        raise FeatxUsageError(f"unknown head {name!r}; known heads: {', '.join(_HEADS)} (see `featx heads`)") from None


def create_head(name: str, **params) -> BaseEstimator:
    """An unfitted estimator for head ``name``; unknown parameters raise ``TypeError``.

    >>> create_head("logreg", C=0.01)  # doctest: +ELLIPSIS
    Pipeline(...)
    """
    return get_head(name).create(**params)


def _type_ok(value, hint) -> bool:
    import types
    import typing

    if hint is typing.Any:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint) -> str:
    import typing

    names = {float: "a number", int: "an integer", str: "a string", bool: "true or false", type(None): "null"}
    args = typing.get_args(hint) or (hint,)
    return " or ".join(names.get(a, getattr(a, "__name__", str(a))) for a in args)


def check_head_params(name: str, params: Mapping) -> None:
    """Refuse, with one line naming the parameter and what it takes, a parameter of head ``name``
    that its factory does not have, of the wrong type, or out of the range its scikit-learn
    estimator accepts (scikit-learn's own parameter validation, run without fitting)."""
    import inspect
    import typing

    spec = get_head(name)
    if not params:
        return  # the factory's defaults: nothing to check, and no scikit-learn import for it
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

    signature = inspect.signature(spec.factory)
    hints = typing.get_type_hints(spec.factory, localns={"BaseEstimator": BaseEstimator, "Pipeline": Pipeline})
    for key, value in params.items():
        if key not in signature.parameters or key == "random_state":
            known = ", ".join(p for p in signature.parameters if p != "random_state")
            raise FeatxUsageError(f"{name} has no parameter {key!r}; its parameters: {known}")
        if key in hints and not _type_ok(value, hints[key]):
            raise FeatxUsageError(f"{name}.{key}={value!r}: expected {_type_name(hints[key])}")
    try:
        model = spec.create(**params)
        for _, step in getattr(model, "steps", [("clf", model)]):
            if hasattr(step, "_parameter_constraints"):
                step._validate_params()
    except (TypeError, ValueError) as exc:
        raise FeatxUsageError(f"{name}: {str(exc).splitlines()[0]}") from None


def _pipeline(*steps) -> Pipeline:
    from sklearn.pipeline import Pipeline

    return Pipeline([(n, s) for n, s in steps if s is not None])


def _scaler():
    from sklearn.preprocessing import StandardScaler

    return "scale", StandardScaler()


def _pca(n_components: int | None, random_state):
    from ._capped import CappedPCA

    if not n_components:  # None or 0: no PCA step (the streamed and Ray xgboost heads read 0 the same way)
        return "pca", None
    # Randomised SVD: the exact one is minutes on 50,000 x 1,280, this is seconds. Capped to
    # the rows and features of the data it is fitted on (a small CV fold).
    return "pca", CappedPCA(n_components=n_components, svd_solver="randomized", random_state=random_state)


LOGREG_ENGINES = ("auto", "sklearn", "torch")


@register_head(
    "logreg",
    "multinomial logistic regression (L2, L-BFGS) on standardised features; C searched coarse-to-fine on val "
    "(k-fold CV when val is small) "
    "(engine=sklearn|torch, auto: torch on GPU)",
    search_space={"C": LOGREG_C_GRID},
    selection="coarse_fine",
    # Candidates stop at a 10x looser gradient tolerance; the refit at the chosen C uses
    # ``tol``. Measured on 20,000 x 1,280 synthetic: half the search time, the chosen C one
    # grid step (a quarter decade) away, test accuracy +0.5 points (tests allow one step).
    search_only={"tol": 1e-3},
)
def make_logreg(C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4, engine: str = "auto", device: str = "auto",
                random_state=None) -> Pipeline:
    """``engine``: ``sklearn`` (scipy L-BFGS, float64 or the data's float32), ``torch`` (hand-written
    gradient, torch L-BFGS with strong-Wolfe line search, on ``device``), ``auto``: torch when a
    GPU is present, else sklearn (on CPU both run at the same speed; the search is the saving)."""
    if engine not in LOGREG_ENGINES:
        raise FeatxUsageError(f"logreg engine must be one of {', '.join(LOGREG_ENGINES)}; got {engine!r}")
    if engine == "auto":
        engine = "torch" if xgboost_device(device).startswith("cuda") else "sklearn"
    if engine == "torch":
        from ._torch_logreg import TorchLogisticRegression

        clf = TorchLogisticRegression(C=C, max_iter=max_iter, tol=tol, device=device, random_state=random_state)
        return _pipeline(_scaler(), ("clf", clf))
    from sklearn.linear_model import LogisticRegression

    return _pipeline(_scaler(), ("clf", LogisticRegression(C=C, max_iter=max_iter, tol=tol, random_state=random_state)))


@register_head(
    "linear_svm",
    "linear SVM (squared hinge, one-vs-rest) on standardised features, sigmoid-calibrated probabilities",
    search_space={"C": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]},
    search_only={"calibration_folds": None},
)
def make_linear_svm(C: float = 1e-3, calibration_folds: int | None = 3, max_iter: int = 2000,
                    random_state=None) -> Pipeline:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import LinearSVC

    clf = LinearSVC(C=C, max_iter=max_iter, random_state=random_state)
    if calibration_folds:
        # One SVM on all the data, calibrated from out-of-fold decisions: probabilities
        # for `featx predict` at the price of ``calibration_folds`` extra fits. The search
        # skips it (``calibration_folds=None``): ranking C needs predictions only.
        clf = CalibratedClassifierCV(clf, method="sigmoid", cv=calibration_folds, ensemble=False)
    return _pipeline(_scaler(), ("clf", clf))


@register_head(
    "knn",
    "k-nearest neighbours, cosine distance after standardising and PCA, distance-weighted votes",
    search_space={"n_neighbors": [1, 5, 10, 20], "pca": [128]},
)
def make_knn(n_neighbors: int = 10, pca: int | None = 128, weights: str = "distance", random_state=None) -> Pipeline:
    from sklearn.preprocessing import Normalizer

    from ._capped import CappedKNeighborsClassifier

    return _pipeline(
        _scaler(), _pca(pca, random_state), ("norm", Normalizer()),
        ("clf", CappedKNeighborsClassifier(n_neighbors=n_neighbors, weights=weights, algorithm="brute")),
    )


@register_head(
    "decision_tree",
    "a single CART decision tree (Gini) on PCA-reduced features; depth and leaf size searched",
    search_space={"max_depth": [8, 16, None], "min_samples_leaf": [1, 5], "pca": [64]},
)
def make_decision_tree(max_depth: int | None = None, min_samples_leaf: int = 1, pca: int | None = 64,
                       random_state=None) -> Pipeline:
    from sklearn.tree import DecisionTreeClassifier

    clf = DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=min_samples_leaf, random_state=random_state)
    return _pipeline(_pca(pca, random_state), ("clf", clf))


@register_head(
    "random_forest",
    "random forest of 300 trees on the raw features; features per split and leaf size searched",
    search_space={"max_features": ["sqrt", 0.05], "min_samples_leaf": [1, 3]},
)
def make_random_forest(n_estimators: int = 300, max_features="sqrt", min_samples_leaf: int = 1, pca: int | None = None,
                       n_jobs: int = -1, random_state=None) -> Pipeline:
    from sklearn.ensemble import RandomForestClassifier

    clf = RandomForestClassifier(n_estimators=n_estimators, max_features=max_features, min_samples_leaf=min_samples_leaf,
                                 n_jobs=n_jobs, random_state=random_state)
    return _pipeline(_pca(pca, random_state), ("clf", clf))


@register_head(
    "gradient_boosting",
    "scikit-learn histogram gradient boosting; rounds by early stopping on val, tree size searched",
    search_space={"max_leaf_nodes": [15, 31], "pca": [128]},
    selection="early_stopping",
)
def make_gradient_boosting(max_iter: int = 300, learning_rate: float = 0.1, max_leaf_nodes: int = 31,
                           l2_regularization: float = 0.0, min_samples_leaf: int = 20, pca: int | None = 128,
                           random_state=None) -> Pipeline:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # early_stopping=False: rounds are chosen on the validation split by featx, not on
    # a slice of the training data; ``max_iter`` is the cap (and, once chosen, exact).
    clf = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes,
                                         l2_regularization=l2_regularization, min_samples_leaf=min_samples_leaf,
                                         early_stopping=False,
                                         random_state=random_state)
    return _pipeline(_pca(pca, random_state), ("clf", clf))


def xgboost_device(device: str = "auto") -> str:
    """``auto``: CUDA when torch sees a GPU (XGBoost's hist method runs there as is), else CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@register_head(
    "xgboost",
    "XGBoost (hist; GPU when present); rounds by early stopping on val, depth searched",
    search_space={"max_depth": [4, 6], "pca": [128]},
    selection="early_stopping",
)
def make_xgboost(n_estimators: int = 1000, learning_rate: float = 0.1, max_depth: int = 6, subsample: float = 0.8,
                 colsample_bytree: float = 0.8, pca: int | None = 128, device: str = "auto", n_jobs: int | None = None,
                 random_state=None) -> Pipeline:
    from xgboost import XGBClassifier

    clf = XGBClassifier(n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth, subsample=subsample,
                        colsample_bytree=colsample_bytree, tree_method="hist", device=xgboost_device(device),
                        n_jobs=n_jobs, random_state=random_state)
    return _pipeline(_pca(pca, random_state), ("clf", clf))


@register_head(
    "mlp",
    "one-hidden-layer MLP (ReLU, dropout, AdamW) in torch, GPU when present; epochs by early stopping on val",
    search_space={"dropout": [0.2, 0.5], "hidden_units": [512]},
    selection="early_stopping",
)
def make_mlp(hidden_units: int = 512, dropout: float = 0.5, lr: float = 1e-3, weight_decay: float = 1e-4,
             batch_size: int = 256, max_iter: int = 200, device: str = "auto", random_state=None) -> Pipeline:
    from ._mlp import MLPClassifier

    clf = MLPClassifier(hidden_units=hidden_units, dropout=dropout, lr=lr, weight_decay=weight_decay,
                        batch_size=batch_size, max_iter=max_iter, device=device, random_state=random_state)
    return _pipeline(_scaler(), ("clf", clf))


@register_head(
    "rbf_svm",
    "kernel SVM (RBF) on standardised features, sigmoid-calibrated probabilities; C and gamma searched on val "
    "(cost grows as n^2: small data)",
    search_space={"C": [1.0, 10.0, 100.0], "gamma": ["scale", 0.003, 0.001]},
    search_only={"calibration_folds": None},
)
def make_rbf_svm(C: float = 10.0, gamma="scale", calibration_folds: int | None = 3, random_state=None) -> Pipeline:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    clf = SVC(C=C, gamma=gamma, random_state=random_state)
    if calibration_folds:
        # As linear_svm: probabilities from out-of-fold decisions, skipped while searching.
        clf = CalibratedClassifierCV(clf, method="sigmoid", cv=calibration_folds, ensemble=False)
    return _pipeline(_scaler(), ("clf", clf))
