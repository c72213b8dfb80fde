"""PGD adversarial training (Madry et al., 2018) under an L2 or L-infinity budget, for ensembles.

:mod:`repro.adversarial` has the L-infinity attacks (FGSM, PGD) and FGSM training. This module adds

* :func:`pgd_l2`: projected gradient ascent on the loss inside the L2 ball of radius ``eps`` (per
  example, over its last three dimensions (C, H, W)): normalized-gradient steps, projection onto the
  ball, clipping to ``clamp``;
* :func:`train_pgd_ensemble`: ``min_theta E max_{|delta| <= eps} J(theta, x + delta, y)``, one model per
  seed, all at once (a :class:`repro.train.Ensemble`), each member attacking itself with PGD on its own
  minibatch. With ``eps = 0`` it is plain training and reproduces
  ``repro.adversarial.train_adversarial_ensemble(..., alpha=1)`` exactly (the tests check it).

Inputs are images of shape (..., C, H, W); an ensemble sees (N, batch, C, H, W).
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .adversarial import cross_entropy, input_gradient, per_model, pgd
from .runtime import ParameterError, check_choice, check_positive
from .train import Ensemble, batch_indices, make_optimizer


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
