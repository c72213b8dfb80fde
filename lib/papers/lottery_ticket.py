"""Pruning: masks, magnitude pruning, masked training and rewinding (lottery tickets).

A *mask* is a dict ``name -> bool tensor`` with the shape of the parameter it masks; parameters
without a mask (biases, by default) are never pruned. Every function works on one model's
parameters or on stacked parameters of N models (leading dimension N, as in
:class:`repro.nn.ensemble.Ensemble`) with ``stacked=True``; then each model is pruned on its own.

    masks = init_masks(params)                                   # all ones, weights only
    masks = magnitude_prune(params, masks, 0.2, per_layer=True)  # drop 20% of the survivors per layer
    rewind(params, initial, masks)                               # back to the initialization, masked

:func:`train_masked` trains an :class:`~repro.nn.ensemble.Ensemble` under fixed masks (masked gradients,
and the weights re-masked after every step, so a pruned weight never comes back), tracks each
model's validation loss and keeps each model's parameters at its early-stopping iteration.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ..core.params import check_choice, check_positive, check_range
from ..nn.ensemble import Ensemble
from ..nn.models import MLP
from ..nn.train import batch_indices

Masks = dict  # name -> bool tensor


def prunable_names(params: Mapping[str, torch.Tensor]) -> list[str]:
    """The parameters pruning acts on by default: every ``*weight`` (the biases are kept)."""
    return [k for k in params if k.endswith("weight")]


def init_masks(params: Mapping[str, torch.Tensor], names: Sequence[str] | None = None) -> Masks:
    """All-ones (bool) masks for ``names`` (default: :func:`prunable_names`)."""
    names = prunable_names(params) if names is None else list(names)
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"no parameters named {missing}")
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}


def count_remaining(masks: Masks, stacked: bool = False) -> dict:
    """Surviving weights per mask: ints, or (N,) tensors with ``stacked``."""
    return {n: (m.flatten(1).sum(1) if stacked else int(m.sum())) for n, m in masks.items()}


def remaining_fraction(masks: Masks, stacked: bool = False):
    """Fraction of the masked weights that survive, over all masks together (per model with ``stacked``)."""
    alive = sum(count_remaining(masks, stacked).values())
    total = sum((m[0].numel() if stacked else m.numel()) for m in masks.values())
    return alive / total


def _n_remove(alive: torch.Tensor, fraction: float) -> torch.Tensor:
    """round(fraction * alive), half away from zero, as integers (so counts are exact and reproducible)."""
    return torch.floor(alive.double() * fraction + 0.5).long()


def _drop_smallest(score: torch.Tensor, alive: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rows of ``score`` (N, n): keep ``alive`` entries except the k[i] with the smallest score in row i."""
    score = torch.where(alive, score, torch.full_like(score, float("inf")))
    order = torch.argsort(score, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return alive & (rank >= k[:, None])


@torch.no_grad()
def magnitude_prune(params: Mapping[str, torch.Tensor], masks: Masks, fraction, per_layer: bool = True,
                    stacked: bool = False) -> Masks:
    """New masks with a ``fraction`` of the surviving weights removed, those of smallest magnitude.

    ``per_layer=True`` (the lottery-ticket paper's choice): each masked tensor loses
    ``round(fraction * survivors)`` of its own survivors; ``fraction`` may be a dict name -> fraction
    (the paper prunes the output layer at half the rate). ``per_layer=False``: one global ranking of
    |w| over all masked tensors, removing ``round(fraction * all survivors)``. Removed weights stay
    removed (the new mask is a subset of the old one); ties are broken by position.
    """
    fracs = {n: (fraction[n] if isinstance(fraction, Mapping) else fraction) for n in masks}
    if not per_layer and isinstance(fraction, Mapping):
        raise ValueError("global pruning (per_layer=False) takes one fraction, not one per layer.")
    for n, f in fracs.items():
        check_range(f"fraction[{n!r}]", f, 0.0, 1.0)

    def rows(t):  # (N, n) view: one row per model
        return t.reshape(t.shape[0], -1) if stacked else t.reshape(1, -1)

    if per_layer:
        out = {}
        for n, m in masks.items():
            alive = rows(m)
            keep = _drop_smallest(rows(params[n]).abs(), alive, _n_remove(alive.sum(1), fracs[n]))
            out[n] = keep.reshape(m.shape)
        return out
    names = list(masks)
    score = torch.cat([rows(params[n]).abs() for n in names], 1)
    alive = torch.cat([rows(masks[n]) for n in names], 1)
    keep = _drop_smallest(score, alive, _n_remove(alive.sum(1), fracs[names[0]]))
    sizes = [rows(masks[n]).shape[1] for n in names]
    return {n: k.reshape(masks[n].shape) for n, k in zip(names, keep.split(sizes, dim=1))}


@torch.no_grad()
def apply_masks(params: Mapping[str, torch.Tensor], masks: Masks) -> None:
    """Zero the pruned weights in place."""
    for n, m in masks.items():
        params[n].mul_(m)


@torch.no_grad()
def mask_gradients(params: Mapping[str, torch.Tensor], masks: Masks) -> None:
    """Zero the gradients of pruned weights in place (so Adam's moments stay zero there too)."""
    for n, m in masks.items():
        if params[n].grad is not None:
            params[n].grad.mul_(m)


@torch.no_grad()
def rewind(params: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor], masks: Masks) -> None:
    """Reset every parameter in place to its value in ``initial``, then apply the masks.

    With ``initial`` the network's own initialization this makes a lottery ticket; with a fresh
    initialization, the paper's randomly reinitialized control.
    """
    for n, p in params.items():
        p.copy_(initial[n])
    apply_masks(params, masks)


