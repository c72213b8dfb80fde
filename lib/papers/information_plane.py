"""The information plane of Shwartz-Ziv and Tishby (2017): their 12-bit task and the binned
mutual-information estimator.

The 12-bit task: every one of the 2**12 = 4096 binary patterns is an input; the label is a
spherically symmetric function of the pattern, thresholded so that the classes are close to
balanced. The original rule is only described in words ("12 uniformly distributed points on a
2-sphere ... a spherically symmetric real valued function"); we rebuild it with the 12 vertices of
the icosahedron (the only 12 exactly uniformly spread points on the sphere) and the squared norm of
the dipole moment of the +-1 charges placed on them, a rotation-invariant quantity.

The estimator: each unit's activation is cut into ``n_bins`` equal bins over a fixed range, the
binned layer T is the tuple of bin indices, and probabilities are counted over the dataset with every
input equally likely. Since T is a deterministic function of X and the inputs are distinct,
I(X;T) = H(T); I(T;Y) = H(T) - H(T|Y). All quantities are in bits.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ..core.params import check_positive
from ..nn.models import MLP

GOLDEN = (1 + 5 ** 0.5) / 2


def icosahedron() -> np.ndarray:
    """The 12 vertices of the regular icosahedron on the unit sphere, shape (12, 3)."""
    p = GOLDEN
    v = np.array([[0, s1, s2 * p] for s1 in (1, -1) for s2 in (1, -1)]
                 + [[s1, s2 * p, 0] for s1 in (1, -1) for s2 in (1, -1)]
                 + [[s2 * p, 0, s1] for s1 in (1, -1) for s2 in (1, -1)], dtype=float)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def twelve_bit_task(device=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """All 4096 binary patterns of 12 bits and their labels.

    Bit i puts a charge s_i = 2 x_i - 1 on vertex v_i of the icosahedron; the label is
    y = 1 if |sum_i s_i v_i|^2 > theta, with theta the value that splits the patterns closest to half
    and half (theta = 8.84: 50.3% / 49.7%). Returns x (4096, 12) float in {0, 1}, y (4096,) long,
    and a dict with the rule's values (``f``) and ``theta``."""
    x = np.array(list(itertools.product([0, 1], repeat=12)), dtype=float)
    f = np.linalg.norm((2 * x - 1) @ icosahedron(), axis=1) ** 2
    values = np.unique(np.round(f, 9))
    fractions = np.array([(f <= t + 1e-9).mean() for t in values])
    theta = float(values[np.argmin(np.abs(fractions - 0.5))])
    y = (f > theta + 1e-9).astype(np.int64)
    return (torch.tensor(x, dtype=torch.float32, device=device), torch.tensor(y, device=device),
            {"f": f, "theta": theta})


def discretize(t: torch.Tensor, n_bins: int, low, high) -> torch.Tensor:
    """Bin index in 0..n_bins-1 of every value of ``t``: ``n_bins`` equal bins over [low, high]
    (values outside are clipped into the end bins; ``high`` falls in the last bin). ``low`` and
    ``high`` may be tensors that broadcast against ``t`` (one range per model, say)."""
    check_positive("n_bins", n_bins, integer=True)
    low, high = torch.as_tensor(low, dtype=t.dtype, device=t.device), torch.as_tensor(high, dtype=t.dtype, device=t.device)
    width = (high - low).clamp_min(1e-12)
    idx = torch.floor((t - low) / width * n_bins).long()
    return idx.clamp_(0, n_bins - 1)


def row_ids(codes: torch.Tensor) -> torch.Tensor:
    """Integer id of every row of ``codes`` (n, d): equal rows get equal ids, 0..(#distinct - 1)."""
    if codes.dim() == 1:
        codes = codes[:, None]
    return torch.unique(codes, dim=0, return_inverse=True)[1]


def entropy(ids: torch.Tensor) -> float:
    """Plug-in entropy in bits of a discrete variable given by one integer id per (equally likely) sample."""
    counts = torch.unique(ids, return_counts=True)[1].double()
    p = counts / counts.sum()
    return float(-(p * torch.log2(p)).sum())


def mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    """Plug-in I(A;B) = H(A) + H(B) - H(A,B) in bits; a and b are per-sample ids or rows of codes."""
    a, b = row_ids(a), row_ids(b)
    joint = a * (int(b.max()) + 1) + b
    return entropy(a) + entropy(b) - entropy(joint)


