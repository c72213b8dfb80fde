import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from repro.metrics import accuracy, excess_kurtosis, expected_calibration_error, linear_cka


def test_accuracy_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(500, 7, generator=g), torch.randint(0, 7, (500,), generator=g)
    assert accuracy(logits, y).item() == pytest.approx(accuracy_score(y.numpy(), logits.argmax(1).numpy()))


def ece_loop(probs, y, n_bins):
    """A plain loop over bins, written independently of the vectorised version."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(conf[inside].mean() - (pred[inside] == y[inside]).mean())
    return total


def test_ece_matches_loop():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2000, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 5, 2000)
    got = expected_calibration_error(torch.tensor(probs), torch.tensor(y), n_bins=10)
    assert got == pytest.approx(ece_loop(probs, y, 10), abs=1e-9)


def test_ece_of_perfectly_calibrated_is_small():
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.5, 1, 200000)
    correct = rng.uniform(size=conf.size) < conf
    probs = np.stack([conf, 1 - conf], 1)
    y = np.where(correct, 0, 1)
    assert expected_calibration_error(torch.tensor(probs), torch.tensor(y)) < 0.01


def cka_hsic(x, y):
    """CKA through the centering matrix H and Gram matrices (Kornblith et al., eq. 1-3)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_cka_matches_gram_formula_and_invariances():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(60, 5))
    y[:, 0] += x[:, 0]
    assert linear_cka(torch.tensor(x), torch.tensor(y)) == pytest.approx(cka_hsic(x, y), rel=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(torch.tensor(x), torch.tensor(3 * x @ q)) == pytest.approx(1.0)


def test_excess_kurtosis_of_gaussian_and_uniform():
    g = torch.Generator().manual_seed(4)
    assert abs(excess_kurtosis(torch.randn(400000, generator=g, dtype=torch.float64)).item()) < 0.03
    u = torch.rand(400000, generator=g, dtype=torch.float64) * 2 - 1
    assert excess_kurtosis(u).item() == pytest.approx(-1.2, abs=0.02)
