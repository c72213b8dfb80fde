"""The RISE chapter (Petsiuk, Das and Saenko, 2018): randomized input sampling for explanation.

RISE is a black-box saliency estimate from random low-resolution masks,

    S(x) = sum_i f(x * M_i) M_i / (N p),

with masks from :func:`rise_masks` (binary grids of cell size ``cell`` kept with probability ``p``,
upsampled bilinearly and shifted at random). The baselines it is compared with (gradients,
occlusion, Grad-CAM) and the deletion/insertion metrics are in :mod:`repro.methods.attribution`.
:func:`evidence_canvas` builds images whose evidence region is known (a digit on a larger canvas
beside distractors), scored by :func:`energy_in_box` against :func:`box_mask`.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.params import ParameterError, check_choice, check_positive, check_range
from ..methods.attribution import check_images, target_classes, target_scores


def rise_masks(n_masks: int, side, cell: int, p: float = 0.5, generator: torch.Generator | None = None,
               device=None) -> torch.Tensor:
    """``n_masks`` RISE masks of shape (n_masks, 1, H, W) with values in [0, 1].

    As in the paper's code: a binary grid of ``s x s`` cells (``s = ceil(side / cell)``), each cell kept
    with probability ``p``, is upsampled bilinearly to ``(s + 1) * cell`` pixels and cropped to the image
    at a random shift of 0..cell-1 pixels in each direction, so that the mask edges fall anywhere.
    ``side`` is H (square images) or (H, W).
    """
    check_positive("n_masks", n_masks, integer=True)
    check_positive("cell", cell, integer=True)
    check_range("p", p, 0.0, 1.0)
    H, W = (side, side) if isinstance(side, (int, np.integer)) else tuple(side)
    sh, sw = math.ceil(H / cell), math.ceil(W / cell)
    grid = (torch.rand(n_masks, 1, sh, sw, generator=generator) < p).float()
    up = F.interpolate(grid, size=((sh + 1) * cell, (sw + 1) * cell), mode="bilinear", align_corners=False)
    dy = torch.randint(0, cell, (n_masks,), generator=generator)
    dx = torch.randint(0, cell, (n_masks,), generator=generator)
    rows = (dy[:, None] + torch.arange(H)[None, :])          # (n, H)
    cols = (dx[:, None] + torch.arange(W)[None, :])          # (n, W)
    masks = up[torch.arange(n_masks)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return masks[:, None] if device is None else masks[:, None].to(device)


@torch.no_grad()
def rise_saliency(model: Callable, x: torch.Tensor, target, n_masks: int = 4000, cell: int = 8, p: float = 0.5, *,
                  masks: torch.Tensor | None = None, batch_size: int = 1000, output: str = "prob",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """RISE saliency maps, shape (B, H, W): ``S(x) = sum_i f(x * M_i) M_i / (N p)``.

    ``f`` is the target's softmax probability (``output="prob"``, the paper's choice) or its logit. The
    masked images are evaluated in batches of ``batch_size`` forward passes. ``masks`` (N, 1, H, W)
    may be passed to share one set across images (as the paper does); otherwise ``n_masks`` masks with
    cells of ``cell`` pixels and keep-probability ``p`` are drawn from ``generator``. ``p`` is the
    normalizer either way.
    """
    check_images(x)
    check_choice("output", output, ("prob", "logit"))
    check_positive("batch_size", batch_size, integer=True)
    if masks is None:
        masks = rise_masks(n_masks, x.shape[-2:], cell, p, generator, x.device)
    masks = masks.to(x.device, x.dtype)
    N, H, W = masks.shape[0], x.shape[-2], x.shape[-1]
    if masks.shape[-2:] != (H, W):
        raise ValueError(f"masks are {tuple(masks.shape[-2:])} but the images are {(H, W)}.")
    target = target_classes(target, len(x), x.device)
    flat = masks.reshape(N, H * W)
    sal = torch.zeros(len(x), H * W, device=x.device, dtype=x.dtype)
    per = max(1, batch_size // N)  # whole images per batch when the mask set is small
    if per > 1:
        for i in range(0, len(x), per):
            xb, tb = x[i:i + per], target[i:i + per]
            stack = (masks[None] * xb[:, None]).flatten(0, 1)               # (b N, C, H, W)
            s = target_scores(model, stack, tb.repeat_interleave(N), output).view(len(xb), N)
            sal[i:i + per] = s @ flat
    else:
        for b in range(len(x)):
            for j in range(0, N, batch_size):
                m = masks[j:j + batch_size]
                s = target_scores(model, m * x[b], target[b].expand(len(m)), output)
                sal[b] += s @ flat[j:j + batch_size]
    return (sal / (N * p)).view(len(x), H, W)


def box_mask(boxes: torch.Tensor, side) -> torch.Tensor:
    """Boolean masks (B, H, W) of boxes given as rows (top, left, bottom, right), bottom/right exclusive."""
    H, W = (side, side) if isinstance(side, (int, np.integer)) else tuple(side)
    boxes = torch.as_tensor(boxes)
    r = torch.arange(H, device=boxes.device)
    c = torch.arange(W, device=boxes.device)
    inr = (r[None] >= boxes[:, 0:1]) & (r[None] < boxes[:, 2:3])
    inc = (c[None] >= boxes[:, 1:2]) & (c[None] < boxes[:, 3:4])
    return inr[:, :, None] & inc[:, None, :]


def energy_in_box(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of a map's mass that falls inside the evidence ``mask`` (the energy-based pointing game of
    Score-CAM), per image. The map is first shifted so that its minimum is 0 (as a min-max normalization
    would), so a constant offset, such as RISE's mean score, carries no weight; 0 for a constant map."""
    s = saliency.flatten(1)
    s = s - s.amin(1, keepdim=True)
    total = s.sum(1)
    inside = (s * mask.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


def evidence_canvas(digits: torch.Tensor, distractors: torch.Tensor, side: int = 28, digit_side: int = 14,
                    n_distractors: int = 2, distractor_side: int = 7, seed: int = 0) -> tuple:
    """Place each digit at a random position on a ``side x side`` canvas beside distractor objects.

    ``digits`` (n, 28, 28) or (n, 784) are MNIST-style images: their central 20 x 20 pixels (the box in
    which MNIST centres its digits), resized to ``digit_side`` pixels, are pasted at a uniformly random
    position, and that square is the evidence box. ``n_distractors`` objects drawn at random from
    ``distractors`` (m, 28, 28) (say Fashion-MNIST items), shrunk to ``distractor_side`` pixels, go at
    random positions that do not overlap the evidence box (they may overlap each other). Returns
    ``(canvases (n, 1, side, side), boxes (n, 4))``, boxes as (top, left, bottom, right), bottom and
    right exclusive, on the device of ``digits``.
    """
    for name, v in (("side", side), ("digit_side", digit_side), ("distractor_side", distractor_side)):
        check_positive(name, v, integer=True)
    check_positive("n_distractors", n_distractors, integer=True, allow_zero=True)
    if digit_side > side or distractor_side > side:
        raise ParameterError(f"digit_side and distractor_side must be at most side; got side={side}, "
                             f"digit_side={digit_side}, distractor_side={distractor_side}.")
    if n_distractors and 2 * distractor_side + digit_side > side:
        raise ParameterError(f"the distractors do not always fit beside the digit: need 2 * distractor_side + "
                             f"digit_side <= side; got {distractor_side}, {digit_side}, {side}.")
    rng = np.random.default_rng(seed)
    S, D = digit_side, distractor_side
    dig = digits.reshape(-1, 1, 28, 28).detach().cpu().float()[:, :, 4:24, 4:24]
    if S != 20:
        dig = F.interpolate(dig, size=(S, S), mode="area")
    dis = F.interpolate(distractors.reshape(-1, 1, 28, 28).detach().cpu().float(), size=(D, D), mode="area")[:, 0]
    n = len(dig)
    pos = rng.integers(0, side - S + 1, size=(n, 2))
    boxes = torch.as_tensor(np.concatenate([pos, pos + S], 1), dtype=torch.long)
    canvas = torch.zeros(n, side * side)

    def flat_index(top_left, k):  # (n, k, k) flat canvas indices of k x k squares at top_left (n, 2)
        tl = torch.as_tensor(top_left)
        r = tl[:, 0, None, None] + torch.arange(k)[None, :, None]
        c = tl[:, 1, None, None] + torch.arange(k)[None, None, :]
        return (r * side + c).reshape(n, -1)

    for _ in range(n_distractors):
        cand = rng.integers(0, side - D + 1, size=(n, 256, 2))             # rejection sampling, vectorized
        free = ((cand[..., 0] + D <= pos[:, None, 0]) | (cand[..., 0] >= pos[:, None, 0] + S)
                | (cand[..., 1] + D <= pos[:, None, 1]) | (cand[..., 1] >= pos[:, None, 1] + S))
        for i in np.flatnonzero(~free.any(1)):                               # (never seen in practice)
            spots = [(a, b) for a in range(side - D + 1) for b in range(side - D + 1)
                     if a + D <= pos[i, 0] or a >= pos[i, 0] + S or b + D <= pos[i, 1] or b >= pos[i, 1] + S]
            cand[i, 0], free[i, 0] = spots[rng.integers(len(spots))], True
        spot = cand[np.arange(n), free.argmax(1)]
        items = dis[torch.as_tensor(rng.integers(0, len(dis), size=n))].reshape(n, -1)
        canvas.scatter_reduce_(1, flat_index(spot, D), items, "amax")
    canvas.scatter_(1, flat_index(pos, S), dig.reshape(n, -1))
    return canvas.view(n, 1, side, side).to(digits.device), boxes.to(digits.device)


METHODS = ("RISE", "gradient", "occlusion", "Grad-CAM")


def explain_and_score(model, x: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor, cam_layer, *, p: float,
                      occlusion_window: int, occlusion_stride: int, blur_klen: int, blur_sigma: float,
                      steps: int = 28, tolerance: int = 2, chunk: int = 8, batch_size: int = 2000) -> dict:
    """Explain the canvases ``x`` (B, 1, H, W) for the classes ``model`` predicts with RISE (``masks``,
    keep-probability ``p``), the gradient, sliding-window occlusion and Grad-CAM (at ``cam_layer``),
    and score every map: deletion and insertion AUC (and curves) over ``steps`` steps, the pointing
    game against ``boxes`` (with ``tolerance`` pixels) and the energy in the box.

    Returns ``{"target": (B,), "saliency": {method: (B, H, W)}, "deletion", "insertion", "hit", "energy":
    {method: (B,)}, "deletion_curve", "insertion_curve": {method: (B, steps + 1)}}``, methods as in
    :data:`METHODS`.
    """
    from ..methods import attribution as A

    check_images(x)
    box = box_mask(boxes, x.shape[-2:])
    with torch.no_grad():
        target = model(x).argmax(-1)
    sal = {"RISE": torch.cat([rise_saliency(model, x[i:i + chunk], target[i:i + chunk], masks=masks, p=p,
                                            batch_size=batch_size) for i in range(0, len(x), chunk)]),
           "gradient": A.gradient_saliency(model, x, target),
           "occlusion": A.occlusion_saliency(model, x, target, window=occlusion_window, stride=occlusion_stride,
                                             batch_size=batch_size),
           "Grad-CAM": A.grad_cam(model, cam_layer, x, target)}
    out = {"target": target, "saliency": sal}
    for key in ("deletion", "insertion", "deletion_curve", "insertion_curve", "hit", "energy"):
        out[key] = {}
    for m in METHODS:
        s = A.deletion_insertion_auc(model, x, sal[m], target, steps=steps, blur_klen=blur_klen,
                                     blur_sigma=blur_sigma, batch_size=2 * batch_size)
        for key in ("deletion", "insertion", "deletion_curve", "insertion_curve"):
            out[key][m] = s[key]
        out["hit"][m] = A.pointing_game(sal[m], box, tolerance=tolerance).float()
        out["energy"][m] = energy_in_box(sal[m], box)
    return out
