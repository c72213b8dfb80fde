"""Width scaling of MLPs: the abc-parametrizations of Yang and Hu (2021), SP, NTK and muP.

An MLP with ``L`` hidden layers of width ``n`` has weight matrices W^1 (n x d_in), W^2..W^L (n x n)
and W^{L+1} (d_out x n). In an *abc-parametrization* (Tensor Programs IV, section 3) layer l is

    W^l = n^{-a_l} w^l,     w^l_ij ~ N(0, n^{-2 b_l}),     and SGD trains w^l with learning rate eta n^{-c_l},

so the three exponents say how the multiplier, the initialization and the learning rate of each layer
scale with the width. The named parametrizations (Yang and Hu's Table 1, with one ``c`` for all layers):

    ======  ===========================  ==========================  ====
    name    a_1, a_2..a_L, a_{L+1}         b_1, b_2..b_L, b_{L+1}       c
    ======  ===========================  ==========================  ====
    sp      0, 0, 0                        0, 1/2, 1/2                  0
    ntk     0, 1/2, 1/2                    0, 0, 0                      0
    mup     -1/2, 0, 1/2                   1/2, 1/2, 1/2                0
    ======  ===========================  ==========================  ====

As in muTransfer (Tensor Programs V), widths are measured relative to a *base width* n_0: every
``n`` above is ``n / n_0``, and the constants are chosen so that at ``n = n_0`` all parametrizations
are the same network (weights N(0, gain / fan_in), multiplier 1) trained with the same learning
rate. They differ only in how they scale away from it.

:class:`AbcMLP` holds ``members`` such networks with stacked weights (shape (members, fan_out, fan_in)),
run as batched matrix products; :class:`AbcSGD` trains them with one learning rate per member, so a
learning-rate sweep at one width is one job. :func:`coord_size` is the coordinate-check statistic
(root mean square of a vector's coordinates), and :func:`loglog_slope` fits its power law in the width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.params import ParameterError, check_choice, check_positive

PARAMETRIZATIONS = ("sp", "ntk", "mup")
LONG_NAMES = {"sp": "standard (SP)", "ntk": "neural tangent (NTK)", "mup": "maximal update (muP)"}
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


@dataclass(frozen=True)
class Parametrization:
    """Per-layer exponents (a_l, b_l, c_l) for layers 1..L+1 (L hidden layers, then the readout)."""

    name: str
    a: tuple
    b: tuple
    c: tuple
    optimizer: str = "sgd"

    @property
    def n_layers(self) -> int:
        return len(self.a)

    @property
    def r(self) -> float:
        """Yang and Hu's r (Definition 3.2): after training, hidden features move by Theta(n^{-r}).

        r = min(a_{L+1} + b_{L+1}, 2 a_{L+1} + c) + c - 1 + min_{l <= L} (2 a_l + [l = 1]).
        r < 0: unstable (blows up with width), r = 0: feature learning, r > 0: kernel regime.
        Defined for one learning-rate exponent c shared by all layers.
        """
        if self.optimizer != "sgd" or len(set(self.c)) != 1:
            raise ValueError("r is defined for SGD with one learning-rate exponent c shared by all layers.")
        c = self.c[0]
        a_out, b_out = self.a[-1], self.b[-1]
        hidden = min(2 * a + (1 if l == 0 else 0) for l, a in enumerate(self.a[:-1]))
        return min(a_out + b_out, 2 * a_out + c) + c - 1 + hidden

    @property
    def stable_at_init(self) -> bool:
        """a_1 + b_1 = 0, a_l + b_l = 1/2 for hidden l >= 2, a_{L+1} + b_{L+1} >= 1/2 (Theorem 3.3)."""
        s = [a + b for a, b in zip(self.a, self.b)]
        return math.isclose(s[0], 0.0, abs_tol=1e-12) and all(math.isclose(v, 0.5) for v in s[1:-1]) and s[-1] >= 0.5 - 1e-12

    @property
    def regime(self) -> str:
        if not self.stable_at_init:
            return "unstable at initialization"
        if self.optimizer != "sgd" or len(set(self.c)) != 1:
            return "n/a (per-layer or Adam learning rates)"
        r = self.r
        if r < -1e-12:
            return "unstable (blows up with width)"
        return "feature learning" if abs(r) < 1e-12 else "kernel regime"


def abc(name: str, n_hidden: int = 2, c: float | None = None, optimizer: str = "sgd") -> Parametrization:
    """The exponents of ``name`` ("sp", "ntk" or "mup") for an MLP with ``n_hidden`` hidden layers.

    ``c`` overrides the learning-rate exponent of every layer (``abc("sp", c=1)`` is SP with a learning
    rate proportional to 1/width, the stable choice for SP, which then lands in the kernel regime).

    ``optimizer="adam"`` gives the learning-rate exponents for Adam, whose update of a raw weight has a
    size set by the learning rate alone, not by the gradient: c_l is chosen so that the effective weights
    move by as much, in powers of the width, as they do under SGD in the same parametrization
    (Yang et al. 2022, Table 3: for muP, input layer eta, hidden and readout layers eta / width in the
    fan-in form). SP keeps one learning rate for all layers (c = 0), as PyTorch's default does.
    """
    check_choice("parametrization", name, PARAMETRIZATIONS)
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    check_positive("n_hidden", n_hidden, integer=True)
    L = n_hidden
    if name == "sp":
        a, b = [0.0] * (L + 1), [0.0] + [0.5] * L
    elif name == "ntk":
        a, b = [0.0] + [0.5] * L, [0.0] * (L + 1)
    else:
        a, b = [-0.5] + [0.0] * (L - 1) + [0.5], [0.5] * (L + 1)
    if c is not None:
        cs, label = (float(c),) * (L + 1), f"{name} (c={float(c):g})"
    elif optimizer == "adam" and name != "sp":
        cs, label = (0.5,) + (1.0,) * (L - 1) + (0.5,), name
    else:
        cs, label = (0.0,) * (L + 1), name
    return Parametrization(label, tuple(a), tuple(b), cs, optimizer)


def exponent_table(n_hidden: int = 2) -> pd.DataFrame:
    """The table of exponents, one row per (parametrization, layer), with r and the regime."""
    rows = []
    for name in PARAMETRIZATIONS:
        p = abc(name, n_hidden)
        for l in range(p.n_layers):
            kind = "input" if l == 0 else ("readout" if l == p.n_layers - 1 else "hidden")
            rows.append({"parametrization": name, "layer": f"W{l + 1} ({kind})", "a": p.a[l], "b": p.b[l],
                         "c": p.c[l], "r": p.r, "regime": p.regime})
    return pd.DataFrame(rows)


class AbcMLP(nn.Module):
    """``members`` MLPs d_in -> width (x n_hidden) -> d_out, no biases, in one abc-parametrization.

    Layer l computes ``h^l = m_l x^{l-1} (w^l)^T`` with multiplier ``m_l = (n / n_0)^{-a_l}`` and raw
    weights ``w^l ~ N(0, sigma_l^2 (n / n_0)^{-2 b_l})``, where n_0 is ``base_width`` and
    sigma_1^2 = gain / d_in, sigma_l^2 = gain / n_0 (hidden), sigma_{L+1}^2 = readout_gain / n_0.
    At ``width == base_width`` every parametrization is the same network. ``lr_scales[l]`` is
    ``(n / n_0)^{-c_l}``, the factor :class:`AbcSGD` applies to the learning rate of layer l.

    The raw weights are ``weights[l]`` of shape (members, fan_out, fan_in). ``draws`` independent
    initializations are made (from ``generator``, on the CPU, so that they do not depend on the device)
    and member i gets draw ``i // (members // draws)``: with ``draws=1`` all members start from the same
    weights (a learning-rate sweep); with ``draws=members`` each has its own (seeds). The standard normal
    numbers behind a draw are the same for every parametrization, so two parametrizations with the
    same generator seed differ only by their exponents.
    """

    def __init__(self, d_in: int, width: int, n_hidden: int, d_out: int, parametrization="mup", base_width: int = 64,
                 members: int = 1, draws: int | None = None, act: str = "relu", gain: float = 2.0,
                 readout_gain: float = 1.0, input_mult: float = 1.0, output_mult: float = 1.0,
                 generator: torch.Generator | None = None, device=None):
        super().__init__()
        for name, v in (("d_in", d_in), ("width", width), ("n_hidden", n_hidden), ("d_out", d_out),
                        ("base_width", base_width), ("members", members)):
            check_positive(name, v, integer=True)
        check_choice("act", act, ACTIVATIONS)
        check_positive("gain", gain)
        check_positive("readout_gain", readout_gain, allow_zero=True)
        check_positive("input_mult", input_mult)
        check_positive("output_mult", output_mult)
        draws = members if draws is None else draws
        check_positive("draws", draws, integer=True)
        if members % draws:
            raise ParameterError(f"members must be a multiple of draws; got members={members}, draws={draws}.")
        p = abc(parametrization, n_hidden) if isinstance(parametrization, str) else parametrization
        if p.n_layers != n_hidden + 1:
            raise ParameterError(f"parametrization has {p.n_layers} layers; the network has {n_hidden + 1}.")
        self.p, self.width, self.base_width, self.members = p, width, base_width, members
        self.act = ACTIVATIONS[act]
        ratio = width / base_width
        dims = [d_in] + [width] * n_hidden + [d_out]
        sigma2 = [gain / d_in] + [gain / base_width] * (n_hidden - 1) + [readout_gain / base_width]
        consts = [input_mult] + [1.0] * (n_hidden - 1) + [output_mult]
        self.multipliers = [k * ratio ** -a for k, a in zip(consts, p.a)]
        self.lr_scales = [ratio ** -c for c in p.c]
        self.init_stds = [math.sqrt(s2) * ratio ** -b for s2, b in zip(sigma2, p.b)]
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        weights = []
        for l, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            z = torch.randn(draws, fan_out, fan_in, generator=gen) * self.init_stds[l]
            w = z.repeat_interleave(members // draws, dim=0)
            weights.append(nn.Parameter(w.to(device)))
        self.weights = nn.ParameterList(weights)

    @property
    def effective_stds(self) -> list:
        """The standard deviation of the entries of the effective weights m_l w^l at initialization."""
        return [m * s for m, s in zip(self.multipliers, self.init_stds)]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """``x`` of shape (batch, d_in), shared by all members, or (members, batch, d_in). Returns the
        outputs (members, batch, d_out) and, with ``return_features``, the list of preactivations
        h^1..h^L (members, batch, width) followed by the outputs."""
        if x.dim() not in (2, 3):
            raise ValueError(f"x must have shape (batch, d_in) or (members, batch, d_in); got {tuple(x.shape)}.")
        h, feats = x, []
        n = len(self.weights)
        for l, (w, m) in enumerate(zip(self.weights, self.multipliers)):
            inp = h if l == 0 else self.act(h)
            h = torch.matmul(inp, w.transpose(1, 2))
            if m != 1.0:
                h = h * m
            if return_features and l < n - 1:
                feats.append(h)
        return (h, feats + [h]) if return_features else h


class AbcSGD:
    """SGD (with optional momentum) for an :class:`AbcMLP`, one learning rate per member.

    Member i's layer l moves by ``lrs[i] * model.lr_scales[l]`` times the (momentum-averaged) gradient
    of its raw weights, as ``torch.optim.SGD`` would with that learning rate.
    """

    def __init__(self, model: AbcMLP, lrs, momentum: float = 0.0):
        w0 = model.weights[0]
        lrs = torch.as_tensor(lrs, dtype=w0.dtype, device=w0.device).flatten()
        if lrs.numel() == 1:
            lrs = lrs.expand(model.members).clone()
        if lrs.numel() != model.members:
            raise ParameterError(f"lrs must hold one learning rate or one per member ({model.members}); "
                                 f"got {lrs.numel()}.")
        if not (0 <= momentum < 1):
            raise ParameterError(f"momentum must be a number in [0, 1); got {momentum!r}.")
        self.model, self.lrs, self.momentum = model, lrs, momentum
        self.buffers = [None] * len(model.weights)

    @torch.no_grad()
    def step(self):
        for l, (w, s) in enumerate(zip(self.model.weights, self.model.lr_scales)):
            if w.grad is None:
                continue
            g = w.grad
            if self.momentum:
                if self.buffers[l] is None:
                    self.buffers[l] = g.clone()
                else:
                    self.buffers[l].mul_(self.momentum).add_(g)
                g = self.buffers[l]
            w.sub_(g * (self.lrs * s).view(-1, 1, 1))

    def zero_grad(self):
        for w in self.model.weights:
            w.grad = None

    @torch.no_grad()
    def freeze(self, members: torch.Tensor):
        """Stop the members marked in the boolean vector ``members`` (diverged runs): learning rate 0,
        weights and momentum zeroed, so they cost nothing and produce no NaNs."""
        self.lrs[members] = 0.0
        for l, w in enumerate(self.model.weights):
            w[members] = 0.0
            if self.buffers[l] is not None:
                self.buffers[l][members] = 0.0


class AbcAdam(AbcSGD):
    """Adam for an :class:`AbcMLP`, one learning rate per member, scaled per layer by ``model.lr_scales``
    (use a parametrization made with ``abc(..., optimizer="adam")``). Same update as ``torch.optim.Adam``."""

    def __init__(self, model: AbcMLP, lrs, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(model, lrs, 0.0)
        self.betas, self.eps, self.t = betas, eps, 0
        self.m = [torch.zeros_like(w) for w in model.weights]
        self.v = [torch.zeros_like(w) for w in model.weights]

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for l, (w, s) in enumerate(zip(self.model.weights, self.model.lr_scales)):
            if w.grad is None:
                continue
            self.m[l].mul_(b1).add_(w.grad, alpha=1 - b1)
            self.v[l].mul_(b2).addcmul_(w.grad, w.grad, value=1 - b2)
            denom = (self.v[l] / c2).sqrt_().add_(self.eps)
            w.sub_((self.m[l] / c1) / denom * (self.lrs * s).view(-1, 1, 1))

    @torch.no_grad()
    def freeze(self, members: torch.Tensor):
        super().freeze(members)
        for t in self.m + self.v:
            t[members] = 0.0


def member_loss(out: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Mean loss of each member: ``out`` (members, batch, classes), ``y`` (batch,) -> (members,).

    ``"ce"``: cross-entropy; ``"mse"``: mean squared error against the centred one-hot labels
    (one-hot minus 1/classes), averaged over examples and classes, as in the muP repository's MLP example.
    """
    E, B, k = out.shape
    if loss == "mse":
        target = F.one_hot(y, k).to(out.dtype) - 1.0 / k
        return (out - target).pow(2).mean((1, 2))
    return F.cross_entropy(out.reshape(E * B, k), y.repeat(E), reduction="none").view(E, B).mean(1)


