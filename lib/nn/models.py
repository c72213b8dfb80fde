"""The few model families the chapters share: MLP, small CNN, small transformer.

Every constructor validates its arguments with one clear sentence and takes its initialization
from the global torch seed (seed with ``repro.seed_everything`` first). Models that only one
chapter uses live in that chapter's module under ``repro.papers``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..core.params import ParameterError, check_choice, check_positive

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid,
               "linear": nn.Identity, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """A fully connected network: ``depth`` hidden layers of ``width`` units.

    ``weight_std`` sets the initialization: weights ~ N(0, weight_std**2 / fan_in) and biases
    ~ N(0, bias_std**2) (the (C_W, C_b) convention of Roberts, Yaida and Hanin); None keeps torch's
    default (Kaiming-uniform) initialization.
    """

    def __init__(self, d_in: int, width: int, depth: int, d_out: int, act: str = "relu",
                 weight_std: float | None = None, bias_std: float = 0.0, bias: bool = True):
        super().__init__()
        for name, v in (("d_in", d_in), ("width", width), ("d_out", d_out)):
            check_positive(name, v, integer=True)
        check_positive("depth", depth, integer=True, allow_zero=True)
        dims = [d_in] + [width] * depth + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation(act)
        if weight_std is not None:
            check_positive("weight_std", weight_std)
            for layer in self.layers:
                nn.init.normal_(layer.weight, std=weight_std / math.sqrt(layer.in_features))
                if bias:
                    if bias_std > 0:
                        nn.init.normal_(layer.bias, std=bias_std)
                    else:
                        nn.init.zeros_(layer.bias)

    def forward(self, x, return_preactivations: bool = False):
        x = x.flatten(1)
        pre = []
        for layer in self.layers[:-1]:
            z = layer(x)
            pre.append(z)
            x = self.act(z)
        out = self.layers[-1](x)
        return (out, pre) if return_preactivations else out


class SmallCNN(nn.Module):
    """A small convolutional net for 28x28 (or 8x8) single-channel images: conv blocks then a linear head."""

    def __init__(self, in_channels: int = 1, side: int = 28, channels=(32, 64), hidden: int = 128,
                 num_classes: int = 10, act: str = "relu"):
        super().__init__()
        check_positive("side", side, integer=True)
        for c in channels:
            check_positive("channels", c, integer=True)
        blocks, c_in, s = [], in_channels, side
        for c in channels:
            blocks += [nn.Conv2d(c_in, c, 3, padding=1), activation(act), nn.MaxPool2d(2)]
            c_in, s = c, s // 2
        if s < 1:
            raise ParameterError(f"channels has too many blocks for {side}x{side} inputs; use at most "
                                 f"{int(math.log2(side))}.")
        self.side, self.in_channels = side, in_channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * s * s, hidden), activation(act),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x):
        x = x.reshape(-1, self.in_channels, self.side, self.side)
        return self.head(self.features(x))


class TransformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int, dropout: float = 0.0, causal: bool = True):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_mlp), nn.GELU(), nn.Linear(d_mlp, d_model))
        self.causal = causal

    def forward(self, x):
        n = x.shape[1]
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), 1) if self.causal else None
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class SmallTransformer(nn.Module):
    """A decoder-only (pre-LayerNorm) transformer over token ids; returns the logits at the last position
    (``last_only=True``) or at every position."""

    def __init__(self, vocab: int, d_model: int = 128, n_layers: int = 2, n_heads: int = 4, max_len: int = 64,
                 d_mlp: int | None = None, n_out: int | None = None, dropout: float = 0.0, causal: bool = True):
        super().__init__()
        for name, v in (("vocab", vocab), ("d_model", d_model), ("n_layers", n_layers), ("n_heads", n_heads),
                        ("max_len", max_len)):
            check_positive(name, v, integer=True)
        if d_model % n_heads:
            raise ParameterError(f"d_model must be divisible by n_heads; got d_model={d_model}, n_heads={n_heads}.")
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) / math.sqrt(d_model))
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, d_mlp or 4 * d_model, dropout, causal)
                                    for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, n_out or vocab)

    def forward(self, idx, last_only: bool = True):
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        x = self.ln(x)
        return self.out(x[:, -1] if last_only else x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Gaussian(nn.Module):
    """The Gaussian activation exp(-z^2) (Neural Redshift, Teney et al., 2024)."""

    def forward(self, z):
        return torch.exp(-z * z)


class Sine(nn.Module):
    """The sine activation sin(z) (SIREN-style; Neural Redshift, Teney et al., 2024)."""

    def forward(self, z):
        return torch.sin(z)


ACTIVATIONS["gaussian"] = Gaussian
ACTIVATIONS["sine"] = Sine
