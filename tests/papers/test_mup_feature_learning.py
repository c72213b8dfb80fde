import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from repro.core.params import ParameterError
from repro.papers.mup_feature_learning import (
    AbcMLP,
    AbcSGD,
    Parametrization,
    abc,
    coord_size,
    coordinate_check,
    exponent_table,
    loglog_slope,
    member_loss,
    train_members,
)


def toy_data(n=256, d=12, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :k].argmax(1) + (x[:, k] > 1).long()) % k
    return x, y


def test_exponent_table_and_regimes():
    sp, ntk, mup = abc("sp", 3), abc("ntk", 3), abc("mup", 3)
    assert sp.a == (0, 0, 0, 0) and sp.b == (0, 0.5, 0.5, 0.5) and sp.c == (0, 0, 0, 0)
    assert ntk.a == (0, 0.5, 0.5, 0.5) and ntk.b == (0, 0, 0, 0)
    assert mup.a == (-0.5, 0, 0, 0.5) and mup.b == (0.5, 0.5, 0.5, 0.5)
    # Yang and Hu: muP is the feature-learning limit (r = 0), NTK the kernel limit (r = 1/2),
    # SP with a width-independent learning rate is unstable, SP with lr ~ 1/width is a kernel limit
    assert mup.r == 0 and mup.regime == "feature learning"
    assert ntk.r == 0.5 and ntk.regime == "kernel regime"
    assert sp.r == -1 and sp.regime.startswith("unstable")
    assert abc("sp", 3, c=1).r == 0.5
    assert all(p.stable_at_init for p in (sp, ntk, mup))
    table = exponent_table(2)
    assert len(table) == 9 and set(table.parametrization) == {"sp", "ntk", "mup"}
    with pytest.raises(ParameterError, match="parametrization must be one of"):
        abc("mf")


def test_init_variances_on_a_wide_layer():
    d, n, n0 = 50, 2048, 64
    for name in ("sp", "ntk", "mup"):
        model = AbcMLP(d, n, 2, 10, name, base_width=n0, gain=2.0, generator=torch.Generator().manual_seed(1))
        eff = [m * w.detach() for m, w in zip(model.multipliers, model.weights)]
        readout = math.sqrt(1 / n) if name != "mup" else math.sqrt(n0) / n  # muP: 1/width, not 1/sqrt(width)
        expected = [math.sqrt(2 / d), math.sqrt(2 / n), readout]
        for e, s, s2 in zip(eff, expected, model.effective_stds):
            assert e.std().item() == pytest.approx(s, rel=0.03)
            assert s2 == pytest.approx(s, rel=1e-9)
    # the raw weights: muP's input layer is drawn with variance ~ 1/width and multiplied by sqrt(width)
    mup = AbcMLP(d, n, 2, 10, "mup", base_width=n0, generator=torch.Generator().manual_seed(1))
    assert mup.weights[0].std().item() == pytest.approx(math.sqrt(2 / d) * math.sqrt(n0 / n), rel=0.03)
    assert mup.multipliers[0] == pytest.approx(math.sqrt(n / n0))


def _run(name, width, steps=3, base=16, lr=0.1, momentum=0.0):
    x, y = toy_data()
    model = AbcMLP(x.shape[1], width, 2, 4, name, base_width=base, generator=torch.Generator().manual_seed(3))
    train_members(model, x, y, lr, steps=steps, batch_size=32, momentum=momentum, progress=False)
    with torch.no_grad():
        return model(x)


def test_parametrizations_agree_at_the_base_width_and_differ_away_from_it():
    at_base = [_run(p, 16) for p in ("sp", "ntk", "mup")]
    torch.testing.assert_close(at_base[0], at_base[1])
    torch.testing.assert_close(at_base[0], at_base[2])
    wide = [_run(p, 64) for p in ("sp", "ntk", "mup")]
    assert (wide[0] - wide[1]).abs().max() > 1e-2
    assert (wide[1] - wide[2]).abs().max() > 1e-2


