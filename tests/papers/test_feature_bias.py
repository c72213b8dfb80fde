import pytest
import torch
from repro.nn.models import MLP
from repro.papers.feature_bias import mlp_layer_representations, variance_explained
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score


def test_matches_sklearn_variance_weighted_r2():
    g = torch.Generator().manual_seed(0)
    n, p = 500, 12
    f = torch.randint(0, 2, (n, 3), generator=g).double()
    f[:, 2] = torch.randn(n, generator=g, dtype=torch.float64)  # a continuous feature too
    w = torch.randn(3, p, generator=g, dtype=torch.float64) * torch.tensor([[3.0], [0.5], [1.0]], dtype=torch.float64)
    rep = f @ w + torch.randn(n, p, generator=g, dtype=torch.float64)
    ours = variance_explained(rep, f).numpy()
    for k in range(3):
        x = f[:, [k]].numpy()
        pred = LinearRegression().fit(x, rep.numpy()).predict(x)
        ref = r2_score(rep.numpy(), pred, multioutput="variance_weighted")
        assert ours[k] == pytest.approx(ref, abs=1e-10)
    assert ours[0] > ours[2] > ours[1]


def test_known_answers():
    f = torch.tensor([0.0, 0.0, 1.0, 1.0])
    rep = torch.stack([f * 2 - 1, torch.zeros(4)], 1)  # one unit is exactly the feature
    assert variance_explained(rep, f).item() == pytest.approx(1.0)
    other = torch.tensor([0.0, 1.0, 0.0, 1.0])  # orthogonal to the feature: explains nothing
    assert variance_explained(rep, other).item() == pytest.approx(0.0, abs=1e-12)
    assert variance_explained(rep, torch.ones(4)).item() == 0.0  # constant feature
    with pytest.raises(ValueError):
        variance_explained(rep, torch.ones(5))


def test_layer_representations_are_the_hidden_activations():
    torch.manual_seed(0)
    m = MLP(6, 8, 2, 3)
    x = torch.randn(10, 6)
    reps = mlp_layer_representations(m, x)
    assert len(reps) == 2 and reps[1].shape == (10, 8)
    h1 = torch.relu(m.layers[0](x))
    assert torch.allclose(reps[0], h1)
    assert torch.allclose(reps[1], torch.relu(m.layers[1](h1)))
    assert torch.allclose(m.layers[2](reps[1]), m(x), atol=1e-6)
