"""Learning permutations of binary inputs with wide two-layer ReLU networks and their ensembles.

The setting of Giapitzakis, Back de Luca and Fountoulakis (2025). A permutation ``perm`` of length
k maps the standard basis vector e_i to e_perm[i], and so any binary input x to ``x P`` (the bits
moved to their new places). A two-layer ReLU network in the NTK parametrization,

    f(x) = (1 / sqrt(m)) sum_r a_r relu(w_r . x),    w_r ~ N(0, I_k),  a_r in {-1, +1}^k fixed,

is trained by gradient descent on the k basis vectors only, and tested on all 2^k - 1 nonzero
binary inputs. At infinite width its trained output is a Gaussian process (Lee et al., 2019) with

    mean  Theta(x, X) Theta(X, X)^-1 Y,
    cov   K(x, x') - V(x) K(X, x') - K(x, X) V(x')^T + V(x) K(X, X) V(x')^T,  V(x) = Theta(x, X) Theta(X, X)^-1,

where K is the network's Gaussian-process kernel at initialization (NNGP) and Theta its neural
tangent kernel (NTK). For ReLU both are arc-cosine kernels (Cho and Saul, 2009):

    K(x, x')     = |x| |x'| (sin t + (pi - t) cos t) / (2 pi),
    Theta(x, x') = x . x' (pi - t) / (2 pi)          (first layer trained; + K(x, x') if a is trained too),

t the angle between x and x'. On the basis-vector training set the mean is exactly
``lambda_s * (x P)``, with s the number of ones of x and lambda_s = 1/2 + arcsin(1/sqrt(s)) / pi > 1/2:
rounding at 1/2 recovers the permutation, and averaging M independently trained networks divides
the variance by M. This module holds the model, the kernels, the limiting Gaussian process (closed
form and general), and the exactness measurements of averaged-and-rounded ensembles.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.params import ParameterError, check_positive
from ..methods.kernels import relu_dual, relu_dual_prime

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

def nonzero_binary_inputs(k: int, dtype=torch.float32, device=None) -> Tensor:
    """All 2^k - 1 nonzero binary vectors of length k, shape (2^k - 1, k); row n - 1 holds the binary
    digits of n (coordinate i is bit i), so rows 2^i - 1 are the basis vectors e_i."""
    check_positive("k", k, integer=True)
    if k > 24:
        raise ParameterError(f"k must be at most 24 to enumerate all 2^k - 1 inputs; got {k}.")
    n = torch.arange(1, 2 ** k, device=device)
    return ((n[:, None] >> torch.arange(k, device=device)) & 1).to(dtype)


def apply_permutation(x: Tensor, perm: Sequence[int] | Tensor) -> Tensor:
    """Move bit i of every row of x to position perm[i] (so e_i -> e_perm[i])."""
    perm = torch.as_tensor(perm, device=x.device)
    if sorted(perm.tolist()) != list(range(x.shape[-1])):
        raise ParameterError(f"perm must be a permutation of 0..{x.shape[-1] - 1}; got {perm.tolist()}.")
    return x[..., torch.argsort(perm)]


def round_binary(f: Tensor) -> Tensor:
    """The rounding step: each output to the nearer of 0 and 1 (1 where f > 1/2)."""
    return (f > 0.5).to(f.dtype)


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

class TwoLayerReLU(nn.Module):
    """f(x) = a^T relu(W x) / sqrt(width) in the NTK parametrization, without biases (Du et al., 2019).

    W ~ N(0, 1) entrywise is trained; the output weights ``a`` are random signs, fixed (a buffer)
    unless ``train_output``, in which case they are a parameter initialized the same way.
    """

    def __init__(self, d_in: int, width: int, d_out: int, train_output: bool = False):
        super().__init__()
        for name, v in (("d_in", d_in), ("width", width), ("d_out", d_out)):
            check_positive(name, v, integer=True)
        self.width = width
        self.W = nn.Parameter(torch.randn(width, d_in))
        a = torch.randint(0, 2, (width, d_out)).float() * 2 - 1
        if train_output:
            self.a = nn.Parameter(a)
        else:
            self.register_buffer("a", a)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x @ self.W.T) @ self.a / math.sqrt(self.width)


def half_squared_error(out: Tensor, y: Tensor) -> Tensor:
    """(1/2) sum of squared errors: with it, gradient descent at rate eta moves the outputs of a wide
    network by -eta Theta (f - y), Theta the NTK."""
    return 0.5 * (out - y).pow(2).sum()


# ----------------------------------------------------------------------------------------------
# Kernels and the limiting Gaussian process
# ----------------------------------------------------------------------------------------------

def relu_kernels(X1: Tensor, X2: Tensor | None = None, train_output: bool = False) -> tuple[Tensor, Tensor]:
    """(NNGP K, NTK Theta) of :class:`TwoLayerReLU` at infinite width between the rows of X1 and X2,
    in float64. Rows must be nonzero. Theta is the first layer's NTK, plus K when ``train_output``."""
    X1 = torch.as_tensor(X1).to(torch.float64)
    X2 = X1 if X2 is None else torch.as_tensor(X2).to(device=X1.device, dtype=torch.float64)
    n1, n2 = X1.norm(dim=1), X2.norm(dim=1)
    if (n1 == 0).any() or (n2 == 0).any():
        raise ParameterError("relu_kernels needs nonzero inputs (the angle to 0 is undefined).")
    dot = X1 @ X2.T
    rho = (dot / (n1[:, None] * n2[None, :])).clamp(-1, 1)
    K = n1[:, None] * n2[None, :] * relu_dual(rho) / 2
    theta = dot * relu_dual_prime(rho) / 2
    if train_output:
        theta = theta + K
    return K, theta


