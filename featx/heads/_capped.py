"""PCA and k-NN whose size is capped to the data they are fitted on, inside ``fit``.

A registered head asks for a fixed PCA size (``pca=128``) and k (``n_neighbors=20``);
on a small training set — a CV fold of 60 rows in ``GridSearchCV`` — scikit-learn's own
estimators refuse (``n_components=128 must be between 0 and min(n_samples, n_features)``).
These two wrappers keep the asked value as their parameter (scikit-learn's contract: ``fit``
never changes a parameter) and fit the library estimator with ``min(asked, what the data
allows)``; the value used is ``n_components_`` / ``n_neighbors_``. featx's own search
caps and records the same values beforehand (:func:`featx.heads._adapt.adapt_params`),
so these caps only act for estimators used directly.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

__all__ = ["CappedPCA", "CappedKNeighborsClassifier"]


class CappedPCA(TransformerMixin, BaseEstimator):
    """``PCA(n_components=min(n_components, n_samples, n_features))``, randomised SVD."""

    def __init__(self, n_components: int = 128, svd_solver: str = "randomized", random_state=None):
        self.n_components = n_components
        self.svd_solver = svd_solver
        self.random_state = random_state

    def fit(self, X, y=None):
        from sklearn.decomposition import PCA

        X = np.asarray(X)
        self.n_components_ = int(min(self.n_components, *X.shape))
        self.pca_ = PCA(n_components=self.n_components_, svd_solver=self.svd_solver,
                        random_state=self.random_state).fit(X)
        # C order, as a saved head reloads it: the same BLAS path before and after a round
        # trip, so a reloaded head transforms bit for bit alike (trees split on exact values).
        self.pca_.components_ = np.ascontiguousarray(self.pca_.components_)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "pca_")
        return self.pca_.transform(X)


class CappedKNeighborsClassifier(ClassifierMixin, BaseEstimator):
    """``KNeighborsClassifier(n_neighbors=min(n_neighbors, n_samples))``, brute force."""

    def __init__(self, n_neighbors: int = 10, weights: str = "distance", algorithm: str = "brute"):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.algorithm = algorithm

    def fit(self, X, y):
        from sklearn.neighbors import KNeighborsClassifier

        X = np.asarray(X)
        self.n_neighbors_ = int(min(self.n_neighbors, len(X)))
        self.knn_ = KNeighborsClassifier(n_neighbors=self.n_neighbors_, weights=self.weights,
                                         algorithm=self.algorithm).fit(X, y)
        self.classes_ = self.knn_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        check_is_fitted(self, "knn_")
        return self.knn_.predict(X)

    def predict_proba(self, X):
        check_is_fitted(self, "knn_")
        return self.knn_.predict_proba(X)
