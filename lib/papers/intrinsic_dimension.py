"""Training in a random subspace of parameter space, and the intrinsic dimension of an objective.

Li, Farkhoor, Liu and Yosinski (2018) train a network not in its native parameters theta (D numbers)
but in a random d-dimensional subspace through the initial point theta_0:

    theta = theta_0 + P theta_d,     P a fixed random D x d matrix with unit-norm columns,

with theta_d (d numbers, starting at zero) the only trainable parameters. Sweeping d, the smallest d
whose test accuracy reaches 90% of the full model's is the intrinsic dimension d_int90.

This module holds

* the projections: :func:`dense_projection` (Gaussian, for small D x d) and :func:`sparse_projection`
  (the paper's "very sparse" random projection, density 1/sqrt(D), memory O(d sqrt(D))), both with
  columns of exactly unit norm, and :func:`random_projection`, which picks one;
* :class:`SubspaceModel`, which wraps any module so that its only parameter is theta_d (the forward
  pass calls the module with ``torch.func.functional_call`` at theta_0 + P theta_d);
* :class:`SubspaceSweep` and :func:`train_sweep`: many subspace dimensions (and seeds) of one
  architecture trained at once. Dimension d uses the first d columns of one projection per seed, so
  a whole sweep needs one projection per seed; the models run together under ``torch.vmap``;
* :func:`intrinsic_dimension`: the d_int search on an accuracy-versus-d curve.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ..core.params import ParameterError, check_choice, check_positive
from ..nn.ensemble import Ensemble

KINDS = ("auto", "dense", "sparse")
DENSE_LIMIT = 2 ** 22  # "auto" uses a dense projection up to this many entries (16 MB in float32)


# ----------------------------------------------------------------------------------------------------
# flat parameter vectors

def param_spec(model: nn.Module) -> list[tuple[str, torch.Size]]:
    """(name, shape) of every parameter, in the order of ``named_parameters``."""
    return [(n, p.shape) for n, p in model.named_parameters()]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flatten_params(model: nn.Module) -> torch.Tensor:
    """All parameters as one detached vector of length D (the order of ``named_parameters``)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten(flat: torch.Tensor, spec) -> dict:
    """Views of a flat vector (D,) as a dict name -> tensor of the shapes in ``spec`` (works under vmap)."""
    sizes = [math.prod(shape) for _, shape in spec]
    if sum(sizes) != flat.shape[-1]:
        raise ValueError(f"the flat vector has {flat.shape[-1]} entries, the parameters {sum(sizes)}.")
    # torch.split, not slicing: its backward is one concatenation, not a zero-filled copy per tensor
    return {name: part.view(shape) for (name, shape), part in zip(spec, torch.split(flat, sizes, dim=-1))}


# ----------------------------------------------------------------------------------------------------
# projections

def _generator(seed_or_gen) -> torch.Generator:
    if isinstance(seed_or_gen, torch.Generator):
        return seed_or_gen
    return torch.Generator().manual_seed(int(seed_or_gen or 0))


