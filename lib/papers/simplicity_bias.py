"""The simplicity-bias chapter (Shah et al., 2020, "The pitfalls of simplicity bias in neural networks"):
the LMS data (one linear coordinate, k-slab coordinates and noise), the MNIST-Fashion block images,
and S-randomization, which shuffles chosen coordinates across examples to remove their information.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.params import ParameterError, check_choice, check_positive
from ..data.datasets import Split, draw_device, fashion_mnist, mnist5k, to_split


def _slab_intervals(k: int, margin: float) -> tuple[list, list]:
    """The k slabs of one coordinate on [-1, 1] as in the paper's released generator: k intervals of equal
    width w = (2 - 2(k-1) margin) / k separated by gaps of 2 * margin, symmetric about 0, labels
    alternating from the centre (class 0) outwards. Returns the
    (low, high) intervals of class 0 and of class 1."""
    w = (2.0 - 2.0 * (k - 1) * margin) / k
    lows = [-1.0 + i * (w + 2 * margin) for i in range(k)]
    centre = k // 2
    neg = [(lo, lo + w) for i, lo in enumerate(lows) if (i - centre) % 2 == 0]
    pos = [(lo, lo + w) for i, lo in enumerate(lows) if (i - centre) % 2 == 1]
    return neg, pos


def lms_data(n_train: int, n_test: int, dim: int = 50, k: int = 5, lin_margin: float = 0.1, slab_margin: float = 0.1,
             seed: int = 0, device=None) -> Split:
    """LMS-k data (Shah et al., 2020): coordinate 0 is *linear*, coordinates 1..dim-1 are *k-slab*; each
    one alone separates the two classes perfectly, with a margin.

    Labels y are balanced 0/1. Linear: x_0 = (2y - 1) * U[lin_margin, 1]. Slab (k in {3, 5, 7}): [-1, 1]
    is cut into k slabs of width (2 - 2(k-1) slab_margin)/k separated by gaps of 2 * slab_margin; the
    central slab and every second one outwards belong to class 0, the others to class 1. A point of class c
    falls into one of c's slabs and is uniform inside it. As in the paper's code, slabs of one class are
    not equally likely: for 5 slabs the central one takes 3/4 of class 0 (the released ``slab5_pval``), for
    7 slabs the inner pair takes 7/8 of class 1 (``slab7_pval``) and the centre half of class 0;
    other choices are uniform. All
    coordinates are drawn independently given y, so every slab coordinate is fully predictive on its own.
    Returns a Split of float32 inputs in [-1, 1]^dim and int64 labels."""
    check_positive("n_train", n_train, integer=True)
    check_positive("n_test", n_test, integer=True)
    check_positive("dim", dim, integer=True)
    check_choice("k", k, (3, 5, 7))
    if dim < 2:
        raise ParameterError(f"dim must be at least 2 (one linear and one slab coordinate); got {dim}.")
    if not 0 < lin_margin < 1 or not 0 < slab_margin < 1.0 / (k - 1):
        raise ParameterError(f"lin_margin must lie in (0, 1) and slab_margin in (0, {1 / (k - 1):.3f}); "
                             f"got {lin_margin} and {slab_margin}.")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % 2)
    x = np.empty((n, dim))
    x[:, 0] = (2 * y - 1) * rng.uniform(lin_margin, 1.0, n)
    neg, pos = _slab_intervals(k, slab_margin)
    weights = {0: None, 1: None}
    if k == 5:
        weights[0] = [1 / 8, 3 / 4, 1 / 8]   # side, centre, side
    if k == 7:
        weights[0] = [1 / 4, 1 / 2, 1 / 4]   # side, centre, side
        weights[1] = [1 / 16, 7 / 16, 7 / 16, 1 / 16]  # outer, inner, inner, outer
    for c, slabs in ((0, neg), (1, pos)):
        rows = np.flatnonzero(y == c)
        p = np.asarray(weights[c]) if weights[c] is not None else np.full(len(slabs), 1 / len(slabs))
        lo_hi = np.asarray(slabs)
        pick = rng.choice(len(slabs), size=(len(rows), dim - 1), p=p)
        u = rng.uniform(size=(len(rows), dim - 1))
        x[rows, 1:] = lo_hi[pick, 0] + u * (lo_hi[pick, 1] - lo_hi[pick, 0])
    x = x.astype(np.float32)
    return to_split({"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]},
                     device)


def s_randomize(x: torch.Tensor, columns, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's S-randomization: the block of features ``columns`` (indices or a boolean mask over
    dim 1 of a flattened (n, d) x) is permuted across the examples, one permutation for the whole block,
    the rest of every row kept. The block's joint distribution (and so each feature's marginal) is
    unchanged, but its dependence on the label and on the other features is destroyed."""
    x = x.flatten(1)
    cols = torch.as_tensor(columns, device=x.device)
    if cols.dtype == torch.bool:
        cols = cols.nonzero().flatten()
    perm = torch.randperm(len(x), generator=generator, device=draw_device(x, generator)).to(x.device)
    out = x.clone()
    out[:, cols] = x[perm][:, cols]
    return out


def mnist_fashion_blocks(n_train: int, digits=(0, 1), items=(2, 4), seed: int = 0, device=None, n_test: int = 1000):
    """The paper's MNIST-CIFAR images rebuilt from offline data: an MNIST-5k digit (the simple block) stacked
    on top of a Fashion-MNIST item (the complex block), both 28x28, so each image is 56x28 (flattened to
    1568, the digit in the first 784 entries). Label c in {0, 1} pairs digit class ``digits[c]`` with
    Fashion class ``items[c]`` (default 2 = pullover, 4 = coat), so each block alone predicts the label.

    Digits come from MNIST-5k's own train and test parts (400 + 100 per class), Fashion items from
    Fashion-MNIST's; each of the ``n_train`` (``n_test``) images draws its digit and its item at random,
    with replacement, from the matching part and class, so digits are reused when n_train exceeds 800.
    Returns a Split and the boolean mask of the digit block over the 1568 features."""
    check_positive("n_train", n_train, integer=True)
    check_positive("n_test", n_test, integer=True)
    if len(digits) != 2 or len(items) != 2:
        raise ParameterError("digits and items must each name two classes (one per label).")
    m, f = mnist5k(), fashion_mnist()
    rng = np.random.default_rng(seed)

    def build(xm, ym, xf, yf, n):
        y = rng.permutation(np.arange(n) % 2)
        top = np.empty((n, 784), dtype=np.float32)
        bottom = np.empty((n, 784), dtype=np.float32)
        xm, ym, xf, yf = (t.cpu().numpy() for t in (xm, ym, xf, yf))
        for c in (0, 1):
            rows = np.flatnonzero(y == c)
            top[rows] = xm[rng.choice(np.flatnonzero(ym == digits[c]), len(rows))]
            bottom[rows] = xf[rng.choice(np.flatnonzero(yf == items[c]), len(rows))]
        return np.concatenate([top, bottom], 1), y

    xtr, ytr = build(m.x_train, m.y_train, f.x_train, f.y_train, n_train)
    xte, yte = build(m.x_test, m.y_test, f.x_test, f.y_test, n_test)
    mask = torch.zeros(1568, dtype=torch.bool, device=device or torch.device("cpu"))
    mask[:784] = True
    return to_split({"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}, device), mask
