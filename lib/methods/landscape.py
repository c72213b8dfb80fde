"""Loss landscapes: the loss along lines and planes through weight space, many points at once.

A slice is the loss along a line or a plane through weight space,

    f(alpha) = L(theta + alpha d)            (1-D)  and   f(alpha, beta) = L(theta + alpha d1 + beta d2)   (2-D),

or along the segment between two weight vectors, (1 - alpha) theta_a + alpha theta_b (:func:`interpolate`).
The directions themselves are the chapters' business (the filter-normalized random directions of Li et
al., 2018, are in :mod:`repro.papers.loss_landscape`).

Grid points are evaluated many at once: the parameters of a chunk of points are stacked and the model
runs on all of them with ``torch.func.functional_call`` under ``torch.vmap``. The model is evaluated in
eval mode (batch norm uses its running statistics, as in the paper's code).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = Mapping[str, torch.Tensor]


def weights_of(model: nn.Module) -> dict:
    """The model's parameters as a dict of detached tensors (name -> tensor)."""
    return {k: v.detach() for k, v in model.named_parameters()}


def interpolate(params_a: Params | nn.Module, params_b: Params | nn.Module, alphas) -> dict:
    """Stacked parameters along the line theta(alpha) = (1 - alpha) theta_a + alpha theta_b.

    ``params_a`` and ``params_b`` are dicts (name -> tensor; e.g. ``weights_of(model)`` or a state dict)
    or modules (their state dicts, so batch-norm running statistics are interpolated too). Returns
    name -> tensor of shape ``(len(alphas), *shape)``; integer tensors (counters) are copied from a.
    Evaluate it with :func:`evaluate_stacked`.
    """
    a = params_a.state_dict() if isinstance(params_a, nn.Module) else params_a
    b = params_b.state_dict() if isinstance(params_b, nn.Module) else params_b
    if set(a) != set(b):
        raise ValueError("params_a and params_b must name the same tensors.")
    out = {}
    for k, va in a.items():
        va = va.detach()
        al = torch.as_tensor(np.asarray(alphas, dtype=np.float64), device=va.device)
        if not va.is_floating_point():
            out[k] = va.expand(len(al), *va.shape).clone()
            continue
        al = al.to(va.dtype).view(-1, *([1] * va.dim()))
        out[k] = (1 - al) * va + al * b[k].detach().to(va.dtype)
    return out


def _fixed_state(model: nn.Module, params: Params) -> Params:
    """The model's parameters and buffers that ``params`` does not override, detached."""
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return {k: v.detach() for k, v in state.items() if k not in params}


def _loss_and_accuracy(loss_sum, correct, n: int, classify: bool) -> dict:
    """Sums over n examples to means; accuracy is NaN for regression targets."""
    acc = correct / n if classify else torch.full_like(loss_sum, float("nan"))
    return {"loss": loss_sum / n, "acc": acc}


