"""Sequence-to-sequence models that output positions of their input, and planar geometry tasks.

Vinyals, Fortunato and Jaitly (2015), *Pointer Networks*. Three models share one encoder-decoder:

* ``Seq2Seq(attention=False)``: an LSTM encoder-decoder (Sutskever et al., 2014) whose decoder ends in
  a softmax over a *fixed* vocabulary of ``vocab`` point indices plus an end token;
* ``Seq2Seq(attention=True)``: the same with content-based (additive) attention over the encoder
  states, whose blended context ``d'_i`` is concatenated to the decoder state, used for the
  prediction and fed to the next decoder step (Bahdanau et al., 2015; Vinyals et al., 2015);
* ``PointerNet``: the attention scores themselves are the output distribution,
  ``p(C_i | C_<i, P) = softmax_j(v^T tanh(W1 e_j + W2 d_i))``, over the input positions plus an end
  token, so the output "vocabulary" grows with the input.

Token convention (all models, all tasks): token 0 is the end of the output sequence and token
``k >= 1`` names input point ``k - 1``. Targets are padded with ``PAD = -1`` after the end token.
Coordinates enter through one linear embedding after standardizing them for the unit square. Training
uses teacher forcing (the decoder's input at step ``i`` is the embedded point named at step ``i - 1``,
a learned "go" vector at step 0); ``decode`` is greedy, optionally never naming a point twice
(``constrain="distinct"``) or only emitting complete tours (``constrain="tour"``).

Tasks: ``hull_batch`` (planar convex hull, the paper's convention: the hull vertices counter-clockwise
starting from the lowest index, then the end token) and ``tsp_batch`` (optimal tours by brute force,
starting at point 0, in the direction whose second city has the lower index). Metrics:
``sequence_accuracy``, ``area_coverage`` (predicted polygon area over true hull area; a prediction that
is not a simple polygon on the input points is invalid) and ``tour_length``.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.params import ParameterError, check_choice, check_positive

END = 0   # the end-of-output token
PAD = -1  # padding after the end token (ignored by the loss)


# --------------------------------------------------------------------------------------------------
# Data: convex hulls and travelling-salesman tours
# --------------------------------------------------------------------------------------------------

def uniform_points(batch: int, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``batch`` sets of ``n`` points drawn uniformly from the unit square, shape (batch, n, 2)."""
    check_positive("batch", batch, integer=True)
    check_positive("n", n, integer=True)
    return torch.rand(batch, n, 2, generator=generator).to(device)


