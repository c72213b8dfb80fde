import pytest
import torch
from repro.core.params import ParameterError
from repro.nn.models import MLP
from repro.papers.catastrophic_forgetting import (
    diagonal_fisher,
    quadratic_penalty,
    task_permutations,
    train_continual,
)


def tiny(seed=0):
    torch.manual_seed(seed)
    model = MLP(5, 4, 1, 3)
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(seed + 1))
    return model, x, y


def direct_fisher(model, x, y=None):
    """Per-example gradients by a plain loop of backward calls."""
    out = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for n in range(len(x)):
        logp = model(x[n:n + 1])[0].log_softmax(-1)
        classes = range(3) if y is None else [int(y[n])]
        for c in classes:
            w = logp[c].exp().item() if y is None else 1.0
            model.zero_grad()
            logp[c].backward(retain_graph=True)
            for k, p in model.named_parameters():
                out[k] += w * p.grad ** 2
    return {k: v / len(x) for k, v in out.items()}


@pytest.mark.parametrize("kind", ["true", "empirical"])
def test_fisher_matches_per_example_loop(kind):
    model, x, y = tiny()
    params = dict(model.named_parameters())
    fast = diagonal_fisher(model, params, x, y, kind=kind, chunk=5)
    ref = direct_fisher(model, x, None if kind == "true" else y)
    for k in ref:
        torch.testing.assert_close(fast[k], ref[k], rtol=1e-4, atol=1e-7)


def test_sampled_fisher_is_unbiased():
    model, x, y = tiny(1)
    params = dict(model.named_parameters())
    exact = diagonal_fisher(model, params, x, kind="true")
    xs = x.repeat(400, 1)  # many label draws per input
    sampled = diagonal_fisher(model, params, xs, kind="sampled", chunk=1200, generator=torch.Generator().manual_seed(0))
    e = torch.cat([v.flatten() for v in exact.values()])
    s = torch.cat([v.flatten() for v in sampled.values()])
    assert (s - e).abs().sum() / e.abs().sum() < 0.1


def test_penalty_zero_at_anchor_and_quadratic():
    params = {"w": torch.randn(2, 3, 4), "b": torch.randn(2, 4)}
    imp = {k: torch.rand_like(v) for k, v in params.items()}
    lam = torch.tensor([1.0, 10.0])
    assert torch.all(quadratic_penalty(params, [(params, imp)], lam) == 0)
    moved = {k: v + 0.5 for k, v in params.items()}
    pen = quadratic_penalty(moved, [(params, imp)], lam)
    expect = torch.stack([0.5 * lam[m] * sum((imp[k][m] * 0.25).sum() for k in imp) for m in range(2)])
    torch.testing.assert_close(pen, expect)
    # two anchors add up
    torch.testing.assert_close(quadratic_penalty(moved, [(params, imp)] * 2, lam), 2 * expect)


def test_huge_lambda_keeps_weights_and_zero_lambda_forgets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    y = (x[:, :4].argmax(1)).long()
    perms = task_permutations(2, 16, seed=1)
    build = lambda: MLP(16, 8, 1, 4)  # noqa: E731
    # lr * lam = 1.5 for the huge lambda: as strong as plain SGD can take without overshooting
    ens, hist, anchors = train_continual(build, [0, 0], [0.0, 300.0], ["none", "uniform"], x, y, x, y, perms,
                                         steps_per_task=100, lr=0.005, batch_size=50, progress=False)
    anchor = anchors[0][0]
    moved = [sum((ens.params[k][m] - anchor[k][m]).abs().max().item() for k in anchor) for m in (0, 1)]
    assert moved[0] > 0.02
    assert moved[1] < 0.05 * moved[0]
    # the first task was learned, and the history has one row per model, eval and task
    final_a = hist[(hist.step == hist.step.max()) & (hist.eval_task == 0)]
    assert len(final_a) == 2 and hist.acc.between(0, 1).all()


def test_permutations_and_checks():
    p = task_permutations(3, 10, seed=0)
    assert torch.equal(p[0], torch.arange(10))
    assert all(torch.equal(p[t].sort().values, torch.arange(10)) for t in range(3))
    assert not torch.equal(p[1], p[2])
    x, y = torch.randn(20, 10), torch.randint(0, 2, (20,))
    with pytest.raises(ParameterError):
        train_continual(lambda: MLP(10, 4, 1, 2), [0], [1.0], ["ewc"], x, y, x, y, p, steps_per_task=2, lr=0.1)
    with pytest.raises(ParameterError):
        diagonal_fisher(MLP(10, 4, 1, 2), dict(MLP(10, 4, 1, 2).named_parameters()), x, kind="exact")


def test_curvature_cap_keeps_a_huge_lambda_stable():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    y = (x[:, :4].argmax(1)).long()
    perms = task_permutations(3, 16, seed=1)
    ens, hist, anchors = train_continual(lambda: MLP(16, 8, 1, 4), [0], [1e6], ["fisher"], x, y, x, y, perms,
                                         steps_per_task=40, lr=0.2, batch_size=50, fisher_examples=50,
                                         curvature_cap=1.0, progress=False)
    for k in anchors[0][1]:
        h = 0.2 * 1e6 * sum(a[1][k] for a in anchors)
        assert h.max() <= 1.0 + 1e-4
    assert all(torch.isfinite(v).all() for v in ens.params.values())
    # the weights of the first anchor barely move once it is in place (the big-Fisher ones do not at all)
    drift = max((ens.params[k] - anchors[0][0][k]).abs().max().item() for k in anchors[0][0])
    assert drift < 0.5
