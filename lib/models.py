"""The few model families the chapters share: MLP, small CNN, small transformer.

Every constructor validates its arguments with one clear sentence and takes its initialization
from the global torch seed (seed with ``repro.seed_everything`` first).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .runtime import ParameterError, check_choice, check_positive

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


@torch.no_grad()
def random_mlp_preactivations(x: torch.Tensor, width: int, depth: int, act: str = "relu", C_W: float = 2.0,
                              C_b: float = 0.0, n_networks: int = 100, tangent: torch.Tensor | None = None,
                              generator: torch.Generator | None = None) -> dict:
    """Preactivations of ``n_networks`` independently initialized MLPs on the inputs ``x`` (k, d_in).

    Weights ~ N(0, C_W / fan_in), biases ~ N(0, C_b), as :class:`MLP` with ``weight_std = sqrt(C_W)``;
    all networks run at once as batched matrix products, and each layer's weights are drawn when they
    are used, so memory holds one layer at a time. Returns ``z`` of shape (depth, n_networks, k, width);
    with ``tangent`` (k, d_in), also ``dz``: the Jacobian-vector products dz^(l) = J^(l) tangent,
    propagated exactly in forward mode.
    """
    for name, v in (("width", width), ("depth", depth), ("n_networks", n_networks)):
        check_positive(name, v, integer=True)
    check_positive("C_W", C_W)
    check_positive("C_b", C_b, allow_zero=True)
    sigma = activation(act)
    B, (k, d) = n_networks, x.shape
    dev, dt = x.device, x.dtype

    def layer(h, dh, fan_in):
        W = torch.randn(B, width, fan_in, generator=generator, device=dev, dtype=dt) * math.sqrt(C_W / fan_in)
        b = torch.randn(B, 1, width, generator=generator, device=dev, dtype=dt) * math.sqrt(C_b)
        z = torch.bmm(h, W.transpose(1, 2)) + b
        return z, (torch.bmm(dh, W.transpose(1, 2)) if dh is not None else None)

    h = x.expand(B, k, d)
    dh = tangent.expand(B, k, d) if tangent is not None else None
    zs, dzs = [], []
    for l in range(depth):
        z, dz = layer(h, dh, d if l == 0 else width)
        zs.append(z)
        if dz is not None:
            dzs.append(dz)
            h, dh = torch.func.jvp(sigma, (z,), (dz,))
        else:
            h = sigma(z)
    out = {"z": torch.stack(zs)}
    if tangent is not None:
        out["dz"] = torch.stack(dzs)
    return out


def lenet_300_100(d_in: int = 784, num_classes: int = 10, hidden=(300, 100), init: str = "glorot") -> MLP:
    """LeNet-300-100 (LeCun et al., 1998) as in the lottery-ticket paper: an :class:`MLP` with fully
    connected layers d_in -> 300 -> 100 -> classes and ReLU. ``init="glorot"`` draws the weights from
    the Gaussian Glorot distribution N(0, 2 / (fan_in + fan_out)) with zero biases (the paper's
    choice); ``"torch"`` keeps torch's default. Parameters are named ``layers.0.weight``, ``layers.0.bias``, ...
    """
    check_choice("init", init, ("glorot", "torch"))
    check_positive("d_in", d_in, integer=True)
    check_positive("num_classes", num_classes, integer=True)
    for h in hidden:
        check_positive("hidden", h, integer=True)
    dims = [d_in, *hidden, num_classes]
    model = MLP(d_in, 1, 0, 1)  # reuse MLP's forward (flatten, ReLU between layers) with custom layers
    model.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    if init == "glorot":
        for layer in model.layers:
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


class ResidualBlock(nn.Module):
    """He et al.'s basic block for vectors: ``relu(bn(W2 relu(bn(W1 h))) + h)``; with ``skip=False``
    the identity shortcut is removed and everything else stays (``relu(bn(W2 relu(bn(W1 h))))``)."""

    def __init__(self, width: int, skip: bool = True, batch_norm: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(width, width, bias=not batch_norm)
        self.fc2 = nn.Linear(width, width, bias=not batch_norm)
        self.bn1 = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.skip = skip

    def forward(self, h):
        out = self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(h)))))
        return torch.relu(out + h) if self.skip else torch.relu(out)


class ResidualMLP(nn.Module):
    """A fully connected ResNet: a linear stem (d_in -> width, batch norm, ReLU), ``blocks`` residual
    blocks (:class:`ResidualBlock`) and a linear head; ``2 * blocks + 2`` weight layers in all.

    ``skip=False`` gives the same network with every shortcut removed (the "noshort" networks of
    Li et al., 2018), so the two differ only in the skips. Inputs are flattened.
    """

    def __init__(self, d_in: int, width: int, blocks: int, d_out: int, skip: bool = True, batch_norm: bool = True):
        super().__init__()
        for name, v in (("d_in", d_in), ("width", width), ("d_out", d_out)):
            check_positive(name, v, integer=True)
        check_positive("blocks", blocks, integer=True, allow_zero=True)
        self.stem = nn.Sequential(nn.Linear(d_in, width, bias=not batch_norm),
                                  nn.BatchNorm1d(width) if batch_norm else nn.Identity(), nn.ReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(width, skip, batch_norm) for _ in range(blocks)])
        self.head = nn.Linear(width, d_out)

    @property
    def depth(self) -> int:
        """Number of weight layers."""
        return 2 * len(self.blocks) + 2

    def forward(self, x):
        return self.head(self.blocks(self.stem(x.flatten(1))))


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


class MaxoutMLP(nn.Module):
    """A fully connected maxout network (Goodfellow et al., 2013): each hidden unit is the maximum of
    ``pieces`` affine functions of the layer's input, h_j = max_k (W x + b)_{j,k}; ``depth`` hidden layers
    of ``width`` units, then a linear output layer. Inputs are flattened. Parameters keep torch's
    default initialization (seed first)."""

    def __init__(self, d_in: int, width: int, depth: int, d_out: int, pieces: int = 3):
        super().__init__()
        for name, v in (("d_in", d_in), ("width", width), ("depth", depth), ("d_out", d_out), ("pieces", pieces)):
            check_positive(name, v, integer=True)
        dims = [d_in] + [width] * depth
        self.pieces = pieces
        self.hidden = nn.ModuleList(nn.Linear(a, b * pieces) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(width, d_out)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            z = layer(x)  # units are contiguous blocks of `pieces` outputs
            x = z.view(*z.shape[:-1], -1, self.pieces).amax(-1)
        return self.out(x)


class LSTMClassifier(nn.Module):
    """A one-layer LSTM that reads a sequence and classifies it from its last hidden state.

    The input (batch, length * d_in) or (batch, length, d_in) is read ``chunk`` time steps at a time
    (each step sees ``chunk * d_in`` numbers), so a length-40 signal with ``chunk=4`` is 10 steps. The
    cell is written out (the gate order i, f, g, o and the equations of ``torch.nn.LSTM``, one bias),
    so that it runs under ``torch.func.vmap`` (``train_ensemble``, ``landscape.evaluate_stacked``),
    which ``nn.LSTM`` does not."""

    def __init__(self, d_in: int, hidden: int, d_out: int, chunk: int = 1):
        super().__init__()
        for name, v in (("d_in", d_in), ("hidden", hidden), ("d_out", d_out), ("chunk", chunk)):
            check_positive(name, v, integer=True)
        self.hidden_size, self.step_in = hidden, d_in * chunk
        self.ih = nn.Linear(self.step_in, 4 * hidden)
        self.hh = nn.Linear(hidden, 4 * hidden, bias=False)
        self.out = nn.Linear(hidden, d_out)

    def forward(self, x):
        B = x.shape[0]
        if x.reshape(B, -1).shape[1] % self.step_in:
            raise ValueError(f"the input length must be a multiple of chunk * d_in = {self.step_in}; "
                             f"got {x.reshape(B, -1).shape[1]}.")
        gx = self.ih(x.reshape(B, -1, self.step_in))  # (B, T, 4H): the input's share of every gate at once
        H = self.hidden_size
        h = gx.new_zeros(B, H)
        c = gx.new_zeros(B, H)
        for t in range(gx.shape[1]):
            gates = gx[:, t] + self.hh(h)
            s = torch.sigmoid(gates)
            c = s[:, H:2 * H] * c + s[:, :H] * torch.tanh(gates[:, 2 * H:3 * H])
            h = s[:, 3 * H:] * torch.tanh(c)
        return self.out(h)


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