def limiting_gp(X_train: Tensor, Y_train: Tensor, X_test: Tensor, train_output: bool = False) -> tuple[Tensor, Tensor]:
    """Mean (n_test, d_out) and covariance (n_test, n_test) of the infinitely wide network's output after
    gradient descent to convergence on (X_train, Y_train) with the half squared error. Every output
    coordinate is an independent Gaussian process with this covariance (Lee et al., 2019)."""
    Y = torch.as_tensor(Y_train).to(torch.float64)
    K_tt, T_tt = relu_kernels(X_train, None, train_output)
    K_xt, T_xt = relu_kernels(X_test, X_train, train_output)
    K_xx, _ = relu_kernels(X_test, None, train_output)
    V = torch.linalg.solve(T_tt, T_xt.T).T  # Theta(x, X) Theta(X, X)^-1
    mean = V @ Y.to(V.device)
    cov = K_xx - V @ K_xt.T - K_xt @ V.T + V @ K_tt @ V.T
    return mean, (cov + cov.T) / 2


def permutation_gp_moments(s) -> tuple[np.ndarray, np.ndarray]:
    """Closed form of the limiting process on the basis-vector training set, for an input with s ones:
    the mean on the positions the permutation fills, lambda_s = 1/2 + arcsin(1/sqrt(s)) / pi (0 elsewhere),
    and the variance of every output coordinate,

        sigma_s^2 = s/2 - 2 lambda_s s c_s + lambda_s^2 (s/2 + s (s - 1) / (2 pi)),
        c_s = K(x, e_i) = (sqrt(s - 1) + pi - t_s) / (2 pi),  t_s = arccos(1/sqrt(s)),  for i in the support."""
    s = np.asarray(s, dtype=np.float64)
    if np.any(s < 1):
        raise ParameterError("s, the number of ones of the input, must be at least 1.")
    t = np.arccos(1 / np.sqrt(s))
    lam = 1 - t / np.pi
    c = (np.sqrt(s - 1) + np.pi - t) / (2 * np.pi)
    var = s / 2 - 2 * lam * s * c + lam ** 2 * (s / 2 + s * (s - 1) / (2 * np.pi))
    return lam, np.clip(var, 0.0, None)


# ----------------------------------------------------------------------------------------------
# Ensembles: average, round, score
# ----------------------------------------------------------------------------------------------

def _subset_weights(n_pool: int, size: int, draws: int, generator: torch.Generator, device) -> Tensor:
    """(draws, n_pool) averaging weights: 1/size on ``size`` members drawn without replacement."""
    idx = torch.rand(draws, n_pool, generator=generator).argsort(1)[:, :size]
    w = torch.zeros(draws, n_pool)
    w.scatter_(1, idx, 1.0 / size)
    return w.to(device)


def _scores(M: int, acc_per_input: Tensor) -> tuple[list, Tensor]:
    """Rows (size, draw, exact_acc, all_exact) from a (draws, n) boolean tensor, and its per-input mean."""
    acc = acc_per_input.float().mean(1).cpu().numpy()
    rows = [{"size": M, "draw": i, "exact_acc": float(a), "all_exact": bool(a == 1.0)} for i, a in enumerate(acc)]
    return rows, acc_per_input.float().mean(0).cpu()


