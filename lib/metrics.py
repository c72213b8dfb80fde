"""Metrics the chapters share. Each is checked against an independent computation in tests/."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals the label. ``logits`` (n, C) or (..., n, C)."""
    return (logits.argmax(-1) == y).float().mean(-1)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al., 2017): confidence is split into ``n_bins`` equal-width bins; the gap between
    mean confidence and accuracy in each bin is weighted by the bin's share of the samples."""
    conf, pred = probs.max(-1)
    correct = (pred == y).to(conf.dtype)
    # bin b holds confidences in (b/n, (b+1)/n]; confidence 0 joins the first bin
    bins = torch.clamp(torch.ceil(conf * n_bins).long() - 1, 0, n_bins - 1)
    count = torch.zeros(n_bins, device=probs.device, dtype=conf.dtype).scatter_add_(0, bins, torch.ones_like(conf))
    sum_conf = torch.zeros(n_bins, device=probs.device, dtype=conf.dtype).scatter_add_(0, bins, conf)
    sum_acc = torch.zeros(n_bins, device=probs.device, dtype=conf.dtype).scatter_add_(0, bins, correct)
    return ((sum_conf - sum_acc).abs().sum() / len(y)).item()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centered kernel alignment (Kornblith et al., 2019) between representations x (n, p) and
    y (n, q) of the same n inputs: ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    hsic = (y.T @ x).pow(2).sum()
    return (hsic / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt())).item()


def excess_kurtosis(z: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """E[z^4] / E[z^2]^2 - 3 along ``dim`` for zero-mean variables (0 for a Gaussian)."""
    m2 = z.pow(2).mean(dim)
    return z.pow(4).mean(dim) / m2.pow(2) - 3.0


def mass_share(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image, the share of total absolute saliency inside ``mask``: sum(|s| in mask) / sum(|s|).
    ``saliency`` and ``mask`` (bool) have shape (B, ...); returns shape (B,)."""
    s = saliency.abs().flatten(1)
    return (s * mask.flatten(1)).sum(1) / s.sum(1)


def topk_share(saliency: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Per image, the fraction of its ``k`` largest-|saliency| pixels that lie inside ``mask`` (shape (B,))."""
    s = saliency.abs().flatten(1)
    if not 1 <= k <= s.shape[1]:
        raise ValueError(f"k must be between 1 and the number of pixels ({s.shape[1]}); got {k}.")
    idx = s.topk(k, dim=1).indices
    return mask.flatten(1).gather(1, idx).float().mean(1)
