"""Attribution (saliency) methods for image classifiers, and the metrics that score them.

Every method takes a model that maps images ``x`` of shape (B, C, H, W) to class logits (B, K), a
batch of images and the class to explain for each (``target``: an int or a (B,) tensor), and returns
one saliency map per image, shape (B, H, W), larger meaning more important.

Methods
    * :func:`rise_saliency`: RISE (Petsiuk, Das and Saenko, 2018): a black-box estimate from random
      low-resolution masks, ``S = sum_i f(x * M_i) M_i / (N p)``; masks from :func:`rise_masks`.
    * :func:`gradient_saliency`: the input gradient of the class logit (Simonyan et al., 2014).
    * :func:`occlusion_saliency`: sliding-window occlusion (Zeiler and Fergus, 2014).
    * :func:`grad_cam`: Grad-CAM (Selvaraju et al., 2017) at a chosen convolutional layer.

Metrics
    * :func:`deletion_insertion_auc`: RISE's causal metrics: remove (deletion) or insert (insertion)
      pixels in order of saliency and take the area under the class-probability curve.
    * :func:`pointing_game` and :func:`energy_in_box`: localization against a known evidence box.
    * :func:`paired_bootstrap`: a bootstrap interval for the mean paired difference of two methods.

Data
    * :func:`evidence_canvas`: images whose evidence region is known: a digit placed at a random
      position on a larger canvas beside distractor objects that carry no label information.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .runtime import ParameterError, check_choice, check_positive, check_range

__all__ = ["rise_masks", "rise_saliency", "gradient_saliency", "occlusion_saliency", "grad_cam", "gaussian_blur",
           "deletion_insertion_curves", "deletion_insertion_auc", "auc", "box_mask", "pointing_game",
           "energy_in_box", "paired_bootstrap", "evidence_canvas"]


def _targets(target, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long, device=device)
    return t.expand(n).clone() if t.dim() == 0 else t


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images of shape (B, C, H, W); got shape {tuple(x.shape)}.")


def _scores(model: Callable, x: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """The explained score of each input: softmax probability ("prob") or logit ("logit") of its target."""
    out = model(x)
    if output == "prob":
        out = out.softmax(-1)
    return out.gather(1, target[:, None])[:, 0]


# --------------------------------------------------------------------------------------------- RISE

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
    _check_images(x)
    check_choice("output", output, ("prob", "logit"))
    check_positive("batch_size", batch_size, integer=True)
    if masks is None:
        masks = rise_masks(n_masks, x.shape[-2:], cell, p, generator, x.device)
    masks = masks.to(x.device, x.dtype)
    N, H, W = masks.shape[0], x.shape[-2], x.shape[-1]
    if masks.shape[-2:] != (H, W):
        raise ValueError(f"masks are {tuple(masks.shape[-2:])} but the images are {(H, W)}.")
    target = _targets(target, len(x), x.device)
    flat = masks.reshape(N, H * W)
    sal = torch.zeros(len(x), H * W, device=x.device, dtype=x.dtype)
    per = max(1, batch_size // N)  # whole images per batch when the mask set is small
    if per > 1:
        for i in range(0, len(x), per):
            xb, tb = x[i:i + per], target[i:i + per]
            stack = (masks[None] * xb[:, None]).flatten(0, 1)               # (b N, C, H, W)
            s = _scores(model, stack, tb.repeat_interleave(N), output).view(len(xb), N)
            sal[i:i + per] = s @ flat
    else:
        for b in range(len(x)):
            for j in range(0, N, batch_size):
                m = masks[j:j + batch_size]
                s = _scores(model, m * x[b], target[b].expand(len(m)), output)
                sal[b] += s @ flat[j:j + batch_size]
    return (sal / (N * p)).view(len(x), H, W)


# --------------------------------------------------------------------------------- white-box baselines

def gradient_saliency(model: Callable, x: torch.Tensor, target, absolute: bool = True) -> torch.Tensor:
    """Gradient of the target's logit with respect to the input (Simonyan et al., 2014), shape (B, H, W).

    With ``absolute`` (the paper's choice, and captum's ``Saliency`` default) the map is the largest
    absolute gradient over the channels; otherwise the signed gradient summed over channels.
    """
    _check_images(x)
    target = _targets(target, len(x), x.device)
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        score = model(xg).gather(1, target[:, None]).sum()
        (g,) = torch.autograd.grad(score, xg)
    return g.abs().amax(1) if absolute else g.sum(1)


@torch.no_grad()
def occlusion_saliency(model: Callable, x: torch.Tensor, target, window: int = 8, stride: int = 4,
                       baseline: float = 0.0, output: str = "prob", batch_size: int = 1024) -> torch.Tensor:
    """Sliding-window occlusion, shape (B, H, W).

    A ``window x window`` patch set to ``baseline`` slides over the image in steps of ``stride`` (the
    last patch in a row or column is cut at the border, as in captum's ``Occlusion``); each pixel gets the
    mean drop of the target's score, ``f(x) - f(x with the patch occluded)``, over the patches that cover it.
    """
    _check_images(x)
    check_choice("output", output, ("prob", "logit"))
    check_positive("window", window, integer=True)
    check_positive("stride", stride, integer=True)
    B, C, H, W = x.shape
    if window > min(H, W) or stride > window:
        raise ParameterError(f"window must be at most the image side ({min(H, W)}) and stride at most window; "
                             f"got window={window}, stride={stride}.")
    target = _targets(target, B, x.device)
    ys = [k * stride for k in range(math.ceil((H - window) / stride) + 1)]
    xs = [k * stride for k in range(math.ceil((W - window) / stride) + 1)]
    patches = torch.zeros(len(ys) * len(xs), H, W, device=x.device, dtype=x.dtype)
    for i, (r, c) in enumerate((r, c) for r in ys for c in xs):
        patches[i, r:r + window, c:c + window] = 1.0
    count = patches.sum(0)
    P = len(patches)
    base = _scores(model, x, target, output)
    sal = torch.zeros(B, H, W, device=x.device, dtype=x.dtype)
    for b in range(B):
        drops = []
        for j in range(0, P, batch_size):
            m = patches[j:j + batch_size, None]                         # (k, 1, H, W)
            occluded = x[b] * (1 - m) + baseline * m
            drops.append(base[b] - _scores(model, occluded, target[b].expand(len(m)), output))
        sal[b] = torch.einsum("p,phw->hw", torch.cat(drops), patches) / count
    return sal


def grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target, upsample: bool = True,
             relu: bool = True) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017): ``ReLU(sum_k a_k A^k)`` with ``a_k`` the spatial mean of the
    gradient of the target's logit with respect to the feature map ``A^k`` of ``layer``.

    Returns (B, H, W) upsampled bilinearly to the input size (``upsample``), else (B, h, w) at the
    layer's resolution.
    """
    _check_images(x)
    target = _targets(target, len(x), x.device)
    store = {}

    def hook(module, inputs, out):
        store["A"] = out

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():  # the input asks for gradients, so this works with frozen parameters too
            logits = model(x.detach().clone().requires_grad_(True))
            A = store["A"]
            (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), A)
    finally:
        handle.remove()
    cam = (g.mean((2, 3), keepdim=True) * A).sum(1).detach()
    if relu:
        cam = cam.clamp_min(0)
    if upsample:
        cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cam


