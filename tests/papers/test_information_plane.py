"""Tests of the 12-bit task and the binned mutual-information estimator (repro.papers.information_plane)."""
import math

import numpy as np
import torch
from repro.nn.ensemble import Ensemble
from repro.papers.information_plane import (
    batched_entropy,
    binned_information,
    discretize,
    ensemble_layers,
    entropy,
    ib_network,
    icosahedron,
    information_plane,
    mutual_information,
    twelve_bit_task,
)


def test_icosahedron_is_uniform():
    v = icosahedron()
    assert v.shape == (12, 3)
    assert np.allclose(np.linalg.norm(v, axis=1), 1)
    d = np.round(v @ v.T, 9)
    assert set(np.unique(d)) == {round(-1.0, 9), round(-1 / 5 ** 0.5, 9), round(1 / 5 ** 0.5, 9), 1.0}
    assert np.allclose(v.sum(0), 0)


def test_twelve_bit_task_balanced_and_symmetric():
    x, y, info = twelve_bit_task()
    assert x.shape == (4096, 12) and y.shape == (4096,)
    assert len(torch.unique(x, dim=0)) == 4096
    assert abs(y.float().mean().item() - 0.5) < 0.01
    # flipping every bit maps the dipole to its negative: same norm, same label
    flipped = (1 - x) @ (2 ** torch.arange(11, -1, -1)).float()
    assert torch.equal(y[flipped.long()], y)


def test_discretize_known_values():
    t = torch.tensor([-1.0, -0.99, 0.0, 0.5, 0.999, 1.0, 2.0])
    assert discretize(t, 2, -1, 1).tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert discretize(t, 4, -1, 1).tolist() == [0, 0, 2, 3, 3, 3, 3]
    assert discretize(torch.tensor([0.0, 0.1, 0.25, 0.5]), 30, -1, 1).tolist() == [15, 16, 18, 22]


def test_entropy_and_mi_known_answers():
    a = torch.arange(8)
    assert math.isclose(entropy(a), 3.0)
    assert math.isclose(entropy(torch.zeros(8, dtype=torch.long)), 0.0, abs_tol=1e-12)
    b = a % 2
    assert math.isclose(mutual_information(a, b), 1.0)
    assert math.isclose(mutual_information(b, (a // 2) % 2), 0.0, abs_tol=1e-12)
    codes = torch.randint(0, 5, (3, 200))
    for row, h in zip(codes, batched_entropy(codes)):
        assert math.isclose(entropy(row), float(h), rel_tol=1e-9)


def test_binned_information_identity_and_constant():
    x, y, _ = twelve_bit_task()
    ixt, ity = binned_information(2 * x - 1, y, n_bins=30)  # T = X: every input in its own cell
    assert math.isclose(ixt, 12.0)
    h_y = entropy(y)
    assert math.isclose(ity, h_y, rel_tol=1e-9)
    ixt, ity = binned_information(torch.zeros(4096, 3), y)  # constant T
    assert ixt == 0.0 and abs(ity) < 1e-12
    t = torch.rand(4096, 2) * 2 - 1  # random T: I(T;Y) <= H(Y) and I(X;T) <= log2(30^2)
    ixt, ity = binned_information(t, y)
    assert 0 <= ity <= h_y + 1e-12 and ixt <= 2 * math.log2(30)


def test_information_plane_matches_single_layer_estimator():
    _, y, _ = twelve_bit_task()
    torch.manual_seed(0)
    layers = [torch.tanh(3 * torch.randn(3, 4096, k)) for k in (5, 2)]
    ip = information_plane(layers, y, 30)
    for m in range(3):
        for l, t in enumerate(layers):
            assert np.allclose(ip[m, l], binned_information(t[m], y, 30), atol=1e-9)


def test_ensemble_layers_shapes_and_values():
    x, _, _ = twelve_bit_task()
    torch.manual_seed(0)
    nets = [ib_network("tanh") for _ in range(2)]
    layers = ensemble_layers(Ensemble(nets), x[:10])
    assert [t.shape[-1] for t in layers] == [10, 7, 5, 4, 3, 2]
    h = x[:10]
    for lin in nets[1].layers[:-1]:
        h = torch.tanh(lin(h))
    assert torch.allclose(layers[4][1], h, atol=1e-6)
    assert torch.allclose(layers[-1].sum(-1), torch.ones(2, 10))


def test_per_model_max_range():
    _, y, _ = twelve_bit_task()
    torch.manual_seed(1)
    t = torch.relu(torch.randn(1, 4096, 3)).repeat(2, 1, 1)
    t[1] *= 4.0  # rescaling a ReLU layer does not change its binned information with the "max" range
    ip = information_plane([t], y, 30, ["max"])
    assert np.allclose(ip[0], ip[1])
    assert np.allclose(ip[0, 0], binned_information(t[0], y, 30, 0.0, float(t[0].max())))