def stack_params(*param_dicts: Mapping[str, torch.Tensor]) -> dict:
    """Concatenate stacked parameter (or mask) dicts along the model dimension."""
    return {k: torch.cat([d[k] for d in param_dicts]) for k in param_dicts[0]}


def initial_params(build: Callable[[], nn.Module], seeds: Sequence[int], device=None) -> dict:
    """Stacked initial parameters of one model per seed (built after ``torch.manual_seed(seed)``,
    as :func:`repro.nn.ensemble.train_ensemble` builds them)."""
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append({k: v.detach().to(device) for k, v in build().named_parameters()})
    return {k: torch.stack([o[k] for o in out]) for k in out[0]}


@dataclass
class MaskedRun:
    """What :func:`train_masked` returns."""
    ensemble: Ensemble       # the trained models (final parameters)
    history: pd.DataFrame    # step, model, set, loss, acc
    best_step: torch.Tensor  # (N,) early-stopping iteration: the step of minimum validation loss
    best_params: dict        # stacked parameters at each model's early-stopping iteration

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, at: str = "end") -> dict:
        """Per-model loss and accuracy on (x, y) with the final parameters (``at="end"``) or those at
        the early-stopping iteration (``at="early_stop"``)."""
        if at == "end":
            return self.ensemble.evaluate(x, y)
        view = copy.copy(self.ensemble)
        view.params = self.best_params
        return view.evaluate(x, y)


def _batched_mlp(model: nn.Module):
    """A batched forward for :class:`repro.nn.models.MLP` (stacked weights, one ``baddbmm`` per layer), which is
    faster on a CPU than ``vmap`` over ``functional_call``; None for any other architecture."""
    if type(model) is not MLP or not all(layer.bias is not None for layer in model.layers):
        return None
    names = [(f"layers.{i}.weight", f"layers.{i}.bias") for i in range(len(model.layers))]
    act = model.act

    def forward(params, x):  # x: (N, batch, ...), one minibatch per model -> (N, batch, out)
        h = x.flatten(2)
        for i, (w, b) in enumerate(names):
            h = torch.baddbmm(params[b].unsqueeze(1), h, params[w].transpose(1, 2))
            if i < len(names) - 1:
                h = act(h)
        return h
    return forward


@torch.no_grad()
def _evaluate_fast(forward, params, x, y, batch_size: int = 2048) -> dict:
    n = next(iter(params.values())).shape[0]
    loss = torch.zeros(n, device=x.device)
    correct = torch.zeros(n, device=x.device)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        out = forward(params, xb.expand(n, *xb.shape))
        loss += F.cross_entropy(out.flatten(0, 1), yb.repeat(n), reduction="none").view(n, -1).sum(1)
        correct += (out.argmax(-1) == yb).sum(1)
    return {"loss": loss / len(x), "acc": correct / len(x)}


