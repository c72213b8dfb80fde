import pytest
import torch
from repro.core.params import ParameterError
from repro.nn.models import SmallTransformer
from repro.nn.train import evaluate, train
from repro.papers.grokking import (
    StackedTransformer,
    modular_arithmetic,
    train_on_subsets,
)


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is fastest, and avoids thread sync stalls on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("n_layers,causal", [(1, True), (2, True), (2, False)])
def test_stacked_transformer_equals_its_members(n_layers, causal):
    torch.manual_seed(0)
    models = [SmallTransformer(12, d_model=16, n_layers=n_layers, n_heads=4, n_out=7, causal=causal)
              for _ in range(3)]
    stacked = StackedTransformer(models)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 12, (20, 4), generator=g)
    ref = torch.stack([m(idx) for m in models])
    assert stacked(idx).shape == (3, 20, 7)
    assert torch.allclose(stacked(idx), ref, atol=1e-5)
    per_model = torch.randint(0, 12, (3, 20, 4), generator=g)
    ref = torch.stack([m(i) for m, i in zip(models, per_model)])
    assert torch.allclose(stacked(per_model), ref, atol=1e-5)
    back = stacked.unstack(2)
    assert torch.allclose(back(idx), models[2](idx), atol=1e-6)


def test_stacked_transformer_rejects_bad_input():
    with pytest.raises(ParameterError, match="dropout"):
        StackedTransformer([SmallTransformer(5, d_model=8, n_heads=2, dropout=0.1)])
    with pytest.raises(ParameterError, match="SmallTransformer"):
        StackedTransformer([])
    with pytest.raises(ValueError, match="shape"):
        StackedTransformer([SmallTransformer(5, d_model=8, n_heads=2)] * 2)(torch.zeros(3, 2, 4, dtype=torch.long))


@pytest.mark.parametrize("batch_size", [None, [5, 8]])
def test_training_on_subsets_equals_separate_training(batch_size):
    p = 7
    split = modular_arithmetic(p, "-", 0.5, seed=0)
    x, y = torch.cat([split.x_train, split.x_test]), torch.cat([split.y_train, split.y_test])  # all 49 pairs
    masks = torch.rand(2, len(x), generator=torch.Generator().manual_seed(0)) < torch.tensor([[0.3], [0.6]])
    build = lambda: SmallTransformer(p + 1, d_model=16, n_layers=1, n_heads=2, n_out=p)  # noqa: E731
    torch.manual_seed(0)
    models = [build() for _ in range(2)]
    stacked = StackedTransformer(models)
    hist = train_on_subsets(stacked, x, y, masks, steps=20, lr=3e-3, batch_size=batch_size, weight_decay=1.0,
                            betas=(0.9, 0.98), seed=3, eval_every=5, progress=False)
    assert len(hist) == 2 * 4 and set(hist.columns) >= {"step", "model", "train_acc", "val_acc", "weight_norm"}
    for i, model in enumerate(models):
        xs, ys, xv, yv = x[masks[i]], y[masks[i]], x[~masks[i]], y[~masks[i]]
        train(model, xs, ys, steps=20, lr=3e-3, batch_size=batch_size[i] if batch_size else len(xs),
              optimizer="adamw", weight_decay=1.0, betas=(0.9, 0.98), seed=3 + i, progress=False)
        member = stacked.unstack(i)
        for (name, a), b in zip(model.named_parameters(), member.parameters()):
            if name.endswith("in_proj_bias"):  # the key bias gets a zero gradient (softmax is shift-invariant),
                a, b = torch.cat([a[:16], a[32:]]), torch.cat([b[:16], b[32:]])  # which Adam turns into noise
            assert torch.allclose(a, b, atol=1e-4), name
        last = hist[(hist.model == i) & (hist.step == 20)].iloc[0]
        assert last.train_acc == pytest.approx(evaluate(member, xs, ys)["acc"], abs=1e-6)
        assert last.val_acc == pytest.approx(evaluate(member, xv, yv)["acc"], abs=1e-6)
        assert last.val_loss == pytest.approx(evaluate(member, xv, yv)["loss"], rel=1e-4)
        norm = torch.cat([q.detach().flatten() for q in member.parameters()]).norm().item()
        assert last.weight_norm == pytest.approx(norm, rel=1e-5)


def test_training_on_subsets_checks_masks_and_stops():
    x = torch.randint(0, 5, (10, 3))
    y = torch.randint(0, 5, (10,))
    stacked = StackedTransformer([SmallTransformer(5, d_model=8, n_heads=2) for _ in range(2)])
    with pytest.raises(ValueError, match="masks"):
        train_on_subsets(stacked, x, y, torch.ones(2, 9, dtype=torch.bool), steps=1, lr=1e-3, progress=False)
    with pytest.raises(ValueError, match="at least one"):
        train_on_subsets(stacked, x, y, torch.zeros(2, 10, dtype=torch.bool), steps=1, lr=1e-3, progress=False)
    hist = train_on_subsets(stacked, x, y, torch.ones(2, 10, dtype=torch.bool), steps=50, lr=1e-3, eval_every=2,
                            warmup_steps=5, stop_when=lambda rows: rows.step.iloc[0] >= 6, progress=False)
    assert hist.step.max() == 6 and hist.val_acc.isna().all()


@pytest.mark.parametrize("op,check", [("+", lambda a, b, p: (a + b) % p), ("-", lambda a, b, p: (a - b) % p),
                                      ("/", lambda a, b, p: (a * pow(b, p - 2, p)) % p)])
def test_modular_arithmetic_labels(op, check):
    p = 7
    s = modular_arithmetic(p, op, train_fraction=0.5, seed=0)
    x = torch.cat([s.x_train, s.x_test])
    y = torch.cat([s.y_train, s.y_test])
    assert len(x) == (p * p if op != "/" else p * (p - 1))
    assert all(int(c) == check(int(a), int(b), p) for (a, b, _), c in zip(x.tolist(), y.tolist()))
    assert (x[:, 2] == p).all()
