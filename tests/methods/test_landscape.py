import pytest
import torch
from repro.methods import landscape as L
from repro.nn.train import evaluate
from torch import nn


def bn_mlp():
    # batch norm brings a float buffer (running statistics) and an integer one (the batch counter)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).eval()


def test_interpolate_endpoints_midpoint_and_integer_buffers():
    torch.manual_seed(0)
    a, b = bn_mlp(), bn_mlp()
    b.train()
    b(torch.randn(8, 5))  # changes b's running statistics and counter
    line = L.interpolate(a, b, [0.0, 0.5, 1.0])
    sa, sb = a.state_dict(), b.state_dict()
    for k, v in line.items():
        assert v.shape == (3, *sa[k].shape)
        if sa[k].is_floating_point():
            assert torch.allclose(v[0], sa[k]) and torch.allclose(v[2], sb[k])
            assert torch.allclose(v[1], (sa[k] + sb[k]) / 2)
        else:
            assert torch.equal(v[1], sa[k])
    x, y = torch.randn(40, 5), torch.randint(0, 2, (40,))
    res = L.evaluate_stacked(a, line, (x, y))
    assert res["loss"][0].item() == pytest.approx(evaluate(a, x, y)["loss"], rel=1e-5)
    assert res["loss"][2].item() == pytest.approx(evaluate(b, x, y)["loss"], rel=1e-5)
