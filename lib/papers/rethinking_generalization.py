"""The rethinking-generalization chapter (Zhang et al., 2017): the randomization tests, labels
replaced with random ones at a given fraction, pixels shuffled (one fixed permutation, or a new one
per image), replaced with uniform random or Gaussian noise, and per-image standardization.
"""
from __future__ import annotations

import torch

from ..core.params import check_positive, check_range
from ..data.datasets import draw_device


def corrupt_labels(y: torch.Tensor, fraction: float, num_classes: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Partially corrupted labels as in Zhang et al. (2017): independently with probability ``fraction``
    each label is replaced by a class drawn uniformly from ``num_classes``. A replacement may equal the
    true class by chance, so the expected share of wrong labels is ``fraction * (1 - 1/num_classes)``;
    ``fraction=1`` gives completely random labels. Returns a new tensor on y's device."""
    check_range("fraction", fraction, 0.0, 1.0)
    check_positive("num_classes", num_classes, integer=True)
    dev = draw_device(y, generator)
    flip = torch.rand(y.shape, generator=generator, device=dev) < fraction
    new = torch.randint(0, num_classes, y.shape, generator=generator, device=dev)
    return torch.where(flip.to(y.device), new.to(y.device, y.dtype), y)


def shuffle_pixels(x: torch.Tensor, generator: torch.Generator | None = None,
                   perm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """"Shuffled pixels": one random permutation of the features (dim 1 of a flattened (n, d) tensor)
    applied to every row. Returns (shuffled x, the permutation); pass ``perm`` back to shuffle a test
    set the same way."""
    if perm is None:
        perm = torch.randperm(x.shape[1], generator=generator, device=draw_device(x, generator))
    perm = perm.to(x.device)
    return x[:, perm], perm


def random_pixels(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """"Random pixels": an independent random permutation of the features of every row of (n, d) x,
    so each image keeps its pixel values but loses all spatial structure."""
    keys = torch.rand(x.shape, generator=generator, device=draw_device(x, generator))
    return torch.gather(x, 1, keys.argsort(dim=1).to(x.device))


def gaussian_pixels(x: torch.Tensor, generator: torch.Generator | None = None, mean=None, std=None) -> torch.Tensor:
    """"Gaussian": inputs of x's shape drawn i.i.d. from a normal distribution with the mean and the
    standard deviation of all of x's entries (the paper matches the dataset's mean and variance), or
    with the given ``mean`` and ``std`` (to draw a test set with the training set's statistics)."""
    mean = x.mean() if mean is None else mean
    std = x.std() if std is None else std
    z = torch.randn(x.shape, generator=generator, device=draw_device(x, generator), dtype=x.dtype).to(x.device)
    return mean + std * z


def standardize_per_image(x: torch.Tensor) -> torch.Tensor:
    """Per-image whitening as in TensorFlow's ``per_image_standardization``: each row of (n, d) x minus
    its mean, divided by max(its standard deviation, 1/sqrt(d)) (so constant rows do not blow up)."""
    d = x.shape[1]
    mean = x.mean(1, keepdim=True)
    std = x.std(1, keepdim=True, unbiased=False).clamp_min(1.0 / d ** 0.5)
    return (x - mean) / std
