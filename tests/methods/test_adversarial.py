import pytest
import torch
import torch.nn.functional as F
from repro.core.params import ParameterError
from repro.methods.adversarial import (
    adversarial_loss,
    attack_stats,
    fgsm,
    input_gradient,
    pgd,
    train_adversarial,
    train_adversarial_ensemble,
)
from repro.nn.ensemble import expand, per_model, train_ensemble
from repro.nn.metrics import cross_entropy
from repro.nn.models import MLP
from repro.nn.train import train
from torch import nn


def blobs(n=400, d=20, c=3, seed=0):
    """Separable-ish classes in [0, 1]^d: class c raises the first pixels of block c."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    x = 0.3 + 0.15 * torch.randn(n, d, generator=g)
    for k in range(c):
        x[y == k, k * 4:(k + 1) * 4] += 0.35
    return x.clamp(0, 1), y


def linear(d, c, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d, c)


def test_fgsm_on_binary_linear_model_is_the_closed_form():
    # two classes: grad_x CE = (p_other)(w_other - w_y), so FGSM moves along sign(w_other - w_y)
    x, y = blobs(c=2)
    model = linear(x.shape[1], 2)
    eps = 0.1
    x_adv = fgsm(model, x, y, eps, clamp=None)
    w = model.weight.detach()
    expected = eps * torch.sign(w[1 - y] - w[y])
    assert torch.allclose(x_adv - x, expected, atol=1e-6)
    # and the margin logit_y - logit_other falls by exactly eps * ||w_y - w_other||_1
    margin = lambda inp: (model(inp).gather(1, y[:, None]) - model(inp).gather(1, 1 - y[:, None])).squeeze(1)  # noqa
    drop = (margin(x) - margin(x_adv)).detach()
    assert torch.allclose(drop, eps * (w[y] - w[1 - y]).abs().sum(1), atol=1e-4)


def test_fgsm_multiclass_linear_matches_independent_gradient():
    x, y = blobs(c=4)
    model = linear(x.shape[1], 4, seed=3)
    W = model.weight.detach()
    p = model(x).softmax(-1).detach()
    grad = (p - F.one_hot(y, 4).float()) @ W          # d CE / d x for a linear softmax model, per example
    x_adv = fgsm(model, x, y, 0.05, clamp=None)
    assert torch.equal(torch.sign(x_adv - x), torch.sign(grad))
    assert torch.allclose(input_gradient(model, x, y) * len(x), grad, atol=1e-5)  # mean over the batch


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "pgd_random"])
def test_perturbations_stay_in_the_ball_and_the_box(attack):
    x, y = blobs()
    model = MLP(x.shape[1], 32, 2, 3)
    eps = 0.2
    if attack == "fgsm":
        x_adv = fgsm(model, x, y, eps)
    else:
        x_adv = pgd(model, x, y, eps, steps=7, step_size=0.07, random_start=attack == "pgd_random",
                    generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # clamping binds: some pixels near the box edges moved by less than eps
    assert ((x_adv - x).abs() < eps - 1e-6).any()
    unclamped = fgsm(model, x, y, eps, clamp=None)
    assert torch.allclose((unclamped - x).abs(), torch.full_like(x, eps))
    assert unclamped.max() > 1 or unclamped.min() < 0


def test_pgd_one_full_step_is_fgsm_and_zero_eps_is_identity():
    x, y = blobs()
    model = MLP(x.shape[1], 32, 1, 3)
    assert torch.equal(pgd(model, x, y, 0.1, steps=1, step_size=0.1), fgsm(model, x, y, 0.1))
    assert torch.equal(fgsm(model, x, y, 0.0), x)


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_trained_model():
    x, y = blobs(n=300)
    torch.manual_seed(0)
    model = MLP(x.shape[1], 32, 1, 3)
    train(model, x, y, steps=100, lr=2e-2, batch_size=64, optimizer="adam", progress=False)
    assert (model(x).argmax(1) == y).float().mean() > 0.95
    eps = 0.08
    with torch.no_grad():
        loss_fgsm = cross_entropy(model(fgsm(model, x, y, eps)), y)
        loss_pgd = cross_entropy(model(pgd(model, x, y, eps, steps=20, step_size=eps / 4)), y)
        err_fgsm = attack_stats(model(fgsm(model, x, y, eps)), y)["error"]
        err_pgd = attack_stats(model(pgd(model, x, y, eps, steps=20, step_size=eps / 4)), y)["error"]
        err_clean = attack_stats(model(x), y)["error"]
    assert loss_pgd >= loss_fgsm and err_pgd >= err_fgsm > err_clean


def test_attack_stats_known_answer():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5], [0.9, 0.05, 0.05]]))
    y = torch.tensor([0, 0, 2, 1])
    s = attack_stats(logits, y)
    assert s["error"].item() == pytest.approx(0.5)
    assert s["confidence"].item() == pytest.approx((0.7 + 0.6 + 0.5 + 0.9) / 4)
    assert s["confidence_wrong"].item() == pytest.approx((0.6 + 0.9) / 2)
    both = attack_stats(torch.stack([logits, logits]), torch.stack([y, y]))
    assert both["error"].shape == (2,)


def test_adversarial_loss_mixes_clean_and_fgsm_losses():
    x, y = blobs()
    model = MLP(x.shape[1], 16, 1, 3)
    clean = F.cross_entropy(model(x), y)
    adv = F.cross_entropy(model(fgsm(model, x, y, 0.1)), y)
    assert adversarial_loss(model, x, y, 0.1, 1.0).item() == pytest.approx(clean.item(), rel=1e-6)
    assert adversarial_loss(model, x, y, 0.1, 0.0).item() == pytest.approx(adv.item(), rel=1e-6)
    assert adversarial_loss(model, x, y, 0.1, 0.5).item() == pytest.approx(0.5 * (clean + adv).item(), rel=1e-6)
    with pytest.raises(ParameterError, match="alpha"):
        adversarial_loss(model, x, y, 0.1, 1.5)
    with pytest.raises(ParameterError, match="eps"):
        fgsm(model, x, y, -0.1)


def test_alpha_one_reproduces_the_plain_loops():
    x, y = blobs()
    build = lambda: MLP(x.shape[1], 16, 1, 3)  # noqa: E731
    kw = dict(steps=20, lr=0.05, batch_size=32, optimizer="sgd", momentum=0.9)
    ens_a, _ = train_adversarial_ensemble(build, [0, 1], x, y, eps=0.1, alpha=1.0, progress=False, **kw)
    ens_p, _ = train_ensemble(build, [0, 1], x, y, progress=False, **kw)
    for k in ens_a.params:
        assert torch.allclose(ens_a.params[k], ens_p.params[k], atol=1e-5), k
    torch.manual_seed(1)
    m_a = build()
    train_adversarial(m_a, x, y, eps=0.1, alpha=1.0, seed=1, progress=False, **kw)
    single = ens_p.unstack(1, build())
    for p, q in zip(m_a.parameters(), single.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_adversarial_training_makes_a_model_more_robust():
    x, y = blobs(n=300)
    xt, yt = blobs(n=300, seed=1)
    build = lambda: MLP(x.shape[1], 32, 1, 3)  # noqa: E731
    eps, kw = 0.15, dict(steps=100, lr=2e-2, batch_size=64, optimizer="adam", progress=False)
    ens_std, _ = train_ensemble(build, [0, 1], x, y, **kw)
    ens_adv, hist = train_adversarial_ensemble(build, [0, 1], x, y, eps=eps, alpha=0.5, eval_every=50,
                                               eval_sets={"test": (xt, yt)}, **kw)
    errs = []
    for ens in (ens_std, ens_adv):
        xe, ye = expand(ens, xt, yt)
        model = per_model(ens)
        errs.append(attack_stats(model(fgsm(model, xe, ye, eps)), ye)["error"])
    assert (errs[1] < errs[0] - 0.1).all()
    last = hist[hist.step == 100]
    assert len(last) == 2 and set(last.columns) >= {"acc", "adv_acc", "loss", "adv_loss"}
    assert last.adv_acc.to_numpy() == pytest.approx(1 - errs[1].numpy(), abs=1e-6)


def test_ensemble_attack_equals_attacking_each_member():
    x, y = blobs()
    ens, _ = train_ensemble(lambda: MLP(x.shape[1], 16, 1, 3), [0, 1, 2], x, y, steps=30, lr=0.05, progress=False)
    xe, ye = expand(ens, x, y)
    together = fgsm(per_model(ens), xe, ye, 0.1)
    for i in range(3):
        alone = fgsm(ens.unstack(i, MLP(x.shape[1], 16, 1, 3)), x, y, 0.1)
        assert torch.equal(together[i], alone)
