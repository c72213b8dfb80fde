"""Tests for the linear-interpolation tools in repro.landscape and the MaxoutMLP / LSTMClassifier models."""
import itertools

import numpy as np
import pytest
import torch
from repro.methods import landscape as L
from repro.nn.ensemble import train_ensemble
from repro.nn.models import MLP
from repro.nn.train import evaluate, train
from repro.papers import linear_interpolation as LI
from repro.papers.linear_interpolation import LSTMClassifier, MaxoutMLP
from torch import nn


def toy(n=200, d=12, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, x[:, :c].argmax(1)


# ---- models ------------------------------------------------------------------------------------

def test_maxout_is_the_max_over_pieces():
    torch.manual_seed(0)
    net = MaxoutMLP(5, 4, 2, 3, pieces=3)
    x = torch.randn(7, 5)
    h = x
    for layer in net.hidden:  # unit j takes the max over outputs 3j, 3j+1, 3j+2, written out by hand
        z = h @ layer.weight.T + layer.bias
        h = torch.stack([torch.max(torch.max(z[:, 3 * j], z[:, 3 * j + 1]), z[:, 3 * j + 2]) for j in range(4)], 1)
    assert torch.allclose(net(x), h @ net.out.weight.T + net.out.bias, atol=1e-6)


def test_lstm_classifier_matches_torch_lstm():
    torch.manual_seed(0)
    net = LSTMClassifier(d_in=2, hidden=6, d_out=3, chunk=2)
    ref = nn.LSTM(4, 6, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(net.ih.weight)
        ref.bias_ih_l0.copy_(net.ih.bias)
        ref.weight_hh_l0.copy_(net.hh.weight)
        ref.bias_hh_l0.zero_()
    x = torch.randn(5, 12)  # 12 numbers = 3 steps of chunk 2 x d_in 2
    h, _ = ref(x.view(5, 3, 4))
    assert torch.allclose(net(x), net.out(h[:, -1]), atol=1e-5)
    with pytest.raises(ValueError):
        net(torch.randn(5, 10))


# ---- interpolation of stacked (ensemble) parameters ---------------------------------------------

def test_initial_weights_are_where_train_ensemble_starts():
    x, y = toy()
    build = lambda: MLP(12, 8, 1, 4)  # noqa: E731
    init = LI.initial_weights(build, [3, 5])
    ens, _ = train_ensemble(build, [3, 5], x, y, steps=1, lr=1e-30, progress=False)  # a step that moves nothing
    for k, v in ens.params.items():
        assert torch.equal(v.detach(), init[k]), k
    assert not torch.equal(init["layers.0.weight"][0], init["layers.0.weight"][1])


def test_interpolate_broadcasts_over_the_ensemble_axis_and_matches_per_model_losses():
    x, y = toy()
    build = lambda: MaxoutMLP(12, 6, 1, 4, pieces=2)  # noqa: E731
    a, b = LI.initial_weights(build, [0, 1, 2]), LI.initial_weights(build, [7, 8, 9])
    alphas = np.array([-0.5, 0.0, 0.3, 1.0, 1.5])
    P = L.interpolate(a, b, alphas)
    assert P["out.weight"].shape == (5, 3, 4, 6)
    i, n = 2, 1
    assert torch.allclose(P["out.weight"][i, n], 0.7 * a["out.weight"][n] + 0.3 * b["out.weight"][n])
    flat = {k: v.flatten(0, 1) for k, v in P.items()}
    stacked = L.evaluate_stacked(build(), flat, (x, y))
    sequential = L.evaluate_sequential(build(), flat, (x, y), batch_size=64)
    net = build()
    net.load_state_dict({k: v[i, n] for k, v in P.items()})
    direct = evaluate(net, x, y)
    assert stacked["loss"][i * 3 + n].item() == pytest.approx(direct["loss"], rel=1e-5)
    assert torch.allclose(stacked["loss"], sequential["loss"], rtol=1e-5)
    assert torch.equal(stacked["acc"], sequential["acc"])


def test_lstm_runs_under_vmap_in_evaluate_stacked():
    x = torch.randn(50, 8)
    y = torch.randint(0, 3, (50,))
    build = lambda: LSTMClassifier(1, 5, 3, chunk=2)  # noqa: E731
    P = LI.initial_weights(build, [0, 1, 2, 3])
    r = L.evaluate_stacked(build(), P, (x, y))
    s = L.evaluate_sequential(build(), P, (x, y))
    assert torch.allclose(r["loss"], s["loss"], rtol=1e-5)


# ---- the two curve measures ---------------------------------------------------------------------

def brute_force_gap(f):
    """max over i <= j of f[j] - f[i] (the largest rise), by enumerating pairs."""
    return max(max(f[j] - f[i] for i, j in itertools.combinations_with_replacement(range(len(f)), 2)), 0.0)


def test_monotonicity_gap_is_zero_for_decreasing_curves_and_the_largest_rise_otherwise():
    alphas = np.linspace(-0.5, 1.5, 81)
    decreasing = 3 - np.tanh(4 * alphas)
    assert LI.monotonicity_gap(alphas, decreasing) == 0.0
    rng = np.random.default_rng(0)
    curves = np.cumsum(rng.normal(-0.05, 0.1, size=(6, 81)), axis=1)
    gaps = LI.monotonicity_gap(alphas, curves)
    inside = (alphas >= 0) & (alphas <= 1)
    assert gaps.shape == (6,)
    for g, f in zip(gaps, curves):
        assert g == pytest.approx(brute_force_gap(f[inside]))
    # a step down, a rise of 0.5, then further down: the gap is the rise
    assert LI.monotonicity_gap([0, 0.25, 0.5, 0.75, 1], [3.0, 2.0, 2.5, 1.0, 0.5]) == pytest.approx(0.5)
    assert LI.monotonicity_gap([0, 0.25, 0.5, 0.75, 1], [3.0, 2.0, 2.5, 1.0, 2.9]) == pytest.approx(1.9)
    # outside the window a rise does not count
    assert LI.monotonicity_gap(alphas, decreasing + 0.2 * np.exp(-((alphas - 1.3) / 0.05) ** 2)) == 0.0


def test_barrier_height_is_the_rise_above_the_chord():
    alphas = np.linspace(0, 1, 51)
    convex = (alphas - 0.3) ** 2
    assert LI.barrier_height(alphas, convex) == pytest.approx(0.0, abs=1e-12)
    ends = 1.0 + 0.5 * alphas  # a linear trend plus a parabola of height h at the midpoint
    h = 0.8
    assert LI.barrier_height(alphas, ends + 4 * h * alphas * (1 - alphas)) == pytest.approx(h)
    both = np.stack([convex, ends + 4 * h * alphas * (1 - alphas)])
    assert LI.barrier_height(alphas, both) == pytest.approx([0.0, h])
    with pytest.raises(ValueError):
        LI.barrier_height(np.linspace(0.1, 1, 10), convex[:10])


# ---- trajectories ---------------------------------------------------------------------------------

def test_trajectory_coordinates_recover_a_known_path():
    g = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)}
    u = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)}
    w = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)}
    uf = torch.cat([u["w"].flatten(), u["b"]]).double()
    wf = torch.cat([w["w"].flatten(), w["b"]]).double()
    wf = wf - wf.dot(uf) / uf.dot(uf) * uf       # make w orthogonal to u ...
    wf = wf / wf.norm() * uf.norm()               # ... and as long
    w = {"w": wf[:12].view(3, 4).float(), "b": wf[12:].float()}
    a_t = torch.tensor([0.0, 0.2, 0.6, 0.9, 1.0])
    b_t = torch.tensor([0.0, 0.3, 0.5, 0.2, 0.0])
    snaps = {k: start[k] + a_t.view(-1, *[1] * start[k].dim()) * u[k] + b_t.view(-1, *[1] * start[k].dim()) * w[k]
             for k in start}
    end = {k: start[k] + u[k] for k in start}
    c = LI.trajectory_coordinates(snaps, start, end)
    assert c["alpha"] == pytest.approx(a_t.numpy(), abs=1e-5)
    assert c["beta"] == pytest.approx(b_t.numpy(), abs=1e-5)
    assert c["beta_v"] == pytest.approx(b_t.numpy(), abs=1e-5)  # one excursion direction: v = w
    assert torch.allclose(c["direction"]["w"], w["w"], atol=1e-5)
    assert torch.allclose(c["u"]["b"], u["b"], atol=1e-6)


def test_train_with_snapshots_is_train_plus_copies():
    x, y = toy()
    torch.manual_seed(4)
    net = MLP(12, 8, 1, 4)
    init = {k: v.detach().clone() for k, v in net.named_parameters()}
    hist, snaps = LI.train_with_snapshots(net, x, y, every=5, steps=23, lr=0.1, batch_size=32, momentum=0.9,
                                         seed=4, progress=False)
    assert snaps["layers.0.weight"].shape[0] == 1 + 4 + 1  # start, steps 5..20, and the last step
    assert torch.equal(snaps["layers.0.weight"][0], init["layers.0.weight"])
    assert torch.equal(snaps["layers.1.bias"][-1], net.layers[1].bias.detach())
    assert list(hist.step) == [5, 10, 15, 20, 23]
    torch.manual_seed(4)
    ref = MLP(12, 8, 1, 4)
    train(ref, x, y, steps=23, lr=0.1, batch_size=32, momentum=0.9, seed=4, progress=False)
    assert torch.allclose(ref.layers[0].weight, net.layers[0].weight)
