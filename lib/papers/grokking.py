"""The grokking chapter (Power et al., 2022): modular-arithmetic tables, many small transformers
trained at once, each on its own subset of the table.

``modular_arithmetic`` builds the table of ``a op b mod p`` as token sequences ``[a, b, =]``.
``StackedTransformer`` runs N ``repro.nn.models.SmallTransformer``s with stacked weights (the same
outputs as the individual models, tested), and ``train_on_subsets`` trains them full-batch (or with
minibatches) on per-model training masks over one shared table, recording train and validation
accuracy, loss and weight norm of every model.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.params import ParameterError, check_positive
from ..data.datasets import Split
from ..nn.models import SmallTransformer
from ..nn.train import batch_indices, make_optimizer


def train_on_subsets(model, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, *, steps: int, lr: float,
                     batch_size=None, optimizer: str = "adamw", weight_decay: float = 0.0, momentum: float = 0.0,
                     betas=(0.9, 0.999), warmup_steps: int = 0, seed: int = 0, eval_every: int = 0,
                     eval_batch: int = 8192, params=None, stop_when: Callable[[pd.DataFrame], bool] | None = None,
                     progress: bool = True, desc: str = "training on subsets") -> pd.DataFrame:
    """Train N models at once, model ``i`` on its own subset of one data set, and track both halves.

    ``masks`` (N, n) is boolean: ``masks[i]`` marks model i's training examples among the n rows of
    (x, y); the other rows are its validation set. ``model`` maps per-model inputs (N, m, ...) to
    outputs (N, m, classes): a :class:`repro.papers.grokking.StackedTransformer`, or for an :class:`Ensemble`
    ``lambda xb: ens.outputs(xb, per_model=True)`` with ``params=ens.params.values()``.

    Each step every model takes one optimizer step on the mean cross-entropy over a minibatch of its
    own training examples: all of them (``batch_size=None``, full batch), or ``batch_size`` of them
    (an int, or one int per model), drawn in shuffled epochs from a generator seeded ``seed + i``.
    The batches may differ in size (they are padded, the padding weighted zero), so with an
    element-wise optimizer (SGD, Adam, AdamW) this is exactly training the N models one after another.
    The learning rate rises linearly over the first ``warmup_steps`` steps. Every ``eval_every`` steps
    (and at the last) all models are evaluated on all n rows; the history has one row per model and
    evaluation: step, model, train_loss, train_acc, val_loss, val_acc, and weight_norm (the L2 norm of
    the model's parameters, when they are stacked with the models along the first axis). ``stop_when``
    receives the rows of each evaluation as a DataFrame and may end training early.
    """
    check_positive("steps", steps, integer=True)
    check_positive("warmup_steps", warmup_steps, integer=True, allow_zero=True)
    masks = torch.as_tensor(masks, dtype=torch.bool, device=x.device)
    if masks.dim() != 2 or masks.shape[1] != len(x) or len(y) != len(x):
        raise ValueError(f"masks must have shape (N, {len(x)}) for {len(x)} examples, and y one label per example.")
    if not bool(masks.any(1).all()):
        raise ValueError("every model needs at least one training example (a row of masks is all False).")
    N = masks.shape[0]
    params = list(model.parameters() if params is None else params)
    opt = make_optimizer(optimizer, params, lr, weight_decay, momentum, betas)
    train_rows = [masks[i].nonzero()[:, 0] for i in range(N)]
    n_train = masks.sum(1)
    if batch_size is None:
        sizes = [len(r) for r in train_rows]
    else:
        sizes = list(batch_size) if isinstance(batch_size, (list, tuple)) else [batch_size] * N
        if len(sizes) != N:
            raise ValueError(f"batch_size must be one int or one per model ({N}); got {len(sizes)}.")
        for b in sizes:
            check_positive("batch_size", b, integer=True)
        sizes = [min(b, len(r)) for b, r in zip(sizes, train_rows)]
    b_max = max(sizes)
    weight = torch.zeros(N, b_max, device=x.device)
    for i, b in enumerate(sizes):
        weight[i, :b] = 1.0 / b
    streams = [batch_indices(len(r), b, torch.Generator().manual_seed(seed + i), x.device)
               for i, (r, b) in enumerate(zip(train_rows, sizes))]

    def next_batch():
        idx = torch.empty(N, b_max, dtype=torch.long, device=x.device)
        for i, (r, stream) in enumerate(zip(train_rows, streams)):
            sel = r[next(stream)]
            idx[i, :len(sel)] = sel
            idx[i, len(sel):] = sel[0]  # padding: a real example, weighted zero
        return idx

    fixed = next_batch() if batch_size is None else None  # full batch: the same rows every step
    n_val = (~masks).sum(1).clamp(min=1)
    stacked = all(p.dim() > 0 and p.shape[0] == N for p in params)

    @torch.no_grad()
    def evaluate_all():
        losses, correct = [], []
        for i in range(0, len(x), eval_batch):
            xs, ys = x[i:i + eval_batch], y[i:i + eval_batch]
            out = model(xs.expand(N, *xs.shape))
            losses.append(F.cross_entropy(out.flatten(0, 1), ys.repeat(N), reduction="none").view(N, -1))
            correct.append(out.argmax(-1) == ys)
        loss, correct, m = torch.cat(losses, 1), torch.cat(correct, 1), masks.float()
        nan = torch.full((N,), float("nan"), device=x.device)
        has_val = (~masks).any(1)
        res = {"train_loss": (loss * m).sum(1) / n_train, "train_acc": (correct * m).sum(1) / n_train,
               "val_loss": torch.where(has_val, (loss * (1 - m)).sum(1) / n_val, nan),
               "val_acc": torch.where(has_val, (correct * (1 - m)).sum(1) / n_val, nan)}
        if stacked:
            res["weight_norm"] = sum(p.detach().flatten(1).pow(2).sum(1) for p in params).sqrt()
        return res

    rows = []
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        if warmup_steps:
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, step / warmup_steps)
        idx = fixed if fixed is not None else next_batch()
        out = model(x[idx])
        loss = (F.cross_entropy(out.flatten(0, 1), y[idx].flatten(), reduction="none").view(N, b_max) * weight).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()  # the models share no parameters: each gets the gradient of its own mean loss
        opt.step()
        if eval_every and (step % eval_every == 0 or step == steps):
            new = pd.DataFrame({"step": step, "model": range(N),
                                **{k: v.tolist() for k, v in evaluate_all().items()}})
            rows.append(new)
            bar.set_postfix(train_acc=f"{new.train_acc.mean():.2f}", val_acc=f"{new.val_acc.mean():.2f}")
            if stop_when is not None and stop_when(new):
                break
    bar.close()
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["step", "model", "train_loss", "train_acc", "val_loss", "val_acc"])




class StackedTransformer(nn.Module):
    """``N`` independent :class:`SmallTransformer` models with stacked parameters, run as one model.

    ``StackedTransformer([SmallTransformer(...) for _ in range(N)])`` copies the models' weights (so
    member ``i`` starts exactly where model ``i`` did) and computes the same last-position logits with
    batched matrix products, for inputs ``idx`` of shape (batch, T) shared by all members or (N, batch, T),
    one set per member: the output is (N, batch, n_out). It also computes less than the models would:
    the first layer's attention projections depend only on (token, position), so they are computed once
    on the embedding table and looked up, and the last layer computes its query, attention output and
    MLP at the last position only. For short sequences (modular arithmetic, ``[a, b, =]``) this is
    several times faster than running the models, which is what makes grokking fit a CPU budget.
    An element-wise optimizer (SGD, Adam, AdamW) on ``parameters()`` trains the members independently.
    ``unstack(i)`` returns member ``i`` as an ordinary :class:`SmallTransformer`.
    """

    def __init__(self, models):
        super().__init__()
        import copy

        from torch.func import stack_module_state

        models = list(models)
        if not models or not all(isinstance(m, SmallTransformer) for m in models):
            raise ParameterError("models must be a non-empty list of SmallTransformer models of one configuration.")
        if any(b.attn.dropout > 0 for m in models for b in m.blocks):
            raise ParameterError("models must have dropout 0 (StackedTransformer has no dropout).")
        params, _ = stack_module_state(models)
        self.names = list(params)
        self.weights = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v.detach().clone())
                                         for k, v in params.items()})
        self.template = [copy.deepcopy(models[0]).to("meta")]  # a list, so it is not a submodule
        self.n = len(models)
        self.n_layers = len(models[0].blocks)
        self.n_heads = models[0].blocks[0].attn.num_heads
        self.causal = [b.causal for b in models[0].blocks]
        self.eps = models[0].ln.eps

    def param(self, name: str) -> torch.Tensor:
        """The stacked parameter (N, ...) that is ``name`` in a SmallTransformer (e.g. ``out.weight``)."""
        return self.weights[name.replace(".", "__")]

    def unstack(self, i: int) -> SmallTransformer:
        """Member ``i`` as an ordinary SmallTransformer (a copy of its current weights)."""
        import copy

        model = copy.deepcopy(self.template[0]).to_empty(device=self.param("pos").device)
        model.load_state_dict({k: self.param(k)[i].detach().clone() for k in self.names})
        return model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        N, L, H = self.n, self.n_layers, self.n_heads
        if idx.dim() == 2:
            idx = idx.expand(N, *idx.shape)
        if idx.dim() != 3 or idx.shape[0] != N:
            raise ValueError(f"idx must have shape (batch, T) or ({N}, batch, T); got {tuple(idx.shape)}.")
        B, T = idx.shape[1:]
        dev = idx.device
        rows = torch.arange(N, device=dev)[:, None]
        tok, pos = self.param("tok.weight"), self.param("pos")
        d = tok.shape[-1]
        dh = d // H

        def ln(x, name):  # layer norm with per-member affine parameters; x: (N, ..., d)
            shape = (N,) + (1,) * (x.dim() - 2) + (d,)
            return torch.addcmul(self.param(name + ".bias").view(shape), nn.functional.layer_norm(x, (d,), eps=self.eps),
                                 self.param(name + ".weight").view(shape))

        def lin(x, name):  # per-member linear layer; x: (N, ..., d_in)
            w, b = self.param(name + ".weight"), self.param(name + ".bias")
            y = torch.baddbmm(b[:, None, :], x.reshape(N, -1, x.shape[-1]), w.transpose(1, 2))
            return y.view(*x.shape[:-1], w.shape[1])

        def attend(q, k, v, causal):  # q: (N, B, Tq, d); k, v: (N, B, T, d)
            Tq = q.shape[2]
            q = q.reshape(N, B, Tq, H, dh).transpose(2, 3)
            k = k.reshape(N, B, T, H, dh).transpose(2, 3)
            v = v.reshape(N, B, T, H, dh).transpose(2, 3)
            if Tq == 1:  # one query: element-wise products beat many tiny matrix products
                a = ((q * k).sum(-1, keepdim=True) / math.sqrt(dh)).softmax(-2)
                return (a * v).sum(-2).reshape(N, B, 1, d)
            s = q @ k.transpose(-1, -2) / math.sqrt(dh)
            if causal:
                s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool, device=dev), 1), float("-inf"))
            return (s.softmax(-1) @ v).transpose(2, 3).reshape(N, B, Tq, d)

        for l in range(L):
            pre = f"blocks.{l}."
            last = l == L - 1
            w_in, b_in = self.param(pre + "attn.in_proj_weight"), self.param(pre + "attn.in_proj_bias")
            if l == 0:  # the input at position t depends only on (token, t): project the table once
                table = ln(tok[:, :, None] + pos[:, None, :T], pre + "ln1")                  # (N, V, T, d)
                qkv = (torch.einsum("nvtd,ned->nvte", table, w_in) + b_in[:, None, None]).flatten(1, 2)
                cell = idx * T + torch.arange(T, device=dev)                                 # (N, B, T)
                k, v = qkv[rows[..., None], cell, d:].split(d, -1)
                if last:
                    q = qkv[rows, cell[:, :, -1], :d][:, :, None]
                    x = (tok[rows, idx[:, :, -1]] + pos[:, None, T - 1])[:, :, None]
                else:
                    q = qkv[rows[..., None], cell, :d]
                    x = tok[rows[..., None], idx] + pos[:, None, :T]
            else:
                h = ln(x, pre + "ln1")
                q, k, v = torch.baddbmm(b_in[:, None], h.reshape(N, B * T, d), w_in.transpose(1, 2)) \
                    .view(N, B, T, 3 * d).split(d, -1)
                if last:
                    q, x = q[:, :, -1:], x[:, :, -1:]
            x = x + lin(attend(q, k, v, self.causal[l] and not last), pre + "attn.out_proj")
            x = x + lin(nn.functional.gelu(lin(ln(x, pre + "ln2"), pre + "mlp.0")), pre + "mlp.2")
        return lin(ln(x[:, :, -1], "ln"), "out")




def modular_arithmetic(p: int, op: str = "+", train_fraction: float = 0.5, seed: int = 0, device=None):
    """All pairs (a, b) with label (a op b) mod p, split at random into train and validation.

    Inputs are token ids ``[a, b, p]`` (``p`` is the "=" token), as in Power et al. (2022).
    ``op`` is one of ``+``, ``-``, ``*``, ``/`` (division by b means multiplication by b's inverse, b != 0).
    """
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    if op == "+":
        c = (a + b) % p
    elif op == "-":
        c = (a - b) % p
    elif op == "*":
        c = (a * b) % p
    elif op == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
        c = (a * np.array([pow(int(v), p - 2, p) for v in b])) % p
    else:
        raise ValueError(f"op must be one of '+', '-', '*', '/'; got {op!r}.")
    x = np.stack([a, b, np.full_like(a, p)], axis=1)
    perm = np.random.default_rng(seed).permutation(len(c))
    n_train = int(round(train_fraction * len(c)))
    tr, te = perm[:n_train], perm[n_train:]
    dev = device or torch.device("cpu")
    t = lambda v: torch.as_tensor(v, dtype=torch.long, device=dev)  # noqa: E731
    return Split(t(x[tr]), t(c[tr]), t(x[te]), t(c[te]))
