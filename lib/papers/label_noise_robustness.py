"""The label-noise chapter (Rolnick et al., 2017, "Deep learning is robust to massive label noise"):
diluting a clean training set with alpha noisy-label copies per clean example.
"""
from __future__ import annotations

import torch

from ..core.params import ParameterError, check_choice, check_positive
from ..data.datasets import draw_device


def dilute_with_noisy_labels(y: torch.Tensor, alpha: int, num_classes: int, generator: torch.Generator | None = None,
                             images: str = "copies") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The "uniform label noise" of Rolnick et al. (2017): keep the n clean examples (labels ``y``) and add
    ``alpha`` noisy examples per clean one, whose labels are drawn uniformly from ``num_classes``.

    The noisy examples reuse the training images: with ``images="copies"`` every image appears ``alpha``
    more times (block k of n rows holds images 0..n-1 again), with ``"random"`` the ``alpha * n`` images are
    drawn uniformly with replacement. Returns ``(index, labels, clean)``, each of length ``n * (1 + alpha)``:
    the diluted set is ``(x[index], labels)``; its first n rows are the clean set in order and ``clean``
    marks them. Only ``labels`` depend on the generator in "copies" mode, so members of an ensemble can
    share ``x[index]`` and differ in their noisy labels. A uniform label is right by chance with
    probability 1/num_classes, so a share ``(1 + alpha / num_classes) / (1 + alpha)`` of all labels is correct.
    """
    check_positive("alpha", alpha, integer=True, allow_zero=True)
    check_positive("num_classes", num_classes, integer=True)
    check_choice("images", images, ("copies", "random"))
    if y.dim() != 1:
        raise ParameterError(f"y must be a 1-D tensor of labels; got shape {tuple(y.shape)}.")
    n, dev = len(y), draw_device(y, generator)
    if images == "copies":
        noisy_idx = torch.arange(n, device=y.device).repeat(alpha)
    else:
        noisy_idx = torch.randint(0, n, (n * alpha,), generator=generator, device=dev).to(y.device)
    noisy_y = torch.randint(0, num_classes, (n * alpha,), generator=generator, device=dev).to(y.device, y.dtype)
    index = torch.cat([torch.arange(n, device=y.device), noisy_idx])
    labels = torch.cat([y, noisy_y])
    clean = torch.zeros(n * (1 + alpha), dtype=torch.bool, device=y.device)
    clean[:n] = True
    return index, labels, clean
