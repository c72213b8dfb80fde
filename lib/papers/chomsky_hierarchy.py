"""Formal-language tasks and memory-augmented sequence models.

Delétang et al. (2023), *Neural Networks and the Chomsky Hierarchy*. A task maps an input string
over a small alphabet to an output string. The model reads the input, then one blank token per output
symbol, and emits a prediction at every position; only the output positions count (the paper's
per-token accuracy). Training samples one length per batch uniformly from ``1..max_len``; length
generalization is measured on longer strings.

Tasks (one per level of the hierarchy that this module covers):

* ``parity``: regular. Binary input; output: 1 if the number of 1s is odd (one output token).
* ``reverse``: deterministic context-free. Binary input; output: the input reversed.
* ``duplicate``: context-sensitive. Binary input ``w``; output ``ww``.

Models (``SequenceModel(kind, ...)``): ``rnn`` (tanh Elman), ``lstm``, ``transformer`` (non-causal
encoder with sin/cos positional encodings) and ``stack_rnn`` (an RNN controller with a differentiable
stack in the style of Joulin and Mikolov, 2015: soft PUSH / POP / NO-OP actions, the top cell fed
back to the controller).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.params import check_choice, check_positive

TASKS = {"parity": "regular", "reverse": "context-free", "duplicate": "context-sensitive"}
ALPHABET = 2          # input symbols 0, 1; token 2 is the blank read at output positions
BLANK = ALPHABET
VOCAB_IN = ALPHABET + 1


def output_length(task: str, n: int) -> int:
    check_choice("task", task, list(TASKS))
    return {"parity": 1, "reverse": n, "duplicate": 2 * n}[task]


def task_target(task: str, x: torch.Tensor) -> torch.Tensor:
    """The output string for a batch of input strings ``x`` (batch, n) of symbols in {0, 1}."""
    check_choice("task", task, list(TASKS))
    if task == "parity":
        return (x.sum(1, keepdim=True) % 2).long()
    if task == "reverse":
        return x.flip(1)
    return torch.cat([x, x], 1)


def task_batch(task: str, batch: int, n: int, generator: torch.Generator | None = None, device=None):
    """Inputs (batch, n + m) with m blanks appended, targets (batch, m), m = output length."""
    check_positive("n", n, integer=True)
    x = torch.randint(0, ALPHABET, (batch, n), generator=generator, device=device)
    y = task_target(task, x)
    blanks = torch.full((batch, y.shape[1]), BLANK, dtype=torch.long, device=x.device)
    return torch.cat([x, blanks], 1), y


class StackRNN(nn.Module):
    """Elman RNN controller with a differentiable stack (Joulin & Mikolov, 2015 style).

    At every step the controller reads ``[input, top of stack]``, updates ``h``, and emits action
    probabilities ``(push, pop, no-op)`` and a value ``v = tanh(W h)``. The new stack is
    ``push * [v, s_0, ..., s_{D-2}] + pop * [s_1, ..., s_{D-1}, 0] + noop * s``.
    """

    def __init__(self, d_in: int, hidden: int, stack_cell: int = 8, stack_depth: int = 64):
        super().__init__()
        self.hidden, self.cell, self.depth = hidden, stack_cell, stack_depth
        self.rnn = nn.RNNCell(d_in + stack_cell, hidden)
        self.actions = nn.Linear(hidden, 3)
        self.value = nn.Linear(hidden, stack_cell)

    @staticmethod
    def update_stack(stack: torch.Tensor, probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """stack (B, D, c), probs (B, 3) = (push, pop, no-op), value (B, c) -> new stack."""
        pushed = torch.cat([value[:, None], stack[:, :-1]], 1)
        popped = torch.cat([stack[:, 1:], torch.zeros_like(stack[:, :1])], 1)
        p = probs[:, :, None, None]
        return p[:, 0] * pushed + p[:, 1] * popped + p[:, 2] * stack

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, d_in) -> (B, T, hidden)
        B, T, _ = x.shape
        depth = max(self.depth, T + 1)
        h = x.new_zeros(B, self.hidden)
        stack = x.new_zeros(B, depth, self.cell)
        out = []
        for t in range(T):
            h = self.rnn(torch.cat([x[:, t], stack[:, 0]], 1), h)
            stack = self.update_stack(stack, self.actions(h).softmax(-1), torch.tanh(self.value(h)))
            out.append(h)
        return torch.stack(out, 1)


def sinusoidal_positions(T: int, d: int, device=None) -> torch.Tensor:
    pos = torch.arange(T, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(T, d, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe


class SequenceModel(nn.Module):
    """Per-position classifier over ``n_out`` symbols for the token sequences of ``task_batch``."""

    KINDS = ("rnn", "lstm", "transformer", "stack_rnn")

    def __init__(self, kind: str, hidden: int = 64, n_out: int = ALPHABET, layers: int = 2, heads: int = 4,
                 stack_cell: int = 8):
        super().__init__()
        check_choice("kind", kind, self.KINDS)
        check_positive("hidden", hidden, integer=True)
        self.kind = kind
        if kind == "transformer":
            self.embed = nn.Embedding(VOCAB_IN, hidden)
            layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.0, batch_first=True)
            self.core = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        else:
            self.embed = None
            if kind == "rnn":
                self.core = nn.RNN(VOCAB_IN, hidden, batch_first=True)
            elif kind == "lstm":
                self.core = nn.LSTM(VOCAB_IN, hidden, batch_first=True)
            else:
                self.core = StackRNN(VOCAB_IN, hidden, stack_cell)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) -> logits (B, T, n_out)
        if self.kind == "transformer":
            h = self.embed(tokens) * math.sqrt(self.embed.embedding_dim)
            h = self.core(h + sinusoidal_positions(tokens.shape[1], h.shape[-1], tokens.device))
        else:
            h = self.core(F.one_hot(tokens, VOCAB_IN).float())
            if isinstance(h, tuple):
                h = h[0]
        return self.head(h)


def output_logits(model: nn.Module, tokens: torch.Tensor, m: int) -> torch.Tensor:
    return model(tokens)[:, -m:]


def per_token_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sequence: the fraction of output positions predicted correctly (the paper's metric)."""
    return (logits.argmax(-1) == target).float().mean(1)


def train_task(model: nn.Module, task: str, *, steps: int, max_len: int, batch: int = 64, lr: float = 1e-3,
               generator: torch.Generator | None = None, device=None, progress=None) -> list[float]:
    """Adam on the cross-entropy of the output positions; one length ~ U{1..max_len} per batch."""
    check_positive("steps", steps, integer=True)
    check_positive("max_len", max_len, integer=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        n = int(torch.randint(1, max_len + 1, (1,), generator=generator))
        x, y = task_batch(task, batch, n, generator=generator)
        x, y = x.to(device), y.to(device)
        logits = output_logits(model, x, y.shape[1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
    return losses


@torch.no_grad()
def accuracy_by_length(model: nn.Module, task: str, lengths, batch: int = 128,
                       generator: torch.Generator | None = None, device=None) -> dict:
    """Mean per-token accuracy on ``batch`` random strings of every length in ``lengths``."""
    model.eval()
    out = {}
    for n in lengths:
        x, y = task_batch(task, batch, int(n), generator=generator)
        x, y = x.to(device), y.to(device)
        out[int(n)] = per_token_accuracy(output_logits(model, x, y.shape[1]), y).mean().item()
    model.train()
    return out
