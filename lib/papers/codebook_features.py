"""Codebook features: vector-quantized bottlenecks in a transformer, and the TokFSM data.

Tamkin, Taufeeque and Goodman (2024), *Codebook Features: Sparse and Discrete Interpretability for
Neural Networks*. A codebook layer replaces an activation vector ``z`` by the sum of the ``k`` code
vectors most similar to it (cosine similarity) out of a learned codebook ``C``:

    idx = top-k_j  cos(z, C_j),      out = sum_{j in idx} C_j.

The forward value is the sum of codes; the backward pass is straight-through (``d out / d z = I``) and
the codes get the downstream gradient too, plus a reconstruction loss ``|out - z|^2``. A *group*
codebook splits ``z`` into ``groups`` equal slices (one per attention head) with one codebook each.

TokFSM (the paper's Section 3): a random finite state machine with ``n_states`` states, each with
``out_degree`` outgoing edges of random probability. A state is written as two digits in base
``base`` (``n_states <= base**2``), so the model sees digits, never whole states, and has to
combine two tokens to know where the machine is. Sequences are random walks, ``[BOS, d1(s0),
d2(s0), d1(s1), d2(s1), ...]``.

``CodebookTransformer`` is ``repro.nn.models.SmallTransformer`` with codebooks on every attention block
(a group codebook on the per-head outputs before the output projection) and every MLP block (on its
output). With ``codebook_at=()`` it computes exactly what SmallTransformer computes (the tests check
it) and serves as the baseline; it also records the MLP hidden activations ("neurons").
"""
from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.params import ParameterError, check_positive
from ..nn.models import SmallTransformer


