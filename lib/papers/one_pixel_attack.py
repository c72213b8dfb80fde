"""The one-pixel-attack chapter (Su, Vargas and Sakurai, 2019): differential evolution over the
position and value of a few pixels, many images at once, and an exhaustive single-pixel search as
ground truth.

``pixel_attack`` keeps a population of candidate perturbations (x, y, value per pixel) per image,
mutates them with DE/rand/1 (no crossover, as in the paper) and keeps a child when it lowers the
true class's probability (untargeted); all images' populations are evaluated in one batched forward
pass. ``exhaustive_pixel_search`` tries every position with each of the given values.
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from ..core.params import ParameterError, check_positive, check_range


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
