"""The wide-deep-optimality chapter's module: the singular exponents of the deep kernels, the classical
classifiers they become (majority vote, 1-NN, the singular-kernel rule), and the Dirichlet data with its Bayes error."""
from __future__ import annotations

import math

import pytest
import torch
from repro.methods import kernels as K
from repro.papers import wide_deep_optimality as W
from repro.papers.wide_deep_optimality import dirichlet_sphere


def test_singular_exponents():
    for dim in (2, 3, 5, 9):  # the paper's construction: 2 alpha = d = dim - 1
        assert W.singular_exponent(K.consistent_activation(dim)) == pytest.approx((dim - 1) / 2)
    assert W.singular_exponent("hermite3") == math.inf
    assert W.singular_exponent("relu") == 0.0
    assert W.singular_exponent("sine:2.676") == pytest.approx(1.0, abs=1e-3)


def test_classifiers():
    X, y, _ = dirichlet_sphere(60, [1, 2], [2, 1], seed=3)
    Xt, _, _ = dirichlet_sphere(30, [1, 2], [2, 1], seed=4)
    # interpolation: a kernel classifier reproduces its training labels
    S, T = K.nngp_ntk(X, None, "relu", 3)
    assert (K.kernel_classify(T, y, T) == y).all()
    # majority vote and 1-NN against direct computations
    assert (W.majority_vote(y, 5) == (1 if (y == 1).sum() > (y == -1).sum() else -1)).all()
    d = torch.cdist(Xt, X)
    assert (W.nearest_neighbor(X, y, Xt) == y[d.argmin(1)]).all()
    # a singular kernel with a huge exponent is 1-NN; with exponent 0 it is majority vote
    assert (W.singular_kernel_classify(X, y, Xt, 200.0) == y[d.argmin(1)]).all()
    assert (W.singular_kernel_classify(X, y, Xt, 0.0) == torch.sign(y.sum())).all()
    # log-space classification equals the linear one
    lS, lT = K.nngp_ntk(X, None, "hermite3", 3, log=True)
    _, lTt = K.nngp_ntk(Xt, X, "hermite3", 3, log=True)
    _, Tt = K.nngp_ntk(Xt, X, "hermite3", 3)
    _, Tr = K.nngp_ntk(X, None, "hermite3", 3)
    assert (K.kernel_classify(lT, y, lTt, log=True) == K.kernel_classify(Tr, y, Tt)).all()
    # several classes: one-hot regression
    y3 = torch.arange(60) % 3
    assert (K.kernel_classify(T, y3, T) == y3).all()


def test_dirichlet_sphere_bayes_error():
    X, y, eta = dirichlet_sphere(100_000, [1, 2], [2, 1], prior_pos=0.4, seed=0)
    assert torch.allclose(X.norm(dim=1), torch.ones(len(X), dtype=torch.float64))
    # Bayes error of this problem in closed form: int min(0.8 (1 - t), 1.2 t) dt = 0.24
    assert float(torch.minimum(eta, 1 - eta).mean()) == pytest.approx(0.24, abs=0.004)
    # eta is the class probability: labels agree with it on average
    assert float((y == 1).double().mean()) == pytest.approx(float(eta.mean()), abs=0.01)
    _, ys, _ = dirichlet_sphere(50, [1, 2], [2, 1], prior_pos=0.4, seed=0, stratified=True)
    assert int((ys == 1).sum()) == 20