# --------------------------------------------------------------------------------------------- data
class TokFSM:
    """A random finite state machine whose states are written as two base-``base`` digits."""

    def __init__(self, n_states: int = 100, out_degree: int = 10, base: int = 10, seed: int = 0):
        for name, v in (("n_states", n_states), ("out_degree", out_degree), ("base", base)):
            check_positive(name, v, integer=True)
        if n_states > base ** 2:
            raise ParameterError(f"n_states must be at most base**2 = {base ** 2}; got {n_states}.")
        if out_degree > n_states:
            raise ParameterError(f"out_degree must be at most n_states = {n_states}; got {out_degree}.")
        g = torch.Generator().manual_seed(seed)
        self.N, self.E, self.base, self.digits = n_states, out_degree, base, 2
        self.bos = base                      # token ids 0..base-1 are digits, base is BOS
        self.vocab = base + 1
        self.neighbors = torch.stack([torch.randperm(n_states, generator=g)[:out_degree] for _ in range(n_states)])
        w = -torch.log(torch.rand(n_states, out_degree, generator=g))   # Dirichlet(1) probabilities
        self.probs = w / w.sum(1, keepdim=True)
        self.transition_matrix = torch.zeros(n_states, n_states)
        self.transition_matrix.scatter_(1, self.neighbors, self.probs)
        states = torch.arange(n_states)
        self.d1, self.d2 = states // base, states % base
        # which first digits may follow state s, and which second digits given (s, first digit)
        self.first_ok = torch.zeros(n_states, base, dtype=torch.bool)
        self.second_ok = torch.zeros(n_states, base, base, dtype=torch.bool)
        for s in range(n_states):
            for n in self.neighbors[s].tolist():
                self.first_ok[s, n // base] = True
                self.second_ok[s, n // base, n % base] = True

    def walks(self, batch: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch`` random walks of ``length`` states, starting from a uniformly random state: (batch, length)."""
        s = torch.randint(self.N, (batch,), generator=generator)
        out = [s]
        for _ in range(length - 1):
            j = torch.multinomial(self.probs[s], 1, generator=generator)[:, 0]
            s = self.neighbors[s, j]
            out.append(s)
        return torch.stack(out, 1)

    def tokens(self, states: torch.Tensor) -> torch.Tensor:
        """States (B, L) -> token ids (B, 2L + 1): BOS, then two digits per state."""
        dig = torch.stack([states // self.base, states % self.base], -1).flatten(1)
        return torch.cat([torch.full_like(dig[:, :1], self.bos), dig], 1)

    def is_valid_walk(self, states: torch.Tensor) -> torch.Tensor:
        """Whether every step of each walk (B, L) is an edge of the machine: (B,) bool."""
        return (self.transition_matrix[states[:, :-1], states[:, 1:]] > 0).all(1)

    def valid_targets(self, states: torch.Tensor):
        """For the tokens of ``states`` (B, L): a mask (B, 2L, base) of the digits that may come next at
        each input position 0..2L-1 given the prefix, and a mask (B, 2L) of the scored positions (all
        but the first two, where the start state is still being read)."""
        B, L = states.shape
        valid = torch.zeros(B, 2 * L, self.base, dtype=torch.bool)
        valid[:, 0] = True                                   # BOS: any start state (first digit)
        valid[:, 1] = True
        s_prev = states[:, :-1]                              # state j, j = 0..L-2
        d1_next = states[:, 1:] // self.base
        valid[:, 2::2] = self.first_ok[s_prev]               # at d2(s_j): first digit of s_{j+1}
        valid[:, 3::2] = self.second_ok[s_prev, d1_next]     # at d1(s_{j+1}): its second digit
        scored = torch.ones(B, 2 * L, dtype=torch.bool)
        scored[:, :2] = False
        return valid, scored

    def state_labels(self, states: torch.Tensor):
        """The machine's current state at every input position (B, 2L + 1), and a mask of the positions
        where it has just been read completely (the second digit of a state)."""
        B, L = states.shape
        lab = torch.full((B, 2 * L + 1), -1, dtype=torch.long)
        lab[:, 2::2] = states
        lab[:, 3::2] = states[:, :-1]
        return lab, lab >= 0


# ------------------------------------------------------------------------------------------ codebook
class CodebookLayer(nn.Module):
    """Top-k cosine-similarity vector quantization with a straight-through gradient.

    ``groups`` splits the last dimension into equal slices, each with its own ``n_codes`` codes. After
    a forward pass ``last_idx`` holds the chosen codes, shape (..., groups, k), and ``aux_loss`` the
    reconstruction loss. Setting ``patch = (position, codes)`` (or a list of such pairs) replaces the chosen codes at that
    sequence position (dim -2 of the input) by ``codes`` (shape (B, groups, k) or (groups, k)): the
    paper's code intervention.
    """

    def __init__(self, dim: int, n_codes: int, k: int = 1, groups: int = 1):
        super().__init__()
        for name, v in (("dim", dim), ("n_codes", n_codes), ("k", k), ("groups", groups)):
            check_positive(name, v, integer=True)
        if dim % groups:
            raise ParameterError(f"dim must be divisible by groups; got dim={dim}, groups={groups}.")
        if k > n_codes:
            raise ParameterError(f"k must be at most n_codes = {n_codes}; got {k}.")
        self.dim, self.n_codes, self.k, self.groups = dim, n_codes, k, groups
        self.codes = nn.Parameter(torch.randn(groups, n_codes, dim // groups) / math.sqrt(dim // groups))
        self.register_buffer("usage", torch.zeros(groups, n_codes))
        self.patch = None
        self.last_idx = None
        self.aux_loss = torch.zeros(())

    def select(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of the k most cosine-similar codes per group: (..., groups, k)."""
        zg = F.normalize(z.unflatten(-1, (self.groups, -1)), dim=-1)          # (..., G, d)
        sim = torch.einsum("...gd,gcd->...gc", zg, F.normalize(self.codes, dim=-1))
        return sim.topk(self.k, dim=-1).indices

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Sum of the codes ``idx`` (..., groups, k) -> vectors (..., dim)."""
        offset = self.n_codes * torch.arange(self.groups, device=idx.device).view(self.groups, 1)
        # an embedding lookup rather than advanced indexing: its backward pass is deterministic on CPU
        flat = self.codes.reshape(self.groups * self.n_codes, -1)
        return F.embedding(idx + offset, flat).sum(-2).flatten(-2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        idx = self.select(z.detach())
        if self.patch is not None:
            idx = idx.clone()
            for pos, codes in (self.patch if isinstance(self.patch, list) else [self.patch]):
                idx[..., pos, :, :] = codes.to(idx.device)
        q = self.lookup(idx)
        self.last_idx = idx
        self.aux_loss = F.mse_loss(q, z)
        if self.training:
            with torch.no_grad():
                flat = (idx + self.n_codes * torch.arange(self.groups, device=idx.device).view(-1, 1)).flatten()
                self.usage += torch.bincount(flat, minlength=self.groups * self.n_codes).view_as(self.usage).float()
        return q + (z - z.detach())          # value: the codes; gradient: straight through to z

    @torch.no_grad()
    def replace_dead(self, z: torch.Tensor, min_usage: float = 1.0) -> int:
        """Re-initialize every code used fewer than ``min_usage`` times since the last call at a random
        input vector from ``z`` (..., dim); reset the usage counts. Returns how many were replaced."""
        pool = z.reshape(-1, self.groups, self.dim // self.groups)
        dead = self.usage < min_usage
        n = int(dead.sum())
        if n:
            g, c = dead.nonzero(as_tuple=True)
            pick = torch.randint(len(pool), (n,), device=pool.device)
            self.codes.data[g, c] = pool[pick, g]
        self.usage.zero_()
        return n


class CodebookTransformer(SmallTransformer):
    """SmallTransformer with codebooks after every attention block (group codebook over heads, before
    the output projection; ``"attn"``) and every MLP block (``"mlp"``). ``codebook_at=()`` gives the
    plain transformer. ``hidden`` holds the last forward pass's MLP hidden activations per layer."""

    def __init__(self, vocab: int, d_model: int = 128, n_layers: int = 2, n_heads: int = 4, max_len: int = 64,
                 d_mlp: int | None = None, n_codes: int = 1000, k_attn: int = 1, k_mlp: int = 1,
                 codebook_at=("attn", "mlp")):
        super().__init__(vocab, d_model, n_layers, n_heads, max_len, d_mlp)
        for where in codebook_at:
            if where not in ("attn", "mlp"):
                raise ParameterError(f"codebook_at must list 'attn' and/or 'mlp'; got {codebook_at!r}.")
        self.n_heads, self.codebook_at = n_heads, tuple(codebook_at)
        self.cb_attn = nn.ModuleList(CodebookLayer(d_model, n_codes, k_attn, n_heads) for _ in range(n_layers)) \
            if "attn" in codebook_at else None
        self.cb_mlp = nn.ModuleList(CodebookLayer(d_model, n_codes, k_mlp, 1) for _ in range(n_layers)) \
            if "mlp" in codebook_at else None
        self.hidden = []

    def codebooks(self) -> dict:
        """Name -> CodebookLayer, e.g. ``"L0 attn"``, ``"L1 mlp"``."""
        out = {}
        for l in range(len(self.blocks)):
            if self.cb_attn is not None:
                out[f"L{l} attn"] = self.cb_attn[l]
            if self.cb_mlp is not None:
                out[f"L{l} mlp"] = self.cb_mlp[l]
        return out

    def aux_loss(self) -> torch.Tensor:
        cbs = list(self.codebooks().values())
        return sum(cb.aux_loss for cb in cbs) / max(len(cbs), 1)

    def _attention(self, block, h, l):
        B, T, D = h.shape
        H = self.n_heads
        q, k, v = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, -1)
        q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=block.causal)        # (B, H, T, d)
        o = o.transpose(1, 2).reshape(B, T, D)
        if self.cb_attn is not None:
            o = self.cb_attn[l](o)
        return block.attn.out_proj(o)

    def forward(self, idx, last_only: bool = True):
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        self.hidden = []
        for l, block in enumerate(self.blocks):
            x = x + self._attention(block, block.ln1(x), l)
            lin1, act, lin2 = block.mlp
            hid = act(lin1(block.ln2(x)))
            self.hidden.append(hid)
            m = lin2(hid)
            if self.cb_mlp is not None:
                m = self.cb_mlp[l](m)
            x = x + m
        x = self.ln(x)
        return self.out(x[:, -1] if last_only else x)


# ------------------------------------------------------------------------------------------ training
def valid_token_accuracy(logits: torch.Tensor, fsm: TokFSM, states: torch.Tensor) -> float:
    """Fraction of scored positions where the arg-max next digit is one the machine allows; ``logits``
    are the model's outputs on the tokens of ``states`` (with or without the last token)."""
    valid, scored = fsm.valid_targets(states.cpu())
    pred = logits[:, :valid.shape[1], :fsm.base].argmax(-1).cpu()
    ok = valid.gather(-1, pred.unsqueeze(-1))[..., 0]
    return ok[scored].float().mean().item()


def train_fsm_model(model: nn.Module, fsm: TokFSM, *, steps: int, batch: int = 128, length: int = 16,
                    lr: float = 1e-3, aux_weight: float = 1.0, dead_every: int = 0, eval_every: int = 100,
                    seed: int = 0, desc: str = "training", progress: bool = True) -> pd.DataFrame:
    """Next-token training on fresh random walks (AdamW); the codebooks' reconstruction loss is added with
    weight ``aux_weight``; every ``dead_every`` steps unused codes are re-initialized at recent inputs.
    Returns the history (step, loss, valid-token accuracy on the batch)."""
    check_positive("steps", steps, integer=True)
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    has_cb = isinstance(model, CodebookTransformer) and model.codebook_at
    rows = []
    model.train()
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        states = fsm.walks(batch, length, g)
        tok = fsm.tokens(states).to(dev)
        logits = model(tok[:, :-1], last_only=False)
        loss = F.cross_entropy(logits.flatten(0, 1), tok[:, 1:].flatten())
        total = loss + aux_weight * model.aux_loss() if has_cb else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if has_cb and dead_every and step % dead_every == 0 and step < 0.8 * steps:
            with torch.no_grad():
                _ = model(tok[:, :-1], last_only=False)
            for l, cb in enumerate(model.cb_attn or []):
                cb.replace_dead(_attn_inputs(model, tok[:, :-1], l))
            for l, cb in enumerate(model.cb_mlp or []):
                cb.replace_dead(_mlp_outputs(model, l))
        if step % eval_every == 0 or step == steps:
            acc = valid_token_accuracy(logits.detach(), fsm, states)
            rows.append({"step": step, "loss": loss.item(), "valid-token accuracy": acc})
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.3f}")
    bar.close()
    model.eval()
    return pd.DataFrame(rows)


