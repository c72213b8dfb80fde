"""The criticality chapter (Roberts, Yaida and Hanin, 2022): preactivations of many random MLPs at
initialization, and the infinite-width recursions they are compared with.

For an MLP with weights ~ N(0, C_W / fan_in) and biases ~ N(0, C_b), a single input's preactivation
variance obeys, at infinite width (Roberts, Yaida and Hanin, 2022, ch. 4-5),

    K^(l+1) = C_b + C_W <sigma(z)^2>_{K^(l)},

and the mean squared size of a small perturbation of the input (a Jacobian-vector product) is
multiplied at every layer by ``chi_perp = C_W <sigma'(z)^2>_{K^(l)}``. ``<.>_K`` is the average over
z ~ N(0, K), computed here by Gauss-Hermite quadrature.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..core.params import ParameterError, check_positive
from ..nn.models import activation


def activation_fn(name: str) -> tuple[Callable, Callable]:
    """(sigma, sigma') as numpy functions for the activations the theory chapters use."""
    from scipy.special import erf
    fns = {
        "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
        "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
        "linear": (lambda z: z, lambda z: np.ones_like(z)),
        "erf": (erf, lambda z: 2 / np.sqrt(np.pi) * np.exp(-z ** 2)),
    }
    if name not in fns:
        raise ParameterError(f"activation must be one of {', '.join(map(repr, fns))}; got {name!r}.")
    return fns[name]


def gauss_expect(f: Callable, K: float, n_points: int = 200) -> float:
    """E[f(z)] for z ~ N(0, K) by Gauss-Hermite quadrature (exact for polynomials of degree < 2 n_points; an even count puts no node at 0, where ReLU's step sits)."""
    if K <= 0:
        return float(f(np.zeros(1))[0])
    t, w = np.polynomial.hermite_e.hermegauss(n_points)  # weight exp(-t^2 / 2)
    return float(np.sum(w * f(np.sqrt(K) * t)) / np.sqrt(2 * np.pi))


def single_input_recursion(act: str, C_W: float, C_b: float, K1: float, depth: int) -> dict:
    """Infinite-width preactivation variance ``K`` and perturbation gain ``gain`` for layers 1..depth.

    ``K1`` is the first layer's variance (C_b + C_W |x|^2 / n_0); ``gain[l]`` is the factor by which the
    mean squared perturbation has grown between layer 1 and layer l (so ``gain[0] = 1``).
    """
    check_positive("depth", depth, integer=True)
    sigma, dsigma = activation_fn(act)
    K, gain = [K1], [1.0]
    for _ in range(depth - 1):
        k = K[-1]
        gain.append(gain[-1] * C_W * gauss_expect(lambda z: dsigma(z) ** 2, k))
        K.append(C_b + C_W * gauss_expect(lambda z: sigma(z) ** 2, k))
    return {"layer": np.arange(1, depth + 1), "K": np.array(K), "gain": np.array(gain)}


def relu_excess_kurtosis(layer, width: int):
    """Exact excess kurtosis of a single preactivation in layer ``layer`` of a zero-bias ReLU network at
    C_W = 2 and finite ``width``: 3 (1 + 5/n)^(l-1) - 3, whose leading order is 15 (l - 1) / n.

    Why: given layer l, the next layer's preactivations are Gaussian with variance
    G' = (2/n) sum_j relu(z_j)^2 = G * xi, where xi has mean 1 and variance 5/n whatever G is; so
    E[G^2] / E[G]^2 = (1 + 5/n)^(l-1) and E[z^4] / E[z^2]^2 = 3 E[G^2] / E[G]^2.
    """
    layer = np.asarray(layer, dtype=float)
    return 3.0 * (1.0 + 5.0 / width) ** (layer - 1) - 3.0


@torch.no_grad()
def random_mlp_preactivations(x: torch.Tensor, width: int, depth: int, act: str = "relu", C_W: float = 2.0,
                              C_b: float = 0.0, n_networks: int = 100, tangent: torch.Tensor | None = None,
                              generator: torch.Generator | None = None) -> dict:
    """Preactivations of ``n_networks`` independently initialized MLPs on the inputs ``x`` (k, d_in).

    Weights ~ N(0, C_W / fan_in), biases ~ N(0, C_b), as :class:`MLP` with ``weight_std = sqrt(C_W)``;
    all networks run at once as batched matrix products, and each layer's weights are drawn when they
    are used, so memory holds one layer at a time. Returns ``z`` of shape (depth, n_networks, k, width);
    with ``tangent`` (k, d_in), also ``dz``: the Jacobian-vector products dz^(l) = J^(l) tangent,
    propagated exactly in forward mode.
    """
    for name, v in (("width", width), ("depth", depth), ("n_networks", n_networks)):
        check_positive(name, v, integer=True)
    check_positive("C_W", C_W)
    check_positive("C_b", C_b, allow_zero=True)
    sigma = activation(act)
    B, (k, d) = n_networks, x.shape
    dev, dt = x.device, x.dtype

    def layer(h, dh, fan_in):
        W = torch.randn(B, width, fan_in, generator=generator, device=dev, dtype=dt) * math.sqrt(C_W / fan_in)
        b = torch.randn(B, 1, width, generator=generator, device=dev, dtype=dt) * math.sqrt(C_b)
        z = torch.bmm(h, W.transpose(1, 2)) + b
        return z, (torch.bmm(dh, W.transpose(1, 2)) if dh is not None else None)

    h = x.expand(B, k, d)
    dh = tangent.expand(B, k, d) if tangent is not None else None
    zs, dzs = [], []
    for l in range(depth):
        z, dz = layer(h, dh, d if l == 0 else width)
        zs.append(z)
        if dz is not None:
            dzs.append(dz)
            h, dh = torch.func.jvp(sigma, (z,), (dz,))
        else:
            h = sigma(z)
    out = {"z": torch.stack(zs)}
    if tangent is not None:
        out["dz"] = torch.stack(dzs)
    return out




def excess_kurtosis(z: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """E[z^4] / E[z^2]^2 - 3 along ``dim`` for zero-mean variables (0 for a Gaussian)."""
    m2 = z.pow(2).mean(dim)
    return z.pow(4).mean(dim) / m2.pow(2) - 3.0


@torch.no_grad()
def single_input_preactivations(width: int, depth: int, n_networks: int, act: str = "relu", C_W: float = 2.0,
                                C_b: float = 0.0, K1: float | None = None,
                                generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """Preactivations of ``n_networks`` random MLPs on one input, sampled layer by layer in distribution.

    For one fixed input the next layer's preactivations given the current layer are exactly i.i.d.
    N(0, C_b + C_W |sigma(z)|^2 / n): a row of Gaussian weights times a fixed vector is
    Gaussian, and distinct rows are independent. So drawing ``width`` normals per layer and network
    gives the same joint law of (z^(1), ..., z^(L)) as drawing the ``width x width`` weight matrices
    (:func:`random_mlp_preactivations`), at a ``width``-th of the cost. ``K1`` is the first layer's
    variance (C_b + C_W |x|^2 / n_0; default C_b + C_W, i.e. |x|^2 / n_0 = 1). Returns (depth, n_networks, width).
    """
    for name, v in (("width", width), ("depth", depth), ("n_networks", n_networks)):
        check_positive(name, v, integer=True)
    check_positive("C_W", C_W)
    check_positive("C_b", C_b, allow_zero=True)
    sigma = activation(act)
    var = torch.full((n_networks, 1), C_b + C_W if K1 is None else K1, dtype=dtype)
    zs = []
    for _ in range(depth):
        z = torch.randn(n_networks, width, generator=generator, dtype=dtype) * var.sqrt()
        zs.append(z)
        var = C_b + C_W * sigma(z).pow(2).mean(1, keepdim=True)
    return torch.stack(zs)
