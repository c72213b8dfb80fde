"""Unit-level comparison of two networks' representations (Li et al., 2016, "Convergent learning").

Representations are matrices of shape (n_samples, n_units) holding the activations of one layer's
units on the same inputs in two networks. All functions work on CPU tensors or arrays and return
NumPy arrays."""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def unit_correlations(a, b, eps: float = 1e-12) -> np.ndarray:
    """Pearson correlation between every unit of ``a`` (n, p) and every unit of ``b`` (n, q): shape (p, q).
    A unit that never varies (a dead ReLU) has correlation 0 with everything."""
    a, b = _np(a), _np(b)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b):
        raise ValueError(f"a and b must be (n, p) and (n, q) with the same n; got {a.shape} and {b.shape}.")
    a = a - a.mean(0)
    b = b - b.mean(0)
    sa, sb = np.sqrt((a * a).sum(0)), np.sqrt((b * b).sum(0))
    c = (a.T @ b) / np.outer(np.where(sa > eps, sa, np.inf), np.where(sb > eps, sb, np.inf))
    return np.clip(c, -1.0, 1.0)


def live_units(a, eps: float = 1e-12) -> np.ndarray:
    """Boolean mask of the units of ``a`` (n, p) whose activation varies over the samples."""
    return _np(a).std(0) > eps


def semi_matching(corr) -> tuple[np.ndarray, np.ndarray]:
    """Each row unit's best partner among the columns (several rows may pick the same column):
    returns (partner index, correlation) per row."""
    corr = _np(corr)
    j = corr.argmax(1)
    return j, corr[np.arange(len(corr)), j]


def one_to_one_matching(corr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bipartite matching of rows to distinct columns maximizing the summed correlation (Hungarian
    algorithm): returns (row indices, column indices, matched correlations), sorted by row."""
    corr = _np(corr)
    r, c = linear_sum_assignment(corr, maximize=True)
    return r, c, corr[r, c]


def sparse_prediction(x, y, alpha: float, max_iter: int = 5000) -> dict:
    """Sparse few-to-one maps: predict every unit of ``y`` (n, q) from all units of ``x`` (n, p) with an
    L1-penalized linear regression (Lasso, on standardized units, penalty ``alpha``). Returns ``coef``
    (q, p), the in-sample ``r2`` per target unit and ``n_nonzero``, the number of source units used."""
    from sklearn.linear_model import Lasso

    x, y = _np(x), _np(y)
    sx, sy = x.std(0), y.std(0)
    xs = (x - x.mean(0)) / np.where(sx > 0, sx, 1.0)
    ys = (y - y.mean(0)) / np.where(sy > 0, sy, 1.0)
    model = Lasso(alpha=alpha, fit_intercept=False, max_iter=max_iter).fit(xs, ys)
    coef = np.atleast_2d(model.coef_)
    resid = ys - xs @ coef.T
    tot = (ys ** 2).sum(0)
    r2 = np.where(tot > 0, 1 - (resid ** 2).sum(0) / np.where(tot > 0, tot, 1.0), np.nan)
    return {"coef": coef, "r2": r2, "n_nonzero": (np.abs(coef) > 1e-10).sum(1)}


def conv_unit_samples(features: torch.nn.Sequential, x: torch.Tensor, layers, positions: int = 16,
                      seed: int = 0) -> dict:
    """Run ``features`` (a ``nn.Sequential`` of conv blocks) on images ``x`` (B, C, H, W) and collect,
    after each module index in ``layers``, the activations of every channel at ``positions`` spatial
    positions per image, drawn at random (the same positions for every network given the same seed).
    Returns {layer index: tensor (B * positions, channels)}: each (image, position) is one sample."""
    out, h = {}, x
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, module in enumerate(features):
            h = module(h)
            if i in layers:
                B, C, H, W = h.shape
                k = min(positions, H * W)
                pos = torch.stack([torch.randperm(H * W, generator=gen)[:k] for _ in range(B)]).to(h.device)
                flat = h.flatten(2)  # (B, C, HW)
                picked = torch.gather(flat, 2, pos[:, None, :].expand(B, C, k))  # (B, C, k)
                out[i] = picked.permute(0, 2, 1).reshape(B * k, C).cpu()
    return out


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centered kernel alignment (Kornblith et al., 2019) between representations x (n, p) and
    y (n, q) of the same n inputs: ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    hsic = (y.T @ x).pow(2).sum()
    return (hsic / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt())).item()