def dense_projection(D: int, d: int, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """A dense D x d Gaussian matrix whose columns are normalized to unit length.

    Drawn on the CPU from ``generator`` (a torch.Generator or a seed), so it is the same on every
    device, then moved to ``device``. Memory D * d floats: for small models.
    """
    check_positive("D", D, integer=True)
    check_positive("d", d, integer=True)
    P = torch.randn(D, d, generator=_generator(generator), dtype=torch.float64)
    P /= P.norm(dim=0, keepdim=True)
    return P.to(device=device, dtype=dtype)


def sparse_projection(D: int, d: int, density: float | None = None, generator=None, device=None,
                      dtype=torch.float32) -> torch.Tensor:
    """A very sparse random D x d matrix (a torch sparse COO tensor) with unit-norm columns.

    As in the paper's code (scikit-learn's ``SparseRandomProjection``, then each column normalized):
    every entry is nonzero with probability ``density`` (default 1/sqrt(D)), with a random sign; the
    nonzeros of a column are then scaled to 1/sqrt(their count). Memory O(d * D * density).
    """
    check_positive("D", D, integer=True)
    check_positive("d", d, integer=True)
    density = 1.0 / math.sqrt(D) if density is None else density
    if not 0 < density <= 1:
        raise ParameterError(f"density must be a number in (0, 1]; got {density!r}.")
    g = _generator(generator)
    counts = torch.binomial(torch.full((d,), float(D), dtype=torch.float64),
                            torch.full((d,), density, dtype=torch.float64), generator=g).long().clamp_min(1)
    cols = torch.repeat_interleave(torch.arange(d), counts)
    rows = torch.randint(0, D, (len(cols),), generator=g)
    keys = torch.unique(cols * D + rows)  # sorted by column; a row drawn twice in a column counts once
    cols, rows = keys // D, keys % D
    signs = torch.randint(0, 2, (len(keys),), generator=g).to(torch.float64) * 2 - 1
    per_col = torch.bincount(cols, minlength=d).to(torch.float64)
    vals = signs / per_col[cols].sqrt()
    P = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (D, d), check_invariants=False).coalesce()
    return P.to(device=device, dtype=dtype)


def random_projection(D: int, d: int, kind: str = "auto", generator=None, device=None) -> torch.Tensor:
    """A D x d projection with unit-norm columns: ``"dense"``, ``"sparse"``, or ``"auto"`` (dense while
    D * d <= 2**22 entries, sparse beyond)."""
    check_choice("kind", kind, KINDS)
    if kind == "auto":
        kind = "dense" if D * d <= DENSE_LIMIT else "sparse"
    return (dense_projection if kind == "dense" else sparse_projection)(D, d, generator=generator, device=device)


