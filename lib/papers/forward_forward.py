"""The Forward-Forward algorithm (Hinton, 2022): layer-local training with positive and negative data.

Each layer is trained on its own objective, with no gradient crossing from one layer into the one
below. A layer's *goodness* is the mean of its squared ReLU activities (the paper's sum of squares,
divided by the number of units so that one threshold ``theta`` serves every width). The layer is
trained so that goodness is above ``theta`` on *positive* data (an image with its correct label
embedded in the first pixels) and below it on *negative* data (the same image with a wrong label):

    loss = softplus(-(g_pos - theta)) + softplus(g_neg - theta)   (= -log p(positive), p = sigmoid(g - theta)).

Between layers the activity vector is normalized to unit root-mean-square (the paper's "layer
normalization": only its direction, not its length, is passed on, so a layer cannot read off the
goodness of the one below). A label is predicted by embedding every candidate label, running the
net, and picking the label with the largest goodness accumulated over the layers.

:class:`FFNet` holds N independent nets with stacked weights (shape (N, d_in, d_out)), so several
seeds train in one batched job, as ``repro.nn.ensemble.train_ensemble`` does for backprop.
"""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.params import check_positive


def embed_label(x: torch.Tensor, y: torch.Tensor, n_classes: int = 10, value: float | None = None) -> torch.Tensor:
    """Flattened copy of images ``x`` with the first ``n_classes`` pixels replaced by a one-hot code of
    ``y`` (``value`` at the label's pixel, 0 elsewhere; default: the largest pixel value of x).
    ``y`` may carry extra leading dimensions (N, batch) for x of shape (batch, ...): the result is then (N, batch, d)."""
    x = x.flatten(1)
    value = float(x.max()) if value is None else value
    out = x.expand(*y.shape, x.shape[-1]).clone()
    out[..., :n_classes] = 0.0
    out.scatter_(-1, y.long().unsqueeze(-1), value)
    return out


def extract_label(x: torch.Tensor, n_classes: int = 10) -> torch.Tensor:
    """The label embedded by :func:`embed_label` (argmax of the first ``n_classes`` pixels)."""
    return x[..., :n_classes].argmax(-1)


def wrong_labels(y: torch.Tensor, n_classes: int = 10, generator: torch.Generator | None = None,
                 n_models: int | None = None) -> torch.Tensor:
    """A uniformly drawn label different from ``y`` for every example (shape (n_models, len(y)) if given)."""
    shape = (n_models, len(y)) if n_models else tuple(y.shape)
    shift = torch.randint(1, n_classes, shape, generator=generator).to(y.device)
    return (y + shift) % n_classes


def goodness(h: torch.Tensor) -> torch.Tensor:
    """Goodness of a layer: the mean over units (last axis) of the squared activities."""
    return h.pow(2).mean(-1)


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float) -> torch.Tensor:
    """Forward-Forward loss, averaged over the last axis (examples): softplus(theta - g_pos) + softplus(g_neg - theta)."""
    return (F.softplus(theta - g_pos) + F.softplus(g_neg - theta)).mean(-1)


