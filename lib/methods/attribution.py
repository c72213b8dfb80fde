"""Attribution (saliency) methods for image classifiers, and the metrics that score them.

Every method takes a model that maps images ``x`` of shape (B, C, H, W) to class logits (B, K), a
batch of images and the class to explain for each (``target``: an int or a (B,) tensor), and returns
one saliency map per image, shape (B, H, W), larger meaning more important.

These are the standard baselines chapters compare a paper's method with; RISE lives in
:mod:`repro.papers.rise` and DeepLIFT in :mod:`repro.papers.deeplift`.

Methods
    * :func:`gradient_saliency`: the input gradient of the class logit (Simonyan et al., 2014).
    * :func:`occlusion_saliency`: sliding-window occlusion (Zeiler and Fergus, 2014).
    * :func:`grad_cam`: Grad-CAM (Selvaraju et al., 2017) at a chosen convolutional layer.

Metrics
    * :func:`deletion_insertion_auc`: RISE's causal metrics: remove (deletion) or insert (insertion)
      pixels in order of saliency and take the area under the class-probability curve.
    * :func:`pointing_game`: localization against a known evidence box.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.params import ParameterError, check_choice, check_positive

__all__ = ["target_classes", "check_images", "target_scores", "baseline_like", "gradient_saliency", "occlusion_saliency",
           "grad_cam", "gaussian_blur", "auc", "deletion_insertion_curves", "deletion_insertion_auc", "pointing_game",
           "gradient_x_input", "integrated_gradients"]


def target_classes(target, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long, device=device)
    return t.expand(n).clone() if t.dim() == 0 else t


def check_images(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images of shape (B, C, H, W); got shape {tuple(x.shape)}.")


def target_scores(model: Callable, x: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """The explained score of each input: softmax probability ("prob") or logit ("logit") of its target."""
    out = model(x)
    if output == "prob":
        out = out.softmax(-1)
    return out.gather(1, target[:, None])[:, 0]


# --------------------------------------------------------------------------------------------- RISE


# --------------------------------------------------------------------------------- white-box baselines

def gradient_saliency(model: Callable, x: torch.Tensor, target, absolute: bool = True) -> torch.Tensor:
    """Gradient of the target's logit with respect to the input (Simonyan et al., 2014), shape (B, H, W).

    With ``absolute`` (the paper's choice, and captum's ``Saliency`` default) the map is the largest
    absolute gradient over the channels; otherwise the signed gradient summed over channels.
    """
    check_images(x)
    target = target_classes(target, len(x), x.device)
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
    check_images(x)
    check_choice("output", output, ("prob", "logit"))
    check_positive("window", window, integer=True)
    check_positive("stride", stride, integer=True)
    B, C, H, W = x.shape
    if window > min(H, W) or stride > window:
        raise ParameterError(f"window must be at most the image side ({min(H, W)}) and stride at most window; "
                             f"got window={window}, stride={stride}.")
    target = target_classes(target, B, x.device)
    ys = [k * stride for k in range(math.ceil((H - window) / stride) + 1)]
    xs = [k * stride for k in range(math.ceil((W - window) / stride) + 1)]
    patches = torch.zeros(len(ys) * len(xs), H, W, device=x.device, dtype=x.dtype)
    for i, (r, c) in enumerate((r, c) for r in ys for c in xs):
        patches[i, r:r + window, c:c + window] = 1.0
    count = patches.sum(0)
    P = len(patches)
    base = target_scores(model, x, target, output)
    sal = torch.zeros(B, H, W, device=x.device, dtype=x.dtype)
    for b in range(B):
        drops = []
        for j in range(0, P, batch_size):
            m = patches[j:j + batch_size, None]                         # (k, 1, H, W)
            occluded = x[b] * (1 - m) + baseline * m
            drops.append(base[b] - target_scores(model, occluded, target[b].expand(len(m)), output))
        sal[b] = torch.einsum("p,phw->hw", torch.cat(drops), patches) / count
    return sal


def grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target, upsample: bool = True,
             relu: bool = True) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017): ``ReLU(sum_k a_k A^k)`` with ``a_k`` the spatial mean of the
    gradient of the target's logit with respect to the feature map ``A^k`` of ``layer``.

    Returns (B, H, W) upsampled bilinearly to the input size (``upsample``), else (B, h, w) at the
    layer's resolution.
    """
    check_images(x)
    target = target_classes(target, len(x), x.device)
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
    check_images(x)
    check_choice("mode", mode, ("deletion", "insertion"))
    check_positive("steps", steps, integer=True)
    B, C, H, W = x.shape
    if saliency.shape != (B, H, W):
        raise ValueError(f"saliency must have shape {(B, H, W)}; got {tuple(saliency.shape)}.")
    target = target_classes(target, B, x.device)
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
        s = target_scores(model, states.flatten(0, 1), target[sl].repeat_interleave(steps + 1), "prob")
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


# ------------------------------------------------------------------------- a task with known evidence


# ----------------------------------------------- DeepLIFT and the gradient family, for inputs of any shape
#
# These return attributions of the input's own shape (for one-hot DNA (B, 4, L): one score per base and
# position), and explain the target's *logit* (the paper explains the pre-sigmoid output). ``baseline`` (the
# reference input) is a tensor broadcastable to x, or a number.

def baseline_like(baseline, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x).detach()


def gradient_x_input(model: Callable, x: torch.Tensor, target, baseline=None) -> torch.Tensor:
    """Gradient times input (Shrikumar et al., 2016): ``(x - baseline) * d f_target / dx``, taken at x;
    ``baseline`` None means 0, the usual definition."""
    target = target_classes(target, len(x), x.device)
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(model(xg).gather(1, target[:, None]).sum(), xg)
    return g * (x if baseline is None else x - baseline_like(baseline, x))


def integrated_gradients(model: Callable, x: torch.Tensor, baseline, target, steps: int = 50,
                         batch_size: int = 4096) -> torch.Tensor:
    """Integrated gradients (Sundararajan, Taly and Yan, 2017), by the midpoint rule:
    ``(x - x') * (1/steps) sum_k grad f(x' + a_k (x - x'))`` with ``a_k = (k + 1/2) / steps`` (captum's
    ``riemann_middle``). The points along the path are evaluated about ``batch_size`` at a time."""
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    target = target_classes(target, len(x), x.device)
    ref = baseline_like(baseline, x)
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
