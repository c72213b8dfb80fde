"""The linear-interpolation chapter (Goodfellow, Vinyals and Saxe, 2015, "Qualitatively characterizing
neural network optimization problems"): the loss along the straight line
from the initialization to the trained weights.

Models beyond the shared families (:class:`MaxoutMLP`, :class:`LSTMClassifier`), the initial weights
of a stack of seeded models, the two measures of non-monotonicity (:func:`monotonicity_gap`, the
largest rise of the loss along the path, and :func:`barrier_height`), and the projection of a
training trajectory onto the interpolation line (:func:`trajectory_coordinates`, from snapshots
kept by :func:`train_with_snapshots`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.params import check_positive
from ..methods.landscape import Params, weights_of
from ..nn.ensemble import Ensemble
from ..nn.train import train


class MaxoutMLP(nn.Module):
    """A fully connected maxout network (Goodfellow et al., 2013): each hidden unit is the maximum of
    ``pieces`` affine functions of the layer's input, h_j = max_k (W x + b)_{j,k}; ``depth`` hidden layers
    of ``width`` units, then a linear output layer. Inputs are flattened. Parameters keep torch's
    default initialization (seed first)."""

    def __init__(self, d_in: int, width: int, depth: int, d_out: int, pieces: int = 3):
        super().__init__()
        for name, v in (("d_in", d_in), ("width", width), ("depth", depth), ("d_out", d_out), ("pieces", pieces)):
            check_positive(name, v, integer=True)
        dims = [d_in] + [width] * depth
        self.pieces = pieces
        self.hidden = nn.ModuleList(nn.Linear(a, b * pieces) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(width, d_out)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            z = layer(x)  # units are contiguous blocks of `pieces` outputs
            x = z.view(*z.shape[:-1], -1, self.pieces).amax(-1)
        return self.out(x)


class LSTMClassifier(nn.Module):
    """A one-layer LSTM that reads a sequence and classifies it from its last hidden state.

    The input (batch, length * d_in) or (batch, length, d_in) is read ``chunk`` time steps at a time
    (each step sees ``chunk * d_in`` numbers), so a length-40 signal with ``chunk=4`` is 10 steps. The
    cell is written out (the gate order i, f, g, o and the equations of ``torch.nn.LSTM``, one bias),
    so that it runs under ``torch.func.vmap`` (``train_ensemble``, ``landscape.evaluate_stacked``),
    which ``nn.LSTM`` does not."""

    def __init__(self, d_in: int, hidden: int, d_out: int, chunk: int = 1):
        super().__init__()
        for name, v in (("d_in", d_in), ("hidden", hidden), ("d_out", d_out), ("chunk", chunk)):
            check_positive(name, v, integer=True)
        self.hidden_size, self.step_in = hidden, d_in * chunk
        self.ih = nn.Linear(self.step_in, 4 * hidden)
        self.hh = nn.Linear(hidden, 4 * hidden, bias=False)
        self.out = nn.Linear(hidden, d_out)

    def forward(self, x):
        B = x.shape[0]
        if x.reshape(B, -1).shape[1] % self.step_in:
            raise ValueError(f"the input length must be a multiple of chunk * d_in = {self.step_in}; "
                             f"got {x.reshape(B, -1).shape[1]}.")
        gx = self.ih(x.reshape(B, -1, self.step_in))  # (B, T, 4H): the input's share of every gate at once
        H = self.hidden_size
        h = gx.new_zeros(B, H)
        c = gx.new_zeros(B, H)
        for t in range(gx.shape[1]):
            gates = gx[:, t] + self.hh(h)
            s = torch.sigmoid(gates)
            c = s[:, H:2 * H] * c + s[:, :H] * torch.tanh(gates[:, 2 * H:3 * H])
            h = s[:, 3 * H:] * torch.tanh(c)
        return self.out(h)




def initial_weights(build, seeds, device=None) -> dict:
    """The stacked initial parameters (name -> (N, *shape)) of the models ``train_ensemble(build, seeds, ...)``
    starts from: model i is ``build()`` right after ``torch.manual_seed(seeds[i])``. Together with the
    trained ``Ensemble.params`` they are the two ends of every member's straight path; :func:`interpolate`
    takes such stacked dicts as they are and returns (len(alphas), N, *shape)."""
    return {k: v.detach() for k, v in Ensemble.from_seeds(build, seeds, device).params.items()}


def _window(alphas, losses, lo: float, hi: float):
    a = np.asarray(alphas, dtype=np.float64)
    f = np.asarray(losses, dtype=np.float64)
    if f.shape[-1] != len(a):
        raise ValueError(f"losses must end in an axis of len(alphas) = {len(a)}; got shape {f.shape}.")
    keep = (a >= lo - 1e-9) & (a <= hi + 1e-9)
    if keep.sum() < 2:
        raise ValueError(f"need at least two alphas within [{lo}, {hi}].")
    return a[keep], f[..., keep]


def monotonicity_gap(alphas, losses, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """The largest rise of a 1-D loss curve over its running minimum, for alpha in [lo, hi]:

        max over alpha of  L(alpha) - min_{lo <= alpha' <= alpha} L(alpha').

    Zero exactly when the curve never goes up (is non-increasing) on the window; otherwise the height of
    the highest bump met on the way. ``losses`` may have leading axes (one curve per row); the last axis
    runs over ``alphas``. Returns an array of the leading shape (a float for one curve)."""
    _, f = _window(alphas, losses, lo, hi)
    return (f - np.minimum.accumulate(f, axis=-1)).max(-1)


def barrier_height(alphas, losses) -> np.ndarray:
    """The loss barrier on the segment between two points, alpha in [0, 1] (both ends must be sampled):

        max over alpha of  L(alpha) - [(1 - alpha) L(0) + alpha L(1)],

    the rise above the straight chord between the end losses (zero when the curve is convex or lies
    below its chord). Leading axes of ``losses`` are kept, as in :func:`monotonicity_gap`."""
    a, f = _window(alphas, losses, 0.0, 1.0)
    if abs(a[0]) > 1e-9 or abs(a[-1] - 1) > 1e-9:
        raise ValueError("barrier_height needs the losses at alpha = 0 and alpha = 1.")
    chord = (1 - a) * f[..., :1] + a * f[..., -1:]
    return (f - chord).max(-1)


def trajectory_coordinates(snapshots: Params, start: Params, end: Params) -> dict:
    """Coordinates of a training trajectory relative to the straight line from ``start`` to ``end``.

    ``snapshots`` maps names to (T, *shape) (parameters at T moments of training); ``start`` and ``end``
    map the same names to (*shape). With u = end - start and the residual r_t = theta_t - start - alpha_t u
    orthogonal to u, returns numpy arrays

    * ``alpha``: alpha_t = <theta_t - start, u> / |u|^2 (0 at start, 1 at end),
    * ``beta``: |r_t| / |u|, the distance from the line in units of its length,
    * ``beta_v``: <r_t, v> / |u|^2, the coordinate along ``direction`` below,

    and ``direction``: v, the residual at the snapshot farthest from the line rescaled to length |u|
    (name -> tensor), so that start + a u + b v for a grid of (a, b) is the plane through the line that
    holds the trajectory's widest excursion (``loss_along`` with directions (u, v) evaluates it), and
    ``u`` (name -> tensor). Inner products are taken in float64 over all named tensors."""
    names = list(start)
    if set(snapshots) != set(names) or set(end) != set(names):
        raise ValueError("snapshots, start and end must name the same tensors.")
    T = next(iter(snapshots.values())).shape[0]
    s = torch.cat([start[k].detach().double().reshape(-1) for k in names])
    e = torch.cat([end[k].detach().double().reshape(-1) for k in names])
    th = torch.cat([snapshots[k].detach().double().reshape(T, -1) for k in names], dim=1)
    u = e - s
    uu = u.dot(u)
    if uu == 0:
        raise ValueError("start and end coincide: the line is not defined.")
    d = th - s
    alpha = d @ u / uu
    r = d - alpha[:, None] * u
    beta = r.norm(dim=1) / uu.sqrt()
    t_max = int(beta.argmax())
    v = r[t_max] / r[t_max].norm().clamp_min(1e-300) * uu.sqrt() if beta[t_max] > 0 else torch.zeros_like(u)
    beta_v = r @ v / uu

    def unflat(vec):
        out, i = {}, 0
        for k in names:
            n = start[k].numel()
            out[k] = vec[i:i + n].view(start[k].shape).to(start[k].dtype)
            i += n
        return out

    return {"alpha": alpha.cpu().numpy(), "beta": beta.cpu().numpy(), "beta_v": beta_v.cpu().numpy(),
            "direction": unflat(v), "u": unflat(u)}


def train_with_snapshots(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, every: int, **train_kwargs):
    """Train ``model`` with :func:`repro.nn.train.train` (same arguments, same result) and keep a copy of its
    parameters before the first step and every ``every`` steps (and after the last). Returns
    (history, snapshots) with snapshots name -> (T, *shape) on the model's device."""
    check_positive("every", every, integer=True)
    if train_kwargs.get("eval_every") not in (None, 0, every):
        raise ValueError("train_with_snapshots evaluates every `every` steps; leave eval_every out.")
    user_stop = train_kwargs.pop("stop_when", None)
    shots = [weights_of(model)]
    shots[0] = {k: v.clone() for k, v in shots[0].items()}

    def keep(row):
        shots.append({k: v.detach().clone() for k, v in model.named_parameters()})
        return bool(user_stop(row)) if user_stop is not None else False

    train_kwargs["eval_every"] = every
    history = train(model, x, y, stop_when=keep, **train_kwargs)
    return history, {k: torch.stack([s[k] for s in shots]) for k in shots[0]}
