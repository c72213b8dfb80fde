import itertools

import numpy as np
import pytest
import torch
from repro.papers.convergent_learning import (
    conv_unit_samples,
    linear_cka,
    live_units,
    one_to_one_matching,
    semi_matching,
    sparse_prediction,
    unit_correlations,
)


def test_unit_correlations_match_numpy_corrcoef():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 5)), rng.normal(size=(200, 3))
    b[:, 0] = 2 * a[:, 1] + 0.1 * rng.normal(size=200)
    c = unit_correlations(torch.tensor(a), b)
    ref = np.corrcoef(a.T, b.T)[:5, 5:]
    assert c.shape == (5, 3)
    np.testing.assert_allclose(c, ref, atol=1e-10)
    assert c[1, 0] > 0.99


def test_dead_unit_has_zero_correlation():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 3))
    a[:, 2] = 0.0
    c = unit_correlations(a, a)
    assert np.all(c[2] == 0) and np.all(c[:, 2] == 0)
    np.testing.assert_allclose(np.diag(c)[:2], 1.0)
    assert live_units(a).tolist() == [True, True, False]


def test_one_to_one_matching_against_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(20):
        corr = rng.uniform(-1, 1, size=(5, 5))
        r, c, vals = one_to_one_matching(corr)
        best = max(sum(corr[i, p[i]] for i in range(5)) for p in itertools.permutations(range(5)))
        assert np.isclose(vals.sum(), best)
        assert len(set(c.tolist())) == 5 and r.tolist() == list(range(5))


def test_one_to_one_recovers_a_permutation():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 6))
    perm = rng.permutation(6)
    b = a[:, perm] + 0.05 * rng.normal(size=(300, 6))
    r, c, vals = one_to_one_matching(unit_correlations(a, b))
    assert np.all(perm[c] == r) and vals.min() > 0.99


def test_semi_matching_is_rowwise_argmax_and_may_repeat():
    corr = np.array([[0.1, 0.9, 0.2], [0.3, 0.8, 0.1], [0.5, 0.4, 0.45]])
    j, v = semi_matching(corr)
    assert j.tolist() == [1, 1, 0]
    np.testing.assert_allclose(v, [0.9, 0.8, 0.5])
    _, c, _ = one_to_one_matching(corr)
    assert len(set(c.tolist())) == 3  # the bipartite matching cannot repeat


def test_sparse_prediction_finds_the_few_true_sources():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 10))
    y = np.stack([x[:, 0] + x[:, 3], -x[:, 7], rng.normal(size=500)], 1)
    res = sparse_prediction(x, y, alpha=0.05)
    assert res["coef"].shape == (3, 10)
    assert set(np.flatnonzero(np.abs(res["coef"][0]) > 0.1)) == {0, 3}
    assert set(np.flatnonzero(np.abs(res["coef"][1]) > 0.1)) == {7}
    assert res["r2"][0] > 0.9 and res["r2"][1] > 0.9 and res["r2"][2] < 0.1
    assert res["n_nonzero"][2] <= 2


def test_conv_unit_samples_shapes_and_values():
    torch.manual_seed(0)
    feats = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    x = torch.randn(3, 1, 8, 8)
    s = conv_unit_samples(feats, x, layers=[1, 2], positions=5, seed=0)
    assert s[1].shape == (15, 4) and s[2].shape == (15, 4)
    full = feats[1](feats[0](x))
    # every sample row is one (image, position) column of the full activation map
    cols = full.permute(0, 2, 3, 1).reshape(-1, 4)
    assert all(torch.isclose(cols, row).all(1).any() for row in s[1])
    s2 = conv_unit_samples(feats, x, layers=[1], positions=5, seed=0)
    assert torch.equal(s[1], s2[1])


def cka_hsic(x, y):
    """CKA through the centering matrix H and Gram matrices (Kornblith et al., eq. 1-3)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_cka_matches_gram_formula_and_invariances():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(60, 5))
    y[:, 0] += x[:, 0]
    assert linear_cka(torch.tensor(x), torch.tensor(y)) == pytest.approx(cka_hsic(x, y), rel=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(torch.tensor(x), torch.tensor(3 * x @ q)) == pytest.approx(1.0)
