"""Operator learning (Lu et al., DeepONet): Gaussian-random-field inputs, operator data, and DeepONet.

Input functions u are sampled at m fixed sensors; an operator G maps u to a function G(u), queried at
locations y. Data are triplets (u(sensors), y, G(u)(y)), stored as x = [u(sensors), y] and target G(u)(y)
so that DeepONet and a plain network take the same inputs.
"""
from __future__ import annotations

import math

import numpy as np

import torch
from torch import nn

from ..core.params import check_positive
from ..nn.models import MLP


def rbf_kernel(x: torch.Tensor, length_scale: float) -> torch.Tensor:
    """The Gram matrix k(x_i, x_j) = exp(-(x_i - x_j)^2 / (2 l^2)) of the RBF kernel on points x (n,)."""
    check_positive("length_scale", length_scale)
    d = x[:, None] - x[None, :]
    return torch.exp(-d.pow(2) / (2 * length_scale ** 2))


def grf_sample(n: int, grid: torch.Tensor, length_scale: float = 0.2, generator: torch.Generator | None = None,
               jitter: float = 1e-10) -> torch.Tensor:
    """n samples of a zero-mean Gaussian random field with the RBF kernel on ``grid``: shape (n, len(grid)).

    Computed in float64 as L z with L the Cholesky factor of the Gram matrix (plus ``jitter`` on the
    diagonal, grown tenfold until the factorization succeeds), z standard normal; returned in grid's dtype.
    """
    check_positive("n", n, integer=True)
    K = rbf_kernel(grid.double().cpu(), length_scale)
    eye = torch.eye(len(grid), dtype=torch.float64)
    while True:
        L, info = torch.linalg.cholesky_ex(K + jitter * eye)
        if int(info) == 0:
            break
        jitter *= 10
    z = torch.randn(len(grid), n, dtype=torch.float64, generator=generator)
    return (L @ z).T.to(dtype=grid.dtype, device=grid.device)


