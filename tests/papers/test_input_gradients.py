"""BlockMNIST (repro.papers.input_gradients.block_mnist) and the saliency-share metrics (mass_share, topk_share)."""
import numpy as np
import pytest
import torch
from repro.core.params import ParameterError
from repro.papers.input_gradients import (
    block_mask,
    block_mnist,
    mass_share,
    null_patch,
    topk_share,
)


def fake_digits(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.arange(n) % 4  # labels 0..3


def test_null_patch_is_a_square_outline():
    p = null_patch(28, size=14, width=2)
    assert p.shape == (28, 28)
    assert p.sum() == 14 * 14 - 10 * 10  # outer square minus the hollow inside
    assert p[7, 7] == 1 and p[14, 14] == 0 and p[0, 0] == 0
    with pytest.raises(ParameterError):
        null_patch(28, size=30)


def test_blocks_hold_digit_and_patch_at_the_drawn_position():
    x, y = fake_digits()
    imgs, labels, top = block_mnist(x, y, classes=(3, 1), generator=torch.Generator().manual_seed(1))
    kept = (y == 3) | (y == 1)
    assert imgs.shape == (int(kept.sum()), 1, 56, 28)
    # label i means classes[i]: 3 -> 0, 1 -> 1
    assert torch.equal(labels, (y[kept] == 1).long())
    patch = null_patch()
    for img, digit, t in zip(imgs[:, 0], x[kept].reshape(-1, 28, 28), top):
        sig, null = (img[:28], img[28:]) if t else (img[28:], img[:28])
        assert torch.equal(sig, digit) and torch.equal(null, patch)
    assert 0 < top.float().mean() < 1  # both positions occur


def test_fixed_positions_and_masks():
    x, y = fake_digits()
    imgs, _, top = block_mnist(x, y, position="top")
    assert top.all()
    m = block_mask(top)
    assert m.shape == (len(top), 56, 28) and m[:, :28].all() and not m[:, 28:].any()
    _, _, bottom = block_mnist(x, y, position="bottom")
    mb = block_mask(bottom)
    assert not mb[:, :28].any() and mb[:, 28:].all()
    with pytest.raises(ParameterError):
        block_mnist(x, y, position="left")
    with pytest.raises(ParameterError):
        block_mnist(x, y, classes=(1, 1))


def test_shares_against_numpy():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 56, 28, generator=g)
    mask = torch.rand(5, 56, 28, generator=g) < 0.3
    a, m = s.abs().numpy().reshape(5, -1), mask.numpy().reshape(5, -1)
    np.testing.assert_allclose(mass_share(s, mask).numpy(), (a * m).sum(1) / a.sum(1), rtol=1e-5)
    k = 50
    expected = [m[i][np.argsort(-a[i])[:k]].mean() for i in range(5)]
    np.testing.assert_allclose(topk_share(s, mask, k).numpy(), expected, rtol=1e-6)
    # known answers: saliency only inside the mask gives share 1; only outside gives 0
    inside = mask.float()
    assert torch.allclose(mass_share(inside, mask), torch.ones(5))
    assert torch.allclose(mass_share(1 - inside, mask), torch.zeros(5))
    with pytest.raises(ValueError):
        topk_share(s, mask, 0)
