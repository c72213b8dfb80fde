"""The randomization tests of repro.papers.rethinking_generalization: corrupted labels, shuffled pixels."""
import math

import pytest
import torch
from repro import ParameterError
from repro.papers.rethinking_generalization import (
    corrupt_labels,
    gaussian_pixels,
    random_pixels,
    shuffle_pixels,
    standardize_per_image,
)


def labels(n=20000, c=10):
    return torch.arange(n) % c


def test_corrupt_labels_extremes():
    y = labels()
    assert torch.equal(corrupt_labels(y, 0.0, 10, torch.Generator().manual_seed(0)), y)
    r = corrupt_labels(y, 1.0, 10, torch.Generator().manual_seed(0))
    counts = torch.bincount(r, minlength=10).float()
    # uniform over 10 classes: each count ~ Binomial(20000, 0.1), sd ~ 42
    assert (counts - 2000).abs().max() < 6 * math.sqrt(20000 * 0.09)
    # random labels agree with the true ones only by chance (1 in 10)
    agree = (r == y).float().mean().item()
    assert abs(agree - 0.1) < 6 * math.sqrt(0.09 / 20000)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_corrupt_labels_fraction(p):
    y = labels()
    r = corrupt_labels(y, p, 10, torch.Generator().manual_seed(1))
    expected = p * (1 - 1 / 10)  # a replacement equals the true class with probability 1/10
    wrong = (r != y).float().mean().item()
    assert abs(wrong - expected) < 6 * math.sqrt(expected * (1 - expected) / len(y))
    assert r.dtype == y.dtype and r.min() >= 0 and r.max() < 10


def test_corrupt_labels_is_reproducible_and_checked():
    y = labels(1000)
    a = corrupt_labels(y, 0.5, 10, torch.Generator().manual_seed(3))
    b = corrupt_labels(y, 0.5, 10, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ParameterError, match="fraction"):
        corrupt_labels(y, 1.5, 10)


def test_shuffle_pixels_uses_one_permutation():
    x = torch.arange(3 * 6, dtype=torch.float32).reshape(3, 6)
    xs, perm = shuffle_pixels(x, torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(6))
    for row, row_s in zip(x, xs):
        assert torch.equal(row_s, row[perm])
    test = torch.randn(4, 6)
    ts, perm2 = shuffle_pixels(test, perm=perm)
    assert torch.equal(perm2, perm) and torch.equal(ts, test[:, perm])


def test_random_pixels_permutes_each_row_independently():
    x = torch.arange(50 * 20, dtype=torch.float32).reshape(50, 20)
    r = random_pixels(x, torch.Generator().manual_seed(0))
    assert torch.equal(r.sort(1).values, x.sort(1).values)  # same values in every row
    offsets = (r - x[:, :1]).long()  # each row's permutation, as indices 0..19
    distinct = {tuple(o.tolist()) for o in offsets}
    assert len(distinct) == 50  # 50 rows, 50 different permutations
    assert not torch.equal(r, x)


def test_gaussian_pixels_match_mean_and_std():
    x = torch.rand(2000, 50) * 3 + 1  # mean 2.5, sd sqrt(3/4)
    g = gaussian_pixels(x, torch.Generator().manual_seed(0))
    assert g.shape == x.shape
    assert abs(g.mean().item() - x.mean().item()) < 0.01
    assert abs(g.std().item() - x.std().item()) < 0.01
    # and it is Gaussian, not the data's uniform shape: kurtosis 3 (uniform has 1.8)
    z = (g - g.mean()) / g.std()
    assert abs(z.pow(4).mean().item() - 3.0) < 0.1


def test_standardize_per_image():
    x = torch.randn(10, 64) * 5 + 3
    s = standardize_per_image(x)
    assert torch.allclose(s.mean(1), torch.zeros(10), atol=1e-5)
    assert torch.allclose(s.std(1, unbiased=False), torch.ones(10), atol=1e-5)
    const = standardize_per_image(torch.full((2, 64), 7.0))
    assert torch.equal(const, torch.zeros(2, 64))  # std clamped at 1/sqrt(d): no NaN


def test_gaussian_pixels_with_given_statistics():
    g = gaussian_pixels(torch.zeros(4000, 25), torch.Generator().manual_seed(0), mean=3.0, std=0.5)
    assert abs(g.mean().item() - 3.0) < 0.01 and abs(g.std().item() - 0.5) < 0.01
