"""The loss-landscape chapter (Li et al., 2018): filter-normalized random directions, residual and
plain MLPs, and the shape of a 2-D loss surface.

``random_direction`` draws a Gaussian direction with the shape of the model's parameters and
rescales it filter by filter to the trained weights (:func:`normalize_direction`): every filter (a
slice along the first axis of a weight tensor) gets the norm of the corresponding filter of the
trained weights, and biases and normalization parameters are not perturbed. Slices through the
landscape are evaluated with :mod:`repro.methods.landscape`. ``surface_hessian``, ``local_minima`` and
``curvature_at_origin`` measure the convexity of a surface on a grid, the paper's ratio of Hessian
eigenvalues.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.params import check_positive
from ..methods.landscape import Params, weights_of
from ..nn.ensemble import train_ensemble


class ResidualBlock(nn.Module):
    """He et al.'s basic block for vectors: ``relu(bn(W2 relu(bn(W1 h))) + h)``; with ``skip=False``
    the identity shortcut is removed and everything else stays (``relu(bn(W2 relu(bn(W1 h))))``)."""

    def __init__(self, width: int, skip: bool = True, batch_norm: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(width, width, bias=not batch_norm)
        self.fc2 = nn.Linear(width, width, bias=not batch_norm)
        self.bn1 = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.skip = skip

    def forward(self, h):
        out = self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(h)))))
        return torch.relu(out + h) if self.skip else torch.relu(out)


class ResidualMLP(nn.Module):
    """A fully connected ResNet: a linear stem (d_in -> width, batch norm, ReLU), ``blocks`` residual
    blocks (:class:`ResidualBlock`) and a linear head; ``2 * blocks + 2`` weight layers in all.

    ``skip=False`` gives the same network with every shortcut removed (the "noshort" networks of
    Li et al., 2018), so the two differ only in the skips. Inputs are flattened.
    """

    def __init__(self, d_in: int, width: int, blocks: int, d_out: int, skip: bool = True, batch_norm: bool = True):
        super().__init__()
        for name, v in (("d_in", d_in), ("width", width), ("d_out", d_out)):
            check_positive(name, v, integer=True)
        check_positive("blocks", blocks, integer=True, allow_zero=True)
        self.stem = nn.Sequential(nn.Linear(d_in, width, bias=not batch_norm),
                                  nn.BatchNorm1d(width) if batch_norm else nn.Identity(), nn.ReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(width, skip, batch_norm) for _ in range(blocks)])
        self.head = nn.Linear(width, d_out)

    @property
    def depth(self) -> int:
        """Number of weight layers."""
        return 2 * len(self.blocks) + 2

    def forward(self, x):
        return self.head(self.blocks(self.stem(x.flatten(1))))


def normalize_direction(direction: Params, weights: Params, how: str | None = "filter",
                        ignore_biasbn: bool = True) -> dict:
    """Rescale ``direction`` relative to ``weights``.

    ``how="filter"``: each filter ``d[i]`` (slice along the first axis) gets the norm of ``w[i]``;
    ``"layer"``: each tensor gets the norm of the weight tensor; ``None``: unchanged. With
    ``ignore_biasbn`` (the paper's default) every tensor with fewer than two dimensions (biases, batch-norm
    scales and shifts) is set to zero.
    """
    if how not in ("filter", "layer", None):
        raise ValueError(f"how must be one of 'filter', 'layer', None; got {how!r}.")
    out = {}
    for name, d in direction.items():
        w = weights[name]
        if d.shape != w.shape:
            raise ValueError(f"direction {name} has shape {tuple(d.shape)}, the weights {tuple(w.shape)}.")
        if d.dim() <= 1 and ignore_biasbn:
            out[name] = torch.zeros_like(d)
        elif how == "filter" and d.dim() >= 2:
            dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
            wn = w.flatten(1).norm(dim=1)
            out[name] = d * (wn / dn).view(-1, *([1] * (d.dim() - 1)))
        elif how is not None:
            out[name] = d * (w.norm() / d.norm().clamp_min(1e-12))
        else:
            out[name] = d.clone()
    return out


def random_direction(model: nn.Module, generator: torch.Generator | None = None, filter_normalize: bool = True,
                     ignore_biasbn: bool = True) -> dict:
    """A random Gaussian direction in the model's parameter space (name -> tensor, same shapes).

    With ``filter_normalize`` each filter is rescaled to the norm of the model's filter (Li et al., 2018,
    eq. 1); without it the entries stay i.i.d. N(0, 1). Biases and batch-norm parameters are zero unless
    ``ignore_biasbn=False``. ``generator`` must live on the model's device (or be None).
    """
    w = weights_of(model)
    d = {k: torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype) for k, v in w.items()}
    return normalize_direction(d, w, "filter" if filter_normalize else None, ignore_biasbn)


def surface_hessian(Z, xs, ys) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of the 2x2 Hessian of a surface sampled on a regular grid, by central differences.

    ``Z[i, j] = f(xs[i], ys[j])``. Returns (lambda_min, lambda_max), each of shape
    ``(len(xs) - 2, len(ys) - 2)`` (the interior points).
    """
    Z = np.asarray(Z, dtype=np.float64)
    hx, hy = float(xs[1] - xs[0]), float(ys[1] - ys[0])
    fxx = (Z[2:, 1:-1] - 2 * Z[1:-1, 1:-1] + Z[:-2, 1:-1]) / hx**2
    fyy = (Z[1:-1, 2:] - 2 * Z[1:-1, 1:-1] + Z[1:-1, :-2]) / hy**2
    fxy = (Z[2:, 2:] - Z[2:, :-2] - Z[:-2, 2:] + Z[:-2, :-2]) / (4 * hx * hy)
    mean, dev = (fxx + fyy) / 2, np.sqrt(((fxx - fyy) / 2) ** 2 + fxy**2)
    return mean - dev, mean + dev