# -------------------------------------------------------------------------------- the causal metrics

def gaussian_blur(x: torch.Tensor, klen: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Blur each channel with a ``klen x klen`` Gaussian kernel (zero padding), the insertion substrate of
    the paper's code (klen 11, sigma 5 on 224-pixel images)."""
    check_positive("klen", klen, integer=True)
    check_positive("sigma", sigma)
    r = torch.arange(klen, dtype=x.dtype, device=x.device) - (klen - 1) / 2
    k1 = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k = torch.outer(k1, k1)
    k = (k / k.sum())[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(x, k, padding=klen // 2, groups=x.shape[1])


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under curves sampled at equal steps on [0, 1] (trapezoid rule), over the last dimension."""
    n = curve.shape[-1]
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / (n - 1)


@torch.no_grad()
def deletion_insertion_curves(model: Callable, x: torch.Tensor, saliency: torch.Tensor, target, steps: int = 48, *,
                              mode: str = "deletion", substrate: torch.Tensor | None = None,
                              batch_size: int = 1024) -> torch.Tensor:
    """Class-probability curves of the causal metrics, shape (B, steps + 1).

    Pixels are ranked by decreasing saliency (ties keep pixel order) and changed ``ceil(H W / steps)``
    at a time. ``deletion`` starts from the image and replaces pixels with the substrate (default zeros,
    as in the paper); ``insertion`` starts from the substrate (default :func:`gaussian_blur` of the image)
    and puts the image's pixels back. Point k of the curve is the softmax probability of the target
    after k steps.
    """
    _check_images(x)
    check_choice("mode", mode, ("deletion", "insertion"))
    check_positive("steps", steps, integer=True)
    B, C, H, W = x.shape
    if saliency.shape != (B, H, W):
        raise ValueError(f"saliency must have shape {(B, H, W)}; got {tuple(saliency.shape)}.")
    target = _targets(target, B, x.device)
    if substrate is None:
        substrate = torch.zeros_like(x) if mode == "deletion" else gaussian_blur(x)
    start, finish = (x, substrate) if mode == "deletion" else (substrate, x)
    per_step = math.ceil(H * W / steps)
    order = torch.sort(saliency.reshape(B, -1), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(H * W, device=x.device).expand(B, -1))
    thresholds = torch.arange(steps + 1, device=x.device) * per_step             # pixels changed after k steps
    curves = torch.zeros(B, steps + 1, device=x.device)
    k_per = max(1, batch_size // (steps + 1))
    for i in range(0, B, k_per):
        sl = slice(i, i + k_per)
        changed = (rank[sl, None, :] < thresholds[None, :, None]).view(-1, steps + 1, 1, H, W).to(x.dtype)
        states = start[sl, None] * (1 - changed) + finish[sl, None] * changed    # (b, steps+1, C, H, W)
        b = states.shape[0]
        s = _scores(model, states.flatten(0, 1), target[sl].repeat_interleave(steps + 1), "prob")
        curves[sl] = s.view(b, steps + 1)
    return curves


def deletion_insertion_auc(model: Callable, x: torch.Tensor, saliency: torch.Tensor, target, steps: int = 48, *,
                           blur_klen: int = 11, blur_sigma: float = 5.0, batch_size: int = 1024) -> dict:
    """The paper's deletion (lower is better) and insertion (higher is better) scores of saliency maps.

    Deletion replaces pixels with zeros, insertion starts from a Gaussian blur of the image (``blur_klen``,
    ``blur_sigma``). Returns a dict with the per-image areas ``deletion`` and ``insertion`` (B,) and the
    curves ``deletion_curve`` and ``insertion_curve`` (B, steps + 1).
    """
    blurred = gaussian_blur(x, blur_klen, blur_sigma)
    d = deletion_insertion_curves(model, x, saliency, target, steps, mode="deletion", batch_size=batch_size)
    i = deletion_insertion_curves(model, x, saliency, target, steps, mode="insertion", substrate=blurred,
                                  batch_size=batch_size)
    return {"deletion": auc(d), "insertion": auc(i), "deletion_curve": d, "insertion_curve": i}


# --------------------------------------------------------------------------------- localization scores

def box_mask(boxes: torch.Tensor, side) -> torch.Tensor:
    """Boolean masks (B, H, W) of boxes given as rows (top, left, bottom, right), bottom/right exclusive."""
    H, W = (side, side) if isinstance(side, (int, np.integer)) else tuple(side)
    boxes = torch.as_tensor(boxes)
    r = torch.arange(H, device=boxes.device)
    c = torch.arange(W, device=boxes.device)
    inr = (r[None] >= boxes[:, 0:1]) & (r[None] < boxes[:, 2:3])
    inc = (c[None] >= boxes[:, 1:2]) & (c[None] < boxes[:, 3:4])
    return inr[:, :, None] & inc[:, None, :]


def pointing_game(saliency: torch.Tensor, mask: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Pointing game (Zhang et al., 2016), per image: True when the saliency's maximum lies in the evidence
    ``mask`` (B, H, W) grown by ``tolerance`` pixels in every direction (Zhang et al. allow 15 pixels at
    224 x 224). A hit needs the largest value inside to be strictly above the largest value outside: a tie,
    or a constant map, counts as a miss."""
    check_positive("tolerance", tolerance, integer=True, allow_zero=True)
    if tolerance:
        mask = F.max_pool2d(mask[:, None].float(), 2 * tolerance + 1, stride=1, padding=tolerance)[:, 0] > 0
    neg = torch.finfo(saliency.dtype).min
    inside = saliency.masked_fill(~mask, neg).flatten(1).amax(1)
    outside = saliency.masked_fill(mask, neg).flatten(1).amax(1)
    return inside > outside


def energy_in_box(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of a map's mass that falls inside the evidence ``mask`` (the energy-based pointing game of
    Score-CAM), per image. The map is first shifted so that its minimum is 0 (as a min-max normalization
    would), so a constant offset, such as RISE's mean score, carries no weight; 0 for a constant map."""
    s = saliency.flatten(1)
    s = s - s.amin(1, keepdim=True)
    total = s.sum(1)
    inside = (s * mask.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


def paired_bootstrap(a, b, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean of the paired differences ``a - b`` over items, with a percentile bootstrap interval
    (items resampled with replacement ``n_boot`` times)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(d.mean()), "low": float(lo), "high": float(hi)}


# ------------------------------------------------------------------------- a task with known evidence

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


# ----------------------------------------------- DeepLIFT and the gradient family, for inputs of any shape
#
# These return attributions of the input's own shape (for one-hot DNA (B, 4, L): one score per base and
# position), and explain the target's *logit* (the paper explains the pre-sigmoid output). ``baseline`` (the
# reference input) is a tensor broadcastable to x, or a number.

def _baseline_like(baseline, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x).detach()


def gradient_x_input(model: Callable, x: torch.Tensor, target, baseline=None) -> torch.Tensor:
    """Gradient times input (Shrikumar et al., 2016): ``(x - baseline) * d f_target / dx``, taken at x;
    ``baseline`` None means 0, the usual definition."""
    target = _targets(target, len(x), x.device)
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(model(xg).gather(1, target[:, None]).sum(), xg)
    return g * (x if baseline is None else x - _baseline_like(baseline, x))


def integrated_gradients(model: Callable, x: torch.Tensor, baseline, target, steps: int = 50,
                         batch_size: int = 4096) -> torch.Tensor:
    """Integrated gradients (Sundararajan, Taly and Yan, 2017), by the midpoint rule:
    ``(x - x') * (1/steps) sum_k grad f(x' + a_k (x - x'))`` with ``a_k = (k + 1/2) / steps`` (captum's
    ``riemann_middle``). The points along the path are evaluated about ``batch_size`` at a time."""
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    target = _targets(target, len(x), x.device)
    ref = _baseline_like(baseline, x)
    delta = (x - ref).detach()
    alphas = (torch.arange(steps, device=x.device, dtype=x.dtype) + 0.5) / steps
    per = max(1, batch_size // len(x))
    total = torch.zeros_like(x)
    for i in range(0, steps, per):
        a = alphas[i:i + per].view(-1, *([1] * x.dim()))
        pts = (ref[None] + a * delta[None]).flatten(0, 1).requires_grad_(True)
        with torch.enable_grad():
            out = model(pts).gather(1, target.repeat(len(a))[:, None]).sum()
            (g,) = torch.autograd.grad(out, pts)
        total += g.view(len(a), *x.shape).sum(0)
    return delta * total / steps


_DL_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d)
_DL_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.GELU, nn.SiLU)
DEEPLIFT_RULES = ("rescale", "reveal_cancel", "reveal_cancel_dense")


def _linear_part(module: nn.Module, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The linear layer ``module`` applied to t with weight w and no bias."""
    if isinstance(module, nn.Linear):
        return F.linear(t, w)
    conv = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
    if module.padding_mode != "zeros":
        raise ValueError("deeplift supports convolutions with zero padding only.")
    return conv(t, w, None, module.stride, module.padding, module.dilation, module.groups)


def _derivative(f: Callable, z: torch.Tensor) -> torch.Tensor:
    """The derivative of an elementwise function f at z."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(zz).sum(), zz)
    return g


def deeplift(model: nn.Module, x: torch.Tensor, baseline, target, rule: str = "rescale",
             eps: float = 1e-10) -> torch.Tensor:
    """DeepLIFT (Shrikumar, Greenside and Kundaje, 2017): contributions ``C = m * (x - x')`` of each input
    to ``f_target(x) - f_target(x')``, where ``x'`` is the reference (``baseline``) and the multipliers ``m``
    are back-propagated with the chain rule for multipliers, ``m_{x t} = sum_y m_{x y} m_{y t}``:

    * linear layers and convolutions (and anything else linear in the difference from the reference:
      average pooling, flattening, eval-mode batch norm) keep their weights as multipliers;
    * an elementwise nonlinearity y = f(z) (ReLU, sigmoid, tanh, ...) gets the *Rescale* multiplier
      ``dy / dz = (f(z) - f(z')) / (z - z')``, or f'(z) where ``|z - z'| < eps``;
    * with ``rule="reveal_cancel"`` a nonlinearity that directly follows a linear layer splits that layer's
      difference into its positive and negative terms ``dz+`` and ``dz-`` (the sums of ``w_i dx_i`` over the
      terms of each sign) and gives each its own multiplier, ``m+ = dy+ / dz+`` and ``m- = dy- / dz-`` with
      ``dy+ = (f(z'+dz+) - f(z') + f(z'+dz-+dz+) - f(z'+dz-)) / 2`` and ``dy-`` likewise (*RevealCancel*);
      ``"reveal_cancel_dense"`` does so only after ``nn.Linear`` layers and uses Rescale after convolutions
      (the paper's "fc-RC-conv-RS" recipe); other nonlinearities get Rescale;
    * max pooling keeps its gradient as multiplier (1 for the position of the input's maximum in each
      window, 0 elsewhere): the default ``MaxPoolDeepLiftMode.gradient`` of the authors' code, and what
      ``captum.attr.DeepLift`` computes in our tests.

    The multipliers satisfy summation-to-delta, so ``C.sum()`` over an input is exactly
    ``f_target(x) - f_target(x')``, whenever every max-pooling window of the reference is constant (as for
    a reference that is the same at every position, like the background frequencies of DNA, fed through
    unpadded convolutions); with other references max pooling can break it, as in the authors' code. Implemented with forward hooks on the modules of ``model`` (which must
    each be called once per forward pass, as with captum's ``DeepLift``): the inputs and the references go
    through the network as one batch, each hooked nonlinearity returns its true output whose derivative is the
    DeepLIFT multiplier, and one backward pass gives ``m``. Put the model in eval mode first.
    Returns C, of the shape of x.
    """
    check_choice("rule", rule, DEEPLIFT_RULES)
    check_positive("eps", eps)
    target = _targets(target, len(x), x.device)
    ref = _baseline_like(baseline, x)
    B = len(x)
    split = {}  # id(linear output) -> (that output, dz+, dz-), for RevealCancel

    def linear_hook(module, inputs, output):
        if rule == "rescale" or (rule == "reveal_cancel_dense" and not isinstance(module, nn.Linear)):
            return None
        d = inputs[0][:B] - inputs[0][B:].detach()
        pos, neg = d.clamp(min=0), d.clamp(max=0)
        wp, wn = module.weight.detach().clamp(min=0), module.weight.detach().clamp(max=0)
        dz_pos = _linear_part(module, pos, wp) + _linear_part(module, neg, wn)
        dz_neg = _linear_part(module, pos, wn) + _linear_part(module, neg, wp)
        split[id(output)] = (output, dz_pos, dz_neg)
        return None

    def elementwise_hook(module, inputs, output):
        z = inputs[0]
        zx, zr = z[:B], z[B:].detach()
        yx, yr = output[:B], output[B:]
        f = module.forward
        entry = split.pop(id(z), None)
        reveal = entry is not None and entry[0] is z
        with torch.no_grad():
            dz = zx.detach() - zr
            m = torch.where(dz.abs() < eps, _derivative(f, zx), (yx.detach() - yr.detach()) / dz)
            if reveal:
                p, q = entry[1].detach(), entry[2].detach()
                dy_pos = 0.5 * (f(zr + p) - f(zr)) + 0.5 * (f(zr + q + p) - f(zr + q))
                dy_neg = 0.5 * (f(zr + q) - f(zr)) + 0.5 * (f(zr + p + q) - f(zr + p))
                m_pos = torch.where(p.abs() < eps, m, dy_pos / p)
                m_neg = torch.where(q.abs() < eps, m, dy_neg / q)
        if reveal:
            dzp, dzn = entry[1], entry[2]
            new = yx.detach() + m_pos * (dzp - dzp.detach()) + m_neg * (dzn - dzn.detach())
        else:
            new = yx.detach() + m * (zx - zx.detach())
        return torch.cat([new, yr])

    handles = []
    for mod in model.modules():
        if isinstance(mod, _DL_LINEAR):
            handles.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, _DL_ELEMENTWISE):
            handles.append(mod.register_forward_hook(elementwise_hook))
    try:
        both = torch.cat([x.detach(), ref]).requires_grad_(True)
        with torch.enable_grad():
            out = model(both)
            (g,) = torch.autograd.grad(out[:B].gather(1, target[:, None]).sum(), both)
    finally:
        for h in handles:
            h.remove()
        split.clear()
    return g[:B] * (x - ref)


def localization_auroc(scores: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per row, the AUROC of ``scores`` (n, L) at telling the positions in ``mask`` (n, L, bool) from the
    others: the probability that a random marked position scores higher than a random unmarked one, ties
    counting one half. NaN for a row with no marked or no unmarked position."""
    from scipy.stats import rankdata
    s = scores.detach().reshape(len(scores), -1).double().cpu().numpy()
    m = mask.reshape(len(mask), -1).cpu().numpy().astype(bool)
    if s.shape != m.shape:
        raise ValueError(f"scores and mask must have the same shape; got {s.shape} and {m.shape}.")
    ranks = rankdata(s, axis=1)
    pos = m.sum(1)
    neg = m.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_ = ((ranks * m).sum(1) - pos * (pos + 1) / 2) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), auc_, np.nan)


__all__ += ["gradient_x_input", "integrated_gradients", "deeplift", "DEEPLIFT_RULES", "localization_auroc"]
