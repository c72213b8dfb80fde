"""Prior-data fitted networks (Müller et al., 2022, "Transformers Can Do Bayesian Inference").

A Gaussian-process prior sampler, the exact GP posterior predictive, the "Riemann" (bar) distribution
output head, and a small PFN transformer whose queries attend to the training points only.
"""
from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.params import ParameterError, check_positive


def rbf_kernel(a: torch.Tensor, b: torch.Tensor, lengthscale: float, outputscale: float) -> torch.Tensor:
    """k(a, b) = outputscale * exp(-|a - b|^2 / (2 lengthscale^2)); a: (..., n, d), b: (..., m, d)."""
    d2 = (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1)
    return outputscale * torch.exp(-0.5 * d2 / lengthscale ** 2)


def sample_gp(n_datasets: int, n_points: int, *, lengthscale: float, outputscale: float, noise: float,
              d_x: int = 1, generator: torch.Generator | None = None, device=None):
    """Draw datasets from the GP prior: x ~ U[0, 1]^d_x, y ~ N(0, K(x, x) + noise I), batched with Cholesky.
    Returns x (n_datasets, n_points, d_x) and y (n_datasets, n_points)."""
    x = torch.rand(n_datasets, n_points, d_x, generator=generator, device=device)
    K = rbf_kernel(x.double(), x.double(), lengthscale, outputscale)
    K = K + noise * torch.eye(n_points, dtype=K.dtype, device=K.device)
    L = torch.linalg.cholesky(K)
    z = torch.randn(n_datasets, n_points, 1, generator=generator, device=device, dtype=K.dtype)
    return x, (L @ z).squeeze(-1).float()


def gp_posterior(x_train, y_train, x_test, *, lengthscale: float, outputscale: float, noise: float):
    """Exact GP posterior predictive of y at x_test (noise included): mean and variance, batched.
    x_train (B, n, d), y_train (B, n), x_test (B, m, d) -> mean (B, m), var (B, m)."""
    xt, yt, xs = x_train.double(), y_train.double(), x_test.double()
    K = rbf_kernel(xt, xt, lengthscale, outputscale) + noise * torch.eye(xt.shape[-2], dtype=xt.dtype,
                                                                         device=xt.device)
    Ks = rbf_kernel(xs, xt, lengthscale, outputscale)                      # (B, m, n)
    L = torch.linalg.cholesky(K)
    alpha = torch.cholesky_solve(yt.unsqueeze(-1), L)                      # (B, n, 1)
    mean = (Ks @ alpha).squeeze(-1)
    v = torch.linalg.solve_triangular(L, Ks.transpose(-1, -2), upper=False)  # (B, n, m)
    var = outputscale + noise - v.pow(2).sum(-2)
    return mean.float(), var.clamp_min(1e-12).float()


