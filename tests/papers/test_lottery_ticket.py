import numpy as np
import pytest
import torch
from repro.core.params import ParameterError
from repro.nn.ensemble import train_ensemble
from repro.nn.models import MLP
from repro.papers.lottery_ticket import (
    apply_masks,
    count_remaining,
    init_masks,
    initial_params,
    lenet_300_100,
    magnitude_prune,
    remaining_fraction,
    rewind,
    stack_params,
    train_masked,
)


def random_params(seed=0, shapes=None):
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {"a.weight": (30, 20), "a.bias": (30,), "b.weight": (7, 30), "b.bias": (7,)}
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def expected_counts(n, fraction, rounds):
    """Survivors after each round, by plain integer arithmetic (round half up)."""
    out = []
    for _ in range(rounds):
        n -= int(np.floor(n * fraction + 0.5))
        out.append(n)
    return out


def test_masks_cover_weights_only():
    m = init_masks(random_params())
    assert set(m) == {"a.weight", "b.weight"} and all(v.dtype == torch.bool and v.all() for v in m.values())


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.35])
def test_exact_counts_after_k_rounds_per_layer(fraction):
    masks = init_masks(random_params())
    fracs = {"a.weight": fraction, "b.weight": fraction / 2}
    history = []
    for k in range(6):
        # new weights every round, as after training: the counts depend only on the rates
        masks = magnitude_prune(random_params(k + 1), masks, fracs, per_layer=True)
        history.append(count_remaining(masks))
    assert [h["a.weight"] for h in history] == expected_counts(600, fraction, 6)
    assert [h["b.weight"] for h in history] == expected_counts(210, fraction / 2, 6)
    total = history[-1]["a.weight"] + history[-1]["b.weight"]
    assert remaining_fraction(masks) == pytest.approx(total / 810)


def test_global_pruning_count_and_threshold_against_numpy():
    p = random_params(3)
    masks = magnitude_prune(p, init_masks(p), 0.3, per_layer=False)
    alive = np.concatenate([masks[n].numpy().ravel() for n in ("a.weight", "b.weight")])
    w = np.abs(np.concatenate([p[n].numpy().ravel() for n in ("a.weight", "b.weight")]))
    assert alive.sum() == 810 - 243
    assert set(np.flatnonzero(~alive)) == set(np.argsort(w)[:243])


def test_per_layer_pruning_removes_the_smallest_survivors():
    p = random_params(4)
    m1 = magnitude_prune(p, init_masks(p), 0.5)
    p2 = random_params(5)
    m2 = magnitude_prune(p2, m1, 0.5)
    for n in m1:
        w, old, new = p2[n].abs().numpy().ravel(), m1[n].numpy().ravel(), m2[n].numpy().ravel()
        survivors = np.flatnonzero(old)
        k = int(np.floor(len(survivors) * 0.5 + 0.5))
        expect_removed = survivors[np.argsort(w[survivors], kind="stable")[:k]]
        assert set(np.flatnonzero(old & ~new)) == set(expect_removed)


def test_masks_never_resurrect_weights():
    masks = init_masks(random_params())
    for k in range(5):
        # a pruned weight may become the largest one: it must stay pruned
        p = random_params(10 + k)
        for n in masks:
            p[n][~masks[n]] = 1e6
        new = magnitude_prune(p, masks, 0.3)
        for n in masks:
            assert not (new[n] & ~masks[n]).any()
        masks = new


def test_stacked_pruning_equals_one_model_at_a_time():
    ps = [random_params(s) for s in range(3)]
    stacked = {k: torch.stack([p[k] for p in ps]) for k in ps[0]}
    m_st = magnitude_prune(stacked, init_masks(stacked), 0.4, stacked=True)
    m_st = magnitude_prune({k: v * 1.1 + 0.1 for k, v in stacked.items()}, m_st, 0.4, stacked=True)
    for i, p in enumerate(ps):
        m = magnitude_prune(p, init_masks(p), 0.4)
        m = magnitude_prune({k: v * 1.1 + 0.1 for k, v in p.items()}, m, 0.4)
        for n in m:
            assert torch.equal(m_st[n][i], m[n])
    frac = remaining_fraction(m_st, stacked=True)
    assert frac.shape == (3,) and torch.allclose(frac, torch.full((3,), remaining_fraction(m)))


def test_bad_fraction_is_one_sentence():
    p = random_params()
    with pytest.raises(ParameterError, match="between 0.0 and 1.0"):
        magnitude_prune(p, init_masks(p), 1.5)


