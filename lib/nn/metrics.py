"""Metrics the chapters share. Each is checked against an independent computation in tests/."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals the label. ``logits`` (n, C) or (..., n, C)."""
    return (logits.argmax(-1) == y).float().mean(-1)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the last batch dimension and summed over leading (model) dimensions.

    For logits (n, C) and labels (n,) this is the usual mean cross-entropy; for a stacked ensemble,
    logits (N, n, C) and labels (N, n), it is the sum of the N members' mean losses, so every member
    gets the gradient of its own loss."""
    per = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    return per.view(y.shape).mean(-1).sum()


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al., 2017): confidence is split into ``n_bins`` equal-width bins; the gap between
    mean confidence and accuracy in each bin is weighted by the bin's share of the samples."""
    conf, pred = probs.max(-1)
    correct = (pred == y).to(conf.dtype)
    # bin b holds confidences in (b/n, (b+1)/n]; confidence 0 joins the first bin
    bins = torch.clamp(torch.ceil(conf * n_bins).long() - 1, 0, n_bins - 1)
    sum_conf = torch.zeros(n_bins, device=probs.device, dtype=conf.dtype).scatter_add_(0, bins, conf)
    sum_acc = torch.zeros(n_bins, device=probs.device, dtype=conf.dtype).scatter_add_(0, bins, correct)
    return ((sum_conf - sum_acc).abs().sum() / len(y)).item()
