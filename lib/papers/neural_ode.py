"""Neural ODE pieces (Chen et al., 2018): an ODE block over torchdiffeq with a function-evaluation
counter, the ODE-Net / ResNet pair for small images, the latent ODE and an RNN baseline for time
series, and the two-direction spiral data set.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.params import ParameterError, check_positive

__all__ = ["CountedFunc", "ODEBlock", "ConvODEFunc", "ResBlock", "ImageODENet", "spirals", "LatentODE",
           "RNNBaseline"]


class CountedFunc(nn.Module):
    """Wraps a vector field ``f(t, y)`` and counts its evaluations in ``nfe``."""

    def __init__(self, f: nn.Module):
        super().__init__()
        self.f, self.nfe = f, 0

    def forward(self, t, y):
        self.nfe += 1
        return self.f(t, y)


class ODEBlock(nn.Module):
    """y(t1) = y(t0) + int_t0^t1 f(t, y) dt, solved by torchdiffeq.

    ``forward(y0)`` returns y(t1); ``forward(y0, t)`` returns the whole trajectory at times ``t``.
    ``adjoint=True`` back-propagates with the adjoint method (``odeint_adjoint``, O(1) memory).
    Every forward solve appends its number of function evaluations to ``nfe_history`` while the
    module is in training mode; ``last_nfe`` holds the latest one in either mode.
    """

    def __init__(self, f: nn.Module, t1: float = 1.0, rtol: float = 1e-3, atol: float = 1e-3,
                 method: str = "dopri5", adjoint: bool = False, options: dict | None = None):
        super().__init__()
        check_positive("rtol", rtol)
        check_positive("atol", atol)
        self.func = CountedFunc(f)
        self.t1, self.rtol, self.atol, self.method, self.adjoint = t1, rtol, atol, method, adjoint
        self.options = options
        self.nfe_history: list[int] = []
        self.last_nfe = 0

    def forward(self, y0, t=None):
        from torchdiffeq import odeint, odeint_adjoint
        times = t if t is not None else torch.tensor([0.0, self.t1], device=y0.device, dtype=y0.dtype)
        solve = odeint_adjoint if self.adjoint else odeint
        self.func.nfe = 0
        ys = solve(self.func, y0, times, rtol=self.rtol, atol=self.atol, method=self.method, options=self.options)
        self.last_nfe = self.func.nfe
        if self.training:
            self.nfe_history.append(self.last_nfe)
        return ys if t is not None else ys[-1]


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(4, c), c)


class ConcatConv2d(nn.Module):
    """3x3 convolution that sees the time t as an extra constant input channel (as in the paper)."""

    def __init__(self, c_in: int, c_out: int, with_time: bool = True):
        super().__init__()
        self.with_time = with_time
        self.conv = nn.Conv2d(c_in + int(with_time), c_out, 3, padding=1)

    def forward(self, t, x):
        if self.with_time:
            tt = torch.ones_like(x[:, :1]) * t
            x = torch.cat([tt, x], 1)
        return self.conv(x)


class ConvODEFunc(nn.Module):
    """f(t, h) = conv(relu(norm(conv(relu(norm(h)))))), both convolutions seeing t."""

    def __init__(self, c: int, with_time: bool = True):
        super().__init__()
        self.n1, self.c1 = _norm(c), ConcatConv2d(c, c, with_time)
        self.n2, self.c2 = _norm(c), ConcatConv2d(c, c, with_time)
        self.n3 = _norm(c)

    def forward(self, t, h):
        h = self.c1(t, F.relu(self.n1(h)))
        return self.n3(self.c2(t, F.relu(self.n2(h))))


class ResBlock(nn.Module):
    """h + f(h) with the same f as the ODE function (no time input)."""

    def __init__(self, c: int):
        super().__init__()
        self.f = ConvODEFunc(c, with_time=False)

    def forward(self, h):
        return h + self.f(0.0, h)


class ImageODENet(nn.Module):
    """The paper's MNIST classifier pair on small images: a convolutional downsampler, then either
    ``n_blocks`` residual blocks (``kind="resnet"``) or one ODE block with the same layers
    (``kind="odenet"``), then norm, ReLU, global average pooling and a linear layer."""

    def __init__(self, kind: str = "odenet", side: int = 14, channels: int = 32, n_blocks: int = 6,
                 rtol: float = 1e-3, atol: float = 1e-3, adjoint: bool = False, num_classes: int = 10):
        super().__init__()
        if kind not in ("odenet", "resnet"):
            raise ParameterError(f"kind must be 'odenet' or 'resnet'; got {kind!r}.")
        check_positive("channels", channels, integer=True)
        check_positive("n_blocks", n_blocks, integer=True)
        self.side, self.kind = side, kind
        self.down = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), _norm(channels), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 4, stride=2, padding=1))
        if kind == "odenet":
            self.body = ODEBlock(ConvODEFunc(channels), rtol=rtol, atol=atol, adjoint=adjoint)
        else:
            self.body = nn.Sequential(*[ResBlock(channels) for _ in range(n_blocks)])
        self.head = nn.Sequential(_norm(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(channels, num_classes))

    def forward(self, x):
        x = x.reshape(-1, 1, self.side, self.side)
        return self.head(self.body(self.down(x)))


def spirals(n: int = 1000, n_total: int = 500, n_window: int = 50, stop: float = 6 * math.pi,
            noise_std: float = 0.3, a: float = 0.0, b: float = 0.3, obs_fraction: float = 0.5, seed: int = 0):
    """The paper's 2-D spirals: half clockwise, half counter-clockwise, observed irregularly with noise.

    Following torchdiffeq's ``latent_ode`` example, the counter-clockwise spiral is
    r = a + b z at angle z (centre (5, 0)), the clockwise one r = a + 50 b / z (centre (-5, 0)),
    on ``n_total`` equally spaced times in [0, stop]. Each sample starts at a random time and covers
    2 ``n_window`` consecutive grid points: the first ``n_window`` are the observation window, of which
    a random ``obs_fraction`` is observed (irregular times, Gaussian noise ``noise_std``), the next
    ``n_window`` the extrapolation window. Returns a dict of tensors: ``t`` (2 n_window,) relative
    times, ``true`` (n, 2 n_window, 2) noiseless points, ``obs`` (n, n_window, 2) noisy points,
    ``mask`` (n, n_window) 1 where observed, ``clockwise`` (n,) bool, ``centre`` (n, 2).
    """
    for name, v in (("n", n), ("n_total", n_total), ("n_window", n_window)):
        check_positive(name, v, integer=True)
    if 2 * n_window >= n_total:
        raise ParameterError(f"n_window must be below n_total / 2 = {n_total / 2}; got {n_window}.")
    if not 0 < obs_fraction <= 1:
        raise ParameterError(f"obs_fraction must lie in (0, 1]; got {obs_fraction}.")
    rng = np.random.default_rng(seed)
    ts = np.linspace(0, stop, n_total)
    z_cw = stop + 1.0 - ts
    r_cw = a + b * 50.0 / z_cw
    cw = np.stack([r_cw * np.cos(z_cw) - 5.0, r_cw * np.sin(z_cw)], 1)
    r_cc = a + b * ts
    cc = np.stack([r_cc * np.cos(ts) + 5.0, r_cc * np.sin(ts)], 1)
    clockwise = np.arange(n) % 2 == 0
    rng.shuffle(clockwise)
    starts = rng.integers(0, n_total - 2 * n_window, size=n)
    true = np.stack([(cw if c else cc)[s:s + 2 * n_window] for c, s in zip(clockwise, starts)])
    obs = true[:, :n_window] + rng.normal(0, noise_std, size=(n, n_window, 2))
    k = max(2, int(round(obs_fraction * n_window)))
    mask = np.zeros((n, n_window), dtype=np.float32)
    for i in range(n):
        mask[i, 1 + rng.choice(n_window - 1, size=k - 1, replace=False)] = 1.0
    mask[:, 0] = 1.0  # every spiral is observed at its first time
    centre = np.where(clockwise[:, None], [-5.0, 0.0], [5.0, 0.0])
    f = lambda v: torch.tensor(np.asarray(v), dtype=torch.float32)
    return {"t": f(ts[:2 * n_window] - ts[0]), "true": f(true), "obs": f(obs * mask[..., None]),
            "mask": f(mask), "clockwise": torch.tensor(clockwise), "centre": f(centre)}


class _MLPField(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, d))

    def forward(self, t, z):
        return self.net(z)


class LatentODE(nn.Module):
    """Latent ODE (paper section 5): a GRU reads the observations backwards in time and gives
    q(z0) = N(mu, sigma^2); z(t) solves dz/dt = f(z) from z0; a decoder maps z(t) to the data."""

    def __init__(self, obs_dim: int = 2, latent_dim: int = 4, hidden: int = 20, rnn_hidden: int = 25,
                 rtol: float = 1e-3, atol: float = 1e-4, method: str = "dopri5", adjoint: bool = False):
        super().__init__()
        self.rnn = nn.GRU(obs_dim + 1, rnn_hidden, batch_first=True)
        self.to_q = nn.Linear(rnn_hidden, 2 * latent_dim)
        self.ode = ODEBlock(_MLPField(latent_dim, hidden), rtol=rtol, atol=atol, method=method, adjoint=adjoint)
        self.dec = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, obs_dim))

    def encode(self, obs, mask):
        x = torch.cat([obs, mask[..., None]], -1).flip(1)  # backwards in time, with the observed mask
        _, h = self.rnn(x)
        mu, logvar = self.to_q(h[-1]).chunk(2, -1)
        return mu, logvar

    def decode(self, z0, t):
        return self.dec(self.ode(z0, t).transpose(0, 1))  # (n, len(t), obs_dim)

    def forward(self, obs, mask, t, sample: bool = True):
        mu, logvar = self.encode(obs, mask)
        z0 = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return self.decode(z0, t), mu, logvar

    def loss(self, obs, mask, t, noise_std: float = 0.3):
        """Negative ELBO per spiral: Gaussian log-likelihood on the observed points, KL to N(0, I)."""
        x, mu, logvar = self(obs, mask, t[:obs.shape[1]])
        nll = 0.5 * (((x - obs) / noise_std) ** 2 * mask[..., None]).sum((1, 2))
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)
        return (nll + kl).mean()


class RNNBaseline(nn.Module):
    """Autoregressive GRU on the time grid: input (x * m, m) at step k, prediction of x at step k + 1.
    Extrapolation feeds back its own predictions as observed points."""

    def __init__(self, obs_dim: int = 2, hidden: int = 25):
        super().__init__()
        self.rnn = nn.GRU(obs_dim + 1, hidden, batch_first=True)
        self.out = nn.Linear(hidden, obs_dim)

    def loss(self, obs, mask, t=None, noise_std: float = 0.3):
        h, _ = self.rnn(torch.cat([obs[:, :-1], mask[:, :-1, None]], -1))
        err = ((self.out(h) - obs[:, 1:]) / noise_std) ** 2 * mask[:, 1:, None]
        return 0.5 * err.sum((1, 2)).mean()

    @torch.no_grad()
    def predict(self, obs, mask, n_future: int):
        """Predictions at steps 1..n_window-1 (one step ahead) and the next ``n_future`` steps."""
        h_seq, h = self.rnn(torch.cat([obs, mask[..., None]], -1))
        recon = self.out(h_seq)  # recon[:, k] predicts step k + 1
        x, future = recon[:, -1], []
        for _ in range(n_future):
            future.append(x)
            o, h = self.rnn(torch.cat([x, torch.ones_like(x[:, :1])], -1)[:, None], h)
            x = self.out(o[:, 0])
        return recon[:, :-1], torch.stack(future, 1)