@torch.no_grad()
def _mlp_outputs(model: CodebookTransformer, l: int) -> torch.Tensor:
    return model.blocks[l].mlp[2](model.hidden[l])


@torch.no_grad()
def _attn_inputs(model: CodebookTransformer, tok: torch.Tensor, l: int) -> torch.Tensor:
    """The per-head attention outputs (before quantization) of layer ``l``, recomputed by a hooked pass."""
    store = {}
    cb = model.cb_attn[l]
    orig = cb.forward

    def grab(z):
        store["z"] = z.detach()
        return orig(z)
    cb.forward = grab
    try:
        model(tok, last_only=False)
    finally:
        cb.forward = orig
    return store["z"]


# ------------------------------------------------------------------------------------------ analysis
def best_code_per_state(code_idx: torch.Tensor, labels: torch.Tensor, n_codes: int, n_states: int) -> pd.DataFrame:
    """For one codebook: ``code_idx`` (M, k) the codes active at M positions, ``labels`` (M,) the state
    there. For every state, the code with the highest F1 as a detector of that state ("code active" =>
    "state is s"), with its precision and recall."""
    M = len(labels)
    active = torch.zeros(M, n_codes)
    active.scatter_(1, code_idx.cpu().long(), 1.0)
    Y = F.one_hot(labels.cpu(), n_states).float()               # (M, S)
    tp = Y.T @ active                                           # (S, codes)
    pred = active.sum(0, keepdim=True)
    pos = Y.sum(0, keepdim=True).T
    prec = tp / pred.clamp(min=1)
    rec = tp / pos.clamp(min=1)
    f1 = 2 * tp / (pred + pos).clamp(min=1)
    best = f1.argmax(1)
    s = torch.arange(n_states)
    return pd.DataFrame({"state": s.numpy(), "code": best.numpy(), "f1": f1[s, best].numpy(),
                         "precision": prec[s, best].numpy(), "recall": rec[s, best].numpy()})


