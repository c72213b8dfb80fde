"""Tests for repro.papers.one_pixel_attack.pixel_attack (the one-pixel attack by differential evolution)."""
import numpy as np
import pytest
import torch
from repro.core.params import ParameterError
from repro.papers.one_pixel_attack import apply_pixels, pixel_attack


def one_pixel_model(r=5, c=7, side=12):
    """Class 1 exactly when pixel (r, c) is bright; implemented in numpy, so no gradient can flow."""
    def model(x):
        a = x.detach().cpu().numpy().reshape(len(x), side, side)
        z = 10.0 * (a[:, r, c] - 0.5)
        return torch.tensor(np.stack([-z, z], 1), dtype=torch.float32)
    return model


def test_apply_pixels_against_loop():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 5, 6, generator=g)
    cand = torch.tensor([[[[1.7, 4.2, 0.9], [0.0, 5.99, 0.1]]], [[[4.99, 0.5, 0.3], [2.0, 2.0, 0.0]]]])
    out = apply_pixels(img, cand)[:, 0]
    ref = img.clone()
    for b in range(2):
        for r, c, v in cand[b, 0].tolist():
            ref[b, int(r), int(c)] = v
    assert torch.equal(out, ref)


def test_one_pixel_model_is_fooled_by_a_one_pixel_attack():
    x = torch.zeros(3, 144)  # flat square images, all dark: class 0 with certainty
    y = torch.zeros(3, dtype=torch.long)
    res = pixel_attack(one_pixel_model(), x, y, 1, popsize=40, maxiter=60, seed=1, progress=False)
    assert res["success"].all()
    assert torch.equal(res["pixels"][:, 0, :2].floor().long(), torch.tensor([[5, 7]] * 3))
    assert (res["pixels"][:, 0, 2] > 0.5).all()
    assert res["p_true_before"].min() > 0.99 and res["p_true_after"].max() < 0.5


def test_never_changes_more_than_n_pixels_and_uses_only_outputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))
    calls = []

    def blackbox(x):  # outputs only; the attack must work with no autograd at all
        calls.append(torch.is_grad_enabled())
        return net(x).detach()

    x = torch.rand(6, 1, 8, 8)
    y = torch.randint(0, 5, (6,))
    for n in (1, 3):
        res = pixel_attack(blackbox, x, y, n, popsize=10, maxiter=5, progress=False)
        changed = (res["x_adv"] != x).reshape(6, -1).sum(1)
        assert changed.max() <= n
        assert res["x_adv"].shape == x.shape
        assert ((res["x_adv"] >= 0) & (res["x_adv"] <= 1)).all()
    assert calls and not any(calls)


def test_unfoolable_model_fails_and_bad_parameters_raise():
    const = lambda x: torch.tensor([[5.0, 0.0]]).expand(len(x), 2)
    res = pixel_attack(const, torch.rand(2, 16), torch.zeros(2, dtype=torch.long), 2, popsize=8, maxiter=3, progress=False)
    assert not res["success"].any() and (res["generations"] == 3).all()
    with pytest.raises(ParameterError):
        pixel_attack(const, torch.rand(2, 16), torch.zeros(2, dtype=torch.long), 0)
    with pytest.raises(ParameterError):
        pixel_attack(const, torch.rand(2, 15), torch.zeros(2, dtype=torch.long), 1)


def test_exhaustive_search_finds_exactly_the_vulnerable_images():
    from repro.papers.one_pixel_attack import exhaustive_pixel_search
    x = torch.zeros(2, 144)
    x[1, 5 * 12 + 7] = 0.2  # still class 0; any bright pixel at (5, 7) flips both images
    y = torch.zeros(2, dtype=torch.long)
    res = exhaustive_pixel_search(one_pixel_model(), x, y, progress=False)
    assert res["vulnerable"].all()
    assert res["min_p_true"].max() < 1e-3
    res0 = exhaustive_pixel_search(one_pixel_model(), x, y, values=(0.0, 0.3), progress=False)
    assert not res0["vulnerable"].any()  # values <= 0.5 never flip this model
