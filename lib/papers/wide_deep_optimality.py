"""The wide-deep-optimality chapter (Radhakrishnan, Belkin and Uhler, 2023, "Wide and deep neural
networks achieve consistency for classification"): data on the sphere
from class-conditional Dirichlet distributions, and the limits of infinitely wide networks as depth
grows (the majority vote, and for singular kernels the nearest-neighbour-like classifier).

The NNGP and NTK recursions themselves are in :mod:`repro.methods.kernels`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..core.params import check_positive, check_range
from ..methods.kernels import cosines, get_activation


def dirichlet_sphere(n: int, alpha_pos, alpha_neg, prior_pos: float = 0.4, seed: int = 0, stratified: bool = False,
                     device=None):
    """Two classes drawn from Dirichlet distributions on the simplex and projected radially onto the unit
    sphere, as in the released code of Radhakrishnan, Belkin and Uhler (2023).

    Class +1 (probability ``prior_pos``) has Dirichlet(``alpha_pos``), class -1 Dirichlet(``alpha_neg``);
    a simplex point s is mapped to s / |s|. The projection is a bijection onto the positive orthant of
    the sphere, so the Bayes rule is the one on the simplex. ``stratified`` makes the class counts exactly
    round(prior_pos * n) and the rest (instead of binomial). Returns (X, y, eta): float64 inputs of unit
    norm (n, len(alpha)), int64 labels in {-1, +1}, and eta = P(y = +1 | x), from which the Bayes
    classifier sign(2 eta - 1), its error E[min(eta, 1 - eta)] and any classifier's conditional error
    are computed exactly.
    """
    from scipy.stats import dirichlet
    check_positive("n", n, integer=True)
    check_range("prior_pos", prior_pos, 0.0, 1.0)
    a1, a2 = np.asarray(alpha_pos, dtype=float), np.asarray(alpha_neg, dtype=float)
    if a1.shape != a2.shape or a1.ndim != 1 or len(a1) < 2 or (a1 <= 0).any() or (a2 <= 0).any():
        raise ValueError("alpha_pos and alpha_neg must be positive vectors of the same length >= 2.")
    rng = np.random.default_rng(seed)
    n_pos = int(round(prior_pos * n)) if stratified else int(rng.binomial(n, prior_pos))
    s = np.concatenate([rng.dirichlet(a1, n_pos), rng.dirichlet(a2, n - n_pos)])
    y = np.concatenate([np.ones(n_pos, dtype=np.int64), -np.ones(n - n_pos, dtype=np.int64)])
    perm = rng.permutation(n)
    s, y = s[perm], y[perm]
    s = np.clip(s, 1e-300, None)
    s = s / s.sum(1, keepdims=True)
    logp = np.log(prior_pos) + dirichlet.logpdf(s.T, a1) if prior_pos > 0 else np.full(n, -np.inf)
    logq = np.log(1 - prior_pos) + dirichlet.logpdf(s.T, a2) if prior_pos < 1 else np.full(n, -np.inf)
    eta = 1 / (1 + np.exp(np.clip(logq - logp, -700, 700)))
    x = s / np.linalg.norm(s, axis=1, keepdims=True)
    dev = device or torch.device("cpu")
    return (torch.tensor(x, dtype=torch.float64, device=dev), torch.tensor(y, device=dev),
            torch.tensor(eta, dtype=torch.float64, device=dev))




def singular_exponent(act) -> float:
    """The exponent alpha of the infinitely deep kernel near the diagonal, Theta ~ (1 - rho)^(-alpha)
    ~ |x - z|^(-2 alpha), for a dual with xi(0) = 0 and 0 < xi'(0) < 1 < xi'(1):
    alpha = log(1 / xi'(0)) / log(xi'(1)). It is infinite when xi'(0) = 0 (1-nearest neighbour) and
    the classifier is consistent on S^d when 2 alpha = d."""
    act = get_activation(act)
    a0, a1 = act.slope(0.0), act.slope(1.0)
    if a1 <= 1:
        return 0.0
    if a0 <= 0:
        return math.inf
    return math.log(1 / a0) / math.log(a1)


def majority_vote(y_train: Tensor, n_test: int) -> Tensor:
    """The label most common in the training set, for every test point (ties: the smallest label)."""
    vals, counts = torch.unique(torch.as_tensor(y_train), return_counts=True)
    return vals[counts.argmax()].repeat(n_test)


def nearest_neighbor(X_train: Tensor, y_train: Tensor, X_test: Tensor) -> Tensor:
    """1-nearest-neighbour labels by angle (the largest cosine) between points on the sphere."""
    rho = cosines(X_test, X_train)
    return torch.as_tensor(y_train).to(rho.device)[rho.argmax(1)]


def singular_kernel_classify(X_train: Tensor, y_train: Tensor, X_test: Tensor, exponent: float) -> Tensor:
    """The singular-kernel (interpolating) classifier sign(sum_i y_i / |x - x_i|^exponent) on +-1
    labels; with ``exponent`` equal to the data's dimension d this is the Hilbert kernel estimate of
    Devroye, Gyorfi and Krzyzak (1998), which is consistent. Computed in log space."""
    rho = cosines(X_test, X_train)
    logdist = 0.5 * torch.log((2 - 2 * rho).clamp_min(1e-300))
    logw = -exponent * logdist
    logw = logw - logw.max(1, keepdim=True).values
    score = torch.exp(logw) @ torch.as_tensor(y_train).to(logw)
    return torch.where(score >= 0, 1, -1)
