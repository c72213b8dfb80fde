import torch
from repro.papers.forward_forward import (
    FFNet,
    embed_label,
    extract_label,
    ff_loss,
    goodness,
    rms_normalize,
    train_ff,
    wrong_labels,
)


def test_embed_label_round_trip_and_rest_of_image_untouched():
    x = torch.rand(7, 1, 28, 28)
    y = torch.tensor([0, 3, 9, 1, 5, 5, 2])
    e = embed_label(x, y)
    assert e.shape == (7, 784)
    assert torch.equal(extract_label(e), y)
    assert torch.equal(e[:, 10:], x.flatten(1)[:, 10:])
    assert torch.allclose(e[:, :10].sum(1), x.max().expand(7))
    assert (e[:, :10] > 0).sum(1).eq(1).all()
    # per-model labels: (N, batch) -> (N, batch, d)
    ym = torch.stack([y, (y + 1) % 10])
    em = embed_label(x, ym, value=1.0)
    assert em.shape == (2, 7, 784) and torch.equal(extract_label(em), ym)


def test_wrong_labels_are_always_wrong_and_cover_all_others():
    y = torch.full((5000,), 4)
    w = wrong_labels(y, 10, torch.Generator().manual_seed(0))
    assert (w != y).all()
    assert set(w.tolist()) == set(range(10)) - {4}


def test_goodness_and_loss_by_hand():
    h = torch.tensor([[1.0, 2.0, 0.0, 3.0]])
    assert torch.allclose(goodness(h), torch.tensor([(1 + 4 + 0 + 9) / 4]))
    g_pos, g_neg = torch.tensor([3.0, 0.5]), torch.tensor([0.1, 4.0])
    expected = (torch.log1p(torch.exp(2 - g_pos)) + torch.log1p(torch.exp(g_neg - 2))).mean()
    assert torch.allclose(ff_loss(g_pos, g_neg, 2.0), expected)
    assert torch.allclose(rms_normalize(torch.tensor([[3.0, 4.0]])).pow(2).mean(), torch.tensor(1.0), atol=1e-5)


def test_layer_goodness_matches_direct_computation():
    net = FFNet([12, 8, 6], n_models=3, seed=1)
    x = torch.randn(5, 12)
    g = net.layer_goodness(x)
    for m in range(3):
        h1 = torch.relu(x @ net.weights[0][m] + net.biases[0][m])
        n1 = h1 / (h1.pow(2).mean(1, keepdim=True).sqrt() + 1e-6)
        h2 = torch.relu(n1 @ net.weights[1][m] + net.biases[1][m])
        assert torch.allclose(g[0, m], h1.pow(2).mean(1), atol=1e-6)
        assert torch.allclose(g[1, m], h2.pow(2).mean(1), atol=1e-6)


def test_no_gradient_crosses_layers():
    net = FFNet([12, 8, 6], n_models=2, seed=0)
    x_pos, x_neg = torch.randn(4, 12), torch.randn(4, 12)
    net.loss(x_pos, x_neg)[1].sum().backward()  # the second layer's loss only
    assert net.weights[0].grad is None or net.weights[0].grad.abs().max() == 0
    assert net.weights[1].grad.abs().max() > 0
    # without the detach the gradient would reach layer 1: the test can fail
    net.zero_grad(set_to_none=True)
    g = net.layer_goodness(x_pos, detach=False)[1].sum()
    g.backward()
    assert net.weights[0].grad.abs().max() > 0


def test_prediction_picks_the_planted_label():
    # a hand-built net whose first layer copies the label pixels, and whose second layer responds
    # strongly only when the label pixel agrees with the "class pixel" 10 + y
    d = 20
    net = FFNet([d, 10, 10], n_models=1, seed=0)
    with torch.no_grad():
        w1 = torch.zeros(d, 10)
        for c in range(10):
            w1[c, c] = 1.0          # label pixel c
            w1[10 + c, c] = 1.0     # class pixel c
        net.weights[0].copy_(w1[None])
        net.biases[0].fill_(-1.5)   # fires only when both agree
        net.weights[1].copy_(torch.eye(10)[None])
        net.biases[1].zero_()
    y = torch.tensor([3, 7, 0, 9])
    x = torch.zeros(4, d)
    x[torch.arange(4), 10 + y] = 1.0
    for skip in (False, True):
        assert torch.equal(net.predict(x, skip_first=skip)[0], y)
    g = net.goodness_by_label(x)
    assert g.shape == (1, 4, 10, 2)


def test_training_separates_positive_from_negative_data():
    torch.manual_seed(0)
    n, d = 400, 30
    y = torch.randint(0, 10, (n,))
    x = torch.rand(n, d) * 0.1
    x[torch.arange(n), 10 + y] = 1.0   # the class is written in pixels 10..19
    net = FFNet([d, 32, 32], n_models=2, seed=0, normalize_input=True)
    hist = train_ff(net, x, y, epochs=15, lr=0.03, batch_size=50, eval_sets={"train": (x, y)}, eval_every=15,
                    progress=False)
    assert hist.error.max() < 0.1