def train_members(model: AbcMLP, x: torch.Tensor, y: torch.Tensor, lrs, *, steps: int, batch_size: int = 64,
                  momentum: float = 0.0, optimizer: str | None = None, loss: str = "ce",
                  generator: torch.Generator | None = None, probe: torch.Tensor | None = None,
                  probe_every: int = 0, progress: bool = True, desc: str = "training") -> dict:
    """Train all members of ``model`` with SGD, member i at learning rate ``lrs[i]``, on minibatches of
    (x, y) drawn without replacement in shuffled epochs (the same batches for every member).
    ``optimizer`` is "sgd" (with ``momentum``) or "adam"; by default the one the model's parametrization
    was made for. ``loss`` is "ce" or "mse" (:func:`member_loss`).

    A member whose loss becomes non-finite is marked diverged and frozen (:meth:`AbcSGD.freeze`).
    Returns ``loss`` (steps, members) on CPU, the minibatch loss before each step (NaN once diverged),
    ``diverged`` (members,) and, with ``probe`` and ``probe_every``, ``features``: a list of
    (step, [h^1, ..., outputs]) taken on the probe inputs at step 0 and every ``probe_every`` steps.
    """
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    optimizer = optimizer or model.p.optimizer
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    check_choice("loss", loss, ("ce", "mse"))
    opt = AbcSGD(model, lrs, momentum) if optimizer == "sgd" else AbcAdam(model, lrs)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    n = len(x)
    losses = torch.empty(steps, model.members)
    diverged = torch.zeros(model.members, dtype=torch.bool, device=x.device)
    features = []

    def snapshot(step):
        with torch.no_grad():
            _, f = model(probe, return_features=True)
        features.append((step, [t.detach().clone() for t in f]))

    if probe is not None and probe_every:
        snapshot(0)
    perm, pos = torch.randperm(n, generator=gen), 0
    for step in tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + batch_size].to(x.device)
        pos += batch_size
        value = member_loss(model(x[idx]), y[idx], loss)
        bad = ~torch.isfinite(value.detach())
        opt.zero_grad()
        torch.where(bad, torch.zeros_like(value), value).sum().backward()
        if bool(bad.any()):
            diverged |= bad
            for w in model.weights:
                w.grad[diverged] = 0.0
            opt.freeze(diverged)
        opt.step()
        losses[step] = torch.where(diverged, torch.full_like(value, float("nan")), value.detach()).cpu()
        if probe is not None and probe_every and (step + 1) % probe_every == 0:
            snapshot(step + 1)
    return {"loss": losses, "diverged": diverged.cpu(), "features": features}


