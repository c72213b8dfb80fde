"""Adversarial examples and adversarial training: FGSM and PGD under an L-infinity budget, PGD under
an L2 budget, FGSM and PGD adversarial training of ensembles.

Goodfellow, Shlens and Szegedy (2015) perturb an input ``x`` with label ``y`` by the fast gradient
sign method (FGSM),

    x_adv = clip(x + eps * sign(grad_x J(theta, x, y))),

and train on the mixed objective ``alpha * J(x) + (1 - alpha) * J(x_adv)``. Projected gradient
descent (PGD; Madry et al., 2018) iterates signed steps and projects back onto the eps-ball.

``model`` is any callable from inputs to logits (classes in the last dimension) with labels ``y`` of
shape ``logits.shape[:-1]``. That covers one ``nn.Module`` and also a whole :class:`repro.nn.ensemble.Ensemble`
through :func:`per_model`: inputs of shape (N, batch, ...) and labels (N, batch), one slice per model;
the models share no parameters, so every slice gets its own gradient. Losses are averaged over the
batch and summed over leading (model) dimensions, as ``repro.nn.ensemble.train_ensemble`` does.

The attacks do not change the model's train/eval mode: put a model with dropout or batch norm in the
mode you mean to attack first.

``repro.nn.train.train`` calls ``loss_fn(logits, y)``, which never sees the inputs, so the adversarial
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

from ..core.params import ParameterError, check_choice, check_positive, check_range
from ..nn.ensemble import Ensemble, expand, per_model
from ..nn.metrics import cross_entropy
from ..nn.train import batch_indices, make_optimizer


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
    """``repro.nn.train.train`` with the loss :func:`adversarial_loss`. Every ``eval_every`` steps each set
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
    """``repro.nn.ensemble.train_ensemble`` (shared data, one model per seed, all at once) with the loss
    :func:`adversarial_loss`: every member attacks itself with FGSM on its own minibatch. Returns the
    ensemble and a long history (one row per model, eval set and evaluation: clean and FGSM loss/acc)."""
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    _check_eps(eps, clamp)
    check_range("alpha", alpha, 0.0, 1.0)
    seeds = list(seeds)
    ens = Ensemble.from_seeds(build, seeds, x.device)
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


# ---------------------------------------------------------------------------------------------------
# One-pixel attack (Su, Vargas and Sakurai, 2019): black-box differential evolution over a few pixels.
# ---------------------------------------------------------------------------------------------------


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(-3).norm(dim=-1)[..., None, None, None]


def pgd_l2(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step_size: float,
           clamp=(0.0, 1.0)) -> torch.Tensor:
    """PGD in the L2 ball of radius ``eps`` around each image x (shape (..., C, H, W)), from x itself.

    Each step moves ``step_size`` along the gradient divided by its L2 norm, projects the perturbation
    back onto the ball and clips the image to ``clamp`` (None: no clipping)."""
    check_positive("eps", eps, allow_zero=True)
    check_positive("steps", steps, integer=True)
    check_positive("step_size", step_size)
    if x.dim() < 3:
        raise ParameterError(f"pgd_l2 needs images of shape (..., C, H, W); got shape {tuple(x.shape)}.")
    x0 = x.detach()
    delta = torch.zeros_like(x0)

    def image(d):
        return x0 + d if clamp is None else (x0 + d).clamp(*clamp)

    for _ in range(steps):
        g = input_gradient(model, image(delta), y)
        delta = delta + step_size * g / (_norms(g) + 1e-12)
        delta = delta * torch.clamp(eps / (_norms(delta) + 1e-12), max=1.0)
    return image(delta).detach()


def attack(model: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "l2", steps: int = 10,
           step_size: float | None = None, clamp=(0.0, 1.0), generator: torch.Generator | None = None):
    """PGD under ``norm`` ("l2" or "linf"); the step size defaults to ``2.5 * eps / steps`` (Madry et al.).
    The L-infinity attack starts from a random point of the ball (drawn with ``generator``)."""
    check_choice("norm", norm, ("l2", "linf"))
    if eps == 0:
        return x.detach()
    step_size = step_size or 2.5 * eps / steps
    if norm == "l2":
        return pgd_l2(model, x, y, eps, steps, step_size, clamp)
    return pgd(model, x, y, eps, steps, step_size, clamp, random_start=True, generator=generator)


def train_pgd_ensemble(build: Callable[[], nn.Module], seeds: Sequence[int], x: torch.Tensor, y: torch.Tensor, *,
                       eps: float, norm: str = "l2", attack_steps: int = 7, step_size: float | None = None,
                       steps: int, lr: float, batch_size: int = 128, optimizer: str = "sgd",
                       weight_decay: float = 0.0, momentum: float = 0.0, betas=(0.9, 0.999), clamp=(0.0, 1.0),
                       log_every: int = 0, progress: bool = True,
                       desc: str = "PGD adversarial training") -> tuple[Ensemble, pd.DataFrame]:
    """Adversarial training with PGD (``attack_steps`` steps under ``norm`` at radius ``eps``), one model per
    seed, all at once. Model i is built after ``torch.manual_seed(seeds[i])`` and draws its minibatches
    with a generator seeded ``seeds[i]``. Returns the ensemble and a history of every member's
    adversarial batch loss every ``log_every`` steps (empty when 0)."""
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("attack_steps", attack_steps, integer=True)
    check_positive("eps", eps, allow_zero=True)
    check_choice("norm", norm, ("l2", "linf"))
    seeds = list(seeds)
    ens = Ensemble.from_seeds(build, seeds, x.device)
    model = per_model(ens)
    opt = make_optimizer(optimizer, list(ens.params.values()), lr, weight_decay, momentum, betas)
    streams = [batch_indices(len(x), batch_size, torch.Generator().manual_seed(s), x.device) for s in seeds]
    gen = torch.Generator(device=x.device).manual_seed(seeds[0])
    rows = []
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        idx = torch.stack([next(s) for s in streams])  # (N, batch)
        xb, yb = x[idx], y[idx]
        xb = attack(model, xb, yb, eps, norm, attack_steps, step_size, clamp, gen)
        out = model(xb)
        loss = cross_entropy(out, yb)  # summed over models: each gets its own gradient
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_every and (step % log_every == 0 or step == steps):
            with torch.no_grad():
                per = torch.nn.functional.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="none")
                per = per.view(yb.shape).mean(1)
            rows += [{"step": step, "seed": s, "adv_batch_loss": per[i].item()} for i, s in enumerate(seeds)]
            bar.set_postfix(loss=f"{loss.item() / len(seeds):.3f}")
    bar.close()
    return ens, pd.DataFrame(rows)
