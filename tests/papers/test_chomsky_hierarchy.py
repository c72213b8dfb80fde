"""Formal-language tasks against brute-force definitions; the soft stack's semantics; model shapes."""
import itertools

import pytest
import torch
from repro.core.params import ParameterError
from repro.papers.chomsky_hierarchy import (
    BLANK,
    SequenceModel,
    StackRNN,
    accuracy_by_length,
    output_length,
    per_token_accuracy,
    task_batch,
    task_target,
    train_task,
)


def brute(task, w):
    if task == "parity":
        return [sum(w) % 2]
    if task == "reverse":
        return [w[len(w) - 1 - i] for i in range(len(w))]
    out = []
    for _ in range(2):
        for c in w:
            out.append(c)
    return out


@pytest.mark.parametrize("task", ["parity", "reverse", "duplicate"])
def test_targets_match_brute_force(task):
    for n in range(1, 7):
        words = list(itertools.product([0, 1], repeat=n))
        x = torch.tensor(words)
        y = task_target(task, x)
        assert y.shape[1] == output_length(task, n)
        for w, t in zip(words, y.tolist()):
            assert t == brute(task, list(w))


def test_batch_layout():
    x, y = task_batch("duplicate", 5, 4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 12) and y.shape == (5, 8)
    assert (x[:, 4:] == BLANK).all() and (x[:, :4] < BLANK).all()
    assert torch.equal(y, torch.cat([x[:, :4], x[:, :4]], 1))


def test_bad_task():
    with pytest.raises(ParameterError):
        task_target("palindrome", torch.zeros(1, 3, dtype=torch.long))


def test_stack_push_pop_noop():
    stack = torch.zeros(1, 4, 2)
    one = lambda i: torch.eye(3)[i][None]
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])
    stack = StackRNN.update_stack(stack, one(0), a)           # push a
    stack = StackRNN.update_stack(stack, one(0), b)           # push b
    assert torch.equal(stack[0, :3], torch.tensor([[3.0, 4.0], [1.0, 2.0], [0.0, 0.0]]))
    stack = StackRNN.update_stack(stack, one(2), a * 9)       # no-op leaves it alone
    assert torch.equal(stack[0, :2], torch.tensor([[3.0, 4.0], [1.0, 2.0]]))
    stack = StackRNN.update_stack(stack, one(1), a * 9)       # pop b
    assert torch.equal(stack[0, 0], torch.tensor([1.0, 2.0])) and stack[0, 1:].abs().sum() == 0
    half = StackRNN.update_stack(torch.zeros(1, 3, 1) + torch.tensor([[[1.0], [2.0], [3.0]]]),
                                 torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[7.0]]))
    assert torch.allclose(half[0, :, 0], torch.tensor([0.5 * 7 + 0.5 * 2, 0.5 * 1 + 0.5 * 3, 0.5 * 2 + 0.0]))


@pytest.mark.parametrize("kind", SequenceModel.KINDS)
def test_model_shapes_and_training_step(kind):
    torch.manual_seed(0)
    m = SequenceModel(kind, hidden=16)
    x, _ = task_batch("reverse", 3, 5)
    assert m(x).shape == (3, 10, 2)
    losses = train_task(m, "parity", steps=3, max_len=4, generator=torch.Generator().manual_seed(0))
    assert len(losses) == 3
    acc = accuracy_by_length(m, "parity", [2, 3], batch=8)
    assert set(acc) == {2, 3} and all(0 <= a <= 1 for a in acc.values())


def test_per_token_accuracy():
    logits = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    target = torch.tensor([[0, 0], [1, 1]])
    assert torch.equal(per_token_accuracy(logits, target), torch.tensor([0.5, 1.0]))


def test_lstm_learns_parity_quickly():
    torch.manual_seed(0)
    m = SequenceModel("lstm", hidden=16)
    train_task(m, "parity", steps=150, max_len=6, lr=1e-2, generator=torch.Generator().manual_seed(0))
    assert accuracy_by_length(m, "parity", [6], batch=256)[6] > 0.9