def rms_normalize(h: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide each activity vector (last axis) by its root-mean-square: the direction is kept, the goodness is removed."""
    return h / (h.pow(2).mean(-1, keepdim=True).sqrt() + eps)


class FFNet(nn.Module):
    """``n_models`` independent fully connected ReLU nets of layer sizes ``dims``, trained with Forward-Forward.

    Weights are (N, d_in, d_out), initialized like ``nn.Linear`` (uniform, bound 1/sqrt(fan-in)).
    Layer 1 sees the raw input (RMS-normalized with ``normalize_input``); layer k > 1 sees the RMS-normalized activities of layer k - 1,
    detached (``detach=True``) so that each layer's loss trains only that layer.
    """

    def __init__(self, dims: Sequence[int], n_models: int = 1, theta: float = 2.0, seed: int | None = None,
                 normalize_input: bool = False):
        super().__init__()
        self.normalize_input = normalize_input
        for d in dims:
            check_positive("dims", d, integer=True)
        check_positive("n_models", n_models, integer=True)
        if len(dims) < 2:
            raise ValueError("dims must list the input size and at least one layer size.")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.dims, self.n_models, self.theta = list(dims), n_models, theta
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            bound = 1 / math.sqrt(a)
            self.weights.append(nn.Parameter((torch.rand(n_models, a, b, generator=gen) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand(n_models, 1, b, generator=gen) * 2 - 1) * bound))

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def activities(self, x: torch.Tensor, detach: bool = True) -> list[torch.Tensor]:
        """Activities (N, batch, width) of every layer; x is (batch, d) shared by all nets, or (N, batch, d)."""
        h = x if x.dim() == 3 else x.unsqueeze(0).expand(self.n_models, -1, -1)
        out = []
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if k > 0 or self.normalize_input:
                h = rms_normalize(h)
                h = h.detach() if detach else h
            h = torch.relu(torch.baddbmm(b, h, w))
            out.append(h)
        return out

    def layer_goodness(self, x: torch.Tensor, detach: bool = True) -> torch.Tensor:
        """Goodness of every layer: shape (layers, N, batch)."""
        return torch.stack([goodness(h) for h in self.activities(x, detach)])

    def loss(self, x_pos: torch.Tensor, x_neg: torch.Tensor) -> torch.Tensor:
        """Per-layer, per-net FF losses, shape (layers, N). Their sum trains every layer on its own objective."""
        return ff_loss(self.layer_goodness(x_pos), self.layer_goodness(x_neg), self.theta)

    @torch.no_grad()
    def goodness_by_label(self, x: torch.Tensor, n_classes: int = 10, value: float = 1.0,
                          batch_size: int = 1000) -> torch.Tensor:
        """Goodness of every layer with every candidate label embedded: shape (N, batch, classes, layers)."""
        outs = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].flatten(1)
            per_label = []
            for c in range(n_classes):
                yc = torch.full((len(xb),), c, device=x.device, dtype=torch.long)
                per_label.append(self.layer_goodness(embed_label(xb, yc, n_classes, value)))  # (L, N, b)
            outs.append(torch.stack(per_label, -1).permute(1, 2, 3, 0))  # (N, b, C, L)
        return torch.cat(outs, 1)

    def predict(self, x: torch.Tensor, n_classes: int = 10, skip_first: bool | None = None, value: float = 1.0,
                goodness_table: torch.Tensor | None = None) -> torch.Tensor:
        """Labels (N, batch) with the largest goodness summed over layers; the first layer is left out of
        the sum when ``skip_first`` (default: when there are at least two layers, as in the paper)."""
        g = self.goodness_by_label(x, n_classes, value) if goodness_table is None else goodness_table
        skip = (self.n_layers > 1) if skip_first is None else skip_first
        return g[..., int(skip):].sum(-1).argmax(-1)


def train_ff(net: FFNet, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float = 0.01, batch_size: int = 100,
             n_classes: int = 10, value: float = 1.0, seed: int = 0, eval_sets: dict | None = None,
             eval_every: int = 1, skip_first: bool | None = None, progress: bool = True,
             desc: str = "Forward-Forward") -> pd.DataFrame:
    """Train every layer of ``net`` at once with Adam, each on its own FF loss (positive: the image with
    its label; negative: the same image with a wrong label drawn afresh each time, per net).

    After every ``eval_every`` epochs (and the last) each set in ``eval_sets`` (name -> (x, y)) is scored:
    the history has one row per net and evaluation (epoch, model, set, error, and the mean layer losses).
    ``skip_first`` is passed to :meth:`FFNet.predict` (which layers' goodness the prediction sums)."""
    check_positive("epochs", epochs, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("lr", lr)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    x = x.flatten(1)
    n = len(x)
    rows, eval_sets = [], eval_sets or {}
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, mininterval=1.0)
    for epoch in bar:
        perm = torch.randperm(n, generator=gen).to(x.device)
        total = torch.zeros(net.n_layers, net.n_models, device=x.device)
        n_batches = 0
        for i in range(0, n - batch_size + 1, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            x_pos = embed_label(xb, yb, n_classes, value)
            x_neg = embed_label(xb, wrong_labels(yb, n_classes, gen, net.n_models), n_classes, value)
            losses = net.loss(x_pos, x_neg)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            total += losses.detach()
            n_batches += 1
        if eval_every and (epoch % eval_every == 0 or epoch == epochs):
            mean_loss = (total / n_batches).cpu()
            for name, (xs, ys) in eval_sets.items():
                err = (net.predict(xs, n_classes, skip_first, value) != ys).float().mean(1).cpu()
                for m in range(net.n_models):
                    rows.append({"epoch": epoch, "model": m, "set": name, "error": err[m].item(),
                                 **{f"loss_layer{k + 1}": mean_loss[k, m].item() for k in range(net.n_layers)}})
            bar.set_postfix({f"{s}_err": f"{(sum(r['error'] for r in rows[-len(eval_sets) * net.n_models:] if r['set'] == s) / net.n_models):.3f}"
                             for s in eval_sets})
    bar.close()
    return pd.DataFrame(rows)