def best_neuron_per_state(acts: torch.Tensor, labels: torch.Tensor, n_states: int) -> pd.DataFrame:
    """``acts`` (M, neurons) activations, ``labels`` (M,) states. For every state, the neuron and threshold
    (either direction: "above t" or "below t") with the highest F1 as a detector of that state."""
    acts = acts.float()
    M, n = acts.shape
    Y = F.one_hot(labels.to(acts.device), n_states).float()
    P = Y.sum(0)
    k = torch.arange(1, M + 1, device=acts.device, dtype=torch.float32).view(M, 1)
    rows = []
    best = {"f1": torch.zeros(n_states, device=acts.device), "neuron": torch.zeros(n_states, dtype=torch.long),
            "precision": torch.zeros(n_states), "recall": torch.zeros(n_states)}
    for sign in (1.0, -1.0):
        order = (sign * acts).argsort(0, descending=True)               # (M, n)
        for s in range(n_states):
            tp = Y[:, s][order].cumsum(0)                                # (M, n): predicted positives = top k
            f1 = 2 * tp / (k + P[s])
            val, flat = f1.flatten().max(0)
            if val > best["f1"][s]:
                i, j = divmod(int(flat), n)
                best["f1"][s] = val
                best["neuron"][s] = j
                best["precision"][s] = (tp[i, j] / (i + 1)).item()
                best["recall"][s] = (tp[i, j] / P[s].clamp(min=1)).item()
    for s in range(n_states):
        rows.append({"state": s, "neuron": int(best["neuron"][s]), "f1": float(best["f1"][s]),
                     "precision": float(best["precision"][s]), "recall": float(best["recall"][s])})
    return pd.DataFrame(rows)