@torch.no_grad()
def evaluate_stacked(model: nn.Module, params: Params, data, loss_fn=F.cross_entropy, batch_size: int = 2048,
                     points_per_call: int = 32) -> dict:
    """Mean loss and accuracy of the model at each of K stacked parameter sets.

    ``params`` maps names to tensors of shape ``(K, *shape)`` (any subset of the model's parameters and
    buffers; the rest are taken from the model). ``data`` is ``(x, y)``; ``loss_fn(output, target,
    reduction="none")`` is summed over everything but the example and averaged over examples. ``points_per_call``
    parameter sets and ``batch_size`` examples run in one vmapped call. Returns ``{"loss": (K,), "acc": (K,)}``
    as float64 CPU tensors (accuracy is NaN for float targets).
    """
    x, y = data
    K = next(iter(params.values())).shape[0]
    fixed = _fixed_state(model, params)
    was_training = model.training
    model.eval()

    def one(p, xb):
        return functional_call(model, ({**fixed, **p},), (xb,))

    run = torch.vmap(one, in_dims=(0, None))
    classify = not y.is_floating_point()
    loss = torch.zeros(K, dtype=torch.float64)
    correct = torch.zeros(K, dtype=torch.float64)
    try:
        for s in range(0, K, points_per_call):
            p = {k: v[s:s + points_per_call] for k, v in params.items()}
            k_here = next(iter(p.values())).shape[0]
            for i in range(0, len(x), batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                out = run(p, xb)  # (k, b, ...)
                yk = yb.expand(k_here, *yb.shape).flatten(0, 1)
                l = loss_fn(out.flatten(0, 1), yk, reduction="none").view(k_here, -1).sum(1)
                loss[s:s + k_here] += l.double().cpu()
                if classify:
                    correct[s:s + k_here] += (out.argmax(-1) == yb).sum(1).double().cpu()
    finally:
        model.train(was_training)
    return _loss_and_accuracy(loss, correct, len(x), classify)


def loss_along(model: nn.Module, directions, coords, data, loss_fn=F.cross_entropy, batch_size: int = 2048,
               points_per_call: int = 32, return_acc: bool = False):
    """The loss on a 1-D or 2-D slice through the model's parameters (the model's weights are the origin).

    ``directions``: one direction (name -> tensor) for a 1-D slice, or a pair for a 2-D slice.
    ``coords``: for 1-D, the step sizes alpha; for 2-D, a pair ``(alphas, betas)``: the grid is
    ``alphas x betas`` (first index alpha). Returns a numpy array of shape ``(len(alphas),)`` or
    ``(len(alphas), len(betas))``; with ``return_acc``, a pair (loss, accuracy).
    """
    if isinstance(directions, Mapping):
        directions, coords = [directions], [coords]
    directions = list(directions)
    if len(directions) not in (1, 2) or len(coords) != len(directions):
        raise ValueError("give one direction and one coordinate array (1-D), or two of each (2-D).")
    w = weights_of(model)
    axes = [np.asarray(c, dtype=np.float64) for c in coords]
    mesh = np.meshgrid(*axes, indexing="ij")
    shape = mesh[0].shape
    pts = [torch.as_tensor(m.ravel()) for m in mesh]
    names = sorted(set().union(*[d.keys() for d in directions]))
    K = len(pts[0])
    loss = np.zeros(K)
    acc = np.zeros(K)
    # build the stacked parameters chunk by chunk, so memory holds one chunk of points at a time
    chunk = max(points_per_call, 1) * 4
    for s in range(0, K, chunk):
        p = {}
        for k in names:
            v = w[k]
            stacked = v.expand(len(pts[0][s:s + chunk]), *v.shape).clone()
            for c, d in zip(pts, directions):
                if k in d:
                    cc = c[s:s + chunk].to(v.device, v.dtype).view(-1, *([1] * v.dim()))
                    stacked += cc * d[k].to(v.dtype)
            p[k] = stacked
        r = evaluate_stacked(model, p, data, loss_fn, batch_size, points_per_call)
        loss[s:s + chunk] = r["loss"].numpy()
        acc[s:s + chunk] = r["acc"].numpy()
    loss, acc = loss.reshape(shape), acc.reshape(shape)
    return (loss, acc) if return_acc else loss


# --------------------------------------------------------------------------------------------------
# The straight path from initialization to solution (Goodfellow, Vinyals and Saxe, 2015)
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_sequential(model: nn.Module, params: Params, data, loss_fn=F.cross_entropy,
                        batch_size: int = 4096) -> dict:
    """The same as :func:`evaluate_stacked` (mean loss and accuracy at each of K stacked parameter sets),
    one parameter set at a time without ``vmap``. On a CPU this is the faster choice for convolutions
    and for recurrent networks that loop over time, whose batched-weight rules cost more than they save."""
    x, y = data
    K = next(iter(params.values())).shape[0]
    fixed = _fixed_state(model, params)
    was_training = model.training
    model.eval()
    classify = not y.is_floating_point()
    loss = torch.zeros(K, dtype=torch.float64)
    correct = torch.zeros(K, dtype=torch.float64)
    try:
        for k in range(K):
            p = {**fixed, **{n: v[k] for n, v in params.items()}}
            for i in range(0, len(x), batch_size):
                out = functional_call(model, (p,), (x[i:i + batch_size],))
                yb = y[i:i + batch_size]
                loss[k] += loss_fn(out, yb, reduction="none").reshape(len(yb), -1).sum().double().cpu()
                if classify:
                    correct[k] += (out.argmax(-1) == yb).sum().double().cpu()
    finally:
        model.train(was_training)
    return _loss_and_accuracy(loss, correct, len(x), classify)
