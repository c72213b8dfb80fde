import numpy as np
import torch
from repro.nn.ensemble import Ensemble
from repro.nn.models import MLP
from repro.papers.shifting_representations import (
    concatenate_members,
    linear_probe,
    mlp_ensemble_features,
    pad_features,
)
from sklearn.linear_model import LogisticRegression


def _blobs(n, d=6, c=3, seed=0):
    centers = torch.randn(c, d, generator=torch.Generator().manual_seed(123)) * 2
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


def test_probe_matches_sklearn_logistic_regression():
    x, y = _blobs(600)
    xt, yt = _blobs(300, seed=1)
    C = 1.0
    acc, (W, b, mean, std) = linear_probe(x, y, xt, yt, num_classes=3, weight_decay=1 / (C * len(x)), steps=1500,
                                          lr=0.05, standardize=False, return_model=True)
    sk = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(x.numpy(), y.numpy())
    ours = torch.softmax(xt @ W[0] + b[0], -1).numpy()
    assert np.abs(ours - sk.predict_proba(xt.numpy())).max() < 0.02
    assert abs(acc.item() - sk.score(xt.numpy(), yt.numpy())) < 0.01


def test_zero_padding_and_batching_do_not_change_a_probe():
    x, y = _blobs(400)
    xt, yt = _blobs(200, seed=1)
    alone = linear_probe(x[:, :3], y, xt[:, :3], yt, num_classes=3, steps=200)
    both = linear_probe(pad_features([x[:, :3], x]), y, pad_features([xt[:, :3], xt]), yt, num_classes=3, steps=200)
    assert both[0].item() == alone.item()
    assert both[1].item() > 0.9  # all six informative dimensions: well separated blobs


def test_features_and_concatenation_match_single_models():
    torch.manual_seed(0)
    models = [MLP(5, 4, 2, 3) for _ in range(3)]
    ens = Ensemble(models)
    x = torch.randn(7, 5)
    feats = mlp_ensemble_features(ens, x, batch_size=3)
    assert feats.shape == (3, 7, 4)
    for i, m in enumerate(models):
        _, pre = m(x, return_preactivations=True)
        assert torch.allclose(feats[i], torch.relu(pre[-1]), atol=1e-6)
    cat = concatenate_members(feats, 2)
    assert cat.shape == (7, 8)
    assert torch.equal(cat[:, 4:], feats[1])