@torch.no_grad()
def next_state_probs(model: nn.Module, tok: torch.Tensor, fsm: TokFSM, patches: dict | None = None,
                     patches_first: dict | None = None) -> torch.Tensor:
    """P(next state) after the prefixes ``tok`` (B, T), which end with a complete state: the model's
    probability of the first digit times that of the second digit given it (one extra pass per first
    digit). ``patches`` (codebook name -> codes (B, groups, k)) forces those codes at the last prefix
    position during all passes; ``patches_first`` likewise at the position before it (the first digit
    of the last state). Returns (B, n_states)."""
    cbs = model.codebooks() if isinstance(model, CodebookTransformer) else {}
    T = tok.shape[1]
    try:
        for name in set(patches or {}) | set(patches_first or {}):
            cbs[name].patch = ([(T - 1, patches[name])] if name in (patches or {}) else []) + \
                ([(T - 2, patches_first[name])] if name in (patches_first or {}) else [])
        p1 = model(tok, last_only=True)[:, :fsm.base].softmax(-1)          # (B, base)
        out = torch.zeros(len(tok), fsm.base, fsm.base, device=tok.device)
        for f in range(fsm.base):
            ext = torch.cat([tok, torch.full_like(tok[:, :1], f)], 1)
            p2 = model(ext, last_only=True)[:, :fsm.base].softmax(-1)
            out[:, f] = p1[:, f:f + 1] * p2
    finally:
        for cb in cbs.values():
            cb.patch = None
    return out.flatten(1)[:, :fsm.N]


def transition_accuracy(probs: torch.Tensor, fsm: TokFSM, states: torch.Tensor) -> torch.Tensor:
    """The paper's transition accuracy: the fraction of the model's ``out_degree`` most probable next
    states that are real transitions out of ``states`` (B,). Returns (B,)."""
    top = probs.topk(fsm.E, -1).indices.cpu()
    return (fsm.transition_matrix[states.cpu().view(-1, 1), top] > 0).float().mean(1)


def neuron_precision_at_recall(acts: torch.Tensor, labels: torch.Tensor, recall: torch.Tensor) -> torch.Tensor:
    """The paper's neuron baseline: for every state s, the best precision any single neuron reaches as a
    threshold detector of s (either direction) at a recall of at least ``recall[s]`` (the recall of the
    state's code). ``acts`` (M, neurons), ``labels`` (M,), ``recall`` (n_states,). Returns (n_states,)."""
    acts = acts.float()
    M, n = acts.shape
    n_states = len(recall)
    Y = F.one_hot(labels.to(acts.device), n_states).float()
    P = Y.sum(0)
    k = torch.arange(1, M + 1, device=acts.device, dtype=torch.float32).view(M, 1)
    best = torch.zeros(n_states)
    for sign in (1.0, -1.0):
        order = (sign * acts).argsort(0, descending=True)
        for s in range(n_states):
            if P[s] == 0:
                continue
            tp = Y[:, s][order].cumsum(0)
            prec = torch.where(tp / P[s] >= float(recall[s]) - 1e-9, tp / k, torch.zeros_like(tp))
            best[s] = max(best[s], prec.max().item())
    return best


def state_codes(model: CodebookTransformer, labels: torch.Tensor, at: torch.Tensor, n_states: int,
                codes: dict | None = None) -> dict:
    """For every codebook, the codes most often active when the machine is in each state, at the
    positions ``at`` (B, T) with states ``labels`` (B, T), taken from ``codes`` (name -> (B, T, groups, k))
    or else from the model's last forward pass: name -> (n_states, groups, k) code indices (the paper's
    "codes associated with a state")."""
    out = {}
    for name, cb in model.codebooks().items():
        idx = (codes[name] if codes is not None else cb.last_idx).cpu()[at.cpu()]   # (M, G, k)
        y = labels[at].cpu()
        counts = torch.zeros(n_states, cb.groups, cb.n_codes)
        oh = F.one_hot(idx, cb.n_codes).sum(-2).float()              # (M, G, C)
        counts.index_add_(0, y, oh)
        out[name] = counts.topk(cb.k, -1).indices                    # (S, G, k)
    return out
