"""Many small models at once: an :class:`Ensemble` of N models with stacked weights, trained as one.

``train_ensemble`` stacks the parameters of N models (``torch.func.stack_module_state``) and runs
them as one batched model with ``torch.func.vmap``: one optimizer step updates all N, each with its
own initialization (its seed) and its own minibatch order, so replicates over seeds are one job, not
a Python loop. For element-wise optimizers (SGD, Adam, AdamW) this is the same computation as
training the N models one after another (the tests check it). :func:`per_model` and :func:`expand`
let the attacks and metrics of other layers treat the ensemble as one model with a leading model
dimension.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state
from tqdm.auto import tqdm

from ..core.params import check_positive
from .train import make_optimizer


def ensemble_batch_indices(n: int, batch_size: int, seeds: Sequence[int], device=None) -> torch.Tensor:
    """The streams of :func:`batch_indices` for every seed, stacked: an endless stream of (N, batch)
    index tensors. Model i sees exactly the batches ``batch_indices(n, batch_size, Generator(seeds[i]))``
    gives; the permutations are drawn once per epoch, so a step costs one slice, not N Python calls."""
    if batch_size >= n:
        full = torch.arange(n, device=device).expand(len(seeds), n)
        while True:
            yield full
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    while True:
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perms[:, i:i + batch_size]


class Ensemble:
    """N models of one architecture with stacked parameters, evaluated together with ``vmap``."""

    def __init__(self, models: Sequence[nn.Module]):
        self.base = copy.deepcopy(models[0]).to("meta")
        params, buffers = stack_module_state(list(models))
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.n = len(models)

    @classmethod
    def from_seeds(cls, build: Callable[[], nn.Module], seeds: Sequence[int], device=None) -> "Ensemble":
        """One ``build()`` per seed, each right after ``torch.manual_seed(seed)``, moved to ``device``:
        the members every batched trainer of the library starts from."""
        seeds = list(seeds)
        if not seeds:
            raise ValueError("seeds must name at least one model.")
        models = []
        for s in seeds:
            torch.manual_seed(s)
            models.append(build().to(device))
        return cls(models)

    def _one(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of every model on the shared inputs x: shape (N, batch, ...)."""
        return self.outputs(x)

    def unstack(self, i: int, like: nn.Module) -> nn.Module:
        """Model ``i`` as an ordinary module (a copy of ``like`` with model i's weights)."""
        m = copy.deepcopy(like)
        m.load_state_dict({**{k: v[i].detach() for k, v in self.params.items()},
                           **{k: v[i] for k, v in self.buffers.items()}})
        return m

    def outputs(self, x: torch.Tensor, per_model: bool = False) -> torch.Tensor:
        """Outputs of every model, shape (N, batch, ...): x is shared, or (N, batch, ...) when ``per_model``."""
        in_dims = (0, 0, 0 if per_model else None)
        return torch.vmap(self._one, in_dims=in_dims, randomness="different")(self.params, self.buffers, x)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096, per_model: bool = False) -> dict:
        """Per-model mean cross-entropy and accuracy, as tensors of shape (N,). With ``per_model``, x is
        (N, n, ...) and y is (N, n): each model is scored on its own data; otherwise y may still be (N, n)."""
        n = x.shape[1] if per_model else len(x)
        y = y if y.dim() == 2 else y.expand(self.n, -1)
        loss = torch.zeros(self.n, device=x.device)
        correct = torch.zeros(self.n, device=x.device)
        for i in range(0, n, batch_size):
            xb = x[:, i:i + batch_size] if per_model else x[i:i + batch_size]
            yb = y[:, i:i + batch_size]
            out = self.outputs(xb, per_model)  # (N, b, C)
            loss += F.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="none").view(self.n, -1).sum(1)
            correct += (out.argmax(-1) == yb).sum(1)
        return {"loss": loss / n, "acc": correct / n}


def train_ensemble(build: Callable[[], nn.Module], seeds: Sequence[int], x: torch.Tensor, y: torch.Tensor, *,
                   steps: int, lr: float, batch_size: int = 128, optimizer: str = "sgd", weight_decay: float = 0.0,
                   momentum: float = 0.0, betas=(0.9, 0.999), eval_every: int = 0, eval_sets: dict | None = None,
                   progress: bool = True, desc: str = "training ensemble", per_model: bool = False,
                   loss_fn: Callable = F.cross_entropy) -> tuple[Ensemble, pd.DataFrame]:
    """Train one model per seed, all at once. Model i is initialized after ``torch.manual_seed(seeds[i])``
    and sees minibatches drawn with a generator seeded ``seeds[i]``, exactly as ``train(..., seed=seeds[i])``
    after seeding would. ``y`` may be shared (shape (n,)) or per model (shape (N, n)), for label noise
    that differs between members. With ``per_model=True`` each model has its own training set too: x is
    (N, n, ...) and y is (N, n) (random pixels, say), and each eval set is per model as well. Returns the
    ensemble and a long-format history (one row per model and evaluation)."""
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    seeds = list(seeds)
    ens = Ensemble.from_seeds(build, seeds, x.device)
    opt = make_optimizer(optimizer, list(ens.params.values()), lr, weight_decay, momentum, betas)
    n_data = x.shape[1] if per_model else len(x)
    if per_model and (x.shape[0] != len(seeds) or y.shape[:2] != (len(seeds), n_data)):
        raise ValueError(f"per_model needs x of shape (N, n, ...) and y of shape (N, n) with N={len(seeds)} models.")
    per_model_y = y.dim() == 2 and y.shape[0] == len(seeds) and y.shape[1] == n_data
    stream = ensemble_batch_indices(n_data, batch_size, seeds, x.device)
    rows_of = torch.arange(len(seeds), device=x.device)[:, None]

    def step_loss(params, buffers, xb, yb):
        return loss_fn(functional_call(ens.base, (params, buffers), (xb,)), yb)

    batched_loss = torch.vmap(step_loss, in_dims=(0, 0, 0, 0), randomness="different")
    rows, eval_sets = [], eval_sets or {}
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        idx = next(stream)  # (N, batch)
        yb = torch.gather(y, 1, idx) if per_model_y else y[idx]
        xb = x[rows_of, idx] if per_model else x[idx]
        losses = batched_loss(ens.params, ens.buffers, xb, yb)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # models share no parameters, so each gets its own gradient
        opt.step()
        if eval_every and (step % eval_every == 0 or step == steps):
            for name, (xs, ys) in eval_sets.items():
                res = ens.evaluate(xs, ys, per_model=per_model)
                for i, s in enumerate(seeds):
                    rows.append({"step": step, "seed": s, "set": name, "loss": res["loss"][i].item(),
                                 "acc": res["acc"][i].item(), "batch_loss": losses[i].item()})
            bar.set_postfix(mean_batch_loss=f"{losses.mean().item():.3f}")
    bar.close()
    return ens, pd.DataFrame(rows)




def per_model(ens: Ensemble) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ensemble as a model for the attacks: inputs (N, batch, ...) give logits (N, batch, classes)."""
    return lambda x: ens.outputs(x, per_model=True)


def expand(ens: Ensemble, *tensors: torch.Tensor):
    """Copies of shared inputs/labels for every member of ``ens``: (batch, ...) -> (N, batch, ...)."""
    out = tuple(t.unsqueeze(0).expand(ens.n, *t.shape).contiguous() for t in tensors)
    return out[0] if len(out) == 1 else out
