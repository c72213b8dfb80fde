"""TODO docstring"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from repro.methods import landscape as L
from repro.nn.train import evaluate
from repro.papers import loss_landscape as P
from repro.papers.loss_landscape import ResidualMLP
from torch import nn


def conv_bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


def test_filter_normalization_matches_every_filter_norm_and_zeros_bias_and_bn():
    net = conv_bn_net()
    d = P.random_direction(net, torch.Generator().manual_seed(1))
    w = L.weights_of(net)
    for name, v in d.items():
        if w[name].dim() <= 1:  # biases and batch-norm scale/shift are not perturbed
            assert torch.count_nonzero(v) == 0, name
        else:
            per_filter_d = v.flatten(1).norm(dim=1)
            per_filter_w = w[name].flatten(1).norm(dim=1)
            assert torch.allclose(per_filter_d, per_filter_w, rtol=1e-5), name
    raw = P.random_direction(net, torch.Generator().manual_seed(1), filter_normalize=False)
    # without normalization the entries stay standard normal: the filter norms are not the weights'
    assert not torch.allclose(raw["0.weight"].flatten(1).norm(dim=1), w["0.weight"].flatten(1).norm(dim=1), rtol=0.1)
    assert abs(raw["4.weight"].std().item() - 1) < 0.1


def test_direction_is_reproducible_and_scale_invariant():
    net = conv_bn_net()
    a = P.random_direction(net, torch.Generator().manual_seed(3))
    with torch.no_grad():
        net[0].weight.mul_(10.0)
    b = P.random_direction(net, torch.Generator().manual_seed(3))
    # the same Gaussian draw, rescaled with the weights: filter-normalized directions scale with the filters
    assert torch.allclose(b["0.weight"], 10 * a["0.weight"], rtol=1e-5)
    assert torch.allclose(b["4.weight"], a["4.weight"])


def test_grid_loss_at_origin_equals_the_models_loss():
    torch.manual_seed(0)
    x, y = torch.randn(300, 12), torch.randint(0, 4, (300,))
    net = ResidualMLP(12, 16, 2, 4)
    net.train()
    net(x)  # give batch norm non-trivial running statistics
    net.eval()
    ref = evaluate(net, x, y)
    g = torch.Generator().manual_seed(0)
    d1, d2 = P.random_direction(net, g), P.random_direction(net, g)
    loss, acc = L.loss_along(net, (d1, d2), ([-0.5, 0.0, 0.5], [-1.0, 0.0, 1.0]), (x, y), return_acc=True,
                             points_per_call=4, batch_size=128)
    assert loss.shape == (3, 3)
    assert loss[1, 1] == pytest.approx(ref["loss"], rel=1e-5)
    assert acc[1, 1] == pytest.approx(ref["acc"])
    line = L.loss_along(net, d1, [0.0, 0.5], (x, y))
    assert line[0] == pytest.approx(ref["loss"], rel=1e-5) and line[1] == pytest.approx(loss[2, 1], rel=1e-5)
    # away from the origin the loss is the model's loss with the perturbed weights
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.add_(0.5 * d1[name] - 1.0 * d2[name])
    assert loss[2, 0] == pytest.approx(evaluate(net, x, y)["loss"], rel=1e-4)


def test_quadratic_model_gives_the_analytic_parabola():
    torch.manual_seed(0)
    X, y = torch.randn(50, 3, dtype=torch.float64), torch.randn(50, 1, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    g = torch.Generator().manual_seed(2)
    d1 = P.random_direction(model, g, filter_normalize=False)
    d2 = P.random_direction(model, g, filter_normalize=False)
    w, u, v = model.weight.detach(), d1["weight"], d2["weight"]
    r, p, q = X @ w.T - y, X @ u.T, X @ v.T
    alphas, betas = np.linspace(-2, 2, 9), np.array([-1.0, 0.5])
    # L(w + a u + b v) = mean((r + a p + b q)^2): a quadratic in (a, b) with these coefficients
    expect = np.array([[((r + a * p + b * q) ** 2).mean().item() for b in betas] for a in alphas])
    got = L.loss_along(model, (d1, d2), (alphas, betas), (X, y), loss_fn=F.mse_loss, points_per_call=5)
    assert np.allclose(got, expect, rtol=1e-10)
    line = L.loss_along(model, d1, alphas, (X, y), loss_fn=F.mse_loss)
    c2, c1, c0 = (p ** 2).mean().item(), 2 * (r * p).mean().item(), (r ** 2).mean().item()
    assert np.allclose(line, c2 * alphas ** 2 + c1 * alphas + c0, rtol=1e-10)
    assert P.curvature_at_origin(alphas, line) == pytest.approx(2 * c2, rel=1e-8)


def test_surface_hessian_and_local_minima_on_known_surfaces():
    xs, ys = np.linspace(-1, 1, 21), np.linspace(-1, 1, 11)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    # f = 3x^2 - y^2 + xy: Hessian [[6, 1], [1, -2]], eigenvalues 2 -+ sqrt(17)
    lmin, lmax = P.surface_hessian(3 * X ** 2 - Y ** 2 + X * Y, xs, ys)
    assert lmin.shape == (19, 9)
    assert np.allclose(lmin, 2 - np.sqrt(17)) and np.allclose(lmax, 2 + np.sqrt(17))
    bowl = X ** 2 + Y ** 2
    assert P.local_minima(bowl).sum() == 1 and P.local_minima(bowl)[10, 5]
    two = (X ** 2 - 0.25) ** 2 + Y ** 2  # minima at x = -0.5 and x = 0.5
    m = P.local_minima(two)
    assert m.sum() == 2 and m[5, 5] and m[15, 5]


def test_normalize_direction_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        P.normalize_direction({"w": torch.ones(2, 3)}, {"w": torch.ones(3, 2)})


def test_residual_mlp_with_and_without_skips_share_weights_and_differ_only_in_the_shortcut():
    torch.manual_seed(0)
    a = ResidualMLP(6, 8, 3, 2, skip=True).eval()
    torch.manual_seed(0)
    b = ResidualMLP(6, 8, 3, 2, skip=False).eval()
    assert a.depth == b.depth == 8
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = torch.randn(5, 6)
    with torch.no_grad():
        h = a.stem(x)
        block = a.blocks[0]
        inner = block.bn2(block.fc2(torch.relu(block.bn1(block.fc1(h)))))
        assert torch.allclose(a.blocks[0](h), torch.relu(inner + h))
        assert torch.allclose(b.blocks[0](h), torch.relu(inner))
        assert not torch.allclose(a(x), b(x))


def test_fit_seeds_trains_one_model_per_seed_with_the_learning_rate_drop():
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    build = lambda: ResidualMLP(6, 8, 1, 3, skip=False)  # noqa: E731
    models = P.fit_seeds(build, [0, 1], x, y, batch_size=16, steps=8, lr=0.05, weight_decay=0.0)
    assert len(models) == 2 and not any(m.training for m in models)
    w0, w1 = (torch.cat([p.flatten() for p in m.parameters()]) for m in models)
    assert not torch.allclose(w0, w1)  # seeds give different networks
    torch.manual_seed(0)
    init = torch.cat([p.flatten() for p in build().parameters()])
    assert not torch.allclose(w0, init)  # and they were trained
    assert evaluate(models[0], x, y)["loss"] < float(np.log(3)) + 0.5
