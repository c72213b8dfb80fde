"""Jointly trained deep ensembles with a diversity term (Abe et al., 2023).

The cross-entropy of an ensemble whose prediction is the mean of its members' probabilities splits as

    CE(ensemble) = mean_i CE(member i) - JG,   JG = mean_i CE(member i) - CE(ensemble) >= 0,

where the Jensen gap JG measures the members' predictive diversity. :func:`train_joint_ensemble`
trains several ensembles of M members at once (one ``vmap`` over all their stacked parameters) with
the loss ``mean_i CE_i - gamma * JG`` per ensemble: gamma = 0 is ordinary independent training,
gamma > 0 rewards diversity, gamma < 0 penalizes it, gamma = 1 trains the ensemble's own loss.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ..core.params import ParameterError, check_positive
from ..nn.ensemble import Ensemble, ensemble_batch_indices
from ..nn.train import make_optimizer


def jensen_gap_terms(logits: torch.Tensor, y: torch.Tensor) -> dict:
    """Loss decomposition of probability-averaging ensembles. ``logits`` is (..., M, B, C) (M members),
    ``y`` is (B,) or broadcastable to (..., B). Returns tensors of shape (...): ``member`` (mean member
    cross-entropy), ``ensemble`` (cross-entropy of the mean probabilities) and ``jensen_gap`` (their
    difference, >= 0)."""
    m = logits.shape[-3]
    logp = logits.log_softmax(-1)
    yb = y.expand(*logits.shape[:-3], y.shape[-1]) if y.dim() == 1 else y
    idx = yb.unsqueeze(-2).unsqueeze(-1).expand(*logp.shape[:-1], 1)   # (..., M, B, 1)
    member = -logp.gather(-1, idx).squeeze(-1).mean((-1, -2))
    ens_logp = torch.logsumexp(logp, dim=-3) - math.log(m)               # (..., B, C)
    ensemble = -ens_logp.gather(-1, yb.unsqueeze(-1)).squeeze(-1).mean(-1)
    return {"member": member, "ensemble": ensemble, "jensen_gap": member - ensemble}


def diversity_loss(logits: torch.Tensor, y: torch.Tensor, gamma) -> torch.Tensor:
    """Abe et al.'s objective per ensemble: mean member cross-entropy minus gamma times the Jensen gap.
    ``gamma`` is a number or a tensor broadcastable to the leading dims of ``logits``."""
    t = jensen_gap_terms(logits, y)
    return t["member"] - gamma * t["jensen_gap"]


def _batch_streams(n: int, batch_size: int, seeds: Sequence[int], device=None):
    """Like repro.nn.ensemble.ensemble_batch_indices: one minibatch stream per seed, stacked to (E, batch)."""
    return ensemble_batch_indices(n, batch_size, seeds, device)


class JointEnsembles:
    """E ensembles of M members each, stored as one stacked :class:`repro.nn.ensemble.Ensemble` of E*M models
    (model e*M + m is member m of ensemble e)."""

    def __init__(self, stacked: Ensemble, n_ensembles: int, n_members: int):
        self.stacked, self.E, self.M = stacked, n_ensembles, n_members

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Member logits on shared inputs: (E, M, n, C)."""
        out = self.stacked.outputs(x)
        return out.view(self.E, self.M, *out.shape[1:])

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> dict:
        """Per-ensemble tensors of shape (E,): ensemble accuracy and NLL, mean member accuracy and NLL,
        the Jensen gap, and the disagreement rate (fraction of member pairs whose predicted classes differ)."""
        sums = {k: torch.zeros(self.E, device=x.device) for k in
                ("ens_acc", "ens_nll", "member_acc", "member_nll", "disagreement")}
        for i in range(0, len(x), batch_size):
            out, yb = self.logits(x[i:i + batch_size]), y[i:i + batch_size]
            t = jensen_gap_terms(out, yb)
            b = len(yb)
            sums["ens_nll"] += t["ensemble"] * b
            sums["member_nll"] += t["member"] * b
            probs = out.softmax(-1).mean(1)                                # (E, b, C)
            sums["ens_acc"] += (probs.argmax(-1) == yb).float().sum(-1)
            pred = out.argmax(-1)                                          # (E, M, b)
            sums["member_acc"] += (pred == yb).float().mean(1).sum(-1)
            if self.M > 1:
                diff = (pred[:, :, None] != pred[:, None]).float().sum((1, 2)) / (self.M * (self.M - 1))
                sums["disagreement"] += diff.sum(-1)
        res = {k: v / len(x) for k, v in sums.items()}
        res["jensen_gap"] = res["member_nll"] - res["ens_nll"]
        return res

    @torch.no_grad()
    def predictions(self, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        """Predicted class of every ensemble (mean of member probabilities): (E, n)."""
        return torch.cat([self.logits(x[i:i + batch_size]).softmax(-1).mean(1).argmax(-1)
                          for i in range(0, len(x), batch_size)], dim=1)


def train_joint_ensemble(build: Callable[[], nn.Module], member_seeds: Sequence[Sequence[int]], gammas: Sequence[float],
                         x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, batch_size: int = 128,
                         optimizer: str = "adam", weight_decay: float = 0.0, momentum: float = 0.0,
                         batch_seeds: Sequence[int] | None = None, eval_every: int = 0, eval_sets: dict | None = None,
                         schedule: str = "constant", progress: bool = True, desc: str = "training ensembles jointly"):
    """Train E ensembles at once, ensemble e with members initialized after ``torch.manual_seed(s)`` for s in
    ``member_seeds[e]`` (all ensembles the same size M) and loss ``mean_i CE_i - gammas[e] * JG``.

    The members of one ensemble see the same minibatches (the loss needs all of them on one batch), drawn
    from a stream seeded ``batch_seeds[e]`` (default: the ensemble's first member seed), exactly as
    ``repro.nn.train.train(..., seed=batch_seeds[e])`` draws them. ``schedule="cosine"`` decays the learning
    rate from ``lr`` to 0 along a half cosine over the ``steps`` (``"constant"``: no decay). The summed objective is scaled by M, so
    at gamma = 0 every member follows the gradient of its own cross-entropy: the same updates as training
    it alone with ``repro.nn.train.train`` (the tests check it). Returns a :class:`JointEnsembles` and a
    history DataFrame (one row per ensemble, evaluation set and evaluation step)."""
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    member_seeds = [list(s) for s in member_seeds]
    E = len(member_seeds)
    if E == 0 or len(gammas) != E:
        raise ParameterError(f"gammas must give one value per ensemble ({E} ensembles); got {len(gammas)}.")
    M = len(member_seeds[0])
    if M < 1 or any(len(s) != M for s in member_seeds):
        raise ParameterError("member_seeds must list the same number (>= 1) of member seeds for every ensemble.")
    batch_seeds = list(batch_seeds) if batch_seeds is not None else [s[0] for s in member_seeds]
    stacked = Ensemble.from_seeds(build, [s for seeds in member_seeds for s in seeds], x.device)
    joint = JointEnsembles(stacked, E, M)
    opt = make_optimizer(optimizer, list(stacked.params.values()), lr, weight_decay, momentum)
    if schedule not in ("constant", "cosine"):
        raise ParameterError(f"schedule must be 'constant' or 'cosine'; got {schedule!r}.")
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)))
             if schedule == "cosine" else None)
    gam = torch.as_tensor(list(gammas), dtype=torch.float32, device=x.device)
    stream = _batch_streams(len(x), batch_size, batch_seeds, x.device)

    def one(params, buffers, xb):
        return functional_call(stacked.base, (params, buffers), (xb,))

    batched = torch.vmap(one, in_dims=(0, 0, 0), randomness="different")
    rows, eval_sets = [], eval_sets or {}
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        idx = next(stream)                                            # (E, batch)
        xb = x[idx].repeat_interleave(M, dim=0)                       # (E*M, batch, ...)
        out = batched(stacked.params, stacked.buffers, xb)
        out = out.view(E, M, *out.shape[1:])
        losses = diversity_loss(out, y[idx], gam)                     # (E,)
        opt.zero_grad(set_to_none=True)
        (M * losses.sum()).backward()
        opt.step()
        if sched is not None:
            sched.step()
        if eval_every and (step % eval_every == 0 or step == steps):
            for name, (xs, ys) in eval_sets.items():
                res = joint.evaluate(xs, ys)
                for e in range(E):
                    rows.append({"step": step, "ensemble": e, "gamma": float(gammas[e]), "set": name,
                                 **{k: v[e].item() for k, v in res.items()}, "batch_loss": losses[e].item()})
            bar.set_postfix(mean_batch_loss=f"{losses.mean().item():.3f}")
    bar.close()
    return joint, pd.DataFrame(rows)
