import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from repro.nn.models import MLP
from repro.papers import intrinsic_dimension as S


def small_mlp():
    return MLP(6, 5, 1, 3)


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def adam_loop(model, x, y, stream, steps, lr, cosine=False):
    """The plain one-model reference: Adam (optionally with a cosine schedule) on the given batches."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    for _ in range(steps):
        idx = next(stream)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched:
            sched.step()


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_projection_columns_have_unit_norm_and_are_reproducible(kind):
    D, d = 5000 if kind == "sparse" else 300, 40
    P = S.random_projection(D, d, kind, generator=7)
    assert P.shape == (D, d) and P.is_sparse == (kind == "sparse")
    assert torch.allclose(S.column_norms(P), torch.ones(d), atol=1e-5)
    Q = S.random_projection(D, d, kind, generator=7)
    R = S.random_projection(D, d, kind, generator=8)
    dense = lambda M: M.to_dense() if M.is_sparse else M
    assert torch.equal(dense(P), dense(Q)) and not torch.equal(dense(P), dense(R))
    if kind == "sparse":
        density = P._nnz() / (D * d)  # sklearn's default density 1/sqrt(D)
        assert abs(density * math.sqrt(D) - 1) < 0.1
        vals = P.coalesce().values()
        assert (vals > 0).float().mean().item() == pytest.approx(0.5, abs=0.1)  # random signs


def test_random_columns_are_nearly_orthogonal():
    P = S.dense_projection(20000, 30, generator=0)
    G = P.T @ P
    off = G - torch.eye(30)
    assert off.abs().max() < 5 / math.sqrt(20000) * 3  # |<p_i, p_j>| ~ 1/sqrt(D)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_identity_projection_with_d_equal_D_trains_like_the_full_model(kind):
    torch.manual_seed(0)
    full = small_mlp()
    D = S.num_params(full)
    eye = torch.eye(D)
    sub = S.SubspaceModel(copy.deepcopy(full), projection=eye.to_sparse() if kind == "sparse" else eye)
    x, y = data()
    opt_full = torch.optim.SGD(full.parameters(), lr=0.1)
    opt_sub = torch.optim.SGD(sub.parameters(), lr=0.1)
    for step in range(5):
        idx = torch.arange(step * 12, step * 12 + 12)
        for model, opt in ((full, opt_full), (sub, opt_sub)):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.allclose(sub.full_parameters(), S.flatten_params(full), atol=1e-6)
    assert torch.allclose(sub(x), full(x), atol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_gradients_flow_only_to_theta_d_and_equal_P_transpose_times_the_full_gradient(kind):
    torch.manual_seed(1)
    model = small_mlp()
    before = S.flatten_params(model).clone()
    sub = S.SubspaceModel(model, d=7, kind=kind, generator=3)
    assert [n for n, _ in sub.named_parameters()] == ["theta_d"]
    with torch.no_grad():
        sub.theta_d.normal_()
    x, y = data()
    F.cross_entropy(sub(x), y).backward()
    assert sub.theta_d.grad is not None and sub.theta_d.grad.abs().sum() > 0
    assert sub.theta_0.grad is None and sub.P.grad is None
    assert torch.equal(S.flatten_params(model), before)  # the wrapped model is not touched
    # independent check: the gradient of the full model at theta, projected by P^T
    theta = sub.full_parameters().detach().requires_grad_(True)
    out = torch.func.functional_call(model, S.unflatten(theta, S.param_spec(model)), (x,))
    (g,) = torch.autograd.grad(F.cross_entropy(out, y), theta)
    P = sub.P.to_dense() if kind == "sparse" else sub.P
    assert torch.allclose(sub.theta_d.grad, P.T @ g, atol=1e-6)


def test_sparse_project_matches_dense_in_value_and_gradient():
    P = S.sparse_projection(3000, 50, generator=2)
    Pc, Pt = S.to_csr_pair(P)
    z = torch.randn(50, 4, requires_grad=True)
    w = torch.randn(3000, 4)
    (S.project(Pc, z, Pt) * w).sum().backward()
    g_sparse = z.grad.clone()
    z.grad = None
    (S.project(P.to_dense(), z) * w).sum().backward()
    assert torch.allclose(g_sparse, z.grad, atol=1e-5)
    assert torch.allclose(S.project(Pc, z, Pt), P.to_dense() @ z, atol=1e-5)


def test_block_diagonal_places_each_block():
    A, B = S.sparse_projection(40, 3, density=0.5, generator=0), S.sparse_projection(40, 3, density=0.5, generator=1)
    M = S.block_diagonal([A, B]).to_dense()
    assert torch.equal(M[:40, :3], A.to_dense()) and torch.equal(M[40:, 3:], B.to_dense())
    assert M[:40, 3:].abs().sum() == 0 and M[40:, :3].abs().sum() == 0


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_sweep_member_trains_exactly_like_its_own_subspace_model(kind):
    dims, seeds = [2, 5], [3, 4]
    sweep = S.SubspaceSweep(small_mlp, dims, seeds, kind=kind)
    x, y = data(96)
    S.train_sweep(sweep, x, y, steps=6, lr=0.05, batch_size=16, seed=9, progress=False)
    # the same model alone: seed 4, d = 2, the first two columns of that seed's projection, Adam on the same batches
    torch.manual_seed(4)
    P = sweep.projections[1]
    P = (P.to_dense() if P.is_sparse else P)[:, :2]
    sub = S.SubspaceModel(small_mlp(), projection=P)
    adam_loop(sub, x, y, S.shared_batches(len(x), 16, 9), steps=6, lr=0.05)
    member = sweep.full_parameters()[1 * len(dims) + 0]  # seed-major: (seed index 1, d index 0)
    assert torch.allclose(member, sub.full_parameters(), atol=1e-5)
    assert torch.count_nonzero(sweep.theta_d[1, 2:, 0]) == 0  # coordinates beyond d stay unused
    acc = sweep.evaluate(x, y)["acc"]
    assert acc.shape == (2, 2)
    assert acc[1, 0].item() == pytest.approx((sub(x).argmax(1) == y).float().mean().item())


def test_sqrt_d_scaling_equalizes_the_step_length_in_parameter_space():
    sweep = S.SubspaceSweep(lambda: MLP(20, 50, 1, 3), [4, 400], [0], kind="dense", sqrt_d_scaling=True)
    with torch.no_grad():
        sweep.z.fill_(1.0)  # one Adam-like step of size 1 on every coordinate
    theta = sweep.full_parameters() - sweep.theta_0[0]
    norms = theta.norm(dim=1)
    assert norms[0].item() == pytest.approx(norms[1].item(), rel=0.2)  # both ~1, not 2 and 20


def test_intrinsic_dimension_on_synthetic_curves():
    dims = np.array([100, 500, 1000, 2000])
    acc = np.array([0.1, 0.5, 1.0, 1.0])
    assert S.intrinsic_dimension(dims, acc, baseline=1.0) == pytest.approx(900.0)  # 500 + 0.4 / 0.5 * 500
    grid = np.arange(50, 2001, 50)
    assert S.intrinsic_dimension(grid, np.minimum(grid / 1000, 1), baseline=1.0) == pytest.approx(900.0)
    assert S.intrinsic_dimension(dims[::-1], acc[::-1], baseline=1.0) == pytest.approx(900.0)  # unsorted input
    assert S.intrinsic_dimension(dims, acc, baseline=1.0, fraction=1.0) == pytest.approx(1000.0)
    assert math.isnan(S.intrinsic_dimension(dims, acc * 0.5, baseline=1.0))
    assert S.intrinsic_dimension(dims, np.ones(4), baseline=1.0) == 100.0
    # the first crossing counts, even if the curve dips again later
    assert S.intrinsic_dimension([1, 2, 3, 4], [0.0, 0.95, 0.85, 0.99], baseline=1.0) == pytest.approx(1 + 0.9 / 0.95)


def test_train_direct_matches_a_plain_adam_loop():
    x, y = data(80)
    ens, acc = S.train_direct(small_mlp, [5], x, y, steps=4, lr=0.01, batch_size=20, seed=2, schedule="cosine",
                              eval_sets={"train": (x, y)}, progress=False)
    torch.manual_seed(5)
    m = small_mlp()
    adam_loop(m, x, y, S.shared_batches(80, 20, 2), steps=4, lr=0.01, cosine=True)
    assert torch.allclose(ens.params["layers.0.weight"][0], m.layers[0].weight, atol=1e-6)
    assert acc["train"][0] == pytest.approx((m(x).argmax(1) == y).float().mean().item())
