import math

import torch
from repro.nn.models import count_parameters
from repro.papers.neural_ode import (
    CountedFunc,
    ImageODENet,
    LatentODE,
    ODEBlock,
    RNNBaseline,
    spirals,
)
from torch import nn


class Decay(nn.Module):
    def forward(self, t, y):
        return -y


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(-0.7))

    def forward(self, t, y):
        return self.a * y


def test_ode_block_matches_exponential_decay():
    block = ODEBlock(Decay(), rtol=1e-7, atol=1e-9)
    y0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    ys = block(y0, t)
    assert torch.allclose(ys[:, 0, 1], 2 * torch.exp(-t), atol=1e-6)
    assert torch.allclose(block(y0), y0 * math.exp(-1), atol=1e-6)


def test_nfe_counter_counts_calls_and_history():
    f = CountedFunc(Decay())
    for _ in range(3):
        f(0.0, torch.ones(1))
    assert f.nfe == 3
    block = ODEBlock(Decay(), method="rk4", options={"step_size": 0.25})
    block.train()
    block(torch.ones(1, 1))
    assert block.last_nfe == 16 and block.nfe_history == [16]  # 4 steps x 4 stages
    block.eval()
    block(torch.ones(1, 1))
    assert block.nfe_history == [16]
    tight = ODEBlock(Decay(), rtol=1e-8, atol=1e-8)
    tight(torch.ones(1, 1))
    loose = ODEBlock(Decay(), rtol=1e-2, atol=1e-2)
    loose(torch.ones(1, 1))
    assert tight.last_nfe > loose.last_nfe


def test_adjoint_gradient_matches_direct_and_analytic():
    grads = []
    for adjoint in (False, True):
        f = Linear().double()
        block = ODEBlock(f, rtol=1e-8, atol=1e-8, adjoint=adjoint)
        block(torch.ones(1, 1, dtype=torch.float64)).sum().backward()
        grads.append(f.a.grad.item())
    analytic = math.exp(-0.7)  # d/da exp(a t) at t = 1
    assert abs(grads[0] - analytic) < 1e-5 and abs(grads[1] - analytic) < 1e-5


def test_image_models_shapes_and_fewer_parameters():
    x = torch.rand(3, 196)
    ode, res = ImageODENet("odenet", channels=8), ImageODENet("resnet", channels=8, n_blocks=6)
    assert ode(x).shape == res(x).shape == (3, 10)
    assert count_parameters(ode) < count_parameters(res)


def test_spirals_shapes_and_directions():
    s = spirals(40, n_total=300, n_window=30, noise_std=0.0, seed=1)
    assert s["true"].shape == (40, 60, 2) and s["obs"].shape == (40, 30, 2) and s["mask"].shape == (40, 30)
    assert s["t"].shape == (60,) and s["t"][0] == 0
    assert int(s["clockwise"].sum()) == 20
    assert torch.all(s["mask"][:, 0] == 1) and torch.allclose(s["mask"].sum(1), torch.full((40,), 15.0))
    # noiseless observations equal the true points where observed
    assert torch.allclose(s["obs"], s["true"][:, :30] * s["mask"][..., None])
    # direction: the signed area swept around the centre (cross product of successive offsets)
    d = s["true"] - s["centre"][:, None]
    cross = d[:, :-1, 0] * d[:, 1:, 1] - d[:, :-1, 1] * d[:, 1:, 0]
    turning = cross.sum(1)
    assert torch.all((turning < 0) == s["clockwise"])


def test_sequence_models_run():
    s = spirals(6, n_total=200, n_window=20, seed=0)
    lat, rnn = LatentODE(), RNNBaseline()
    assert torch.isfinite(lat.loss(s["obs"], s["mask"], s["t"])) and torch.isfinite(rnn.loss(s["obs"], s["mask"]))
    x, mu, _ = lat(s["obs"], s["mask"], s["t"], sample=False)
    recon, future = rnn.predict(s["obs"], s["mask"], 20)
    assert x.shape == (6, 40, 2) and mu.shape == (6, 4) and recon.shape == (6, 19, 2) and future.shape == (6, 20, 2)
