"""The input-gradients chapter (Shah, Jain and Netrapalli, 2021, "Do input gradients highlight
discriminative features?"): images that hold a digit and a null patch, and how much of a saliency
map falls on the digit.

``block_mnist`` stacks an MNIST digit of one class pair above or below a constant "null" patch
(:func:`null_patch`); ``block_mask`` marks the digit's half. ``mass_share`` and ``topk_share`` measure
how much of a saliency map's mass (or of its k largest entries) lies inside a mask.
"""
from __future__ import annotations

import torch

from ..core.params import ParameterError, check_choice
from ..data.datasets import draw_device


def null_patch(side: int = 28, size: int = 14, width: int = 2, value: float = 1.0) -> torch.Tensor:
    """The "null" block of BlockMNIST: a ``side x side`` block holding one fixed, centred square outline
    (``size`` pixels across, lines ``width`` pixels thick, intensity ``value``), the same in every image."""
    if not (0 < 2 * width <= size <= side):
        raise ParameterError(f"null_patch needs 0 < 2*width <= size <= side; got side={side}, size={size}, width={width}.")
    block = torch.zeros(side, side)
    lo = (side - size) // 2
    block[lo:lo + size, lo:lo + size] = value
    block[lo + width:lo + size - width, lo + width:lo + size - width] = 0.0
    return block


def block_mnist(x: torch.Tensor, y: torch.Tensor, classes=(0, 1), position: str = "random",
                patch: torch.Tensor | None = None, generator: torch.Generator | None = None):
    """BlockMNIST (Shah, Jain and Netrapalli, 2021) from MNIST digits ``x`` (n, 784) or (n, 28, 28), labels ``y``.

    Only the digits of ``classes`` are kept; each becomes one image of two 28x28 blocks stacked vertically
    (shape (1, 56, 28)): the digit (the discriminative "signal" block) and the null block ``patch``
    (default :func:`null_patch`), which is identical in every image and so carries no label information.
    ``position`` puts the digit on top, at the bottom, or (``"random"``) on top with probability 1/2 per
    image, drawn with ``generator``. Returns ``(images (m, 1, 56, 28), labels (m,) in 0..len(classes)-1,
    digit_on_top (m,) bool)``; :func:`block_mask` turns the last into the signal block's pixel mask.
    """
    check_choice("position", position, ("random", "top", "bottom"))
    classes = list(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ParameterError(f"classes must name at least two distinct labels; got {classes!r}.")
    side = 28
    x = x.reshape(len(x), side, side)
    keep = torch.isin(y, torch.as_tensor(classes, device=y.device))
    digits, labels = x[keep], y[keep]
    lookup = torch.zeros(int(max(max(classes), int(y.max()))) + 1, dtype=torch.long, device=y.device)
    lookup[torch.as_tensor(classes, device=y.device)] = torch.arange(len(classes), device=y.device)
    labels = lookup[labels]  # label i means classes[i]
    m = len(digits)
    patch = (null_patch(side) if patch is None else patch).to(digits.device, digits.dtype).reshape(side, side)
    if position == "random":
        top = torch.rand(m, generator=generator, device=draw_device(y, generator)).to(y.device) < 0.5
    else:
        top = torch.full((m,), position == "top", dtype=torch.bool, device=y.device)
    null = patch.expand(m, side, side)
    t = top[:, None, None]
    images = torch.cat([torch.where(t, digits, null), torch.where(t, null, digits)], dim=1)
    return images[:, None], labels, top


def block_mask(digit_on_top: torch.Tensor, side: int = 28) -> torch.Tensor:
    """Boolean masks (m, 2*side, side) of the signal (digit) block of BlockMNIST images."""
    rows = torch.arange(2 * side, device=digit_on_top.device)
    in_top = (rows < side)[None, :, None]
    return (in_top == digit_on_top[:, None, None]).expand(-1, -1, side)




def mass_share(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image, the share of total absolute saliency inside ``mask``: sum(|s| in mask) / sum(|s|).
    ``saliency`` and ``mask`` (bool) have shape (B, ...); returns shape (B,)."""
    s = saliency.abs().flatten(1)
    return (s * mask.flatten(1)).sum(1) / s.sum(1)


def topk_share(saliency: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Per image, the fraction of its ``k`` largest-|saliency| pixels that lie inside ``mask`` (shape (B,))."""
    s = saliency.abs().flatten(1)
    if not 1 <= k <= s.shape[1]:
        raise ValueError(f"k must be between 1 and the number of pixels ({s.shape[1]}); got {k}.")
    idx = s.topk(k, dim=1).indices
    return mask.flatten(1).gather(1, idx).float().mean(1)
