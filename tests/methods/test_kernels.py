import math

import numpy as np
import pytest
import torch
from repro.core.params import ParameterError
from repro.methods import kernels as K

ALL = ["relu", "erf", "tanh", "hermite3", "sine:2.676", "consistent:2", "consistent:5"]


def _mc_dual(phi, rho, n=400_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.randn(n, generator=g, dtype=torch.float64)
    v = rho * u + math.sqrt(1 - rho ** 2) * w
    prod = phi(u) * phi(v)
    return float(prod.mean()), float(prod.std() / math.sqrt(n))


def test_relu_arccos_dual_matches_monte_carlo():
    act = K.get_activation("relu")
    for rho in (-0.9, -0.3, 0.0, 0.5, 0.95):
        r = torch.tensor([rho], dtype=torch.float64)
        mc, se = _mc_dual(act.phi, rho)
        assert abs(float(act.dual(r)[0]) - mc) < 5 * se + 1e-4
        mcd, sed = _mc_dual(act.dphi, rho, seed=1)
        assert abs(float(act.dual_prime(r)[0]) - mcd) < 5 * sed + 1e-4
    # known values: xi(0) = 1/pi, xi(1) = 1, xi'(1) = 1, xi'(-1) = 0
    r = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    np.testing.assert_allclose(act.dual(r).numpy(), [1 / math.pi, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(act.dual_prime(r).numpy(), [0.5, 1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("name", [a for a in ALL if a != "relu"])  # ReLU's kink defeats quadrature: MC above
def test_closed_form_duals_match_quadrature(name):
    act = K.get_activation(name)
    r = torch.linspace(-0.99, 0.99, 23, dtype=torch.float64)
    np.testing.assert_allclose(K.gauss_dual(act.phi, act.phi, r, 128).numpy(), act.dual(r).numpy(), atol=1e-6)
    np.testing.assert_allclose(K.gauss_dual(act.dphi, act.dphi, r, 128).numpy(), act.dual_prime(r).numpy(),
                               atol=3e-6)
    assert act.value(1.0) == pytest.approx(1.0, abs=1e-9)  # normalized: E[phi(u)^2] = 1


def test_hermite_dual_matches_monte_carlo():
    act = K.consistent_activation(5)  # dual rho/4 + rho^2/2 + rho^3/4
    for rho in (-0.6, 0.3, 0.8):
        mc, se = _mc_dual(act.phi, rho)
        assert abs(act.value(rho) - (rho / 4 + rho ** 2 / 2 + rho ** 3 / 4)) < 1e-12
        assert abs(act.value(rho) - mc) < 5 * se


def test_recursion_known_answers():
    rho = torch.tensor([0.2, 0.7, 0.95, 1.0], dtype=torch.float64)
    # ReLU: Sigma(1) = 1 and Theta^(L)(1) = L + 1 at every depth
    for L, S, T in K.recursion(rho, "relu", [0, 1, 5, 40]):
        assert float(S[-1]) == pytest.approx(1.0)
        assert float(T[-1]) == pytest.approx(L + 1)
    # monomial dual rho^3: Sigma^(L) = rho^(3^L) and Theta^(L) = rho^(3^L) (3^(L+1) - 1) / 2
    for L, S, T in K.recursion(rho, "hermite3", [0, 1, 2, 3]):
        np.testing.assert_allclose(S.numpy(), rho.numpy() ** (3 ** L), rtol=1e-12)
        np.testing.assert_allclose(T.numpy(), rho.numpy() ** (3 ** L) * (3 ** (L + 1) - 1) / 2, rtol=1e-12)


@pytest.mark.parametrize("name", ["relu", "hermite3", "consistent:2", "erf", "tanh"])
def test_log_space_recursion_agrees(name):
    rho = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
    lin = list(K.recursion(rho, name, [1, 3, 6]))
    log = list(K.recursion(rho, name, [1, 3, 6], log=True))
    for (_, S, T), (_, lS, lT) in zip(lin, log):
        ok = S > 1e-250
        np.testing.assert_allclose(torch.exp(lS[ok]).numpy(), S[ok].numpy(), rtol=1e-9)
        np.testing.assert_allclose(torch.exp(lT[ok]).numpy(), T[ok].numpy(), rtol=1e-9)
    # deep enough to underflow in linear space, the log recursion stays finite and ordered in rho
    (_, _, lT), = K.recursion(rho[1:], name, [400], log=True)
    assert torch.isfinite(lT).all() and (lT.diff() >= -1e-9).all()
    with pytest.raises(ParameterError):
        next(K.recursion(torch.tensor([-0.5]), name, [2], log=True))


@pytest.mark.parametrize("name", ALL)
def test_kernels_symmetric_and_psd(name):
    X = torch.randn(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    S, T = K.nngp_ntk(X, None, name, 3)
    for M in (S, T):
        assert torch.allclose(M, M.T, atol=1e-12)
        ev = torch.linalg.eigvalsh(M)
        assert ev.min() > -1e-9 * ev.max()
    S12, T12 = K.nngp_ntk(X[:5], X, name, 3)
    assert torch.allclose(T12, T[:5], atol=1e-9)


@pytest.mark.parametrize("name,depth", [("relu", 2), ("erf", 2), ("tanh", 1)])
def test_recursion_matches_finite_wide_network(name, depth):
    """The empirical NTK (torch.func.jacrev) of one width-4096 network agrees with the recursion; the
    finite-width fluctuations are a few per cent (they scale as sqrt(depth / width))."""
    X = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    theta_hat, sigma_hat = K.empirical_ntk(X, name, width=4096, depth=depth, seed=0)
    S, T = K.nngp_ntk(X.double(), None, name, depth)
    assert (theta_hat - T).abs().max() / T.abs().max() < 0.1
    assert (sigma_hat - S).abs().max() < 0.1
    # and it is not fooled by a wrong depth: the recursion one layer shallower or deeper is far off
    for other in (depth - 1, depth + 1):
        _, T_other = K.nngp_ntk(X.double(), None, name, other)
        assert (theta_hat - T_other).abs().max() / T.abs().max() > 0.2


def test_bad_names():
    with pytest.raises(ParameterError, match="activation must be one of"):
        K.get_activation("swish")
    with pytest.raises(ParameterError):
        K.hermite_activation({1: 0.3, 2: 0.3})
