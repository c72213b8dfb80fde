"""How much of a layer's representation each feature accounts for (Lampinen, Chan and Hermann, 2024).

``variance_explained`` regresses every unit of a representation on one feature at a time (with an
intercept) and pools over units: the share of the representation's total variance that the feature's
values account for. For a binary feature this is the between-group variance over the total variance,
the one-way ANOVA decomposition the paper uses. ``mlp_layer_representations`` returns the hidden
(post-activation) representations of a ``repro.nn.models.MLP``.
"""
from __future__ import annotations

import torch


def variance_explained(rep: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Share of the total variance of ``rep`` (n, p) explained by each column of ``features`` (n, k),
    one feature at a time: 1 - sum_j ||h_j - OLS fit of h_j on [1, f]||^2 / sum_j ||h_j - mean h_j||^2.
    Equals sklearn's ``r2_score(rep, LinearRegression().fit(f[:, None], rep).predict(f[:, None]),
    multioutput="variance_weighted")``. Returns a tensor of shape (k,), in [0, 1]; a constant feature
    or a constant representation explains 0."""
    if rep.dim() != 2 or features.dim() not in (1, 2) or len(rep) != len(features):
        raise ValueError("rep must be (n, p) and features (n,) or (n, k) with the same n.")
    h = rep.double() - rep.double().mean(0)
    f = features.double().reshape(len(features), -1)
    f = f - f.mean(0)
    total = h.pow(2).sum()
    ff = f.pow(2).sum(0)                                  # (k,)
    proj = f.T @ h                                       # (k, p): sum_i f_i h_ij
    explained = proj.pow(2).sum(1) / ff.clamp_min(1e-300)  # sum_j (f . h_j)^2 / |f|^2
    out = torch.where((ff > 0) & (total > 0), explained / total.clamp_min(1e-300), torch.zeros_like(ff))
    return out.to(rep.dtype if rep.is_floating_point() else torch.float64)


@torch.no_grad()
def mlp_layer_representations(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Post-activation hidden representations of a ``repro.nn.models.MLP`` on inputs x: one (n, width)
    tensor per hidden layer, first layer first."""
    _, pre = model(x, return_preactivations=True)
    return [model.act(z) for z in pre]
