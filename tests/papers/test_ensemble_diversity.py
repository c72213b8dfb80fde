import math

import pytest
import torch
from repro.core.params import ParameterError
from repro.nn.models import MLP
from repro.nn.train import train
from repro.papers.ensemble_diversity import (
    diversity_loss,
    jensen_gap_terms,
    train_joint_ensemble,
)


def toy(n=256, d=10, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :c].argmax(1)).long()
    return x, y


def test_jensen_gap_matches_direct_computation():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 4, generator=g) * 2   # (E, M, B, C)
    y = torch.randint(0, 4, (5,), generator=g)
    t = jensen_gap_terms(logits, y)
    for e in range(2):
        p = logits[e].softmax(-1)                        # (M, B, C)
        member = sum(-math.log(p[m, b, y[b]].item()) for m in range(3) for b in range(5)) / 15
        ens = sum(-math.log(p[:, b, y[b]].mean().item()) for b in range(5)) / 5
        assert t["member"][e].item() == pytest.approx(member, rel=1e-5)
        assert t["ensemble"][e].item() == pytest.approx(ens, rel=1e-5)
        assert t["jensen_gap"][e].item() == pytest.approx(member - ens, rel=1e-4, abs=1e-6)
        assert t["jensen_gap"][e].item() >= 0
    # identical members: no diversity
    same = logits[:, :1].expand(2, 3, 5, 4)
    assert jensen_gap_terms(same, y)["jensen_gap"].abs().max().item() < 1e-5
    # gamma = 1 gives the ensemble's own loss, gamma = 0 the mean member loss
    assert torch.allclose(diversity_loss(logits, y, 1.0), t["ensemble"], atol=1e-6)
    assert torch.allclose(diversity_loss(logits, y, 0.0), t["member"])


def test_gamma_zero_equals_independent_training():
    x, y = toy()
    build = lambda: MLP(10, 16, 1, 3)  # noqa: E731
    seeds = [[3, 4], [5, 6]]
    joint, _ = train_joint_ensemble(build, seeds, [0.0, 0.0], x, y, steps=25, lr=0.01, batch_size=32,
                                    optimizer="adam", progress=False)
    for e, ens_seeds in enumerate(seeds):
        for m, s in enumerate(ens_seeds):
            torch.manual_seed(s)
            model = build()
            train(model, x, y, steps=25, lr=0.01, batch_size=32, optimizer="adam", seed=ens_seeds[0], progress=False)
            single = joint.stacked.unstack(e * 2 + m, model)
            for (name, p), q in zip(model.named_parameters(), single.parameters()):
                assert torch.allclose(p, q, atol=1e-5), name


def test_positive_gamma_raises_diversity_and_differs_from_independent():
    x, y = toy(n=512)
    build = lambda: MLP(10, 32, 1, 3)  # noqa: E731
    joint, hist = train_joint_ensemble(build, [[0, 1, 2]] * 3, [-0.5, 0.0, 0.8], x, y, steps=200, lr=0.01,
                                       batch_size=64, eval_every=200, eval_sets={"train": (x, y)}, progress=False)
    res = joint.evaluate(x, y)
    jg = res["jensen_gap"]
    assert jg[2] > jg[1] > jg[0] >= 0
    assert set(hist.gamma) == {-0.5, 0.0, 0.8} and len(hist) == 3
    assert joint.predictions(x).shape == (3, len(x))


def test_bad_arguments():
    x, y = toy()
    with pytest.raises(ParameterError):
        train_joint_ensemble(lambda: MLP(10, 4, 1, 3), [[0, 1]], [0.0, 1.0], x, y, steps=1, lr=0.1, progress=False)
    with pytest.raises(ParameterError):
        train_joint_ensemble(lambda: MLP(10, 4, 1, 3), [[0, 1], [2]], [0.0, 1.0], x, y, steps=1, lr=0.1, progress=False)


def test_cosine_schedule_decays_to_zero_and_bad_schedule_fails():
    x, y = toy()
    build = lambda: MLP(10, 8, 1, 3)  # noqa: E731
    joint, _ = train_joint_ensemble(build, [[1, 2]], [0.0], x, y, steps=10, lr=0.01, batch_size=32,
                                    optimizer="adam", schedule="cosine", progress=False)
    assert joint.evaluate(x, y)["ens_acc"].shape == (1,)
    with pytest.raises(ParameterError, match="schedule"):
        train_joint_ensemble(build, [[1, 2]], [0.0], x, y, steps=2, lr=0.01, schedule="step", progress=False)
