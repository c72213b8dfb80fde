"""Training one model: the optimizers, minibatch order from a seed, the plain loop and evaluation.

Many small models at once (one per seed) train with :func:`repro.nn.ensemble.train_ensemble`.
"""
from __future__ import annotations

from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.params import check_choice, check_positive

OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.0,
                   betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    check_choice("optimizer", name, OPTIMIZERS)
    check_positive("lr", lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)


def batch_indices(n: int, batch_size: int, generator: torch.Generator, device=None) -> torch.Tensor:
    """An endless stream of minibatch index tensors: shuffled epochs, the last partial batch dropped
    (so every batch has the same size; when ``batch_size >= n`` every batch is the whole set)."""
    if batch_size >= n:
        full = torch.arange(n, device=device)
        while True:
            yield full
    while True:
        perm = torch.randperm(n, generator=generator).to(device)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> dict:
    """Mean cross-entropy and accuracy of ``model`` on (x, y)."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size])
        loss += F.cross_entropy(out, y[i:i + batch_size], reduction="sum").item()
        correct += (out.argmax(-1) == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    return {"loss": loss / len(x), "acc": correct / len(x)}


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, batch_size: int = 128,
          optimizer: str = "sgd", weight_decay: float = 0.0, momentum: float = 0.0, betas=(0.9, 0.999),
          seed: int = 0, eval_every: int = 0, eval_sets: dict | None = None,
          stop_when: Callable[[dict], bool] | None = None, progress: bool = True, desc: str = "training",
          loss_fn: Callable = F.cross_entropy) -> pd.DataFrame:
    """Train ``model`` for ``steps`` minibatch steps; return the history as a DataFrame.

    Every ``eval_every`` steps (and at the last step) each set in ``eval_sets`` (name -> (x, y)) is
    evaluated and logged as ``<name>_loss`` and ``<name>_acc``; ``stop_when(row)`` may end training early.
    """
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay, momentum, betas)
    gen = torch.Generator().manual_seed(seed)
    stream = batch_indices(len(x), batch_size, gen, x.device)
    rows, eval_sets = [], eval_sets or {}
    model.train()
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        idx = next(stream)
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if eval_every and (step % eval_every == 0 or step == steps):
            row = {"step": step, "batch_loss": loss.item()}
            for name, (xs, ys) in eval_sets.items():
                row.update({f"{name}_{k}": v for k, v in evaluate(model, xs, ys).items()})
            rows.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.endswith("acc")})
            if stop_when is not None and stop_when(row):
                break
    bar.close()
    return pd.DataFrame(rows)