def train_masked(build: Callable[[], nn.Module], params: Mapping[str, torch.Tensor], masks: Masks,
                 x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, batch_size: int = 60,
                 optimizer: str = "adam", data_seeds: Sequence[int] | None = None, eval_every: int = 50,
                 val: tuple | None = None, eval_sets: dict | None = None, progress: bool = True,
                 desc: str = "masked training", loss_fn: Callable = F.cross_entropy) -> MaskedRun:
    """Train N models of ``build()``'s architecture at once from the stacked parameters ``params``,
    under the stacked masks ``masks`` (a mask with no model dimension is shared by all N).

    After every step the gradients of pruned weights are zeroed before the optimizer step and the
    weights are re-masked after it. Every ``eval_every`` steps (and at the last) the validation set
    ``val`` = (x, y) and any ``eval_sets`` are scored; each model's parameters at its lowest
    validation loss so far are kept (its early-stopping iteration). Model i draws its minibatches
    with a generator seeded ``data_seeds[i]`` (default i).
    """
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("eval_every", eval_every, integer=True)
    n = next(iter(params.values())).shape[0]
    # multiplying by float masks is far cheaper than by bool ones (no type promotion on every step)
    fmasks = {k: (m if m.dim() == params[k].dim() else m.expand_as(params[k])).to(params[k].dtype)
              for k, m in masks.items()}
    ens = Ensemble([build().to("meta")])
    ens.n = n
    ens.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    ens.buffers = {}
    apply_masks(ens.params, fmasks)
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(list(ens.params.values()), lr=lr, foreach=True)
    data_seeds = list(range(n)) if data_seeds is None else list(data_seeds)
    if len(data_seeds) != n:
        raise ValueError(f"data_seeds must name one seed per model ({n}); got {len(data_seeds)}.")
    streams = [batch_indices(len(x), batch_size, torch.Generator().manual_seed(s), x.device) for s in data_seeds]

    fast = _batched_mlp(build()) if loss_fn is F.cross_entropy else None
    if fast is not None:
        def batched_loss(p, xb, yb):
            out = fast(p, xb)
            return F.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="none").view(n, -1).mean(1)
    else:
        batched_loss = torch.vmap(lambda p, xb, yb: loss_fn(functional_call(ens.base, p, (xb,)), yb))
    sets = {**({"val": val} if val is not None else {}), **(eval_sets or {})}
    best_loss = torch.full((n,), float("inf"), device=x.device)
    best_step = torch.zeros(n, dtype=torch.long, device=x.device)
    best_params = {k: v.detach().clone() for k, v in ens.params.items()}
    rows = []
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        idx = torch.stack([next(s) for s in streams])
        losses = batched_loss(ens.params, x[idx], y[idx])
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        mask_gradients(ens.params, fmasks)
        opt.step()
        apply_masks(ens.params, fmasks)
        if step % eval_every == 0 or step == steps:
            for name, (xs, ys) in sets.items():
                res = ens.evaluate(xs, ys) if fast is None else _evaluate_fast(fast, ens.params, xs, ys)
                rows += [{"step": step, "model": i, "set": name, "loss": l, "acc": a}
                         for i, (l, a) in enumerate(zip(res["loss"].tolist(), res["acc"].tolist()))]
                if name == "val":
                    better = res["loss"] < best_loss
                    best_loss = torch.where(better, res["loss"], best_loss)
                    best_step = torch.where(better, torch.full_like(best_step, step), best_step)
                    with torch.no_grad():
                        for k, v in ens.params.items():
                            sel = better.view(-1, *([1] * (v.dim() - 1)))
                            best_params[k] = torch.where(sel, v, best_params[k])
            bar.set_postfix(mean_batch_loss=f"{losses.mean().item():.3f}")
    bar.close()
    return MaskedRun(ens, pd.DataFrame(rows), best_step.cpu(), best_params)


def lenet_300_100(d_in: int = 784, num_classes: int = 10, hidden=(300, 100), init: str = "glorot") -> MLP:
    """LeNet-300-100 (LeCun et al., 1998) as in the lottery-ticket paper: an :class:`MLP` with fully
    connected layers d_in -> 300 -> 100 -> classes and ReLU. ``init="glorot"`` draws the weights from
    the Gaussian Glorot distribution N(0, 2 / (fan_in + fan_out)) with zero biases (the paper's
    choice); ``"torch"`` keeps torch's default. Parameters are named ``layers.0.weight``, ``layers.0.bias``, ...
    """
    check_choice("init", init, ("glorot", "torch"))
    check_positive("d_in", d_in, integer=True)
    check_positive("num_classes", num_classes, integer=True)
    for h in hidden:
        check_positive("hidden", h, integer=True)
    dims = [d_in, *hidden, num_classes]
    model = MLP(d_in, 1, 0, 1)  # reuse MLP's forward (flatten, ReLU between layers) with custom layers
    model.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    if init == "glorot":
        for layer in model.layers:
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model
