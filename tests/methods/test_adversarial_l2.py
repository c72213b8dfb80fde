"""PGD under an L2 budget and PGD adversarial training of ensembles (repro.robust)."""
import torch
from repro.methods.adversarial import (
    attack,
    pgd_l2,
    train_adversarial_ensemble,
    train_pgd_ensemble,
)
from repro.nn.ensemble import per_model
from torch import nn


def linear_model(w, b=0.0):
    """Two-class logits (0, w.x + b) for images (..., 1, 2, 2)."""
    return lambda x: torch.stack([torch.zeros(x.shape[:-3]), (x.flatten(-3) * w).sum(-1) + b], -1)


def test_l2_attack_on_a_linear_model_moves_along_w():
    # For a linear logit the loss gradient of class 0 points along +w: the optimum of the L2 ball is
    # x + eps * w / |w| (no clipping), which one step of size eps reaches.
    w = torch.tensor([3.0, -4.0, 0.0, 0.0])
    x = torch.full((5, 1, 2, 2), 0.5)
    y = torch.zeros(5, dtype=torch.long)
    xa = pgd_l2(linear_model(w), x, y, eps=0.5, steps=1, step_size=0.5, clamp=None)
    expected = x + 0.5 * (w / w.norm()).view(1, 1, 2, 2)
    assert torch.allclose(xa, expected, atol=1e-6)
    # more steps stay on the ball's boundary at the same point
    xb = pgd_l2(linear_model(w), x, y, eps=0.5, steps=5, step_size=0.3, clamp=None)
    assert torch.allclose(xb, expected, atol=1e-5)


def test_l2_attack_stays_in_ball_and_raises_loss():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(20, 1, 4, 4)
    y = torch.randint(0, 3, (20,))
    xa = pgd_l2(net, x, y, eps=0.7, steps=10, step_size=0.2)
    assert ((xa - x).flatten(1).norm(dim=1) <= 0.7 + 1e-5).all()
    assert xa.min() >= 0 and xa.max() <= 1
    ce = nn.functional.cross_entropy
    assert ce(net(xa), y) > ce(net(x), y)
    assert torch.equal(attack(net, x, y, 0.0), x)


def test_eps_zero_is_clean_training():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 4, 4, generator=g)
    y = torch.randint(0, 2, (64,), generator=g)
    build = lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 2))
    kw = dict(steps=5, lr=0.1, batch_size=16, progress=False)
    a, _ = train_pgd_ensemble(build, [0, 1], x, y, eps=0.0, **kw)
    b, _ = train_adversarial_ensemble(build, [0, 1], x, y, eps=0.0, alpha=1.0, **kw)
    for k in a.params:
        assert torch.allclose(a.params[k], b.params[k], atol=1e-6)


def test_adversarial_training_lowers_the_adversarial_loss():
    # Two well-separated classes (class means 2.4 apart in L2): training at eps = 0.5 must drive the loss
    # on its own PGD examples down, and the trained model must resist a fresh attack at that radius.
    g = torch.Generator().manual_seed(1)
    n = 128
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.5 + 0.3 * (2 * y.float() - 1)[:, None, None, None] * torch.ones(n, 1, 4, 4)
    x = x + 0.05 * torch.randn(n, 1, 4, 4, generator=g)
    build = lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    rob, hist = train_pgd_ensemble(build, [0, 1], x, y, eps=0.5, attack_steps=3, steps=60, lr=0.2, momentum=0.9,
                                   batch_size=32, log_every=20, progress=False)
    assert len(hist) == 6
    first, last = hist[hist.step == 20].adv_batch_loss.values, hist[hist.step == 60].adv_batch_loss.values
    assert (last < first).all() and (last < 0.3).all()
    m = per_model(rob)
    xa = pgd_l2(m, x[None].expand(2, *x.shape), y[None].expand(2, n), eps=0.5, steps=10, step_size=0.15)
    assert ((m(xa).argmax(-1) == y).float().mean(1) > 0.95).all()
