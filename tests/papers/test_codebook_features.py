"""Codebook layer (top-k cosine quantization, straight-through gradients), the codebook transformer
against SmallTransformer, the TokFSM generator against its definition, and the alignment metrics."""
import pytest
import torch
import torch.nn.functional as F
from repro.core.params import ParameterError
from repro.nn.models import SmallTransformer
from repro.papers.codebook_features import (
    CodebookLayer,
    CodebookTransformer,
    TokFSM,
    best_code_per_state,
    best_neuron_per_state,
    next_state_probs,
    transition_accuracy,
)


def test_k1_output_is_the_most_cosine_similar_code():
    torch.manual_seed(0)
    cb = CodebookLayer(8, 50, k=1)
    z = torch.randn(20, 8) * 3
    out = cb(z)
    cos = F.normalize(z, dim=-1) @ F.normalize(cb.codes[0], dim=-1).T      # brute force
    best = cos.argmax(1)
    assert torch.allclose(out, cb.codes[0][best], atol=1e-6)
    # and it is one of the codes, not a mixture: distance to the nearest code is zero
    assert (out.unsqueeze(1) - cb.codes[0]).abs().amax(-1).min(1).values.max() < 1e-6


def test_topk_sums_k_codes_per_group():
    torch.manual_seed(1)
    cb = CodebookLayer(12, 30, k=3, groups=3)
    z = torch.randn(5, 12)
    out = cb(z)
    for g in range(3):
        zg = z[:, 4 * g:4 * g + 4]
        cos = F.normalize(zg, dim=-1) @ F.normalize(cb.codes[g], dim=-1).T
        top = cos.topk(3, 1).indices
        assert torch.allclose(out[:, 4 * g:4 * g + 4], cb.codes[g][top].sum(1), atol=1e-6)


def test_gradients_reach_codes_and_pass_straight_through():
    torch.manual_seed(2)
    cb = CodebookLayer(6, 10, k=2)
    z = torch.randn(4, 6, requires_grad=True)
    w = torch.randn(4, 6)
    (cb(z) * w).sum().backward()
    assert torch.allclose(z.grad, w)                 # d out / d z = identity
    assert cb.codes.grad is not None
    used = cb.last_idx.flatten().unique()
    assert cb.codes.grad[0, used].abs().sum() > 0
    unused = torch.ones(10, dtype=torch.bool)
    unused[used] = False
    assert cb.codes.grad[0, unused].abs().sum() == 0


def test_patch_forces_codes():
    torch.manual_seed(3)
    cb = CodebookLayer(4, 8, k=1)
    z = torch.randn(2, 5, 4)
    cb.patch = (3, torch.tensor([[[6]], [[2]]]))
    out = cb(z)
    assert torch.allclose(out[0, 3], cb.codes[0, 6]) and torch.allclose(out[1, 3], cb.codes[0, 2])
    cb.patch = None
    assert torch.allclose(cb(z)[:, :3], out[:, :3])


def test_replace_dead_codes():
    torch.manual_seed(4)
    cb = CodebookLayer(4, 16, k=1)
    cb.train()
    z = torch.randn(3, 4)
    cb(z)
    n = cb.replace_dead(torch.randn(50, 4))
    assert n >= 13 and cb.usage.sum() == 0


def test_without_codebooks_equals_small_transformer():
    torch.manual_seed(5)
    base = SmallTransformer(7, d_model=16, n_layers=2, n_heads=4, max_len=12)
    cbt = CodebookTransformer(7, d_model=16, n_layers=2, n_heads=4, max_len=12, codebook_at=())
    cbt.load_state_dict(base.state_dict())
    x = torch.randint(7, (3, 10))
    assert torch.allclose(base(x, last_only=False), cbt(x, last_only=False), atol=1e-5)
    assert len(cbt.hidden) == 2 and cbt.hidden[0].shape == (3, 10, 64)
    with pytest.raises(ParameterError):
        CodebookTransformer(7, d_model=16, codebook_at=("resid",))


def test_codebook_transformer_shapes_and_codes():
    torch.manual_seed(6)
    m = CodebookTransformer(7, d_model=16, n_layers=2, n_heads=4, max_len=12, n_codes=20, k_attn=1, k_mlp=2)
    out = m(torch.randint(7, (3, 10)), last_only=False)
    assert out.shape == (3, 10, 7)
    cbs = m.codebooks()
    assert list(cbs) == ["L0 attn", "L0 mlp", "L1 attn", "L1 mlp"]
    assert cbs["L0 attn"].last_idx.shape == (3, 10, 4, 1) and cbs["L1 mlp"].last_idx.shape == (3, 10, 1, 2)


