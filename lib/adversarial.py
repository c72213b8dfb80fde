"""Adversarial examples under an L-infinity budget: FGSM, PGD and FGSM adversarial training.

Goodfellow, Shlens and Szegedy (2015) perturb an input ``x`` with label ``y`` by the fast gradient
sign method (FGSM),

    x_adv = clip(x + eps * sign(grad_x J(theta, x, y))),

and train on the mixed objective ``alpha * J(x) + (1 - alpha) * J(x_adv)``. Projected gradient
descent (PGD; Madry et al., 2018) iterates signed steps and projects back onto the eps-ball.

``model`` is any callable from inputs to logits (classes in the last dimension) with labels ``y`` of
shape ``logits.shape[:-1]``. That covers one ``nn.Module`` and also a whole :class:`repro.train.Ensemble`
through :func:`per_model`: inputs of shape (N, batch, ...) and labels (N, batch), one slice per model;
the models share no parameters, so every slice gets its own gradient. Losses are averaged over the
batch and summed over leading (model) dimensions, as ``repro.train.train_ensemble`` does.

The attacks do not change the model's train/eval mode: put a model with dropout or batch norm in the
mode you mean to attack first.

``repro.train.train`` calls ``loss_fn(logits, y)``, which never sees the inputs, so the adversarial
objective cannot be passed to it: :func:`train_adversarial` and :func:`train_adversarial_ensemble`
are the same loops with :func:`adversarial_loss` (with ``alpha=1`` they reproduce ``train`` and
``train_ensemble`` exactly; the tests check it).
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .runtime import ParameterError, check_positive, check_range
from .train import Ensemble, batch_indices, make_optimizer


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the last batch dimension and summed over leading (model) dimensions."""
    per = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    return per.view(y.shape).mean(-1).sum()


def per_model(ens: Ensemble) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ensemble as a model for the attacks: inputs (N, batch, ...) give logits (N, batch, classes)."""
    return lambda x: ens.outputs(x, per_model=True)


def expand(ens: Ensemble, *tensors: torch.Tensor):
    """Copies of shared inputs/labels for every member of ``ens``: (batch, ...) -> (N, batch, ...)."""
    out = tuple(t.unsqueeze(0).expand(ens.n, *t.shape).contiguous() for t in tensors)
    return out[0] if len(out) == 1 else out


def input_gradient(model: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the cross-entropy with respect to the inputs (parameter gradients are left alone)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = cross_entropy(model(x), y)
        (g,) = torch.autograd.grad(loss, x)
    return g


def _check_eps(eps, clamp):
    check_positive("eps", eps, allow_zero=True)
    if clamp is not None and not (len(clamp) == 2 and clamp[0] < clamp[1]):
        raise ParameterError(f"clamp must be None or a pair (low, high) with low < high; got {clamp!r}.")


def fgsm(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, clamp=(0.0, 1.0)) -> torch.Tensor:
    """The fast gradient sign method: ``x + eps * sign(grad_x loss)``, clipped to ``clamp`` (None: no clip)."""
    _check_eps(eps, clamp)
    x_adv = x.detach() + eps * input_gradient(model, x, y).sign()
    if clamp is not None:
        x_adv = x_adv.clamp(*clamp)
    return x_adv.detach()


def pgd(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step_size: float,
        clamp=(0.0, 1.0), random_start: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent on the loss inside the L-infinity ball of radius ``eps`` around x.

    Each step adds ``step_size * sign(gradient)``, projects onto the ball and clips to ``clamp``. With
    ``random_start`` it starts from a uniform point of the ball (drawn with ``generator``); one step of
    size ``eps`` from x is FGSM.
    """
    _check_eps(eps, clamp)
    check_positive("steps", steps, integer=True)
    check_positive("step_size", step_size)
    x0 = x.detach()
    x_adv = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, device=x0.device if generator is None else generator.device)
        x_adv = x_adv + (2 * noise.to(x0.device, x0.dtype) - 1) * eps
    for _ in range(steps):
        if clamp is not None:
            x_adv = x_adv.clamp(*clamp)
        x_adv = x_adv + step_size * input_gradient(model, x_adv, y).sign()
        x_adv = torch.minimum(torch.maximum(x_adv, x0 - eps), x0 + eps)
    if clamp is not None:
        x_adv = x_adv.clamp(*clamp)
    return x_adv.detach()


def adversarial_loss(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float = 0.5,
                     clamp=(0.0, 1.0)) -> torch.Tensor:
    """Goodfellow et al.'s objective ``alpha * J(x, y) + (1 - alpha) * J(fgsm(x), y)``.

    The adversarial point is recomputed from the current parameters and treated as a constant (no
    gradient flows through its construction), as in the paper.
    """
    check_range("alpha", alpha, 0.0, 1.0)
    clean = cross_entropy(model(x), y)
    if alpha == 1.0:
        return clean
    x_adv = fgsm(model, x, y, eps, clamp)
    return alpha * clean + (1 - alpha) * cross_entropy(model(x_adv), y)


