
import torch
from repro.nn.models import MLP, count_parameters
from repro.papers.deeponet import (
    DeepONet,
    antiderivative,
    fnn_width_for,
    grf_sample,
    nonlinear_ode,
    rbf_kernel,
    rk4_solve,
    triplets,
)


def test_antiderivative_of_linear_is_exact_and_quadratic_converges():
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    # the trapezoid rule is exact for linear integrands
    assert torch.allclose(antiderivative(3 * x - 1, x), 1.5 * x ** 2 - x, atol=1e-12)
    # for a cubic it converges at second order
    errs = []
    for n in (51, 101):
        x = torch.linspace(0, 1, n, dtype=torch.float64)
        errs.append((antiderivative(x ** 3, x) - x ** 4 / 4).abs().max().item())
    assert 3.5 < errs[0] / errs[1] < 4.5


def test_rk4_on_known_odes():
    x = torch.linspace(0, 1, 51, dtype=torch.float64)
    # ds/dx = -s, s(0)=1: s = exp(-x); RK4 global error ~ h^4
    s = rk4_solve(lambda s, u, t: -s, torch.zeros(2, 51, dtype=torch.float64), x, 1.0)
    assert (s - torch.exp(-x)).abs().max() < 1e-8
    # ds/dx = -s^2 + u with u = 1: s = tanh(x)
    s = nonlinear_ode(torch.ones(3, 51, dtype=torch.float64), x)
    assert (s - torch.tanh(x)).abs().max() < 1e-7
    # with s^2 dropped, the ODE is the antiderivative
    u = grf_sample(4, x, 0.2, torch.Generator().manual_seed(0))
    assert torch.allclose(rk4_solve(lambda s, ux, t: ux, u, x), antiderivative(u, x), atol=1e-12)


def test_grf_covariance_matches_kernel():
    grid = torch.linspace(0, 1, 20, dtype=torch.float64)
    u = grf_sample(20000, grid, 0.2, torch.Generator().manual_seed(1))
    emp = u.T @ u / len(u)
    assert (emp - rbf_kernel(grid, 0.2)).abs().max() < 0.05
    assert abs(u.mean().item()) < 0.05


def test_triplets_layout():
    grid = torch.linspace(0, 1, 7)
    u = torch.arange(3 * 7, dtype=torch.float32).view(3, 7)
    Gu = u * 10
    x, y = triplets(u, Gu, grid)
    assert x.shape == (21, 8) and y.shape == (21, 1)
    assert torch.equal(x[9, :7], u[1]) and x[9, 7] == grid[2] and y[9, 0] == Gu[1, 2]
    x, y = triplets(u, Gu, grid, points=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (9, 8)
    for r in range(9):
        j = int(torch.isclose(grid, x[r, 7]).nonzero())
        assert y[r, 0] == Gu[r // 3, j]


def test_deeponet_shapes_and_dot_product_structure():
    torch.manual_seed(0)
    net = DeepONet(m=10, width=16, depth=2, p=8)
    x = torch.randn(5, 11)
    out = net(x)
    assert out.shape == (5, 1)
    b, t = net.features(x)
    assert b.shape == (5, 8) and t.shape == (5, 8)
    with torch.no_grad():
        net.bias.fill_(0.7)
    assert torch.allclose(net(x)[:, 0], (b * t).sum(1) + 0.7, atol=1e-6)
    # the output is bilinear in (branch features, trunk features): rank p as a function of (u, y)
    us, ys = torch.randn(12, 10), torch.rand(12, 1)
    grid = torch.cat([us.repeat_interleave(12, 0), ys.repeat(12, 1)], 1)
    with torch.no_grad():
        net.bias.zero_()
        M = net(grid).view(12, 12)
    assert torch.linalg.matrix_rank(M, rtol=1e-5) <= 8


def test_fnn_width_matches_parameter_count():
    target = count_parameters(DeepONet(100, width=40, depth=2, p=40))
    w = fnn_width_for(target, 101, 3)
    n = count_parameters(MLP(101, w, 3, 1))
    assert abs(n - target) / target < 0.02


def test_regression_ensemble_matches_train_ensemble_and_records_the_training_loss():
    import torch.nn.functional as F
    from repro.nn.ensemble import train_ensemble
    from repro.papers.deeponet import train_regression_ensemble

    torch.manual_seed(0)
    x, y = torch.randn(3, 64, 5), torch.randn(3, 64)
    build = lambda: MLP(5, 8, 1, 1)
    ens, curve, at = train_regression_ensemble(build, [1, 2, 3], x, y, steps=20, lr=1e-2, batch_size=16,
                                               checkpoints=4, progress=False)
    ref, _ = train_ensemble(build, [1, 2, 3], x, y, steps=20, lr=1e-2, batch_size=16, optimizer="adam",
                            per_model=True, loss_fn=lambda o, t: F.mse_loss(o[:, 0], t), progress=False)
    for k in ens.params:
        assert torch.allclose(ens.params[k], ref.params[k], atol=1e-6)
    assert curve.shape == (4, 3) and list(at) == [5, 10, 15, 20]
    with torch.no_grad():
        final = (ens.outputs(x, per_model=True)[..., 0] - y).pow(2).mean(1).numpy()
    assert abs(curve[-1] - final).max() < 1e-6