def local_minima(Z) -> np.ndarray:
    """Boolean mask of the interior grid points lower than all eight neighbours (strict local minima)."""
    Z = np.asarray(Z, dtype=np.float64)
    c = Z[1:-1, 1:-1]
    mask = np.ones_like(c, dtype=bool)
    n, m = Z.shape
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                mask &= c < Z[1 + di:n - 1 + di, 1 + dj:m - 1 + dj]
    out = np.zeros_like(Z, dtype=bool)
    out[1:-1, 1:-1] = mask
    return out


def curvature_at_origin(alphas, losses, width: float | None = None) -> float:
    """The second derivative of a 1-D loss curve at alpha = 0, from a least-squares parabola fitted to
    the points with |alpha| <= ``width`` (all points when None)."""
    a, f = np.asarray(alphas, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    keep = np.abs(a) <= (width if width is not None else np.inf)
    if keep.sum() < 3:
        raise ValueError("need at least three points within the fitting window.")
    return float(2 * np.polyfit(a[keep], f[keep], 2)[0])


def fit_seeds(build, seeds, x, y, *, batch_size: int, steps: int, lr: float, weight_decay: float,
              momentum: float = 0.9, drop_at: float = 0.75, desc: str = "training") -> list:
    """Train one model per seed, all at once (:func:`repro.nn.ensemble.train_ensemble`): SGD with
    momentum for ``steps`` steps, the last ``1 - drop_at`` of them at a tenth of the learning rate (the
    momentum restarts at the drop). Model i starts from ``torch.manual_seed(seeds[i]); build()`` and
    draws its minibatches from seed ``seeds[i]`` (``seeds[i] + 1`` after the drop). Returns the trained
    models as ordinary modules in eval mode, in the order of ``seeds``."""
    seeds = list(seeds)
    first = int(round(drop_at * steps))
    template = build().to(x.device)
    ens, _ = train_ensemble(build, seeds, x, y, steps=first, lr=lr, batch_size=batch_size, momentum=momentum,
                            weight_decay=weight_decay, desc=desc)
    trained = iter([ens.unstack(i, template) for i in range(len(seeds))])
    if steps > first:
        ens, _ = train_ensemble(lambda: next(trained), [s + 1 for s in seeds], x, y, steps=steps - first, lr=lr / 10,
                                batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                                desc=desc + ", lr/10")
        trained = iter([ens.unstack(i, template) for i in range(len(seeds))])
    return [m.eval() for m in trained]
