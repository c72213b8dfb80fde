"""Tree ensembles as smoothers (Curth, Jeffares and van der Schaar, 2024).

A regression tree predicts the (weighted) mean of the training labels in the leaf a query falls
into, so its prediction is linear in the training labels,

    f(x) = sum_i s_i(x) y_i,   s_i(x) = w_i 1{leaf(x) = leaf(x_i)} / sum_j w_j 1{leaf(x) = leaf(x_j)},

with w_i the number of times training point i was drawn into the tree's bootstrap sample (1 without
bootstrap). A forest averages its trees, so its smoother weights are the average of the trees'
weights. The *effective number of parameters* of a smoother on a set of m evaluation inputs is

    p = (n / m) sum_{x in set} ||s(x)||^2,

which equals trace(S) = n for an interpolating smoother evaluated on its training inputs, the
number of leaves for a tree evaluated on its training inputs, and 1 for the global mean.

This module computes the smoother matrices of fitted scikit-learn trees and forests from their
leaf co-membership (``.apply``) and in-bag multiplicities, the effective parameters, their path as
trees are added, and the paper's simulated regression data ("MARS additive").
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["in_bag_counts", "tree_smoother", "forest_smoother", "effective_parameters", "smoother_path",
           "mars_additive"]


def _trees(model):
    """The list of fitted trees of a forest, or [model] for a single fitted tree."""
    if hasattr(model, "estimators_"):
        return list(model.estimators_)
    if hasattr(model, "tree_"):
        return [model]
    raise TypeError(f"expected a fitted scikit-learn tree or forest, got {type(model).__name__}")


def in_bag_counts(model, n_samples: int) -> np.ndarray:
    """(n_trees, n_samples) array: how often each training point was drawn for each tree.

    All ones for a single tree or a forest without bootstrap. Uses the forest's public
    ``estimators_samples_`` (the in-bag indices, with repetitions)."""
    trees = _trees(model)
    if not getattr(model, "bootstrap", False):
        return np.ones((len(trees), n_samples), dtype=np.int64)
    return np.stack([np.bincount(idx, minlength=n_samples) for idx in model.estimators_samples_])


def tree_smoother(leaves_query: np.ndarray, leaves_train: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Smoother matrix (m, n) of one tree from leaf indices of m query and n training inputs.

    Row q holds w_j 1{leaf_q = leaf_j} / sum_k w_k 1{leaf_q = leaf_k}; ``weights`` are the in-bag
    multiplicities (None: all ones). Every leaf of a fitted tree holds in-bag training weight, so
    every row sums to one."""
    leaves_query = np.asarray(leaves_query)
    leaves_train = np.asarray(leaves_train)
    w = np.ones(len(leaves_train)) if weights is None else np.asarray(weights, dtype=float)
    same = leaves_query[:, None] == leaves_train[None, :]
    S = same * w[None, :]
    total = S.sum(1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("a query falls into a leaf with no in-bag training weight")
    return S / total


def _leaf_ids(tree, X):
    return tree.apply(np.asarray(X, dtype=np.float32))


def forest_smoother(model, X_train, X_query) -> np.ndarray:
    """Smoother matrix (m, n) of a fitted tree or forest: ``S @ y_train`` equals ``model.predict(X_query)``.

    Works for ``DecisionTreeRegressor``, ``RandomForestRegressor`` and ``ExtraTreesRegressor``
    (with or without bootstrap, any ``max_samples``), trained on ``X_train`` without sample weights."""
    return smoother_path(model, X_train, {"q": X_query}, return_matrices=True)["q"]


def effective_parameters(S: np.ndarray, n_train: int | None = None) -> float:
    """p = (n / m) sum_q ||S[q]||^2 for an (m, n) smoother matrix (n defaults to S.shape[1])."""
    S = np.asarray(S, dtype=float)
    n = S.shape[1] if n_train is None else n_train
    return float(n * np.mean(np.sum(S ** 2, axis=1)))


def smoother_path(model, X_train, X_queries: dict, every: int = 1, return_matrices: bool = False):
    """Effective parameters of the forest made of its first b trees, for b = every, 2 every, ..., B.

    ``X_queries`` maps a name ("train", "test", ...) to query inputs. Returns a DataFrame with a
    column ``n_trees`` and one column per query set; with ``return_matrices=True`` it returns the
    final smoother matrices {name: (m, n)} instead."""
    n = len(X_train)
    trees = _trees(model)
    counts = in_bag_counts(model, n)
    sums = {k: np.zeros((len(X), n)) for k, X in X_queries.items()}
    rows = []
    for b, tree in enumerate(trees, start=1):
        leaves_train = _leaf_ids(tree, X_train)
        # s_j(x) = 1{leaf(x) = leaf(x_j)} a_j with a_j = w_j / (in-bag weight of x_j's leaf)
        w = counts[b - 1].astype(float)
        leaf_weight = np.bincount(leaves_train, weights=w, minlength=tree.tree_.node_count)
        a = w / leaf_weight[leaves_train]
        for k, X in X_queries.items():
            leaves = _leaf_ids(tree, X)
            if np.any(leaf_weight[leaves] <= 0):
                raise ValueError("a query falls into a leaf with no in-bag training weight")
            sums[k] += (leaves[:, None] == leaves_train[None, :]) * a
        if not return_matrices and (b % every == 0 or b == len(trees)):
            rows.append({"n_trees": b, **{k: effective_parameters(s / b) for k, s in sums.items()}})
    if return_matrices:
        return {k: s / len(trees) for k, s in sums.items()}
    return pd.DataFrame(rows)


def mars_additive(n: int, d: int = 5, sigma: float = 1.0, rng: np.random.Generator | int | None = None,
                  return_truth: bool = False):
    """The paper's simulated regression data: x ~ U[0, 1]^d (d >= 5) and

        y = 0.1 exp(4 x1) + 4 / (1 + exp(-20 (x2 - 1/2))) + 3 x3 + 2 x4 + x5 + N(0, sigma^2).

    Returns (X, y), or (X, y, f(X)) with ``return_truth``."""
    if d < 5:
        raise ValueError(f"d must be at least 5; got {d}")
    rng = np.random.default_rng(rng)
    X = rng.uniform(0, 1, size=(n, d))
    f = (0.1 * np.exp(4 * X[:, 0]) + 4 / (1 + np.exp(-20 * (X[:, 1] - 0.5))) + 3 * X[:, 2] + 2 * X[:, 3]
         + X[:, 4])
    y = f + sigma * rng.standard_normal(n)
    return (X, y, f) if return_truth else (X, y)
