import numpy as np
import pytest
import torch
from repro.papers.neural_scaling_laws import fit_power_law, make_teacher, sample_teacher


def test_fit_power_law_recovers_exponent_without_offset():
    x = np.geomspace(10, 1e4, 8)
    fit = fit_power_law(x, 3.0 * x ** -0.75)
    assert fit["exponent"] == pytest.approx(0.75, abs=1e-9)
    assert fit["prefactor"] == pytest.approx(3.0, rel=1e-9)
    assert fit["r2"] == pytest.approx(1.0)


def test_fit_power_law_with_fitted_offset():
    x = np.geomspace(10, 1e4, 10)
    y = 0.05 + 2.0 * x ** -1.2
    fit = fit_power_law(x, y, offset="fit", n_grid=2000)
    assert fit["offset"] == pytest.approx(0.05, rel=1e-2)
    assert fit["exponent"] == pytest.approx(1.2, rel=0.05)
    naive = fit_power_law(x, y)  # ignoring the floor flattens the curve
    assert naive["exponent"] < 0.8


def test_fit_power_law_fixed_offset_and_errors():
    x = np.array([1.0, 2.0, 4.0])
    fit = fit_power_law(x, 1.0 + x ** -2.0, offset=1.0)
    assert fit["exponent"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        fit_power_law(x, np.array([1.0, 0.5, 0.2]), offset=0.6)
    with pytest.raises(ValueError):
        fit_power_law(np.array([0.0, 1.0]), np.array([1.0, 2.0]))


def test_teacher_data_lies_on_a_d_dimensional_subspace():
    T = make_teacher(3, 10, n_teachers=2, teacher_width=16, seed=0)
    x, y = sample_teacher(T, 200, torch.Generator().manual_seed(0))
    assert x.shape == (2, 200, 10) and y.shape == (2, 200)
    for t in range(2):
        s = torch.linalg.svdvals(x[t])
        assert (s[3:] < 1e-4 * s[0]).all() and s[2] > 0.1 * s[0]
        # y is an independent recomputation of v . tanh(W z) / sqrt(width), z recovered from the embedding
        z = x[t] @ T["embed"][t]
        ref = torch.tanh(z @ T["W"][t].T) @ T["v"][t] / 4.0
        assert torch.allclose(y[t], ref, atol=1e-5)
        assert z.abs().max() <= 1.0 + 1e-5
