"""Scaling laws: power-law fits and teacher-student data (Bahri et al., "Explaining Neural Scaling Laws").

``fit_power_law`` fits ``y = offset + A * x**(-alpha)`` by least squares in log-log space, with the
offset (the loss at infinite x) given or profiled over a grid. ``make_teacher`` and ``sample_teacher`` draw inputs on a
d-dimensional manifold (a random linear embedding of a d-dimensional cube) in a higher ambient space
and labels them with a random teacher network.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.params import check_positive


def _loglog(x: np.ndarray, y: np.ndarray):
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    ss = float(((ly - ly.mean()) ** 2).sum())
    return -slope, float(np.exp(intercept)), float((resid ** 2).sum()), 1.0 - float((resid ** 2).sum()) / max(ss, 1e-300)


def fit_power_law(x, y, offset: float | str = 0.0, n_grid: int = 400) -> dict:
    """Fit ``y = offset + A x^(-alpha)``. ``offset`` is a number (held fixed) or ``"fit"``: then it is
    chosen on a grid in [0, min(y)) to minimize the squared log-residuals. Returns a dict with
    ``exponent`` (alpha, positive when y decreases), ``prefactor`` (A), ``offset`` and ``r2`` (of the
    log-log fit)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError("x and y must be 1-d arrays of the same length, at least 2.")
    if (x <= 0).any():
        raise ValueError("x must be positive for a power-law fit.")
    if offset == "fit":
        if len(x) < 3:
            raise ValueError("fitting the offset needs at least 3 points.")
        grid = min(y.min(), y.min() * (1 - 1e-9)) * (1 - np.geomspace(1, 1e-4, n_grid))
        best = None
        for c in grid:
            a, A, sse, r2 = _loglog(x, y - c)
            if best is None or sse < best[2]:
                best = (a, A, sse, r2, c)
        a, A, _, r2, c = best
        return {"exponent": float(a), "prefactor": A, "offset": float(c), "r2": r2}
    c = float(offset)
    if (y - c <= 0).any():
        raise ValueError("y - offset must be positive everywhere for a power-law fit.")
    a, A, _, r2 = _loglog(x, y - c)
    return {"exponent": float(a), "prefactor": A, "offset": c, "r2": r2}


def make_teacher(d: int, ambient: int, *, teacher_width: int = 64, n_teachers: int = 1, seed: int = 0) -> dict:
    """``n_teachers`` random teachers for inputs uniform on a d-dimensional cube [-1, 1]^d, embedded in
    ``ambient`` dimensions by a random orthonormal map: y = v . tanh(W z) / sqrt(width) on the d intrinsic
    coordinates z, with weights N(0, 1). Draw data from them with ``sample_teacher``."""
    for name, v in (("d", d), ("ambient", ambient), ("teacher_width", teacher_width), ("n_teachers", n_teachers)):
        check_positive(name, v, integer=True)
    if ambient < d:
        raise ValueError(f"ambient must be >= d; got ambient={ambient}, d={d}.")
    g = torch.Generator().manual_seed(seed)
    embed = torch.linalg.qr(torch.randn(n_teachers, ambient, d, generator=g))[0]  # (T, ambient, d)
    W = torch.randn(n_teachers, teacher_width, d, generator=g)
    v = torch.randn(n_teachers, teacher_width, generator=g)
    return {"embed": embed, "W": W, "v": v}


def sample_teacher(teacher: dict, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n fresh points from each teacher made by ``make_teacher``: x (T, n, ambient), y (T, n)."""
    T, _, d = teacher["embed"].shape
    z = torch.rand(T, n, d, generator=generator) * 2 - 1
    x = torch.einsum("tnd,tad->tna", z, teacher["embed"])
    h = torch.tanh(torch.einsum("tnd,twd->tnw", z, teacher["W"]))
    y = torch.einsum("tnw,tw->tn", h, teacher["v"]) / teacher["v"].shape[1] ** 0.5
    return x, y
