"""Training: one plain loop for one model, and ``train_ensemble`` for many small models at once.

``train_ensemble`` stacks the parameters of N models (``torch.func.stack_module_state``) and runs
them as one batched model with ``torch.func.vmap``: one optimizer step updates all N, each with its
own initialization and its own minibatch order, so a sweep over seeds is one job, not a Python loop.
For element-wise optimizers (SGD, Adam, AdamW) this is the same computation as training the N
models one after another (the tests check it).
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

from .runtime import check_choice, check_positive

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


def train_on_subsets(model, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, *, steps: int, lr: float,
                     batch_size=None, optimizer: str = "adamw", weight_decay: float = 0.0, momentum: float = 0.0,
                     betas=(0.9, 0.999), warmup_steps: int = 0, seed: int = 0, eval_every: int = 0,
                     eval_batch: int = 8192, params=None, stop_when: Callable[[pd.DataFrame], bool] | None = None,
                     progress: bool = True, desc: str = "training on subsets") -> pd.DataFrame:
    """Train N models at once, model ``i`` on its own subset of one data set, and track both halves.

    ``masks`` (N, n) is boolean: ``masks[i]`` marks model i's training examples among the n rows of
    (x, y); the other rows are its validation set. ``model`` maps per-model inputs (N, m, ...) to
    outputs (N, m, classes): a :class:`repro.models.StackedTransformer`, or for an :class:`Ensemble`
    ``lambda xb: ens.outputs(xb, per_model=True)`` with ``params=ens.params.values()``.

    Each step every model takes one optimizer step on the mean cross-entropy over a minibatch of its
    own training examples: all of them (``batch_size=None``, full batch), or ``batch_size`` of them
    (an int, or one int per model), drawn in shuffled epochs from a generator seeded ``seed + i``.
    The batches may differ in size (they are padded, the padding weighted zero), so with an
    element-wise optimizer (SGD, Adam, AdamW) this is exactly training the N models one after another.
    The learning rate rises linearly over the first ``warmup_steps`` steps. Every ``eval_every`` steps
    (and at the last) all models are evaluated on all n rows; the history has one row per model and
    evaluation: step, model, train_loss, train_acc, val_loss, val_acc, and weight_norm (the L2 norm of
    the model's parameters, when they are stacked with the models along the first axis). ``stop_when``
    receives the rows of each evaluation as a DataFrame and may end training early.
    """
    check_positive("steps", steps, integer=True)
    check_positive("warmup_steps", warmup_steps, integer=True, allow_zero=True)
    masks = torch.as_tensor(masks, dtype=torch.bool, device=x.device)
    if masks.dim() != 2 or masks.shape[1] != len(x) or len(y) != len(x):
        raise ValueError(f"masks must have shape (N, {len(x)}) for {len(x)} examples, and y one label per example.")
    if not bool(masks.any(1).all()):
        raise ValueError("every model needs at least one training example (a row of masks is all False).")
    N = masks.shape[0]
    params = list(model.parameters() if params is None else params)
    opt = make_optimizer(optimizer, params, lr, weight_decay, momentum, betas)
    train_rows = [masks[i].nonzero()[:, 0] for i in range(N)]
    n_train = masks.sum(1)
    if batch_size is None:
        sizes = [len(r) for r in train_rows]
    else:
        sizes = list(batch_size) if isinstance(batch_size, (list, tuple)) else [batch_size] * N
        if len(sizes) != N:
            raise ValueError(f"batch_size must be one int or one per model ({N}); got {len(sizes)}.")
        for b in sizes:
            check_positive("batch_size", b, integer=True)
        sizes = [min(b, len(r)) for b, r in zip(sizes, train_rows)]
    b_max = max(sizes)
    weight = torch.zeros(N, b_max, device=x.device)
    for i, b in enumerate(sizes):
        weight[i, :b] = 1.0 / b
    streams = [batch_indices(len(r), b, torch.Generator().manual_seed(seed + i), x.device)
               for i, (r, b) in enumerate(zip(train_rows, sizes))]

    def next_batch():
        idx = torch.empty(N, b_max, dtype=torch.long, device=x.device)
        for i, (r, stream) in enumerate(zip(train_rows, streams)):
            sel = r[next(stream)]
            idx[i, :len(sel)] = sel
            idx[i, len(sel):] = sel[0]  # padding: a real example, weighted zero
        return idx

    fixed = next_batch() if batch_size is None else None  # full batch: the same rows every step
    n_val = (~masks).sum(1).clamp(min=1)
    stacked = all(p.dim() > 0 and p.shape[0] == N for p in params)

    @torch.no_grad()
    def evaluate_all():
        losses, correct = [], []
        for i in range(0, len(x), eval_batch):
            xs, ys = x[i:i + eval_batch], y[i:i + eval_batch]
            out = model(xs.expand(N, *xs.shape))
            losses.append(F.cross_entropy(out.flatten(0, 1), ys.repeat(N), reduction="none").view(N, -1))
            correct.append(out.argmax(-1) == ys)
        loss, correct, m = torch.cat(losses, 1), torch.cat(correct, 1), masks.float()
        nan = torch.full((N,), float("nan"), device=x.device)
        has_val = (~masks).any(1)
        res = {"train_loss": (loss * m).sum(1) / n_train, "train_acc": (correct * m).sum(1) / n_train,
               "val_loss": torch.where(has_val, (loss * (1 - m)).sum(1) / n_val, nan),
               "val_acc": torch.where(has_val, (correct * (1 - m)).sum(1) / n_val, nan)}
        if stacked:
            res["weight_norm"] = sum(p.detach().flatten(1).pow(2).sum(1) for p in params).sqrt()
        return res

    rows = []
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        if warmup_steps:
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, step / warmup_steps)
        idx = fixed if fixed is not None else next_batch()
        out = model(x[idx])
        loss = (F.cross_entropy(out.flatten(0, 1), y[idx].flatten(), reduction="none").view(N, b_max) * weight).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()  # the models share no parameters: each gets the gradient of its own mean loss
        opt.step()
        if eval_every and (step % eval_every == 0 or step == steps):
            new = pd.DataFrame({"step": step, "model": range(N),
                                **{k: v.tolist() for k, v in evaluate_all().items()}})
            rows.append(new)
            bar.set_postfix(train_acc=f"{new.train_acc.mean():.2f}", val_acc=f"{new.val_acc.mean():.2f}")
            if stop_when is not None and stop_when(new):
                break
    bar.close()
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["step", "model", "train_loss", "train_acc", "val_loss", "val_acc"])
