"""Complexity of functions on a 2-D grid, and batched random networks evaluated on such a grid.

Used by the Neural Redshift chapter (Teney et al., 2024), which asks how complex the function computed
by a randomly initialized network is, as a 2-D image ``f(x1, x2)`` on a grid:

* :func:`fourier_mean_frequency`: the mean spatial frequency of the image's 2-D power spectrum,
  ``sum_k |F(k)|^2 |k| / sum_k |F(k)|^2`` (DC removed), in cycles per image width;
* :func:`compression_complexity`: the zlib-compressed size of the image quantized to a few grey levels,
  as a fraction of its raw size (an upper bound on its Lempel-Ziv / Kolmogorov complexity);
* :func:`random_mlp_functions`: the scalar outputs of many random MLPs at once, read out after every
  hidden layer, so that one forward pass gives the functions of all depths.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from ..core.params import check_positive
from ..nn.models import activation


def grid2d(n: int, low: float = -1.0, high: float = 1.0, device=None) -> torch.Tensor:
    """The n*n points of a regular grid on [low, high]^2 as an (n*n, 2) tensor, row-major (x2 is the row)."""
    check_positive("n", n, integer=True)
    t = torch.linspace(low, high, n, device=device)
    x2, x1 = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([x1.reshape(-1), x2.reshape(-1)], 1)


def fourier_mean_frequency(img: torch.Tensor) -> torch.Tensor:
    """Power-weighted mean radial frequency of square images ``img`` (..., n, n), in cycles per image.

    The mean is removed first, so a constant image has no power and gets 0. A sinusoid that completes
    k whole cycles across the image gets exactly k (no window: a function that is not periodic on the
    grid also puts some power at high frequencies through its edges, the same for every image)."""
    img = img.double()
    n = img.shape[-1]
    if img.shape[-2] != n:
        raise ValueError(f"images must be square; got {tuple(img.shape[-2:])}.")
    F = torch.fft.fft2(img - img.mean((-2, -1), keepdim=True))
    P = F.real ** 2 + F.imag ** 2
    k = torch.fft.fftfreq(n, d=1.0 / n, device=img.device, dtype=torch.float64)
    radius = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    total = P.sum((-2, -1))
    flat = total <= 1e-20 * n * n * img.pow(2).sum((-2, -1))  # constant up to rounding (Parseval)
    return torch.where(flat, torch.zeros_like(total), (P * radius).sum((-2, -1)) / total.clamp_min(1e-300))


def radial_power_spectrum(img: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Radial power spectrum of images (..., n, n), averaged over the leading dimensions: returns
    (integer frequencies |k| = 0, 1, ... up to the grid's corner, in cycles per image; the mean power of
    the Fourier coefficients in each ring round(|k|) = r). Each image is first normalized to unit total
    power with its mean removed, so white noise gives a flat spectrum at 1 / n^2."""
    img = img.double().reshape(-1, img.shape[-2], img.shape[-1])
    n = img.shape[-1]
    F = torch.fft.fft2(img - img.mean((-2, -1), keepdim=True))
    P = F.real ** 2 + F.imag ** 2
    P = P / P.sum((-2, -1), keepdim=True).clamp_min(1e-300)
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=img.device)
    r = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2).round().long().reshape(-1)
    power = torch.zeros(int(r.max()) + 1, dtype=torch.float64, device=img.device).scatter_add_(0, r, P.mean(0).reshape(-1))
    count = torch.zeros_like(power).scatter_add_(0, r, torch.ones_like(r, dtype=torch.float64))
    return np.arange(len(power)), (power / count).cpu().numpy()


def compression_complexity(img, levels: int = 16) -> np.ndarray:
    """zlib-compressed size (level 9) over raw size of images (..., h, w), after min-max normalizing each
    image and quantizing it to ``levels`` grey levels (one byte per pixel). A constant image compresses
    best; i.i.d. noise compresses worst (about log2(levels)/8 of its raw size, plus overhead)."""
    check_positive("levels", levels, integer=True)
    a = img.detach().double().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img, dtype=float)
    flat = a.reshape(-1, a.shape[-2] * a.shape[-1])
    out = np.empty(len(flat))
    for i, x in enumerate(flat):
        lo, hi = x.min(), x.max()
        q = np.zeros(x.shape, np.uint8) if hi - lo <= 1e-12 * max(abs(hi), abs(lo), 1e-300) else \
            np.minimum((x - lo) / (hi - lo) * levels, levels - 1).astype(np.uint8)
        out[i] = len(zlib.compress(q.tobytes(), 9)) / q.size
    return out.reshape(a.shape[:-2])


@torch.no_grad()
def random_mlp_functions(x: torch.Tensor, width: int, depth: int, act: str = "relu", scale: float = 1.0,
                         n_networks: int = 16, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scalar outputs of ``n_networks`` random MLPs on the inputs ``x`` (k, d_in), read out after each of
    ``depth`` hidden layers of ``width`` units: returns (depth, n_networks, k), where entry d-1 is the
    function of a network with d hidden layers.

    Every weight and bias of every layer, the linear readouts included, is drawn as in PyTorch's default
    ``nn.Linear`` initialization, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), times ``scale`` (the "weight
    magnitude"). The networks for depths 1..depth share their first layers (one forward pass), each depth
    with its own readout. All networks run at once as batched matrix products."""
    for name, v in (("width", width), ("depth", depth), ("n_networks", n_networks)):
        check_positive(name, v, integer=True)
    check_positive("scale", scale)
    sigma = activation(act)
    B, (k, d) = n_networks, x.shape
    dev, dt = x.device, x.dtype

    def uniform(*shape, fan_in):
        u = torch.rand(*shape, generator=generator, device=dev, dtype=dt) * 2 - 1
        return u * (scale / math.sqrt(fan_in))

    h = x.expand(B, k, d)
    outs = []
    for l in range(depth):
        fan_in = d if l == 0 else width
        W, b = uniform(B, fan_in, width, fan_in=fan_in), uniform(B, 1, width, fan_in=fan_in)
        h = sigma(torch.baddbmm(b, h, W))
        v, c = uniform(B, width, 1, fan_in=width), uniform(B, 1, 1, fan_in=width)
        outs.append(torch.baddbmm(c, h, v)[..., 0])
    return torch.stack(outs)