def binned_information(t: torch.Tensor, y: torch.Tensor, n_bins: int = 30, low: float = -1.0,
                       high: float = 1.0, x_ids: torch.Tensor | None = None) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) in bits for one layer's activations ``t`` (n, units) on the n inputs, binned
    into ``n_bins`` equal bins over [low, high]. ``x_ids`` identifies the inputs (default: all
    distinct, so that I(X;T) = H(T))."""
    tid = row_ids(discretize(t, n_bins, low, high))
    ixt = entropy(tid) if x_ids is None else mutual_information(x_ids, tid)
    return ixt, mutual_information(tid, y)


def batched_entropy(codes: torch.Tensor) -> torch.Tensor:
    """Plug-in entropy in bits of each row of integer ids ``codes`` (N, n), every sample equally likely."""
    s = codes.sort(dim=1).values
    start = torch.ones_like(s, dtype=torch.bool)
    start[:, 1:] = s[:, 1:] != s[:, :-1]
    run = start.long().cumsum(1) - 1
    counts = torch.zeros(s.shape, dtype=torch.float64, device=s.device).scatter_add_(
        1, run, torch.ones(s.shape, dtype=torch.float64, device=s.device))
    p = counts / s.shape[1]
    return -(p * torch.log2(p.clamp_min(1e-300))).sum(1)


def information_plane(layers: list[torch.Tensor], y: torch.Tensor, n_bins: int = 30,
                      ranges: list[tuple[float, float]] | None = None) -> np.ndarray:
    """I(X;T) and I(T;Y) of several layers and models, all inputs distinct and equally likely:
    ``layers[l]`` holds activations of shape (N models, n, units_l) and ``ranges[l]`` its binning range
    (default [-1, 1]); the range "max" bins over [0, max] with the maximum taken per model over its
    activations of that layer, as Saxe et al. do for ReLU. Returns an array of shape (N, L, 2) in bits."""
    n_models = layers[0].shape[0]
    out = np.zeros((n_models, len(layers), 2))
    y = y.long().to(layers[0].device)
    n_classes = int(y.max()) + 1
    for l, t in enumerate(layers):
        rng = ranges[l] if ranges is not None else (-1.0, 1.0)
        low, high = (0.0, t.amax(dim=(1, 2), keepdim=True)) if rng == "max" else rng
        b = discretize(t, n_bins, low, high)
        if n_bins ** t.shape[-1] * n_classes < 2 ** 62:  # one int64 code per binned row
            base = n_bins ** torch.arange(t.shape[-1], device=t.device)
            tid = (b * base).sum(-1)
        else:
            tid = torch.stack([row_ids(bm) for bm in b])
        h_t = batched_entropy(tid)
        h_ty = batched_entropy(tid * n_classes + y)
        h_y = batched_entropy(y[None])
        out[:, l, 0] = h_t.cpu().numpy()
        out[:, l, 1] = (h_t + h_y - h_ty).cpu().numpy()
    return out


def ib_network(act: str = "tanh", hidden=(10, 7, 5, 4, 3), d_in: int = 12, d_out: int = 2):
    """The network of Shwartz-Ziv and Tishby: d_in -> 10 -> 7 -> 5 -> 4 -> 3 -> d_out, fully connected,
    with ``act`` between layers, weights ~ N(0, 1/fan_in) and zero biases. An :class:`repro.nn.models.MLP`
    with custom layers, so ``forward(x, return_preactivations=True)`` gives every hidden preactivation."""
    from torch import nn

    for h in hidden:
        check_positive("hidden", h, integer=True)
    dims = [d_in, *hidden, d_out]
    model = MLP(d_in, 1, 0, 1, act=act)
    model.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    for layer in model.layers:
        nn.init.normal_(layer.weight, std=1 / math.sqrt(layer.in_features))
        nn.init.zeros_(layer.bias)
    return model


@torch.no_grad()
def ensemble_layers(ens, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's representation for every model of a :class:`repro.nn.ensemble.Ensemble` of
    :func:`ib_network` models on inputs x: the hidden activations act(z) and, last, the softmax output;
    each of shape (N, n, units)."""
    from torch.func import functional_call

    def one(params, buffers):
        out, pre = functional_call(ens.base, (params, buffers), (x,), {"return_preactivations": True})
        return [ens.base.act(z) for z in pre] + [torch.softmax(out, -1)]

    return torch.vmap(one)(ens.params, ens.buffers)