def _gift_wrap(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Jarvis's march on a batch of point sets at once (points in general position).

    Starts at the lowest point (always a hull vertex) and repeatedly moves to the point reached by the
    smallest counter-clockwise turn from the current direction, until it is back at the start.
    Returns (walk (B, n) of vertex indices, counter-clockwise, padded with -1; hull sizes (B,))."""
    p = points.double()
    B, n, _ = p.shape
    rows = torch.arange(B, device=p.device)
    start = p[..., 1].argmin(-1)
    cur, direction = start, torch.tensor([1.0, 0.0], dtype=p.dtype, device=p.device).expand(B, 2)
    walk = torch.full((B, n), -1, dtype=torch.long, device=p.device)
    size = torch.zeros(B, dtype=torch.long, device=p.device)
    done = torch.zeros(B, dtype=torch.bool, device=p.device)
    for t in range(n):
        walk[:, t] = torch.where(done, walk[:, t], cur)
        size += (~done).long()
        rel = p - p[rows, cur][:, None]                                   # (B, n, 2)
        turn = torch.atan2(direction[:, None, 0] * rel[..., 1] - direction[:, None, 1] * rel[..., 0],
                           (direction[:, None] * rel).sum(-1)) % (2 * math.pi)   # CCW angle from direction
        turn[rows, cur] = math.inf
        nxt = turn.argmin(-1)
        direction = p[rows, nxt] - p[rows, cur]
        cur = nxt
        done = done | (nxt == start)
        if done.all():
            break
    return walk, size


def hull_tokens(points: torch.Tensor, method: str = "wrap") -> torch.Tensor:
    """Target tokens (B, T) of the convex hull of every point set: the hull vertices counter-clockwise,
    starting from the lowest index (the paper's convention), then END, padded with PAD. ``method``
    "wrap" runs a batched gift-wrapping walk on the points' device; "scipy" calls
    ``scipy.spatial.ConvexHull`` (Qhull) on every set."""
    check_choice("method", method, ("wrap", "scipy"))
    B, n, _ = points.shape
    if method == "scipy":
        from scipy.spatial import ConvexHull
        walk = torch.full((B, n), -1, dtype=torch.long)
        size = torch.zeros(B, dtype=torch.long)
        for b, p in enumerate(points.detach().cpu().double().numpy()):
            v = ConvexHull(p).vertices                                  # counter-clockwise in 2-D
            walk[b, :len(v)] = torch.as_tensor(v)
            size[b] = len(v)
        walk, size = walk.to(points.device), size.to(points.device)
    else:
        walk, size = _gift_wrap(points)
    T = int(size.max()) + 1
    first = walk.masked_fill(walk < 0, n).argmin(-1)                    # where the lowest index sits
    pos = torch.arange(T, device=walk.device)[None]
    rotated = torch.gather(walk, 1, (pos[:, :T - 1] + first[:, None]) % size[:, None])   # (B, T - 1)
    tok = torch.full((B, T), PAD, dtype=torch.long, device=walk.device)
    tok[:, :T - 1] = torch.where(pos[:, :T - 1] < size[:, None], rotated + 1, PAD)
    tok[torch.arange(B, device=walk.device), size] = END
    return tok


def convex_hull_sequences(points: torch.Tensor, method: str = "wrap") -> list[list[int]]:
    """The convex hull of every point set as a list of point indices (see ``hull_tokens``)."""
    return from_tokens(hull_tokens(points, method))[0]


def to_tokens(seqs: list[list[int]], device=None) -> torch.Tensor:
    """Index sequences -> token tensor (B, max_len + 1): indices + 1, then END, padded with PAD."""
    T = max(len(s) for s in seqs) + 1
    out = np.full((len(seqs), T), PAD, dtype=np.int64)
    for b, s in enumerate(seqs):
        out[b, :len(s)] = np.asarray(s, dtype=np.int64) + 1
        out[b, len(s)] = END
    return torch.from_numpy(out).to(device)


def from_tokens(tokens: torch.Tensor) -> tuple[list[list[int]], np.ndarray]:
    """Token tensor -> (index sequences up to the first END, whether an END was produced)."""
    tok = tokens.detach().cpu().numpy()
    seqs, ended = [], np.zeros(len(tok), dtype=bool)
    for b, row in enumerate(tok):
        stop = np.flatnonzero(row == END)
        k = stop[0] if len(stop) else len(row)
        ended[b] = len(stop) > 0
        seqs.append([int(t) - 1 for t in row[:k] if t != PAD])
    return seqs, ended


def hull_batch(batch: int, n: int, generator: torch.Generator | None = None, device=None):
    """A batch of the convex-hull task: points (batch, n, 2) and target tokens (batch, T)."""
    pts = uniform_points(batch, n, generator, device)
    return pts, hull_tokens(pts)


@functools.lru_cache(maxsize=None)
def _canonical_tours(n: int, device: str = "cpu") -> torch.Tensor:
    """All tours of n cities starting at city 0, one per direction class (second city < last city)."""
    perms = [p for p in itertools.permutations(range(1, n)) if n < 3 or p[0] < p[-1]]
    return torch.tensor([(0,) + p for p in perms], dtype=torch.long).to(device)


@functools.lru_cache(maxsize=None)
def _tour_incidence(n: int, device: str = "cpu") -> torch.Tensor:
    """(P, n*n) matrix with a 1 at (tour, i*n + j) for every edge i -> j of the tour (kept on ``device``)."""
    tours = _canonical_tours(n, device)
    inc = torch.zeros(len(tours), n * n, dtype=torch.float64, device=device)
    inc.scatter_(1, tours * n + tours.roll(-1, dims=1), 1.0)
    return inc


def tour_length(points: torch.Tensor, tours: torch.Tensor) -> torch.Tensor:
    """Length of the closed tours (B, n) over points (B, n, 2), shape (B,)."""
    p = torch.gather(points, 1, tours[..., None].expand(-1, -1, 2))
    return (p - p.roll(-1, dims=1)).norm(dim=-1).sum(-1)


def tsp_brute_force(points: torch.Tensor, chunk: int = 2 ** 23) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal tours by exhaustive search (n <= 10): (tours (B, n) starting at 0 in canonical direction,
    lengths (B,)). Every tour's length is one row of a matrix product with the tours' edge-incidence
    matrix; runs on the points' device, in chunks of about ``chunk`` tour lengths."""
    B, n, _ = points.shape
    if n > 10:
        raise ParameterError(f"tsp_brute_force enumerates (n-1)!/2 tours and takes n <= 10 points; got n={n}.")
    tours = _canonical_tours(n, str(points.device))                     # (P, n)
    inc = _tour_incidence(n, str(points.device))                        # (P, n*n)
    per = max(1, chunk // len(tours))
    best_t, best_l = [], []
    for s in range(0, B, per):
        p = points[s:s + per].double()
        d = torch.cdist(p, p).flatten(1)                                # (b, n*n)
        l, k = (d @ inc.T).min(-1)                                      # every tour's length, the shortest
        best_t.append(tours[k])
        best_l.append(l.to(points.dtype))
    return torch.cat(best_t), torch.cat(best_l)


def tsp_batch(batch: int, n: int, generator: torch.Generator | None = None, device=None):
    """A batch of the TSP task: points (batch, n, 2), target tokens (batch, n + 1), optimal lengths."""
    pts = uniform_points(batch, n, generator, device)
    tours, lengths = tsp_brute_force(pts)
    tokens = torch.cat([tours + 1, torch.full((batch, 1), END, device=pts.device)], 1)
    return pts, tokens, lengths


def nearest_neighbour_tours(points: torch.Tensor) -> torch.Tensor:
    """The greedy nearest-neighbour heuristic from city 0 (a classical baseline), tours (B, n)."""
    B, n, _ = points.shape
    d = torch.cdist(points, points)
    visited = torch.zeros(B, n, dtype=torch.bool, device=points.device)
    cur = torch.zeros(B, dtype=torch.long, device=points.device)
    rows = torch.arange(B, device=points.device)
    tour = [cur]
    visited[rows, cur] = True
    for _ in range(n - 1):
        cur = d[rows, cur].masked_fill(visited, float("inf")).argmin(-1)
        visited[rows, cur] = True
        tour.append(cur)
    return torch.stack(tour, 1)


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------

def sequence_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of outputs equal to the target token by token up to and including the END token."""
    ps, pe = from_tokens(pred)
    ts, _ = from_tokens(target)
    return float(np.mean([e and p == t for p, t, e in zip(ps, ts, pe)]))


def polygon_area(xy: np.ndarray) -> float:
    """Signed shoelace area of the polygon with vertices ``xy`` (k, 2); positive when counter-clockwise."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _segments_cross(a, b, c, d) -> np.ndarray:
    """Whether segments a-b and c-d properly intersect (arrays of shape (m, 2))."""
    def orient(p, q, r):
        return np.sign((q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0]))
    return (orient(a, b, c) * orient(a, b, d) < 0) & (orient(c, d, a) * orient(c, d, b) < 0)


def is_simple_polygon(xy: np.ndarray) -> bool:
    """True when the closed polygon ``xy`` (k, 2) has k >= 3 distinct vertices, non-zero area, and no
    two non-adjacent edges cross."""
    k = len(xy)
    if k < 3 or len(np.unique(xy, axis=0)) < k or abs(polygon_area(xy)) < 1e-12:
        return False
    i, j = np.triu_indices(k, 2)
    keep = ~((i == 0) & (j == k - 1))                                   # the first and last edge are adjacent
    i, j = i[keep], j[keep]
    if len(i) == 0:
        return True
    nxt = np.roll(np.arange(k), -1)
    return not _segments_cross(xy[i], xy[nxt[i]], xy[j], xy[nxt[j]]).any()


def hull_areas(points: torch.Tensor) -> np.ndarray:
    """Area of the convex hull of every point set, shape (B,)."""
    pts = points.detach().cpu().double().numpy()
    return np.array([polygon_area(p[h]) for p, h in zip(pts, convex_hull_sequences(points))])


def area_coverage(points: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per set: (area of the predicted polygon / area of the true hull, whether the prediction is valid).

    A prediction is valid when it ends with END, names only existing points, none twice, and forms a
    simple polygon; since its vertices are input points it then lies inside the hull, so its coverage is
    at most 1. Invalid predictions get coverage 0 (the paper reports FAIL when more than 1% are invalid).
    """
    pts = points.detach().cpu().double().numpy()
    ps, ended = from_tokens(pred)
    ts, _ = from_tokens(target)
    cov, valid = np.zeros(len(pts)), np.zeros(len(pts), dtype=bool)
    for b, (p, t) in enumerate(zip(ps, ts)):
        n = len(pts[b])
        if not ended[b] or len(p) != len(set(p)) or any(i < 0 or i >= n for i in p):
            continue
        xy = pts[b][p]
        if not is_simple_polygon(xy):
            continue
        valid[b] = True
        cov[b] = abs(polygon_area(xy)) / abs(polygon_area(pts[b][t]))
    return cov, valid


def hull_metrics(points: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> dict:
    """Exact accuracy, the invalid fraction, the mean coverage over valid outputs (the paper's "area")
    and the mean coverage counting invalid outputs as 0."""
    cov, valid = area_coverage(points, pred, target)
    return {"accuracy": sequence_accuracy(pred, target), "invalid": float(1 - valid.mean()),
            "coverage (valid)": float(cov[valid].mean()) if valid.any() else float("nan"),
            "coverage (invalid = 0)": float(cov.mean())}


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------

class _EncoderDecoder(nn.Module):
    """The shared LSTM encoder and decoder. Subclasses define the output layer."""

    def __init__(self, hidden: int = 128, d_in: int = 2, init_scale: float = 0.08, feed_size: int = 0):
        super().__init__()
        check_positive("hidden", hidden, integer=True)
        self.hidden, self.d_in = hidden, d_in
        self.embed = nn.Linear(d_in, hidden)                           # a linear map of the coordinates
        self.go = nn.Parameter(torch.zeros(hidden))                    # the decoder's first input
        self.encoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.decoder = nn.LSTM(hidden + feed_size, hidden, batch_first=True)
        self.init_scale = init_scale

    def _init(self):
        for name, p in self.named_parameters():
            if not name.startswith("embed."):                          # the embedding keeps torch's default
                nn.init.uniform_(p, -self.init_scale, self.init_scale)  # the paper's U[-0.08, 0.08]

    def _embed(self, xy):
        """Embed coordinates standardized for the unit square (mean 1/2, standard deviation 1/sqrt(12))."""
        return self.embed((xy - 0.5) * math.sqrt(12.0))

    def encode(self, points):
        """Encoder states (B, n, H) and the final (h, c), each (B, H)."""
        enc, (h, c) = self.encoder(self._embed(points))
        return enc, (h[0], c[0])

    def _cell(self, x, state):
        """One decoder step with the decoder LSTM's weights: (output, new (h, c))."""
        d = self.decoder
        h, c = torch.lstm_cell(x, state, d.weight_ih_l0, d.weight_hh_l0, d.bias_ih_l0, d.bias_hh_l0)
        return h, (h, c)

    def _run_decoder(self, inputs, state):
        """The decoder over a whole teacher-forced input sequence (B, T, ·) in one call."""
        d, _ = self.decoder(inputs, (state[0][None], state[1][None]))
        return d

    def _inputs_from_tokens(self, points, tokens):
        """Decoder inputs: go, then the embedded point named by each previous token (zeros for END/PAD
        or for an index beyond the input)."""
        B, n, _ = points.shape
        prev = tokens[:, :-1]
        ok = (prev >= 1) & (prev <= n)
        idx = (prev - 1).clamp(0, n - 1)
        xy = torch.gather(points, 1, idx[..., None].expand(-1, -1, self.d_in))
        go = self.go.expand(B, 1, -1)
        return torch.cat([go, self._embed(xy) * ok[..., None]], 1)

    def step_input(self, points, tok):
        B, n, _ = points.shape
        ok = (tok >= 1) & (tok <= n)
        xy = points[torch.arange(B, device=points.device), (tok - 1).clamp(0, n - 1)]
        return self._embed(xy) * ok[:, None]

    @torch.no_grad()
    def decode(self, points: torch.Tensor, max_len: int | None = None, constrain: str | None = None) -> torch.Tensor:
        """Greedy decoding, tokens (B, max_len) padded with PAD after END. ``constrain="distinct"`` forbids
        naming a point twice; ``constrain="tour"`` also forbids ending before every point is named (the
        paper's TSP decoder searches only valid tours). None decodes freely."""
        check_choice("constrain", constrain, (None, "distinct", "tour"))
        B, n, _ = points.shape
        max_len = max_len or n + 1
        was = self.training
        self.eval()
        ctx = self._start(points)
        x = self.go.expand(B, -1)
        out = torch.full((B, max_len), PAD, dtype=torch.long, device=points.device)
        done = torch.zeros(B, dtype=torch.bool, device=points.device)
        visited = torch.zeros(B, self._n_out(n), dtype=torch.bool, device=points.device)
        for t in range(max_len):
            logits, ctx = self._step(x, ctx)
            if constrain is not None:
                mask = visited.clone()
                mask[:, END] = (visited[:, 1:].sum(-1) < n) if constrain == "tour" else False
                logits = logits.masked_fill(mask, float("-inf"))
            tok = logits.argmax(-1)
            tok = torch.where(done, torch.full_like(tok, PAD), tok)
            out[:, t] = tok
            visited[torch.arange(B, device=points.device), tok.clamp(min=0)] |= ~done
            done = done | (tok == END)
            if done.all():
                break
            x = self.step_input(points, tok)
        self.train(was)
        return out


class Seq2Seq(_EncoderDecoder):
    """LSTM encoder-decoder with a softmax over a fixed vocabulary: END plus ``vocab`` point indices.
    With ``attention`` the decoder attends over the encoder states (additive attention) and the
    concatenation [d_i; d'_i] both makes the prediction and is fed to the next step."""

    def __init__(self, vocab: int, hidden: int = 128, attention: bool = False, d_in: int = 2,
                 init_scale: float = 0.08):
        check_positive("vocab", vocab, integer=True)
        super().__init__(hidden, d_in, init_scale, feed_size=2 * hidden if attention else 0)
        self.vocab, self.attention = vocab, attention
        if attention:
            self.W1 = nn.Linear(hidden, hidden, bias=False)
            self.W2 = nn.Linear(hidden, hidden, bias=False)
            self.v = nn.Linear(hidden, 1, bias=False)
        self.out = nn.Linear(2 * hidden if attention else hidden, vocab + 1)
        self._init()

    def _n_out(self, n):
        return self.vocab + 1

    def _attend(self, enc, keys, d):
        a = torch.softmax(self.v(torch.tanh(keys + self.W2(d)[:, None])).squeeze(-1), -1)
        return torch.einsum("bn,bnh->bh", a, enc)

    def _start(self, points):
        enc, state = self.encode(points)
        feed = torch.zeros(len(points), 2 * self.hidden, device=points.device) if self.attention else None
        return {"enc": enc, "keys": self.W1(enc) if self.attention else None, "state": state, "feed": feed}

    def _step(self, x, ctx):
        if self.attention:
            x = torch.cat([x, ctx["feed"]], -1)
        d, state = self._cell(x, ctx["state"])
        if self.attention:
            h = torch.cat([d, self._attend(ctx["enc"], ctx["keys"], d)], -1)
            ctx = {**ctx, "state": state, "feed": h}
        else:
            h = d
            ctx = {**ctx, "state": state}
        return self.out(h), ctx

    def forward(self, points: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, vocab + 1) for target tokens (B, T)."""
        if points.shape[1] > self.vocab:
            raise ParameterError(f"this Seq2Seq names at most vocab={self.vocab} points; got {points.shape[1]}.")
        emb = self._inputs_from_tokens(points, tokens)
        if not self.attention:                                         # the whole decoder in one call
            enc, state = self.encode(points)
            return self.out(self._run_decoder(emb, state))
        ctx = self._start(points)
        logits = []
        for t in range(emb.shape[1]):
            lo, ctx = self._step(emb[:, t], ctx)
            logits.append(lo)
        return torch.stack(logits, 1)


class PointerNet(_EncoderDecoder):
    """Pointer network: the additive attention scores over the input positions (plus a learned END
    position) are the output distribution, so the number of output classes is n + 1 for n points."""

    def __init__(self, hidden: int = 128, d_in: int = 2, init_scale: float = 0.08):
        super().__init__(hidden, d_in, init_scale)
        self.W1 = nn.Linear(hidden, hidden, bias=False)
        self.W2 = nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, 1, bias=False)
        self.end_key = nn.Parameter(torch.zeros(hidden))               # the encoder state END points to
        self._init()

    def _n_out(self, n):
        return n + 1

    def _keys(self, enc):
        e = torch.cat([self.end_key.expand(len(enc), 1, -1), enc], 1)  # position 0 is END
        return self.W1(e)

    def _scores(self, keys, d):
        """u_j = v^T tanh(W1 e_j + W2 d) for keys (B, n+1, H) and decoder states d (B, [T,] H)."""
        if d.dim() == 2:
            return self.v(torch.tanh(keys + self.W2(d)[:, None])).squeeze(-1)
        return self.v(torch.tanh(keys[:, None] + self.W2(d)[:, :, None])).squeeze(-1)

    def _start(self, points):
        enc, state = self.encode(points)
        return {"keys": self._keys(enc), "state": state}

    def _step(self, x, ctx):
        d, state = self._cell(x, ctx["state"])
        return self._scores(ctx["keys"], d), {**ctx, "state": state}

    def forward(self, points: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, n + 1) for target tokens (B, T)."""
        enc, state = self.encode(points)
        d = self._run_decoder(self._inputs_from_tokens(points, tokens), state)
        return self._scores(self._keys(enc), d)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------

def sequence_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per output token, ignoring PAD."""
    return F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), ignore_index=PAD)


def fit(model: nn.Module, sample, *, steps: int, lr: float = 1e-3, clip: float = 2.0, final_lr: float = 1.0,
        eval_every: int = 0, evaluate=None, desc: str = "training", progress: bool = True) -> pd.DataFrame:
    """Train with Adam and teacher forcing on fresh batches ``sample(step) -> (points, tokens)``;
    gradients are clipped to L2 norm ``clip`` (the paper's 2.0); the learning rate decays linearly to
    ``final_lr * lr`` over training. Every ``eval_every`` steps ``evaluate(model) -> dict`` is logged.
    Returns the history (step, running loss, evaluations)."""
    check_positive("steps", steps, integer=True)
    check_positive("lr", lr)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - (1 - final_lr) * t / steps)
    rows, running = [], None
    model.train()
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        points, tokens = sample(step)[:2]
        loss = sequence_loss(model(points, tokens), tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if eval_every and (step % eval_every == 0 or step == steps):
            row = {"step": step, "loss": running}
            if evaluate is not None:
                row.update(evaluate(model))
            rows.append(row)
            bar.set_postfix(loss=f"{running:.3f}")
    bar.close()
    return pd.DataFrame(rows)
