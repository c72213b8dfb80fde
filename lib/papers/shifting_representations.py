"""Frozen features and linear probes (used by the shifting-representations chapter; Zhang and Bottou, 2023).

``mlp_ensemble_features`` reads the hidden representation of every member of a ``repro.nn.ensemble.Ensemble``
of ``repro.nn.models.MLP``s at once. ``concatenate_members`` builds the "CAT" representation: the features
of the first k members side by side. ``linear_probe`` trains many multinomial logistic-regression heads at
once (one per probe, full batch, L2-penalized) on frozen features and returns their test accuracies.
Probes of different feature dimensions are run together by zero-padding (see ``pad_features``): a zero
column has zero gradient and stays at zero weight, so padding does not change a probe.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call


@torch.no_grad()
def mlp_ensemble_features(ens, x: torch.Tensor, layer: int = -1, batch_size: int = 4096) -> torch.Tensor:
    """Post-activation hidden representation ``layer`` (default: the last hidden layer) of every member of
    an Ensemble of ``repro.nn.models.MLP``; returns (N, n, width)."""
    act = ens.base.act

    def one(params, buffers, xb):
        _, pre = functional_call(ens.base, (params, buffers), (xb,), {"return_preactivations": True})
        return act(pre[layer])

    f = torch.vmap(one, in_dims=(0, 0, None))
    return torch.cat([f(ens.params, ens.buffers, x[i:i + batch_size]) for i in range(0, len(x), batch_size)], 1)


def concatenate_members(features: torch.Tensor, k: int) -> torch.Tensor:
    """The CAT_k representation: features (N, n, w) of the first k members side by side, shape (n, k*w)."""
    if not 1 <= k <= features.shape[0]:
        raise ValueError(f"k must be between 1 and the number of members ({features.shape[0]}); got {k}.")
    return features[:k].permute(1, 0, 2).reshape(features.shape[1], -1)


def pad_features(feats: list[torch.Tensor]) -> torch.Tensor:
    """Stack feature matrices (n, d_p) of different widths into (P, n, max d) with zero columns."""
    d = max(f.shape[1] for f in feats)
    return torch.stack([F.pad(f, (0, d - f.shape[1])) for f in feats])


def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                 num_classes: int, weight_decay: float = 1e-4, steps: int = 300, lr: float = 0.05,
                 standardize: bool = True, return_model: bool = False):
    """Train P linear softmax heads at once on frozen features and return their test accuracies (P,).

    x_train (P, n, d) and x_test (P, m, d) are the features of the P probes (or (n, d) for one probe);
    labels are shared, shape (n,) and (m,). Each head minimizes the mean cross-entropy plus
    ``weight_decay / 2 * |W|^2`` (the bias is not penalized) with full-batch Adam, which for
    ``weight_decay = 1 / (C n)`` is sklearn's ``LogisticRegression(C=C)`` objective divided by C n.
    With ``standardize`` features are centred and scaled by their training mean and standard deviation
    (a constant column stays zero). With ``return_model`` also returns (W, b, mean, std)."""
    single = x_train.dim() == 2
    if single:
        x_train, x_test = x_train[None], x_test[None]
    x_train, x_test = x_train.float(), x_test.float()
    P, n, d = x_train.shape
    if standardize:
        mean = x_train.mean(1, keepdim=True)
        std = x_train.std(1, keepdim=True)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
    else:
        mean = torch.zeros(P, 1, d, device=x_train.device)
        std = torch.ones(P, 1, d, device=x_train.device)
    xt, xs = (x_train - mean) / std, (x_test - mean) / std
    W = torch.zeros(P, d, num_classes, device=x_train.device, requires_grad=True)
    b = torch.zeros(P, 1, num_classes, device=x_train.device, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logits = torch.baddbmm(b, xt, W)  # (P, n, C)
            loss = F.cross_entropy(logits.flatten(0, 1), y_train.repeat(P), reduction="none").view(P, n).mean(1)
            loss = loss + 0.5 * weight_decay * W.pow(2).sum((1, 2))
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
    with torch.no_grad():
        acc = (torch.baddbmm(b, xs, W).argmax(-1) == y_test).float().mean(1)
    acc = acc[0] if single else acc
    if return_model:
        return acc, (W.detach(), b.detach(), mean, std)
    return acc