def test_fsm_walks_use_only_valid_transitions():
    fsm = TokFSM(30, 4, base=6, seed=0)
    assert (fsm.transition_matrix > 0).sum(1).eq(4).all()
    assert torch.allclose(fsm.transition_matrix.sum(1), torch.ones(30))
    walks = fsm.walks(200, 20, torch.Generator().manual_seed(0))
    edges = {(s, n) for s in range(30) for n in fsm.neighbors[s].tolist()}
    for w in walks.tolist():
        for a, b in zip(w[:-1], w[1:]):
            assert (a, b) in edges
    assert fsm.is_valid_walk(walks).all()
    bad = walks.clone()
    bad[0, 5] = next(s for s in range(30) if (bad[0, 4].item(), s) not in edges)
    assert not fsm.is_valid_walk(bad)[0]
    # empirical transition frequencies follow the machine's probabilities
    long = fsm.walks(4000, 30, torch.Generator().manual_seed(1))
    counts = torch.zeros(30, 30)
    counts.index_put_((long[:, :-1].flatten(), long[:, 1:].flatten()), torch.ones(4000 * 29), accumulate=True)
    freq = counts / counts.sum(1, keepdim=True)
    assert (freq - fsm.transition_matrix).abs().max() < 0.05


def test_tokens_and_valid_targets():
    fsm = TokFSM(30, 4, base=6, seed=0)
    states = fsm.walks(50, 6, torch.Generator().manual_seed(2))
    tok = fsm.tokens(states)
    assert tok.shape == (50, 13) and (tok[:, 0] == fsm.bos).all()
    assert torch.equal(tok[:, 1::2] * 6 + tok[:, 2::2], states)
    valid, scored = fsm.valid_targets(states)
    # the true next token is always allowed
    nxt = tok[:, 1:]
    assert valid.gather(-1, nxt.unsqueeze(-1)).all()
    # brute force at one position: after the full state s_j, allowed first digits are those of its neighbours
    b, j = 3, 2
    allowed = {n // 6 for n in fsm.neighbors[states[b, j]].tolist()}
    assert {d for d in range(6) if valid[b, 2 * j + 2, d]} == allowed
    assert not scored[:, :2].any() and scored[:, 2:].all()
    lab, at_end = fsm.state_labels(states)
    assert torch.equal(lab[:, 2::2], states) and at_end[:, 2::2].all() and not at_end[:, 0].any()


def test_alignment_metrics_known_answer():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    codes = torch.tensor([[5], [5], [7], [5], [9], [9]])
    df = best_code_per_state(codes, labels, 10, 3)
    assert df.code.tolist() == [5, 7, 9]
    assert df.precision.tolist() == pytest.approx([2 / 3, 1.0, 1.0])
    assert df.recall.tolist() == pytest.approx([1.0, 0.5, 1.0])
    acts = torch.tensor([[3.0, 0.0], [2.0, 0.0], [0.0, -1.0], [0.0, -1.0], [1.0, 5.0], [-1.0, 6.0]])
    dn = best_neuron_per_state(acts, labels, 3)
    assert dn.f1.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert dn.neuron.tolist() == [0, 1, 1]          # state 1 is read off neuron 1 *below* a threshold


def test_next_state_probs_of_an_oracle():
    fsm = TokFSM(16, 3, base=4, seed=1)

    class Oracle(torch.nn.Module):   # knows the machine: predicts the exact next-digit distribution
        def forward(self, tok, last_only=True):
            B, T = tok.shape
            logits = torch.full((B, fsm.vocab), -1e9)
            for b in range(B):
                t = tok[b].tolist()
                if (T - 1) % 2 == 0:   # ends with a full state
                    s = t[-2] * 4 + t[-1]
                    p = fsm.transition_matrix[s].view(4, 4).sum(1)
                else:
                    s = t[-3] * 4 + t[-2]
                    p = fsm.transition_matrix[s].view(4, 4)[t[-1]]
                    p = p / p.sum().clamp(min=1e-12)
                logits[b, :4] = p.clamp(min=1e-12).log()
            return logits
    states = fsm.walks(5, 3, torch.Generator().manual_seed(0))
    tok = fsm.tokens(states)
    probs = next_state_probs(Oracle(), tok, fsm)
    assert torch.allclose(probs, fsm.transition_matrix[states[:, -1]], atol=1e-5)
    assert (transition_accuracy(probs, fsm, states[:, -1]) == 1).all()
