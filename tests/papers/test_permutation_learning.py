import math

import numpy as np
import pandas as pd
import pytest
import torch
from repro.core.params import ParameterError
from repro.nn.ensemble import train_ensemble
from repro.papers.permutation_learning import (
    TwoLayerReLU,
    apply_permutation,
    ensemble_exactness,
    gp_exactness,
    half_squared_error,
    limiting_gp,
    nonzero_binary_inputs,
    permutation_gp_moments,
    relu_kernels,
    round_binary,
    size_grid,
    sufficient_size,
)


def test_inputs_enumerate_every_nonzero_binary_vector_once():
    x = nonzero_binary_inputs(4)
    assert x.shape == (15, 4)
    assert len({tuple(r) for r in x.int().tolist()}) == 15 and (x.sum(1) > 0).all()
    assert torch.equal(x[[0, 1, 3, 7]], torch.eye(4))  # rows 2^i - 1 are the basis vectors
    with pytest.raises(ParameterError):
        nonzero_binary_inputs(0)


def test_permutation_moves_bit_i_to_position_perm_i():
    perm = [2, 0, 3, 1]
    out = apply_permutation(torch.eye(4), perm)
    for i, p in enumerate(perm):
        assert torch.equal(out[i], torch.eye(4)[p])
    x = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # bits 0 and 1 go to positions 2 and 0
    assert apply_permutation(x, perm).tolist() == [[1.0, 0.0, 1.0, 0.0]]
    with pytest.raises(ParameterError):
        apply_permutation(x, [0, 0, 1, 2])


def test_rounding_threshold_is_one_half():
    assert round_binary(torch.tensor([-0.3, 0.49, 0.51, 1.7])).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_kernels_match_monte_carlo_features():
    g = torch.Generator().manual_seed(0)
    X = torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 1]])
    K, T = relu_kernels(X)
    W = torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    pre = X.double() @ W.T
    K_mc = torch.relu(pre) @ torch.relu(pre).T / W.shape[0]
    T_mc = (X.double() @ X.double().T) * ((pre > 0).double() @ (pre > 0).double().T) / W.shape[0]
    assert torch.allclose(K, K_mc, atol=0.01) and torch.allclose(T, T_mc, atol=0.01)
    _, T2 = relu_kernels(X, train_output=True)
    assert torch.allclose(T2, T + K)


def test_closed_form_matches_general_gaussian_process():
    k, perm = 6, [3, 5, 0, 1, 4, 2]
    X = torch.eye(k)
    xs = nonzero_binary_inputs(k)
    mean, cov = limiting_gp(X, apply_permutation(X, perm), xs)
    s = xs.sum(1).numpy()
    lam, var = permutation_gp_moments(s)
    expect = torch.as_tensor(lam)[:, None] * apply_permutation(xs, perm).double()
    assert torch.allclose(mean, expect, atol=1e-10)
    assert np.allclose(torch.diagonal(cov).numpy(), var, atol=1e-10)
    # at the training points the process interpolates with no variance
    assert np.allclose(var[s == 1], 0, atol=1e-12) and np.allclose(lam[s == 1], 1)
    # lambda_s = 1/2 + arcsin(1/sqrt(s)) / pi, always above 1/2
    assert np.allclose(lam, 0.5 + np.arcsin(1 / np.sqrt(s)) / np.pi) and (lam > 0.5).all()


def test_trained_wide_networks_follow_the_limiting_process():
    k, width, n = 3, 512, 256
    X = torch.eye(k)
    Y = apply_permutation(X, [1, 2, 0])
    ens, _ = train_ensemble(lambda: TwoLayerReLU(k, width, k), range(n), X, Y, steps=60, lr=1.0, batch_size=k,
                            loss_fn=half_squared_error, progress=False)
    xs = nonzero_binary_inputs(k)
    with torch.no_grad():
        assert (ens(X) - Y).abs().max() < 1e-3
        out = ens(xs).double()
    mean, cov = limiting_gp(X, Y, xs)
    all_ones = xs.sum(1) == 3
    lam, var = permutation_gp_moments(3)
    assert abs(out[:, all_ones].mean() - lam) < 0.06  # finite width and 256 samples
    assert abs(out[:, all_ones].var(0).mean() / var - 1) < 0.25
    assert (out.var(0).mean(1) - torch.diagonal(cov)).abs().max() < 0.1


def test_ensemble_scores_on_a_constructed_pool():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    good = targets + 0.1
    bad = targets.clone()
    bad[0, 0] = -2.0  # this member is wrong on input 0 alone
    pool = torch.stack([good] * 7 + [bad])
    scores, per_input = ensemble_exactness(pool, targets, [1, 8], draws=200, per_input=True)
    one = scores[scores["size"] == 1]
    assert one.exact_acc.isin([0.5, 1.0]).all()
    assert abs((~one.all_exact).mean() - 1 / 8) < 0.08  # the bad member is drawn 1/8 of the time
    # the whole pool: input 0 averages to (7 * 1.1 - 2) / 8 = 0.7125 > 1/2, so it is exact
    assert scores[scores["size"] == 8].all_exact.tolist() == [True]
    assert per_input.loc[8].tolist() == [1.0, 1.0] and per_input.loc[1, 1] == 1.0
    with pytest.raises(ParameterError):
        ensemble_exactness(pool, targets, [9])


def test_gaussian_process_scores_follow_the_tail_probability():
    mean = torch.tensor([[0.6]], dtype=torch.float64)
    cov = torch.tensor([[1.0]], dtype=torch.float64)
    sc = gp_exactness(mean, cov, torch.tensor([[1.0]]), [1, 100], draws=20000, seed=1)
    p = sc.groupby("size").all_exact.mean()
    # P(0.6 + z / sqrt(M) > 1/2) = Phi(0.1 sqrt(M))
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    assert abs(p[1] - phi(0.1)) < 0.015 and abs(p[100] - phi(1.0)) < 0.015


def test_sufficient_size_needs_every_larger_size_to_pass():
    p = pd.Series([0.1, 0.95, 0.8, 0.92, 1.0], index=[1, 2, 4, 8, 16])
    assert sufficient_size(p, 0.9) == 8
    assert np.isnan(sufficient_size(pd.Series([0.1, 0.5], index=[1, 2]), 0.9))
    assert sufficient_size(pd.Series([0.95, 0.99], index=[1, 2]), 0.9) == 1
    table = pd.DataFrame({"size": [1, 1, 2, 2], "draw": [0, 1, 0, 1], "all_exact": [True, False, True, True]})
    assert sufficient_size(table, 0.9) == 2


def test_size_grid():
    g = size_grid(100, per_octave=2)
    assert g[0] == 1 and g[-1] == 100 and g == sorted(set(g))
    assert g == [1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 100]  # 2^(i/2), rounded