@torch.no_grad()
def attack_stats(logits: torch.Tensor, y: torch.Tensor) -> dict:
    """Error rate and confidence (largest softmax probability) of logits on (possibly adversarial) inputs.

    Averages run over the last batch dimension, so an ensemble's logits (N, batch, C) give tensors of
    shape (N,). ``confidence_wrong`` is the mean confidence on the misclassified inputs only (the paper's
    "average confidence" on adversarial examples; NaN where nothing is misclassified), ``confidence`` the
    mean over all of them.
    """
    prob = logits.softmax(-1)
    conf, pred = prob.max(-1)
    wrong = (pred != y).float()
    n_wrong = wrong.sum(-1)
    return {"error": wrong.mean(-1), "confidence": conf.mean(-1),
            "confidence_wrong": (conf * wrong).sum(-1) / n_wrong.where(n_wrong > 0, torch.nan)}


def _adv_eval(model, x, y, eps, clamp, batch_size=2048) -> dict:
    """Clean and FGSM loss/accuracy of ``model`` on (x, y), in chunks; tensors over leading dims."""
    sums = {"loss": 0.0, "acc": 0.0, "adv_loss": 0.0, "adv_acc": 0.0}
    n, dim = y.shape[-1], y.dim() - 1  # the batch dimension of x and y
    for i in range(0, n, batch_size):
        xb, yb = x.narrow(dim, i, min(batch_size, n - i)), y.narrow(dim, i, min(batch_size, n - i))
        xa = fgsm(model, xb, yb, eps, clamp)
        with torch.no_grad():
            for key, inp in (("", xb), ("adv_", xa)):
                out = model(inp)
                ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), yb.reshape(-1), reduction="none").view(yb.shape)
                sums[key + "loss"] = sums[key + "loss"] + ce.sum(-1)
                sums[key + "acc"] = sums[key + "acc"] + (out.argmax(-1) == yb).float().sum(-1)
    return {k: v / n for k, v in sums.items()}


def train_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float = 0.5,
                      steps: int, lr: float, batch_size: int = 128, optimizer: str = "sgd",
                      weight_decay: float = 0.0, momentum: float = 0.0, betas=(0.9, 0.999), seed: int = 0,
                      clamp=(0.0, 1.0), eval_every: int = 0, eval_sets: dict | None = None, progress: bool = True,
                      desc: str = "adversarial training") -> pd.DataFrame:
    """``repro.train.train`` with the loss :func:`adversarial_loss`. Every ``eval_every`` steps each set
    in ``eval_sets`` is scored clean and under FGSM at ``eps`` (``<name>_acc``, ``<name>_adv_acc``, ...)."""
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    _check_eps(eps, clamp)
    check_range("alpha", alpha, 0.0, 1.0)
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay, momentum, betas)
    stream = batch_indices(len(x), batch_size, torch.Generator().manual_seed(seed), x.device)
    rows, eval_sets = [], eval_sets or {}
    model.train()
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        idx = next(stream)
        loss = adversarial_loss(model, x[idx], y[idx], eps, alpha, clamp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if eval_every and (step % eval_every == 0 or step == steps):
            row = {"step": step, "batch_loss": loss.item()}
            model.eval()
            for name, (xs, ys) in eval_sets.items():
                row.update({f"{name}_{k}": v.item() for k, v in _adv_eval(model, xs, ys, eps, clamp).items()})
            model.train()
            rows.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.endswith("acc")})
    bar.close()
    return pd.DataFrame(rows)


def train_adversarial_ensemble(build: Callable[[], nn.Module], seeds: Sequence[int], x: torch.Tensor,
                               y: torch.Tensor, *, eps: float, alpha: float = 0.5, steps: int, lr: float,
                               batch_size: int = 128, optimizer: str = "sgd", weight_decay: float = 0.0,
                               momentum: float = 0.0, betas=(0.9, 0.999), clamp=(0.0, 1.0), eval_every: int = 0,
                               eval_sets: dict | None = None, progress: bool = True,
                               desc: str = "adversarial training") -> tuple[Ensemble, pd.DataFrame]:
    """``repro.train.train_ensemble`` (shared data, one model per seed, all at once) with the loss
    :func:`adversarial_loss`: every member attacks itself with FGSM on its own minibatch. Returns the
    ensemble and a long history (one row per model, eval set and evaluation: clean and FGSM loss/acc)."""
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    _check_eps(eps, clamp)
    check_range("alpha", alpha, 0.0, 1.0)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one model.")
    models = []
    for s in seeds:
        torch.manual_seed(s)
        models.append(build().to(x.device))
    ens = Ensemble(models)
    model = per_model(ens)
    opt = make_optimizer(optimizer, list(ens.params.values()), lr, weight_decay, momentum, betas)
    streams = [batch_indices(len(x), batch_size, torch.Generator().manual_seed(s), x.device) for s in seeds]
    rows, eval_sets = [], eval_sets or {}
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        idx = torch.stack([next(s) for s in streams])  # (N, batch)
        loss = adversarial_loss(model, x[idx], y[idx], eps, alpha, clamp)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # the loss is summed over models, so each gets its own gradient
        opt.step()
        if eval_every and (step % eval_every == 0 or step == steps):
            for name, (xs, ys) in eval_sets.items():
                res = _adv_eval(model, *expand(ens, xs, ys), eps, clamp)
                for i, s in enumerate(seeds):
                    rows.append({"step": step, "seed": s, "set": name, **{k: v[i].item() for k, v in res.items()}})
            bar.set_postfix(loss=f"{loss.item() / len(seeds):.3f}")
    bar.close()
    return ens, pd.DataFrame(rows)