def test_abc_symmetry_leaves_training_unchanged():
    """(a_l, b_l, c_l) -> (a_l + t, b_l - t, c_l - 2 t) is the same SGD dynamics (Yang and Hu, eq. 4)."""
    mup = abc("mup", 2)
    shifts = (0.5, -0.5, 0.25)
    shifted = Parametrization("muP, shifted", tuple(a + t for a, t in zip(mup.a, shifts)),
                              tuple(b - t for b, t in zip(mup.b, shifts)), tuple(c - 2 * t for c, t in zip(mup.c, shifts)))
    x, y = toy_data()
    outs = []
    for p in (mup, shifted):
        model = AbcMLP(x.shape[1], 128, 2, 4, p, base_width=16, generator=torch.Generator().manual_seed(5)).double()
        train_members(model, x.double(), y, 0.05, steps=4, batch_size=32, momentum=0.9, progress=False)
        with torch.no_grad():
            outs.append(model(x.double()))
    # the raw weights are drawn in float32 at different scales, hence agreement to ~1e-7, not 1e-15;
    # a wrong multiplier or learning-rate exponent changes the outputs by O(1)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_sgd_matches_torch_sgd_at_the_base_width():
    x, y = toy_data()
    model = AbcMLP(x.shape[1], 16, 2, 4, "mup", base_width=16, members=2, draws=2,
                   generator=torch.Generator().manual_seed(2))
    ref = [w[1].detach().clone().requires_grad_(True) for w in model.weights]  # member 1, as plain tensors
    opt_ref = torch.optim.SGD(ref, lr=0.03, momentum=0.9)
    opt = AbcSGD(model, [0.5, 0.03], momentum=0.9)
    for i in range(5):
        xb, yb = x[32 * i:32 * (i + 1)], y[32 * i:32 * (i + 1)]
        opt.zero_grad()
        member_loss(model(xb), yb).sum().backward()
        opt.step()
        h = xb
        for l, w in enumerate(ref):
            h = h @ w.T if l == 0 else torch.relu(h) @ w.T
        opt_ref.zero_grad()
        F.cross_entropy(h, yb).backward()
        opt_ref.step()
    for w, r in zip(model.weights, ref):
        torch.testing.assert_close(w[1].detach(), r.detach())


def test_diverged_members_are_frozen_without_touching_the_others():
    x, y = toy_data()
    lrs = [0.05, 1e6]
    model = AbcMLP(x.shape[1], 32, 2, 4, "sp", base_width=16, members=2, draws=1,
                   generator=torch.Generator().manual_seed(4))
    res = train_members(model, x, y, lrs, steps=6, batch_size=32, progress=False)
    alone = AbcMLP(x.shape[1], 32, 2, 4, "sp", base_width=16, generator=torch.Generator().manual_seed(4))
    res1 = train_members(alone, x, y, [0.05], steps=6, batch_size=32, progress=False)
    assert res["diverged"].tolist() == [False, True]
    assert torch.isnan(res["loss"][-1, 1])
    torch.testing.assert_close(res["loss"][:, 0], res1["loss"][:, 0])
    assert all(torch.isfinite(w).all() for w in model.weights)


def test_coord_size_known_cases():
    assert coord_size(torch.full((1000,), -3.0)).item() == pytest.approx(3.0)
    v = torch.randn(200_000, generator=torch.Generator().manual_seed(0)) * 0.7
    assert coord_size(v).item() == pytest.approx(0.7, rel=0.01)
    # per coordinate: repeating a vector does not change it, unlike a norm
    assert coord_size(torch.cat([v, v])).item() == pytest.approx(coord_size(v).item(), rel=1e-6)
    per_row = coord_size(torch.stack([torch.ones(5), 2 * torch.ones(5)]), dim=1)
    torch.testing.assert_close(per_row, torch.tensor([1.0, 2.0]))


def test_coordinate_check_scaling_on_a_known_case():
    """After one step, the first layer's features move ~ width^-1/2 under NTK (its backpropagated gradient
    is ~ width^-1/2 per coordinate) and by a width-independent amount under muP: over a 64-fold width
    range, a factor 1/8 and 1."""
    x, y = toy_data(512, d=20)
    df = coordinate_check(x, y, x[:64], [32, 2048], ["ntk", "mup"], lr=0.05, steps=1, base_width=32, seeds=2,
                          progress=False)
    d = df[(df.step == 1) & (df.layer == "h1")].groupby(["parametrization", "width"]).delta.mean()
    assert d["ntk"][2048] / d["ntk"][32] == pytest.approx(1 / 8, rel=0.3)
    assert d["mup"][2048] / d["mup"][32] == pytest.approx(1.0, rel=0.2)
    assert (df[df.step == 0].delta == 0).all()


def test_loglog_slope():
    w = np.array([64, 128, 256, 512])
    assert loglog_slope(w, 3 * w ** -0.5) == pytest.approx(-0.5)
    assert loglog_slope(w, np.full(4, 2.0)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        loglog_slope([64], [1.0])
