"""Uniform label noise by dilution (Rolnick et al., 2017): repro.papers.label_noise_robustness."""
import math

import pytest
import torch
from repro import ParameterError
from repro.papers.label_noise_robustness import dilute_with_noisy_labels


def clean_labels(n=3000, c=10):
    return torch.arange(n) % c


def test_alpha_zero_is_the_clean_set():
    y = clean_labels(50)
    idx, lab, clean = dilute_with_noisy_labels(y, 0, 10, torch.Generator().manual_seed(0))
    assert torch.equal(idx, torch.arange(50)) and torch.equal(lab, y) and bool(clean.all())


@pytest.mark.parametrize("images", ["copies", "random"])
def test_layout_and_sizes(images):
    n, alpha = 300, 7
    y = clean_labels(n)
    idx, lab, clean = dilute_with_noisy_labels(y, alpha, 10, torch.Generator().manual_seed(1), images=images)
    assert len(idx) == len(lab) == len(clean) == n * (1 + alpha)
    assert torch.equal(idx[:n], torch.arange(n)) and torch.equal(lab[:n], y)   # the clean set is kept, in order
    assert int(clean.sum()) == n and bool(clean[:n].all())
    assert idx.min() >= 0 and idx.max() < n and lab.dtype == y.dtype
    if images == "copies":  # every image appears exactly 1 + alpha times
        assert torch.equal(torch.bincount(idx, minlength=n), torch.full((n,), 1 + alpha))


def test_noisy_labels_are_uniform_and_independent_of_the_truth():
    n, alpha, c = 3000, 20, 10
    y = clean_labels(n, c)
    idx, lab, clean = dilute_with_noisy_labels(y, alpha, c, torch.Generator().manual_seed(2))
    noisy = lab[~clean]
    m = len(noisy)
    counts = torch.bincount(noisy, minlength=c).double()
    chi2 = ((counts - m / c) ** 2 / (m / c)).sum().item()
    assert chi2 < 40  # chi-square with 9 degrees of freedom: P(> 40) < 1e-5
    agree = (noisy == y[idx[~clean]]).double().mean().item()  # right by chance only, 1 in c
    assert abs(agree - 1 / c) < 6 * math.sqrt(0.09 / m)
    share = (lab == y[idx]).double().mean().item()  # the documented share of correct labels
    assert abs(share - (1 + alpha / c) / (1 + alpha)) < 6 * math.sqrt(0.09 / m)


def test_copies_share_images_across_generators_and_labels_differ():
    y = clean_labels(200)
    a = dilute_with_noisy_labels(y, 5, 10, torch.Generator().manual_seed(3))
    b = dilute_with_noisy_labels(y, 5, 10, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[1], b[1])
    again = dilute_with_noisy_labels(y, 5, 10, torch.Generator().manual_seed(3))
    assert torch.equal(a[1], again[1])


@pytest.mark.parametrize("kw", [dict(alpha=-1), dict(alpha=1.5), dict(num_classes=0), dict(images="other")])
def test_bad_arguments_raise_one_sentence(kw):
    args = dict(alpha=2, num_classes=10) | kw
    with pytest.raises(ParameterError):
        dilute_with_noisy_labels(clean_labels(20), **args)
