import pytest
import torch
from repro.core.params import ParameterError
from repro.nn.ensemble import train_ensemble
from repro.nn.models import MLP, SmallCNN, SmallTransformer
from repro.nn.train import evaluate, train


def toy(n=256, d=10, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :c].argmax(1)).long()
    return x, y


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.9), ("adamw", 0.0)])
def test_batched_training_equals_one_at_a_time(optimizer, momentum):
    x, y = toy()
    build = lambda: MLP(10, 32, 2, 3)  # noqa: E731
    seeds = [0, 1, 2]
    ens, hist = train_ensemble(build, seeds, x, y, steps=30, lr=0.05, batch_size=32, optimizer=optimizer,
                               momentum=momentum, weight_decay=0.01, eval_every=10, eval_sets={"train": (x, y)},
                               progress=False)
    for i, s in enumerate(seeds):
        torch.manual_seed(s)
        model = build()
        h = train(model, x, y, steps=30, lr=0.05, batch_size=32, optimizer=optimizer, momentum=momentum,
                  weight_decay=0.01, seed=s, eval_every=10, eval_sets={"train": (x, y)}, progress=False)
        single = ens.unstack(i, model)
        for (name, p), q in zip(model.named_parameters(), single.parameters()):
            assert torch.allclose(p, q, atol=1e-5), name
        rows = hist[(hist.seed == s) & (hist.set == "train")]
        assert rows.acc.tolist() == pytest.approx(h.train_acc.tolist(), abs=1e-6)


def test_ensemble_per_model_labels_and_evaluate():
    x, y = toy()
    ys = torch.stack([y, torch.randint(0, 3, y.shape, generator=torch.Generator().manual_seed(9))])
    ens, _ = train_ensemble(lambda: MLP(10, 64, 1, 3), [0, 1], x, ys, steps=300, lr=0.1, batch_size=64,
                            progress=False)
    res_true = ens.evaluate(x, y)
    # the model trained on the true labels fits them better than the one trained on noise
    assert res_true["acc"][0] > res_true["acc"][1]
    out = ens(x)
    assert out.shape == (2, len(x), 3)


def test_plain_training_learns_and_stops_early():
    x, y = toy()
    model = MLP(10, 64, 2, 3)
    h = train(model, x, y, steps=500, lr=0.1, batch_size=64, eval_every=25, eval_sets={"train": (x, y)},
              stop_when=lambda r: r["train_acc"] > 0.9, progress=False)
    assert h.train_acc.iloc[-1] > 0.9 and h.step.iloc[-1] < 500
    assert evaluate(model, x, y)["acc"] == pytest.approx(h.train_acc.iloc[-1])


def test_model_shapes():
    assert MLP(784, 16, 3, 10)(torch.zeros(5, 784)).shape == (5, 10)
    assert SmallCNN(side=28)(torch.zeros(5, 784)).shape == (5, 10)
    assert SmallCNN(side=8, channels=(8,))(torch.zeros(5, 64)).shape == (5, 10)
    assert SmallTransformer(vocab=12, d_model=32, n_heads=4, max_len=8)(torch.zeros(5, 3, dtype=torch.long)).shape == (5, 12)


@pytest.mark.parametrize("kwargs,words", [
    (dict(d_in=4, width=-3, depth=1, d_out=2), "width must be an integer > 0"),
    (dict(d_in=4, width=8, depth=1, d_out=2, act="swish"), "activation must be one of"),
])
def test_bad_model_arguments(kwargs, words):
    with pytest.raises(ParameterError, match=words):
        MLP(**kwargs)


def test_transformer_heads_must_divide():
    with pytest.raises(ParameterError, match="divisible"):
        SmallTransformer(vocab=5, d_model=30, n_heads=4)


def test_per_model_data_equals_separate_training():
    x, y = toy()
    x2, y2 = toy(seed=5)
    xs, ys = torch.stack([x, x2]), torch.stack([y, y2])
    ens, hist = train_ensemble(lambda: MLP(10, 16, 1, 3), [3, 4], xs, ys, steps=20, lr=0.1, batch_size=32,
                               per_model=True, eval_every=20, eval_sets={"train": (xs, ys)}, progress=False)
    for i, (xi, yi) in enumerate([(x, y), (x2, y2)]):
        torch.manual_seed([3, 4][i])
        m = MLP(10, 16, 1, 3)
        train(m, xi, yi, steps=20, lr=0.1, batch_size=32, seed=[3, 4][i], progress=False)
        assert evaluate(m, xi, yi)["acc"] == pytest.approx(hist[hist.seed == [3, 4][i]].acc.item())


def test_ensemble_batch_stream_matches_per_seed_streams():
    from repro.nn.ensemble import ensemble_batch_indices
    from repro.nn.train import batch_indices
    seeds = [3, 7, 11]
    stacked = ensemble_batch_indices(50, 16, seeds)
    singles = [batch_indices(50, 16, torch.Generator().manual_seed(s)) for s in seeds]
    for _ in range(10):  # several epochs (3 batches each, the partial batch dropped)
        idx = next(stacked)
        assert idx.shape == (3, 16)
        for i, stream in enumerate(singles):
            assert torch.equal(idx[i], next(stream))