def column_norms(P: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of every column of a dense or sparse D x d matrix."""
    if P.is_sparse:
        P = P.coalesce()
        sq = torch.zeros(P.shape[1], dtype=P.dtype, device=P.device)
        sq.index_add_(0, P.indices()[1], P.values() ** 2)
        return sq.sqrt()
    return P.norm(dim=0)


class _SparseMatmul(torch.autograd.Function):
    """P @ z for a sparse CSR matrix P, with its transpose Pt (also CSR) given for the backward pass:
    several times faster than autograd through ``torch.sparse.mm`` on a COO matrix."""

    @staticmethod
    def forward(ctx, z, P, Pt):
        ctx.Pt = Pt
        return P @ z

    @staticmethod
    def backward(ctx, grad):
        return ctx.Pt @ grad, None, None


def to_csr_pair(P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A sparse (COO or CSR) matrix and its transpose, both in CSR layout, for :func:`project`."""
    P = P.to_sparse_coo().coalesce() if P.layout != torch.sparse_coo else P.coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return P.to_sparse_csr(), P.t().coalesce().to_sparse_csr()


def project(P: torch.Tensor, z: torch.Tensor, Pt: torch.Tensor | None = None) -> torch.Tensor:
    """P @ z for a dense or sparse P (D x d) and z of shape (d,) or (d, K); differentiable in z.

    For a sparse P, pass ``Pt`` (and P) in CSR layout (:func:`to_csr_pair`) for speed."""
    vec = z.dim() == 1
    z2 = z[:, None] if vec else z
    if P.layout == torch.strided:
        out = P @ z2
    elif Pt is not None and P.layout == torch.sparse_csr:
        out = _SparseMatmul.apply(z2, P, Pt)
    else:
        out = torch.sparse.mm(P.to_sparse_coo() if P.layout != torch.sparse_coo else P, z2)
    return out[:, 0] if vec else out


def block_diagonal(Ps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The sparse block-diagonal matrix diag(P_1, ..., P_S) of S sparse matrices of one shape."""
    D, d = Ps[0].shape
    idx, vals = [], []
    for s, P in enumerate(Ps):
        P = P.coalesce()
        idx.append(P.indices() + torch.tensor([[s * D], [s * d]], device=P.device))
        vals.append(P.values())
    return torch.sparse_coo_tensor(torch.cat(idx, 1), torch.cat(vals), (len(Ps) * D, len(Ps) * d),
                                   check_invariants=False).coalesce()


# ----------------------------------------------------------------------------------------------------
# one model in a subspace

class SubspaceModel(nn.Module):
    """``model`` restricted to theta_0 + P theta_d; ``theta_d`` (zeros at first) is its only parameter.

    theta_0 is the model's current parameters. ``projection`` is a given D x d matrix (dense or
    sparse), or None to draw one with :func:`random_projection` (``kind``, ``generator``). Buffers
    (batch-norm statistics) are kept fixed, as they are.
    """

    def __init__(self, model: nn.Module, d: int | None = None, projection: torch.Tensor | None = None,
                 kind: str = "auto", generator=None):
        super().__init__()
        D = num_params(model)
        dev = next(model.parameters()).device
        if projection is None:
            check_positive("d", d, integer=True)
            projection = random_projection(D, d, kind, generator, dev)
        if projection.shape[0] != D:
            raise ValueError(f"the projection has {projection.shape[0]} rows, the model {D} parameters.")
        self.spec = param_spec(model)
        self.D, self.d = D, projection.shape[1]
        self._base = (copy.deepcopy(model).to("meta"),)  # a tuple: not a submodule, so no parameters of its own
        self.register_buffer("theta_0", flatten_params(model))
        if projection.layout == torch.strided:
            self.register_buffer("P", projection.to(dev))
            self.Pt = None
        else:
            P, Pt = to_csr_pair(projection.to(dev))
            self.register_buffer("P", P)
            self.register_buffer("Pt", Pt)
        for name, b in model.named_buffers():
            self.register_buffer("buf_" + name.replace(".", "_"), b.detach().clone())
        self._buffer_names = [n for n, _ in model.named_buffers()]
        self.theta_d = nn.Parameter(torch.zeros(self.d, device=dev, dtype=self.theta_0.dtype))

    def full_parameters(self) -> torch.Tensor:
        """theta_0 + P theta_d, the flat D-dimensional parameter vector."""
        return self.theta_0 + project(self.P, self.theta_d, self.Pt)

    def forward(self, *args, **kwargs):
        params = unflatten(self.full_parameters(), self.spec)
        buffers = {n: getattr(self, "buf_" + n.replace(".", "_")) for n in self._buffer_names}
        return functional_call(self._base[0], (params, buffers), args, kwargs)


# ----------------------------------------------------------------------------------------------------
# a sweep over d (and seeds), trained at once

class SubspaceSweep:
    """S seeds x K subspace dimensions of one architecture, as one batched model.

    For seed s: ``torch.manual_seed(s)``, ``build()`` gives theta_0, and a projection P_s of
    ``max(dims)`` columns is drawn from a generator seeded ``s + projection_offset``. The model for
    (s, d) is theta_0(s) + P_s[:, :d] theta_d: its trainable coordinates beyond d are masked to zero,
    so the subspaces of one seed are nested.

    The trainable tensor is ``z`` of shape (S, d_max, K), and theta_d = z * scale(d) (masked). With
    ``sqrt_d_scaling`` the scale is 1/sqrt(d): an optimizer step of size eta on every coordinate of z
    (as Adam takes) then moves theta by about eta in parameter space, whatever d is, where an
    unscaled step moves it by eta * sqrt(d). Without it, z is theta_d.
    """

    def __init__(self, build: Callable[[], nn.Module], dims: Sequence[int], seeds: Sequence[int], kind: str = "auto",
                 device=None, projection_offset: int = 10_000, sqrt_d_scaling: bool = False):
        check_choice("kind", kind, KINDS)
        self.dims, self.seeds = [int(d) for d in dims], [int(s) for s in seeds]
        if not self.dims or not self.seeds:
            raise ValueError("give at least one subspace dimension and one seed.")
        for d in self.dims:
            check_positive("dims", d, integer=True)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        thetas, Ps = [], []
        for s in self.seeds:
            torch.manual_seed(s)
            m = build()
            thetas.append(flatten_params(m))
            D = thetas[-1].numel()
            d_max = max(self.dims)
            Ps.append(random_projection(D, d_max, kind, s + projection_offset, device="cpu"))
        self.projections = Ps  # one D x d_max projection per seed (on the CPU), for inspection
        self.base = copy.deepcopy(m).to("meta")
        self.buffers = {n: b.detach().to(dev) for n, b in m.named_buffers()}
        self.spec = param_spec(m)
        self.D, self.d_max, self.S, self.K = D, d_max, len(self.seeds), len(self.dims)
        self.theta_0 = torch.stack(thetas).to(dev)  # (S, D)
        self.sparse = Ps[0].is_sparse
        if self.sparse:
            self.P, self.Pt = to_csr_pair(block_diagonal(Ps).to(dev))  # (S D, S d_max) and its transpose
        else:
            self.P = torch.stack(Ps).to(dev)  # (S, D, d_max)
        dims_t = torch.tensor(self.dims, device=dev, dtype=self.theta_0.dtype)
        mask = (torch.arange(d_max, device=dev)[:, None] < dims_t[None, :]).to(self.theta_0.dtype)  # (d_max, K)
        self.coord_scale = mask / dims_t.sqrt() if sqrt_d_scaling else mask
        self.z = torch.zeros(self.S, d_max, self.K, device=dev, requires_grad=True)

    @property
    def theta_d(self) -> torch.Tensor:
        """The subspace coordinates of every model, shape (S, d_max, K) (zero beyond each model's d)."""
        return self.z * self.coord_scale

    @property
    def n_models(self) -> int:
        return self.S * self.K

    def full_parameters(self) -> torch.Tensor:
        """The flat parameters of every model, shape (S * K, D), seed-major."""
        z = self.theta_d
        if self.sparse:
            delta = project(self.P, z.reshape(self.S * self.d_max, self.K), self.Pt).view(self.S, self.D, self.K)
        else:
            delta = torch.bmm(self.P, z)
        return (self.theta_0[:, :, None] + delta).transpose(1, 2).reshape(self.S * self.K, self.D)

    def _one(self, flat, x):
        return functional_call(self.base, (unflatten(flat, self.spec), self.buffers), (x,))

    def outputs(self, x: torch.Tensor, flat: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs of every model on shared inputs x: shape (S * K, batch, ...)."""
        flat = self.full_parameters() if flat is None else flat
        return torch.vmap(self._one, in_dims=(0, None))(flat, x)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> dict:
        """Per-model mean cross-entropy and accuracy, as tensors of shape (S, K)."""
        flat = self.full_parameters()
        loss = torch.zeros(self.n_models, device=x.device)
        correct = torch.zeros(self.n_models, device=x.device)
        for i in range(0, len(x), batch_size):
            out = self.outputs(x[i:i + batch_size], flat)
            yb = y[i:i + batch_size]
            loss += F.cross_entropy(out.flatten(0, 1), yb.repeat(self.n_models), reduction="none").view(
                self.n_models, -1).sum(1)
            correct += (out.argmax(-1) == yb).sum(1)
        return {"loss": (loss / len(x)).view(self.S, self.K), "acc": (correct / len(x)).view(self.S, self.K)}


def shared_batches(n: int, batch_size: int, seed: int, device=None):
    """An endless stream of minibatch indices: shuffled epochs from a generator seeded ``seed`` (the last
    partial batch dropped; the whole set every step when ``batch_size >= n``)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n - batch_size + 1, batch_size) if batch_size < n else [0]:
            yield perm[i:i + batch_size]


def train_sweep(sweep: SubspaceSweep, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float,
                batch_size: int = 128, seed: int = 0, eval_every: int = 0, eval_sets: dict | None = None,
                betas=(0.9, 0.999), schedule: str = "constant", progress: bool = True,
                desc: str = "subspace sweep") -> pd.DataFrame:
    """Train every model of ``sweep`` with Adam on its coordinates (``sweep.z``), all at once, on shared minibatches
    (shuffled epochs drawn from a generator seeded ``seed``). Adam is element-wise, so this is the same
    as training the models one after another. ``schedule``: a ``"constant"`` learning rate, or
    ``"cosine"`` decay from ``lr`` to zero over the steps. Returns a long history: step, seed, d, set,
    loss, acc."""
    check_choice("schedule", schedule, ("constant", "cosine"))
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("lr", lr)
    opt = torch.optim.Adam([sweep.z], lr=lr, betas=betas)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if schedule == "cosine" else None
    stream = shared_batches(len(x), batch_size, seed, x.device)
    rows, eval_sets = [], eval_sets or {}
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        idx = next(stream)
        out = sweep.outputs(x[idx])  # (M, b, C)
        loss = F.cross_entropy(out.flatten(0, 1), y[idx].repeat(sweep.n_models), reduction="none").view(
            sweep.n_models, -1).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # the models share nothing, so each gets its own gradient
        opt.step()
        if sched is not None:
            sched.step()
        if eval_every and (step % eval_every == 0 or step == steps):
            for name, (xs, ys) in eval_sets.items():
                res = sweep.evaluate(xs, ys)
                for i, s in enumerate(sweep.seeds):
                    for k, d in enumerate(sweep.dims):
                        rows.append({"step": step, "seed": s, "d": d, "set": name,
                                     "loss": res["loss"][i, k].item(), "acc": res["acc"][i, k].item()})
            bar.set_postfix(mean_batch_loss=f"{loss.mean().item():.3f}")
    bar.close()
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------
# the intrinsic dimension

def intrinsic_dimension(dims, acc, baseline: float, fraction: float = 0.9) -> float:
    """The smallest d at which ``acc`` reaches ``fraction * baseline`` on a sweep over ``dims``.

    The grid is sorted by d; the first grid point at or above the threshold and the one before it are
    joined by a straight line and its crossing is returned (the first grid point itself when the curve
    starts above the threshold; NaN when it never reaches it).
    """
    d = np.asarray(dims, dtype=np.float64)
    a = np.asarray(acc, dtype=np.float64)
    if d.shape != a.shape or d.ndim != 1 or len(d) == 0:
        raise ValueError("dims and acc must be 1-D arrays of the same nonzero length.")
    order = np.argsort(d)
    d, a = d[order], a[order]
    thr = fraction * baseline
    above = np.flatnonzero(a >= thr)
    if len(above) == 0:
        return float("nan")
    i = above[0]
    if i == 0:
        return float(d[0])
    return float(d[i - 1] + (thr - a[i - 1]) / (a[i] - a[i - 1]) * (d[i] - d[i - 1]))


def train_direct(build: Callable[[], nn.Module], seeds: Sequence[int], x: torch.Tensor, y: torch.Tensor, *,
                 steps: int, lr: float, batch_size: int = 128, seed: int = 0, schedule: str = "constant",
                 betas=(0.9, 0.999), eval_sets: dict | None = None, progress: bool = True,
                 desc: str = "full-space training"):
    """The baselines: one model per seed (``torch.manual_seed(s); build()``, the same theta_0 as a
    :class:`SubspaceSweep` with these seeds) trained in all D parameters with Adam, all at once, on the
    minibatches and the learning-rate ``schedule`` that :func:`train_sweep` uses. Returns the
    :class:`repro.nn.ensemble.Ensemble` and a dict name -> per-seed accuracy (numpy) on each eval set."""

    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_choice("schedule", schedule, ("constant", "cosine"))
    models = []
    for s in seeds:
        torch.manual_seed(s)
        models.append(build().to(x.device))
    ens = Ensemble(models)
    opt = torch.optim.Adam(list(ens.params.values()), lr=lr, betas=betas)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if schedule == "cosine" else None
    stream = shared_batches(len(x), batch_size, seed, x.device)
    for _ in tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0):
        idx = next(stream)
        out = ens.outputs(x[idx])
        loss = F.cross_entropy(out.flatten(0, 1), y[idx].repeat(ens.n), reduction="none").view(ens.n, -1).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        if sched is not None:
            sched.step()
    acc = {name: ens.evaluate(xs, ys)["acc"].cpu().numpy() for name, (xs, ys) in (eval_sets or {}).items()}
    return ens, acc