def gaussian_nll(y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Negative log density of y under N(mean, var), elementwise, in nats."""
    return 0.5 * (torch.log(2 * math.pi * var) + (y - mean).pow(2) / var)


class BarDistribution(nn.Module):
    """The "Riemann distribution": a piecewise-constant density over buckets with fixed borders.
    Logits (..., n_buckets) give bucket probabilities p_k; the density in bucket k is p_k / width_k."""

    def __init__(self, borders: torch.Tensor):
        super().__init__()
        borders = torch.as_tensor(borders, dtype=torch.float32)
        if borders.ndim != 1 or len(borders) < 2 or not bool((borders[1:] > borders[:-1]).all()):
            raise ParameterError("borders must be a strictly increasing 1-D tensor with at least 2 entries.")
        self.register_buffer("borders", borders)

    @classmethod
    def from_samples(cls, y: torch.Tensor, n_buckets: int, margin: float = 0.5) -> "BarDistribution":
        """Borders at equally spaced quantiles of prior samples y; the outer borders are pushed out by
        `margin` times the sample range so that held-out values rarely fall outside."""
        check_positive("n_buckets", n_buckets, integer=True)
        y = y.flatten().float()
        q = torch.quantile(y[:1_000_000].cpu(), torch.linspace(0, 1, n_buckets + 1))
        span = float(q[-1] - q[0])
        q[0], q[-1] = q[0] - margin * span, q[-1] + margin * span
        return cls(q)

    @property
    def n_buckets(self) -> int:
        return len(self.borders) - 1

    @property
    def widths(self) -> torch.Tensor:
        return self.borders[1:] - self.borders[:-1]

    @property
    def centers(self) -> torch.Tensor:
        return 0.5 * (self.borders[1:] + self.borders[:-1])

    def bucket(self, y: torch.Tensor) -> torch.Tensor:
        """Index of the bucket holding y (values outside the support go to the outer buckets)."""
        idx = torch.searchsorted(self.borders, y.contiguous(), right=True) - 1
        return idx.clamp(0, self.n_buckets - 1)

    def log_density(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = self.bucket(y)
        logp = torch.log_softmax(logits, -1).gather(-1, k.unsqueeze(-1)).squeeze(-1)
        return logp - torch.log(self.widths[k])

    def nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative log density of y, elementwise, in nats."""
        return -self.log_density(logits, y)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, -1) @ self.centers

    def quantile(self, logits: torch.Tensor, q: float) -> torch.Tensor:
        """The q-quantile, interpolating linearly inside the bucket where the CDF crosses q."""
        p = torch.softmax(logits, -1)
        cdf = p.cumsum(-1)
        k = torch.searchsorted(cdf.contiguous(), torch.full_like(cdf[..., :1], q)).clamp(max=self.n_buckets - 1)
        below = (cdf.gather(-1, k) - p.gather(-1, k)).squeeze(-1)
        frac = ((q - below) / p.gather(-1, k).squeeze(-1).clamp_min(1e-12)).clamp(0, 1)
        k = k.squeeze(-1)
        return self.borders[k] + frac * self.widths[k]

    def density(self, logits: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Density at each grid value for each row of logits: (..., n_buckets), (G,) -> (..., G)."""
        k = self.bucket(grid)
        p = torch.softmax(logits, -1)[..., k]
        return p / self.widths[k]


class PFN(nn.Module):
    """A prior-data fitted network. Training points are encoded as enc_x(x) + enc_y(y), queries as enc_x(x),
    with no positional encoding; a transformer encoder in which every position (training point or query)
    attends to the training points only; a linear head gives bucket logits for each query."""

    def __init__(self, n_buckets: int, d_x: int = 1, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 d_mlp: int | None = None):
        super().__init__()
        for name, v in (("n_buckets", n_buckets), ("d_x", d_x), ("d_model", d_model), ("n_layers", n_layers),
                        ("n_heads", n_heads)):
            check_positive(name, v, integer=True)
        if d_model % n_heads:
            raise ParameterError(f"d_model must be divisible by n_heads; got d_model={d_model}, n_heads={n_heads}.")
        self.enc_x = nn.Linear(d_x, d_model)
        self.enc_y = nn.Linear(1, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_mlp or 2 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_buckets)

    @staticmethod
    def attention_mask(n_train: int, n_total: int, device=None) -> torch.Tensor:
        """Boolean mask (True = may not attend): every position attends to the n_train training points only."""
        mask = torch.ones(n_total, n_total, dtype=torch.bool, device=device)
        mask[:, :n_train] = False
        return mask

    def forward(self, x_train, y_train, x_test):
        """x_train (B, n, d_x), y_train (B, n), x_test (B, m, d_x) -> logits (B, m, n_buckets)."""
        n = x_train.shape[1]
        if n < 1:
            raise ParameterError("a PFN needs at least one training point; got n_train=0.")
        h = torch.cat([self.enc_x(x_train) + self.enc_y(y_train.unsqueeze(-1)), self.enc_x(x_test)], 1)
        h = self.encoder(h, mask=self.attention_mask(n, h.shape[1], h.device))
        return self.head(self.ln(h[:, n:]))


def train_pfn(model: PFN, bar: BarDistribution, prior: dict, *, steps: int, batch_size: int, n_points: int,
              lr: float, warmup: int = 100, generator: torch.Generator | None = None, eval_fn=None,
              eval_every: int = 0, device=None) -> pd.DataFrame:
    """Train a PFN by minimizing the bar-distribution NLL on datasets freshly drawn from the GP prior
    (`prior` holds lengthscale, outputscale, noise). Each step draws `batch_size` datasets of `n_points`
    points and a single cut n_train ~ U{1, ..., n_points - 1}: the first n_train points are the training
    set, the rest are queries. Adam with linear warm-up and cosine decay. `eval_fn()` (optional) is called
    every `eval_every` steps and at the end; its dict is added to the history."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rows = []
    bar_it = tqdm(range(1, steps + 1), desc="training PFN")
    running = None
    for step in bar_it:
        x, y = sample_gp(batch_size, n_points, **prior, d_x=model.enc_x.in_features, generator=generator,
                         device=device)
        n = int(torch.randint(1, n_points, (1,), generator=generator, device=generator.device
                              if generator is not None else None).item())
        logits = model(x[:, :n], y[:, :n], x[:, n:])
        loss = bar.nll(logits, y[:, n:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            bar_it.set_postfix(loss=f"{running:.3f}")
        if eval_fn is not None and eval_every and (step % eval_every == 0 or step == steps):
            model.eval()
            with torch.no_grad():
                rows.append({"step": step, "train loss": running, **eval_fn()})
            model.train()
        elif eval_fn is None and (step % max(1, steps // 50) == 0 or step == steps):
            rows.append({"step": step, "train loss": running})
    return pd.DataFrame(rows)
