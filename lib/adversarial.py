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

def _query_probs(model: Callable, images: torch.Tensor, in_shape, batch_size: int) -> torch.Tensor:
    """Class probabilities of a batch of images (B, H, W); only the model's outputs are used."""
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            out.append(torch.softmax(model(images[s:s + batch_size].reshape(-1, *in_shape)).float(), -1))
    return torch.cat(out)


def apply_pixels(images: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Write candidate pixels into copies of ``images``.

    ``images``: (B, H, W); ``cand``: (B, P, n_pixels, 3) with rows (row, column, value), coordinates as
    floats that are floored. Returns (B, P, H, W).
    """
    B, H, W = images.shape
    P, n = cand.shape[1], cand.shape[2]
    out = images[:, None].expand(B, P, H, W).reshape(B * P, H * W).clone()
    r = cand[..., 0].floor().long().clamp(0, H - 1).reshape(B * P, n)
    c = cand[..., 1].floor().long().clamp(0, W - 1).reshape(B * P, n)
    out.scatter_(1, r * W + c, cand[..., 2].reshape(B * P, n).to(out.dtype))
    return out.reshape(B, P, H, W)


def pixel_attack(model: Callable, x: torch.Tensor, y: torch.Tensor, n_pixels: int = 1, *, popsize: int = 400,
                 maxiter: int = 100, F: float = 0.5, value_range=(0.0, 1.0), image_shape=None,
                 batch_size: int = 16384, seed: int = 0, progress: bool = True) -> dict:
    """Non-targeted n-pixel attack by differential evolution (Su, Vargas and Sakurai, 2019).

    A candidate is ``n_pixels`` rows (row, column, value). The paper's DE variant: DE/rand/1 with
    mutation factor ``F`` (0.5) and no crossover; a child replaces its parent when it lowers the
    probability of the true class; the search stops for an image as soon as one member of its
    population is classified as another class, or after ``maxiter`` generations. Black box: the model
    is only ever called, under ``torch.no_grad``, and only its softmax outputs are read. All images
    and all population members are evaluated together in batched forward passes of ``batch_size``.

    ``x``: (B, ...) images whose last dims are (H, W) (or flat, with ``image_shape=(H, W)`` or square);
    the model receives them in the shape of ``x[0]``. Returns a dict of tensors: ``success`` (B,),
    ``x_adv`` (shaped like x), ``pixels`` (B, n_pixels, 3; row, column, value), ``p_true_before``,
    ``p_true_after``, ``pred_after``, ``p_pred_after`` and ``generations`` (generations used).
    """
    check_positive("n_pixels", n_pixels, integer=True)
    check_positive("popsize", popsize, integer=True)
    check_positive("maxiter", maxiter, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_range("F", F, 0.0, 2.0)
    if popsize < 4:
        raise ParameterError(f"popsize must be an integer >= 4 for DE/rand/1; got {popsize}.")
    B, in_shape = len(x), tuple(x.shape[1:])
    if image_shape is None:
        if x.dim() >= 3:
            image_shape = tuple(x.shape[-2:])
        else:
            side = int(round(x.shape[1] ** 0.5))
            if side * side != x.shape[1]:
                raise ParameterError("image_shape must be given for flat inputs that are not square images.")
            image_shape = (side, side)
    H, W = image_shape
    if H * W != x[0].numel():
        raise ParameterError(f"image_shape {image_shape} does not match inputs of {x[0].numel()} values "
                             "(only single-channel images are supported).")
    images = x.reshape(B, H, W)
    dev, lo_v, hi_v = x.device, float(value_range[0]), float(value_range[1])
    gen = torch.Generator(device=dev).manual_seed(seed)
    lo = torch.tensor([0.0, 0.0, lo_v], device=dev)
    hi = torch.tensor([H - 1e-4, W - 1e-4, hi_v], device=dev)

    def fitness(idx, cand):  # probability of the true class and success flags, (b, P)
        probs = _query_probs(model, apply_pixels(images[idx], cand).reshape(-1, H, W), in_shape, batch_size)
        probs = probs.reshape(len(idx), cand.shape[1], -1)
        p_true = probs.gather(2, y[idx].long()[:, None, None].expand(-1, cand.shape[1], 1))[..., 0]
        return p_true, probs.argmax(-1) != y[idx][:, None]

    p0 = _query_probs(model, images, in_shape, batch_size)
    p_true_before = p0.gather(1, y.long()[:, None])[:, 0]
    pop = lo + (hi - lo) * torch.rand(B, popsize, n_pixels, 3, generator=gen, device=dev)
    fit, won = fitness(torch.arange(B, device=dev), pop)
    done = won.any(1)
    generations = torch.zeros(B, dtype=torch.long, device=dev)
    bar = tqdm(range(1, maxiter + 1), desc=f"{n_pixels}-pixel DE", disable=not progress, mininterval=1.0)
    for g in bar:
        act = (~done).nonzero()[:, 0]
        if len(act) == 0:
            break
        b = len(act)
        r1 = torch.randint(0, popsize, (b, popsize), generator=gen, device=dev)
        d2 = torch.randint(1, popsize, (b, popsize), generator=gen, device=dev)
        d3 = torch.randint(1, popsize - 1, (b, popsize), generator=gen, device=dev)
        d3 = d3 + (d3 >= d2).long()
        r2, r3 = (r1 + d2) % popsize, (r1 + d3) % popsize
        P_ = pop[act]
        take = lambda r: P_.gather(1, r[..., None, None].expand(-1, -1, n_pixels, 3))
        child = torch.minimum(torch.maximum(take(r1) + F * (take(r2) - take(r3)), lo), hi)
        f_child, w_child = fitness(act, child)
        better = f_child < fit[act]
        pop[act] = torch.where(better[..., None, None], child, P_)
        fit[act] = torch.where(better, f_child, fit[act])
        won[act] = torch.where(better, w_child, won[act])
        generations[act] = g
        done = won.any(1)
        bar.set_postfix(success=f"{done.float().mean().item():.2f}")
    bar.close()
    # the result: a successful member if there is one, otherwise the member with the lowest p(true)
    score = fit - 2.0 * won.float()
    best = score.argmin(1)
    pixels = pop[torch.arange(B, device=dev), best]
    adv = apply_pixels(images, pixels[:, None])[:, 0]
    p_adv = _query_probs(model, adv, in_shape, batch_size)
    pred = p_adv.argmax(1)
    return {"success": pred != y, "x_adv": adv.reshape(x.shape), "pixels": pixels,
            "p_true_before": p_true_before, "p_true_after": p_adv.gather(1, y.long()[:, None])[:, 0],
            "pred_after": pred, "p_pred_after": p_adv.max(1).values, "generations": generations}


def exhaustive_pixel_search(model: Callable, x: torch.Tensor, y: torch.Tensor, values=(0.0, 1.0), image_shape=None,
                            batch_size: int = 16384, progress: bool = True) -> dict:
    """Try every single-pixel change to each of ``values`` on every image (H * W * len(values) queries each).

    The ground truth a one-pixel attack can be checked against, for pixel values restricted to ``values``.
    Returns ``vulnerable`` (B,): some single-pixel change flips the prediction away from ``y``, and
    ``min_p_true`` (B,): the lowest probability of the true class over all those changes.
    """
    if len(values) < 1:
        raise ParameterError("values must hold at least one pixel value.")
    B, in_shape = len(x), tuple(x.shape[1:])
    if image_shape is None:
        side = int(round(x[0].numel() ** 0.5))
        image_shape = tuple(x.shape[-2:]) if x.dim() >= 3 else (side, side)
    H, W = image_shape
    if H * W != x[0].numel():
        raise ParameterError(f"image_shape {image_shape} does not match inputs of {x[0].numel()} values.")
    rr, cc = torch.meshgrid(torch.arange(H, device=x.device, dtype=torch.float32),
                            torch.arange(W, device=x.device, dtype=torch.float32), indexing="ij")
    cand = torch.cat([torch.stack([rr.flatten(), cc.flatten(), torch.full((H * W,), float(v), device=x.device)], 1)
                      for v in values])[:, None, :]  # (P, 1, 3)
    vulnerable, min_p = [], []
    for i in tqdm(range(B), desc="exhaustive 1-pixel search", disable=not progress, mininterval=1.0):
        imgs = apply_pixels(x[i].reshape(1, H, W), cand[None])[0]
        p = _query_probs(model, imgs, in_shape, batch_size)
        vulnerable.append(bool((p.argmax(1) != y[i]).any()))
        min_p.append(p[:, int(y[i])].min())
    return {"vulnerable": torch.tensor(vulnerable), "min_p_true": torch.stack(min_p).cpu()}