def coord_size(t: torch.Tensor, dim=None) -> torch.Tensor:
    """The coordinate-check statistic: the root mean square of the coordinates of ``t`` (over ``dim``,
    all of them by default), the typical size of one coordinate, whatever the number of coordinates."""
    return t.pow(2).mean(dim=dim).sqrt() if dim is not None else t.pow(2).mean().sqrt()


def coordinate_check(x: torch.Tensor, y: torch.Tensor, probe: torch.Tensor, widths: Sequence[int], parametrizations,
                     *, lr: float, steps: int = 3, n_hidden: int = 2, base_width: int = 64, seeds: int = 2,
                     batch_size: int = 64, seed: int = 0, act: str = "relu", progress: bool = True) -> pd.DataFrame:
    """Yang and Hu's test of a parametrization: train for a few SGD steps at every width and measure how
    far each layer's preactivations on the ``probe`` inputs have moved.

    ``parametrizations`` are names or :class:`Parametrization` objects. All widths and parametrizations
    see the same minibatches, and the same standard-normal draws per (width, seed). Returns one row per
    (parametrization, width, seed, step, layer) with ``delta`` = coord_size(h_t - h_0) and
    ``size`` = coord_size(h_t) (layers ``h1``..``hL`` and ``out``).
    """
    for w in widths:
        check_positive("widths", w, integer=True)
    check_positive("steps", steps, integer=True)
    check_positive("seeds", seeds, integer=True)
    params = [abc(p, n_hidden) if isinstance(p, str) else p for p in parametrizations]
    rows = []
    jobs = [(w, p) for w in widths for p in params]
    for width, p in tqdm(jobs, desc="coordinate check", disable=not progress):
        model = AbcMLP(x.shape[1], width, n_hidden, int(y.max()) + 1, p, base_width, members=seeds, act=act,
                       generator=torch.Generator().manual_seed(seed * 100_003 + width), device=x.device)
        res = train_members(model, x, y, lr, steps=steps, batch_size=batch_size, probe=probe, probe_every=1,
                            generator=torch.Generator().manual_seed(seed), progress=False)
        names = [f"h{l + 1}" for l in range(n_hidden)] + ["out"]
        (_, f0) = res["features"][0]
        for step, f in res["features"]:
            for name, h, h0 in zip(names, f, f0):
                delta = coord_size(h - h0, dim=(1, 2)).cpu().numpy()
                size = coord_size(h, dim=(1, 2)).cpu().numpy()
                for s in range(seeds):
                    rows.append({"parametrization": p.name, "width": width, "seed": s, "step": step, "layer": name,
                                 "delta": float(delta[s]), "size": float(size[s])})
    return pd.DataFrame(rows)


def loglog_slope(widths, values) -> float:
    """Least-squares slope of log(values) against log(widths): the exponent p of values ~ width^p."""
    w, v = np.asarray(widths, dtype=float), np.asarray(values, dtype=float)
    if len(w) < 2 or np.any(w <= 0) or np.any(v <= 0):
        raise ValueError("loglog_slope needs at least two positive widths and positive values.")
    return float(np.polyfit(np.log(w), np.log(v), 1)[0])