def antiderivative(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """G(u)(x) = integral_0^x u(s) ds on the grid x (starting at x[0]), by the cumulative trapezoid rule.

    u is (..., n) sampled at x (n,); returns (..., n), zero at x[0].
    """
    h = x[1:] - x[:-1]
    steps = 0.5 * (u[..., 1:] + u[..., :-1]) * h
    return torch.cat([torch.zeros_like(u[..., :1]), steps.cumsum(-1)], -1)


def rk4_solve(f, u: torch.Tensor, x: torch.Tensor, s0: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Solve ds/dx = f(s, u(x), x) with s(x[0]) = s0 by classical RK4 on the grid x, batched over u (N, n).

    u is known on the grid only; at half steps it is linearly interpolated (the mean of its neighbours).
    Returns s on the grid, shape (N, n).
    """
    s = torch.as_tensor(s0, dtype=u.dtype, device=u.device).expand(u.shape[0]).clone()
    out = [s]
    for i in range(len(x) - 1):
        h, xi = x[i + 1] - x[i], x[i]
        ua, ub = u[:, i], u[:, i + 1]
        um = 0.5 * (ua + ub)
        k1 = f(s, ua, xi)
        k2 = f(s + 0.5 * h * k1, um, xi + 0.5 * h)
        k3 = f(s + 0.5 * h * k2, um, xi + 0.5 * h)
        k4 = f(s + h * k3, ub, xi + h)
        s = s + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(s)
    return torch.stack(out, -1)


def nonlinear_ode(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The paper's nonlinear ODE operator: s with ds/dx = -s^2 + u(x), s(0) = 0, solved by RK4 on x."""
    return rk4_solve(lambda s, ux, _: -s * s + ux, u, x, 0.0)


def triplets(u: torch.Tensor, Gu: torch.Tensor, grid: torch.Tensor, points: int | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Operator data as (x, y): x = [u(sensors), query location] (N*P, m+1), y = G(u)(location) (N*P, 1).

    u (N, m) is sampled at the sensors, Gu (N, n) on ``grid`` (n,); ``points`` query locations per function
    are drawn from the grid without replacement (all n grid points, in order, when None). Rows are grouped
    by function: rows i*P ... (i+1)*P - 1 belong to function i.
    """
    N, n = Gu.shape
    if points is None:
        idx = torch.arange(n).expand(N, n)
    else:
        check_positive("points", points, integer=True)
        idx = torch.rand(N, n, generator=generator).argsort(1)[:, :points]
    idx = idx.to(Gu.device)
    P = idx.shape[1]
    y_loc = grid[idx].reshape(-1, 1)
    target = torch.gather(Gu, 1, idx).reshape(-1, 1)
    xin = torch.cat([u.repeat_interleave(P, 0), y_loc], 1)
    return xin, target


class DeepONet(nn.Module):
    """Unstacked DeepONet: G(u)(y) = sum_k b_k(u) t_k(y) + b_0.

    The branch net (an MLP) maps the m sensor values to p numbers b_k; the trunk net (an MLP, whose
    output also passes through the activation, as in the paper) maps the location y (d_y numbers) to p
    numbers t_k. Input x is [u(sensors), y] of shape (B, m + d_y); output (B, 1).
    """

    def __init__(self, m: int, d_y: int = 1, width: int = 40, depth: int = 1, p: int = 40, act: str = "relu"):
        super().__init__()
        check_positive("m", m, integer=True)
        check_positive("p", p, integer=True)
        self.m = m
        self.branch = MLP(m, width, depth, p, act=act)
        self.trunk = MLP(d_y, width, depth, p, act=act)
        self.trunk_act = self.trunk.act
        self.bias = nn.Parameter(torch.zeros(1))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The branch outputs b (B, p) and trunk outputs t (B, p) for inputs x = [u, y]."""
        return self.branch(x[:, :self.m]), self.trunk_act(self.trunk(x[:, self.m:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = self.features(x)
        return (b * t).sum(-1, keepdim=True) + self.bias


def fnn_width_for(n_params: int, d_in: int, depth: int, d_out: int = 1) -> int:
    """The width w of an MLP(d_in, w, depth, d_out) whose parameter count is closest to n_params."""
    def count(w):
        return (d_in + 1) * w + (depth - 1) * (w + 1) * w + (w + 1) * d_out
    return min(range(1, 4 * int(math.sqrt(n_params)) + d_in + 10), key=lambda w: abs(count(w) - n_params))


def train_regression_ensemble(build, seeds, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float = 1e-3,
                              batch_size: int = 256, checkpoints: int = 10, progress: bool = True,
                              desc: str = "training ensemble"):
    """Train one regression network per seed on its own data, all at once, with Adam on the mean squared
    error, and record every member's training MSE over its whole training set ``checkpoints`` times.

    ``x`` is (N, n, d) and ``y`` (N, n): member i fits (x[i], y[i]). Member i is initialized after
    ``torch.manual_seed(seeds[i])`` and draws its minibatches from a generator seeded ``seeds[i]``, as
    :func:`repro.nn.ensemble.train_ensemble` does with ``per_model=True``; the difference is the record of
    the full training loss along the way, from which a chapter can tell whether a member has reached its
    loss plateau. Returns the ensemble and an array (checkpoints, N) of training MSEs, with the steps.
    """
    from tqdm.auto import tqdm

    from ..nn.ensemble import Ensemble, ensemble_batch_indices
    from ..nn.train import make_optimizer

    check_positive("steps", steps, integer=True)
    check_positive("checkpoints", checkpoints, integer=True)
    seeds = list(seeds)
    if x.shape[0] != len(seeds) or y.shape != x.shape[:2]:
        raise ValueError(f"x must be (N, n, d) and y (N, n) with N={len(seeds)} members.")
    ens = Ensemble.from_seeds(build, seeds, x.device)
    opt = make_optimizer("adam", list(ens.params.values()), lr)
    stream = ensemble_batch_indices(x.shape[1], batch_size, seeds, x.device)
    rows = torch.arange(len(seeds), device=x.device)[:, None]
    at = sorted({max(1, round(steps * (k + 1) / checkpoints)) for k in range(checkpoints)})

    def full_mse():
        with torch.no_grad():
            out = torch.cat([ens.outputs(x[:, i:i + 4096], per_model=True)[..., 0] for i in range(0, x.shape[1], 4096)], 1)
            return (out - y).pow(2).mean(1).cpu().numpy()

    history = []
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0):
        idx = next(stream)
        out = ens.outputs(x[rows, idx], per_model=True)[..., 0]
        loss = (out - torch.gather(y, 1, idx)).pow(2).mean(1).sum()  # members share no parameters
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in at:
            history.append(full_mse())
    return ens, np.array(history), np.array(at)
