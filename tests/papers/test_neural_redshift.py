"""Complexity measures on 2-D grids and batched random networks (repro.papers.neural_redshift)."""
import math

import numpy as np
import pytest
import torch
from repro.nn.models import ACTIVATIONS, activation
from repro.papers.neural_redshift import (
    compression_complexity,
    fourier_mean_frequency,
    grid2d,
    radial_power_spectrum,
    random_mlp_functions,
)

N = 64


def sinusoid(kx, ky, n=N, phase=0.3):
    i = torch.arange(n, dtype=torch.float64)
    return torch.cos(2 * math.pi * (kx * i[None, :] + ky * i[:, None]) / n + phase)


def test_constant_image_has_zero_mean_frequency_and_compresses_best():
    const = torch.full((N, N), 3.7, dtype=torch.float64)
    assert fourier_mean_frequency(const).item() == 0.0
    assert fourier_mean_frequency(torch.zeros(N, N)).item() == 0.0
    others = torch.stack([sinusoid(2, 0), torch.randn(N, N, dtype=torch.float64)])
    c = compression_complexity(torch.cat([const[None], others]))
    assert c[0] < c[1:].min()


@pytest.mark.parametrize("kx,ky", [(1, 0), (0, 3), (5, 0), (3, 4), (12, 5)])
def test_sinusoid_mean_frequency_equals_its_frequency(kx, ky):
    assert fourier_mean_frequency(sinusoid(kx, ky)).item() == pytest.approx(math.hypot(kx, ky), rel=1e-9)


def test_mean_frequency_is_batched_and_scale_invariant():
    imgs = torch.stack([sinusoid(2, 0), 5 * sinusoid(7, 0) + 1])
    assert torch.allclose(fourier_mean_frequency(imgs), torch.tensor([2.0, 7.0], dtype=torch.float64))
    # a mixture with equal power at frequencies 2 and 6 has mean 4 (independent computation)
    assert fourier_mean_frequency(sinusoid(2, 0) + sinusoid(0, 6)).item() == pytest.approx(4.0)


def test_radial_spectrum_of_sinusoid_sits_at_its_frequency():
    f, s = radial_power_spectrum(sinusoid(0, 9)[None])
    assert f[np.argmax(s)] == 9 and f[-1] == round(math.sqrt(2) * N / 2)
    # white noise: every coefficient carries 1/N^2 of the power on average, so the spectrum is flat
    g = torch.Generator().manual_seed(2)
    f, s = radial_power_spectrum(torch.randn(200, N, N, generator=g, dtype=torch.float64))
    assert np.allclose(s[1:], 1 / N ** 2, rtol=0.1)


def test_noise_compresses_worst():
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, N, dtype=torch.float64)
    imgs = torch.stack([x[None, :] + 0 * x[:, None], sinusoid(3, 2), sinusoid(15, 11),
                        torch.rand(N, N, generator=g, dtype=torch.float64)])
    c = compression_complexity(imgs, levels=16)
    assert c[-1] == c.max() and c[0] < c[1] < c[-1]
    assert c[-1] > 0.45  # 4 bits of entropy per byte: at least half the raw size


def test_mean_frequency_orders_smooth_and_rough():
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(N, N, generator=g, dtype=torch.float64)
    assert fourier_mean_frequency(sinusoid(1, 1)) < fourier_mean_frequency(noise)
    assert fourier_mean_frequency(noise).item() > N / 4  # white noise: power spread up to the Nyquist corner


def test_new_activations():
    z = torch.linspace(-3, 3, 7)
    assert torch.allclose(activation("gaussian")(z), torch.exp(-z ** 2))
    assert torch.allclose(activation("sine")(z), torch.sin(z))
    assert {"relu", "tanh", "gelu", "gaussian", "sine"} <= set(ACTIVATIONS)


def test_random_mlp_functions_shapes_and_linear_case():
    x = grid2d(8).double()
    assert x.shape == (64, 2) and x[1, 0] > x[0, 0] and x[1, 1] == x[0, 1]
    g = torch.Generator().manual_seed(0)
    f = random_mlp_functions(x, 16, 3, "linear", 2.0, 5, generator=g)
    assert f.shape == (3, 5, 64)
    # with the identity activation every depth computes an affine function of the input: least squares fits exactly
    A = torch.cat([x, torch.ones(64, 1, dtype=x.dtype)], 1)
    coef = torch.linalg.lstsq(A, f.reshape(-1, 64).T).solution
    assert torch.allclose(A @ coef, f.reshape(-1, 64).T, atol=1e-10)


def test_random_mlp_functions_relu_is_piecewise_linear_and_uniform_init():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 2, dtype=torch.float64)
    # at input 0 a one-hidden-layer output is v.relu(b) + c, with every entry of b, v, c in +-scale/sqrt(fan_in)
    f = random_mlp_functions(x, 32, 1, "relu", 3.0, 2000, generator=g)
    bound = 32 * (3 / math.sqrt(2)) * (3 / math.sqrt(32)) + 3 / math.sqrt(32)
    assert f.abs().max() < bound
    # along a line, a ReLU network's output has a vanishing second difference except at a few kinks
    t = torch.linspace(-1, 1, 401, dtype=torch.float64)
    line = torch.stack([t, 0.5 * t], 1)
    y = random_mlp_functions(line, 16, 2, "relu", 1.0, 4, generator=g)
    d2 = (y[..., 2:] - 2 * y[..., 1:-1] + y[..., :-2]).abs()
    assert ((d2 > 1e-9).sum(-1) <= 16 * 2 * 2).all()
    y = random_mlp_functions(line, 16, 2, "tanh", 1.0, 4, generator=g)
    assert ((y[..., 2:] - 2 * y[..., 1:-1] + y[..., :-2]).abs() > 1e-9).float().mean() > 0.9