def toy(n=300, d=12, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, x[:, :c].argmax(1)


def test_unmasked_training_equals_train_ensemble():
    x, y = toy()
    build = lambda: MLP(12, 16, 1, 3)  # noqa: E731
    seeds = [0, 1]
    ens, _ = train_ensemble(build, seeds, x, y, steps=40, lr=0.01, batch_size=32, optimizer="adam", progress=False)
    init = initial_params(build, seeds)
    run = train_masked(build, init, init_masks(init), x, y, steps=40, lr=0.01, batch_size=32, data_seeds=seeds,
                       eval_every=10, progress=False)
    for k in init:
        assert torch.allclose(run.ensemble.params[k], ens.params[k], atol=1e-5), k


def test_masked_training_rewinding_and_early_stopping():
    x, y = toy()
    xv, yv = toy(200, seed=1)
    build = lambda: lenet_300_100(d_in=12, num_classes=3, hidden=(20, 10))  # noqa: E731
    init = initial_params(build, [0, 1, 2])
    masks = magnitude_prune(init, init_masks(init), {"layers.0.weight": 0.8, "layers.1.weight": 0.8,
                                                     "layers.2.weight": 0.4}, stacked=True)
    masks = stack_params({k: v[:2] for k, v in masks.items()}, {k: v[:1] for k, v in masks.items()})
    run = train_masked(build, init, masks, x, y, steps=60, lr=0.01, batch_size=30, eval_every=5, val=(xv, yv),
                       progress=False)
    p = run.ensemble.params
    for n, m in masks.items():
        assert (p[n][~m] == 0).all()                       # pruned weights stayed at zero
        assert (p[n][m] != init[n][m]).float().mean() > 0.5  # the survivors trained (bar dead units)
    # early stopping: the kept parameters are those at the minimum of the logged validation loss
    h = run.history[run.history.set == "val"]
    for i in range(3):
        hi = h[h.model == i]
        assert run.best_step[i] == hi.step[hi.loss.idxmin()]
        assert run.evaluate(xv, yv, at="early_stop")["loss"][i].item() == pytest.approx(hi.loss.min(), rel=1e-5)
    # rewinding restores the initial values exactly, under the mask
    with torch.no_grad():
        rewind(p, init, masks)
    for n in init:
        expect = init[n] * masks[n] if n in masks else init[n]
        assert torch.equal(p[n], expect)


def test_apply_masks_zeroes_in_place():
    p = random_params()
    m = magnitude_prune(p, init_masks(p), 0.5)
    apply_masks(p, m)
    assert all(int((p[n] != 0).sum()) == count_remaining(m)[n] for n in m)


def test_fast_mlp_path_equals_generic_vmap_path():
    from torch import nn
    x, y = toy()
    seeds = [0, 1]
    mlp = lambda: lenet_300_100(d_in=12, num_classes=3, hidden=(16, 8))  # noqa: E731  (fast batched path)

    def seq():  # the same network as a plain Sequential: trained through vmap(functional_call)
        m = mlp()
        return nn.Sequential(nn.Flatten(), m.layers[0], nn.ReLU(), m.layers[1], nn.ReLU(), m.layers[2])

    init_a, init_b = initial_params(mlp, seeds), initial_params(seq, seeds)
    rename = {"layers.0": "1", "layers.1": "3", "layers.2": "5"}
    masks_a = magnitude_prune(init_a, init_masks(init_a), 0.5, stacked=True)
    masks_b = {k.replace(k[:8], rename[k[:8]]): v for k, v in masks_a.items()}
    kw = dict(steps=30, lr=0.01, batch_size=32, eval_every=10, progress=False)
    a = train_masked(mlp, init_a, masks_a, x, y, **kw)
    b = train_masked(seq, init_b, masks_b, x, y, **kw)
    for k, v in a.ensemble.params.items():
        assert torch.allclose(v, b.ensemble.params[k.replace(k[:8], rename[k[:8]])], atol=1e-5), k


def test_lenet_300_100_shapes_and_glorot_init():
    torch.manual_seed(0)
    m = lenet_300_100()
    shapes = {k: tuple(v.shape) for k, v in m.named_parameters()}
    assert shapes == {"layers.0.weight": (300, 784), "layers.0.bias": (300,), "layers.1.weight": (100, 300),
                      "layers.1.bias": (100,), "layers.2.weight": (10, 100), "layers.2.bias": (10,)}
    assert sum(v.numel() for k, v in m.named_parameters() if k.endswith("weight")) == 266_200
    for layer in m.layers[:2]:
        fan_out, fan_in = layer.weight.shape
        assert layer.weight.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.03)
        assert (layer.bias == 0).all()
    assert m(torch.rand(5, 28, 28)).shape == (5, 10)
