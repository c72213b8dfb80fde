import numpy as np
import pytest
import torch
from repro.nn.metrics import accuracy, expected_calibration_error
from sklearn.metrics import accuracy_score


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
