"""Continual learning: permuted-pixel task sequences, the diagonal Fisher information, and
quadratic consolidation penalties (elastic weight consolidation and its uniform-L2 baseline).

Kirkpatrick et al. (2017) protect what a network learned on earlier tasks with a penalty

    L(theta) = L_new(theta) + sum_t lambda/2 * sum_i F_{t,i} (theta_i - theta*_{t,i})^2,

one term per finished task t: theta*_t are the weights at the end of task t and F_t the diagonal
of the Fisher information there. With F = 1 the penalty is a uniform L2 pull toward the old
weights (the paper's "L2" baseline); with lambda = 0 it is plain SGD.

Everything here works on N models at once, their parameters stacked along a leading model axis
(the layout of :class:`repro.nn.ensemble.Ensemble`), so the three methods and several seeds train in
one batched job.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev
from tqdm.auto import tqdm

from ..core.params import check_choice, check_positive
from ..nn.ensemble import Ensemble, ensemble_batch_indices

IMPORTANCES = ("none", "uniform", "fisher")
FISHERS = ("true", "sampled", "empirical")


def task_permutations(n_tasks: int, d: int, seed: int = 0, first_identity: bool = True) -> torch.Tensor:
    """(n_tasks, d) pixel permutations, drawn from a generator seeded ``seed``. Task 0 is the
    identity (the original images) when ``first_identity``."""
    check_positive("n_tasks", n_tasks, integer=True)
    g = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(d, generator=g) for _ in range(n_tasks)])
    if first_identity:
        perms[0] = torch.arange(d)
    return perms


def diagonal_fisher(model: nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor | None = None,
                    kind: str = "true", chunk: int = 32, buffers: dict | None = None,
                    generator: torch.Generator | None = None) -> dict:
    """Diagonal Fisher information of a classifier at ``params`` (a dict name -> tensor for ``model``).

    ``kind="true"``: F_i = mean_n sum_c p(c|x_n) (d log p(c|x_n) / d theta_i)^2, the expectation
    over the model's own predictive distribution, computed exactly (all classes, no sampling).
    ``kind="sampled"``: the same expectation estimated with one label per example drawn from
    p(c|x_n) (with ``generator``): unbiased, and about as many times cheaper as there are classes.
    ``kind="empirical"``: F_i = mean_n (d log p(y_n|x_n) / d theta_i)^2 at the true labels ``y``.
    Per-example gradients come from ``torch.func`` (vmap of jacrev / grad), ``chunk`` examples at a time.
    """
    check_choice("kind", kind, FISHERS)
    if kind == "empirical" and y is None:
        raise ValueError("the empirical Fisher needs the labels y.")
    base = model
    buffers = buffers or {}
    params = {k: v.detach() for k, v in params.items()}

    def logp(p, xi):
        return functional_call(base, (p, buffers), (xi[None],))[0].log_softmax(-1)

    jac = torch.vmap(jacrev(logp), in_dims=(None, 0))
    one = torch.vmap(grad(lambda p, xi, hot: (logp(p, xi) * hot).sum()), in_dims=(None, 0, 0))
    out = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk]
        if kind != "true":
            if kind == "sampled":
                with torch.no_grad():
                    probs = torch.vmap(lambda xi: logp(params, xi))(xb).exp()
                yb = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(x.device)
            else:
                yb = y[i:i + chunk]
            with torch.no_grad():
                n_classes = functional_call(base, (params, buffers), (xb[:1],)).shape[-1]
            for k, g in one(params, xb, F.one_hot(yb, n_classes).to(xb.dtype)).items():
                out[k] += (g.detach() ** 2).sum(0)
            continue
        with torch.no_grad():
            lp = torch.vmap(lambda xi: logp(params, xi))(xb)  # (b, C)
        J = jac(params, xb)  # name -> (b, C, *shape)
        w = lp.exp()  # (b, C)
        for k, g in J.items():
            wk = w.view(*w.shape, *([1] * (g.dim() - 2)))
            out[k] += (wk * g.detach() ** 2).sum((0, 1))
    return {k: v / len(x) for k, v in out.items()}


def quadratic_penalty(params: dict, anchors: Sequence[tuple[dict, dict]], lam: torch.Tensor) -> torch.Tensor:
    """Per-model consolidation penalty for stacked parameters (leading model axis N):
    lam_m / 2 * sum_t sum_i F_{t,m,i} (theta_{m,i} - theta*_{t,m,i})^2, summed over the ``anchors``
    [(theta*_t, F_t), ...]. Returns a tensor of shape (N,)."""
    lam = torch.as_tensor(lam, dtype=next(iter(params.values())).dtype, device=next(iter(params.values())).device)
    total = torch.zeros_like(lam)
    for anchor, importance in anchors:
        for k, p in params.items():
            total = total + (importance[k] * (p - anchor[k]) ** 2).flatten(1).sum(1)
    return 0.5 * lam * total


def train_continual(build, seeds: Sequence[int], lam: Sequence[float], importance: Sequence[str],
                    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                    perms: torch.Tensor, *, steps_per_task: int, lr: float, batch_size: int = 100,
                    fisher_examples: int = 500, fisher: str = "sampled", evals_per_task: int = 4,
                    curvature_cap: float | None = None, progress: bool = True, desc: str = "tasks"):
    """Train N models, all at once, on the tasks ``x[:, perms[t]]`` one after another with plain SGD.

    Model m is initialized after ``torch.manual_seed(seeds[m])``, draws its own minibatches, and after
    each task adds the anchor (its weights, and an importance: ``"none"`` -> zeros (plain SGD),
    ``"uniform"`` -> ones (L2), ``"fisher"`` -> the diagonal Fisher on ``fisher_examples`` training
    images of that task (EWC)), weighted by ``lam[m]``. Plain SGD on a quadratic of curvature
    h = lam * sum_t F_t overshoots when lr * h > 2; ``curvature_cap`` (if given) scales the importances
    of every parameter down, where needed, so that lr * h <= curvature_cap.
    Every model is scored on every task's test set
    ``evals_per_task`` times per task. Returns the ensemble and a long history (one row per model,
    evaluation and task scored: step, task_trained, model, eval_task, acc) plus the anchors.
    """
    N = len(seeds)
    if not (len(lam) == len(importance) == N):
        raise ValueError(f"lam and importance need one entry per model ({N}).")
    for imp in importance:
        check_choice("importance", imp, IMPORTANCES)
    check_positive("steps_per_task", steps_per_task, integer=True)
    check_positive("evals_per_task", evals_per_task, integer=True)
    check_choice("fisher", fisher, FISHERS)
    dev = x.device
    ens = Ensemble.from_seeds(build, seeds, dev)
    lam_t = torch.tensor(lam, dtype=torch.float32, device=dev)
    opt = torch.optim.SGD(list(ens.params.values()), lr=lr)
    stream = ensemble_batch_indices(len(x), batch_size, seeds, dev)
    perms = perms.to(dev)
    n_tasks = len(perms)
    anchors, raw = [], []
    rows = []
    fisher_gen = torch.Generator().manual_seed(int(seeds[0]))
    eval_at = {round(steps_per_task * (j + 1) / evals_per_task) for j in range(evals_per_task)}

    def score(step, task):
        for t in range(n_tasks):
            acc = ens.evaluate(x_test[:, perms[t]], y_test)["acc"]
            for m in range(N):
                rows.append({"step": step, "task_trained": task, "model": m, "eval_task": t, "acc": acc[m].item()})

    score(0, -1)
    bar = tqdm(total=n_tasks * steps_per_task, desc=desc, disable=not progress, mininterval=1.0)
    step = 0
    for t in range(n_tasks):
        xt = x[:, perms[t]]
        for s in range(1, steps_per_task + 1):
            idx = next(stream)
            out = ens.outputs(xt[idx], per_model=True)  # (N, b, C)
            loss = F.cross_entropy(out.flatten(0, 1), y[idx].flatten(), reduction="none").view(N, -1).mean(1)
            total = loss
            if anchors:
                total = loss + quadratic_penalty(ens.params, anchors, lam_t)
            opt.zero_grad(set_to_none=True)
            total.sum().backward()
            opt.step()
            step += 1
            bar.update(1)
            if s in eval_at:
                score(step, t)
        if t < n_tasks - 1:
            anchor = {k: v.detach().clone() for k, v in ens.params.items()}
            imp = {k: torch.zeros_like(v) for k, v in anchor.items()}
            xf = xt[:fisher_examples]
            for m in range(N):
                if importance[m] == "uniform":
                    for k in imp:
                        imp[k][m] = 1.0
                elif importance[m] == "fisher":
                    fm = diagonal_fisher(ens.base, {k: v[m] for k, v in anchor.items()}, xf, y[:fisher_examples],
                                         kind=fisher, buffers={k: v[m] for k, v in ens.buffers.items()},
                                         generator=fisher_gen)
                    for k in imp:
                        imp[k][m] = fm[k]
            raw.append((anchor, imp))
            anchors = raw
            if curvature_cap is not None:
                scale = {}
                for k in imp:
                    lam_k = lam_t.view(-1, *([1] * (imp[k].dim() - 1)))
                    h = lr * lam_k * sum(a[1][k] for a in raw)
                    scale[k] = (curvature_cap / h.clamp_min(1e-30)).clamp(max=1.0)
                anchors = [(a, {k: i[k] * scale[k] for k in i}) for a, i in raw]
    bar.close()
    return ens, pd.DataFrame(rows), anchors