def _finish(rows: list, per_input: list, sizes, per_input_wanted: bool):
    scores = pd.DataFrame(rows)
    if not per_input_wanted:
        return scores
    return scores, pd.DataFrame(torch.stack(per_input).numpy(), index=pd.Index(list(sizes), name="size"))


def ensemble_exactness(outputs: Tensor, targets: Tensor, sizes: Sequence[int], draws: int = 64,
                       generator: torch.Generator | None = None, per_input: bool = False):
    """Score averaged-and-rounded ensembles drawn from a pool of trained networks.

    ``outputs`` (n_pool, n, k) are the networks' outputs on n test inputs, ``targets`` (n, k). For each
    ensemble size M in ``sizes`` (at most n_pool), ``draws`` ensembles of M distinct members are drawn
    at random (M = n_pool: the whole pool, once). Returns one row per ensemble: size, draw,
    exact_acc (fraction of inputs mapped exactly) and all_exact (every input exact). With
    ``per_input`` it also returns a (sizes x n) table: the fraction of ensembles that map each input exactly."""
    n_pool = outputs.shape[0]
    generator = generator or torch.Generator().manual_seed(0)
    flat = outputs.reshape(n_pool, -1)
    targets = targets.to(device=outputs.device, dtype=outputs.dtype)
    rows, inputs = [], []
    for M in sizes:
        check_positive("ensemble size", M, integer=True)
        if M > n_pool:
            raise ParameterError(f"ensemble sizes must be at most the pool size {n_pool}; got {M}.")
        d = 1 if M == n_pool else draws
        w = _subset_weights(n_pool, M, d, generator, outputs.device).to(flat.dtype)
        avg = (w @ flat).view(d, *outputs.shape[1:])
        new, p = _scores(M, (round_binary(avg) == targets).all(-1))
        rows += new
        inputs.append(p)
    return _finish(rows, inputs, sizes, per_input)


def gp_exactness(mean: Tensor, cov: Tensor, targets: Tensor, sizes: Sequence[int], draws: int = 2000,
                 seed: int = 0, per_input: bool = False):
    """The same scores for ensembles of infinitely wide networks: the average of M members is the
    limiting Gaussian process with its covariance divided by M, sampled ``draws`` times (every output
    coordinate independently), on the device of ``cov``."""
    cov = torch.as_tensor(cov, dtype=torch.float64)
    dev = cov.device
    mean = torch.as_tensor(mean, dtype=torch.float64, device=dev)
    targets = torch.as_tensor(targets, dtype=torch.float64, device=dev)
    generator = torch.Generator(device=dev).manual_seed(seed)
    n, k = mean.shape
    evals, evecs = torch.linalg.eigh(cov)
    L = evecs * evals.clamp_min(0).sqrt()  # cov = L L^T, robust to the exact zeros at training points
    rows, inputs = [], []
    for M in sizes:
        check_positive("ensemble size", M, integer=True)
        z = torch.randn(draws, n, k, generator=generator, dtype=torch.float64, device=dev)
        avg = mean + (L @ z) / math.sqrt(M)
        new, p = _scores(M, (round_binary(avg) == targets).all(-1))
        rows += new
        inputs.append(p)
    return _finish(rows, inputs, sizes, per_input)


def sufficient_size(scores, level: float = 0.9) -> float:
    """The smallest ensemble size from which on (for it and every larger size scored) the success
    probability is at least ``level``; NaN when even the largest size falls short.

    ``scores`` is a table from :func:`ensemble_exactness` or :func:`gp_exactness` (success: every input
    exact), or a Series of success probabilities indexed by size (for one input: a column of the
    per-input table; for the hardest input: its row-wise minimum)."""
    if isinstance(scores, pd.DataFrame):
        scores = scores.groupby("size")["all_exact"].mean()
    p = scores.sort_index()
    ok = (p >= level).to_numpy()
    if not ok[-1]:
        return float("nan")
    first = len(ok) - int(np.argmin(ok[::-1])) if not ok.all() else 0
    return float(p.index[first])


def size_grid(largest: int, per_octave: int = 4) -> list[int]:
    """Ensemble sizes 1, 2, ... up to ``largest``, about ``per_octave`` per doubling, no repeats."""
    check_positive("largest", largest, integer=True)
    n = int(np.floor(np.log2(largest) * per_octave + 1e-9))
    return sorted(set(int(round(2 ** (i / per_octave))) for i in range(n + 1)) | {largest})
