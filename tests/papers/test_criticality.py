import numpy as np
import pytest
import torch
from repro.core.params import ParameterError
from repro.papers.criticality import (
    excess_kurtosis,
    gauss_expect,
    random_mlp_preactivations,
    relu_excess_kurtosis,
    single_input_preactivations,
    single_input_recursion,
)


def test_gauss_expect_gaussian_moments():
    for K in (0.3, 1.0, 4.0):
        assert gauss_expect(lambda z: z ** 2, K) == pytest.approx(K)
        assert gauss_expect(lambda z: z ** 4, K) == pytest.approx(3 * K ** 2)
        # ReLU's second moment is half the variance; an even node count keeps the step exact
        assert gauss_expect(lambda z: np.maximum(z, 0) ** 2, K) == pytest.approx(K / 2)
        assert gauss_expect(lambda z: (z > 0).astype(float), K) == pytest.approx(0.5)


def test_recursion_closed_forms():
    relu = single_input_recursion("relu", 2.0, 0.0, 1.7, 10)
    np.testing.assert_allclose(relu["K"], 1.7)
    np.testing.assert_allclose(relu["gain"], 1.0)
    lin = single_input_recursion("linear", 1.5, 0.1, 1.0, 5)
    K = [1.0]
    for _ in range(4):
        K.append(0.1 + 1.5 * K[-1])
    np.testing.assert_allclose(lin["K"], K)
    np.testing.assert_allclose(lin["gain"], 1.5 ** np.arange(5))
    with pytest.raises(ParameterError, match="activation must be one of"):
        single_input_recursion("swish", 1.0, 0.0, 1.0, 3)


def test_relu_kurtosis_formula():
    assert relu_excess_kurtosis(1, 64) == 0.0
    # leading order in 1/n: 15 (l - 1) / n
    assert relu_excess_kurtosis(3, 10_000) == pytest.approx(15 * 2 / 10_000, rel=1e-3)


def test_random_mlps_match_the_recursion_and_the_kurtosis_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 20, generator=g, dtype=torch.float64)
    out = random_mlp_preactivations(x, 64, 6, "tanh", 1.5, 0.1, 3000, generator=g)
    K = out["z"].pow(2).mean((1, 2, 3)).numpy()
    theory = single_input_recursion("tanh", 1.5, 0.1, 0.1 + 1.5 * x.pow(2).mean().item(), 6)["K"]
    np.testing.assert_allclose(K, theory, rtol=0.05)  # finite width: corrections of order 1/n
    relu = random_mlp_preactivations(x, 32, 5, "relu", 2.0, 0.0, 6000, generator=g)["z"]
    kurt = excess_kurtosis(relu[4].reshape(-1), dim=0).item()
    assert kurt == pytest.approx(relu_excess_kurtosis(5, 32), rel=0.2)


def test_random_mlp_tangent_is_the_exact_jacobian_vector_product():
    x = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    run = lambda inp, tan=None: random_mlp_preactivations(  # noqa: E731 -- the same networks each call
        inp, 16, 4, "tanh", 1.0, 0.05, 5, tangent=tan, generator=torch.Generator().manual_seed(3))
    eps = 1e-6
    dz = run(x, t)["dz"]
    fd = (run(x + eps * t)["z"] - run(x - eps * t)["z"]) / (2 * eps)
    torch.testing.assert_close(dz, fd, rtol=1e-6, atol=1e-8)


def test_random_mlp_rejects_bad_arguments():
    with pytest.raises(ParameterError, match="width must be an integer > 0; got -3"):
        random_mlp_preactivations(torch.zeros(1, 2), -3, 2)


def test_excess_kurtosis_of_gaussian_and_uniform():
    g = torch.Generator().manual_seed(4)
    assert abs(excess_kurtosis(torch.randn(400000, generator=g, dtype=torch.float64)).item()) < 0.03
    u = torch.rand(400000, generator=g, dtype=torch.float64) * 2 - 1
    assert excess_kurtosis(u).item() == pytest.approx(-1.2, abs=0.02)


def test_single_input_sampler_has_the_law_of_random_networks():
    g = torch.Generator().manual_seed(4)
    z = single_input_preactivations(32, 6, 20000, "relu", 2.0, 0.0, generator=g)
    assert z.shape == (6, 20000, 32)
    np.testing.assert_allclose(z.pow(2).mean((1, 2)).numpy(), 2.0, rtol=0.05)   # K(l) = C_W at criticality
    kurt = excess_kurtosis(z[4].reshape(-1).double(), dim=0).item()
    assert kurt == pytest.approx(relu_excess_kurtosis(5, 32), rel=0.1)
    x = torch.randn(1, 20, generator=g, dtype=torch.float64)
    x = x / x.norm() * np.sqrt(20)
    full = random_mlp_preactivations(x, 16, 4, "tanh", 1.5, 0.1, 4000, generator=g)["z"][:, :, 0, :]
    fast = single_input_preactivations(16, 4, 4000, "tanh", 1.5, 0.1, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(fast.pow(2).mean((1, 2)).numpy(), full.pow(2).mean((1, 2)).numpy(), rtol=0.05)
