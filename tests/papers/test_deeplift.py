"""DeepLIFT, gradient x input and integrated gradients against captum; summation-to-delta; RevealCancel on a
case worked by hand; the localization AUROC against sklearn; the simulated motif sequences and their CNN."""
import numpy as np
import pytest
import torch
from repro.methods import attribution as A
from repro.papers import deeplift as P
from repro.papers.deeplift import SequenceCNN
from torch import nn

captum_attr = pytest.importorskip("captum.attr")
REF = torch.tensor(P.DNA_BACKGROUND)[:, None]


def seq_model(seed=0, pool=20):
    torch.manual_seed(seed)
    return SequenceCNN(length=60, channels=(5, 6), kernel=5, pool=pool, hidden=7).eval()


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 8), nn.Tanh(), nn.Linear(8, 5), nn.Sigmoid(),
                         nn.Linear(5, 3)).eval()


def seqs(n=5, seed=1):
    return P.motif_sequences(n, length=60, max_instances=1, seed=seed).x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deeplift_rescale_matches_captum_on_a_conv_net(seed):
    model, x, t = seq_model(seed), seqs(seed=seed + 10), torch.tensor([0, 1, 2, 1, 0])
    ours = P.deeplift(model, x, REF, t)
    ref = captum_attr.DeepLift(model).attribute(x, baselines=REF.expand_as(x).contiguous(), target=t)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    assert ours.abs().max() > 1e-3  # not trivially zero


def test_deeplift_rescale_matches_captum_on_an_mlp_with_smooth_nonlinearities():
    model = mlp()
    x, base = torch.randn(7, 6, generator=torch.Generator().manual_seed(3)), torch.randn(1, 6)
    ours = P.deeplift(model, x, base, 2)
    ref = captum_attr.DeepLift(model).attribute(x, baselines=base.expand_as(x).contiguous(), target=2)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rule", P.DEEPLIFT_RULES)
def test_summation_to_delta_for_every_rule(rule):
    for model, x, base in ((seq_model(1), seqs(), REF), (mlp(1), torch.randn(6, 6), torch.randn(1, 6))):
        for t in range(3):
            c = P.deeplift(model, x, base, t, rule=rule)
            with torch.no_grad():
                delta = model(x)[:, t] - model(base.expand_as(x))[:, t]
            torch.testing.assert_close(c.flatten(1).sum(1), delta, atol=1e-5, rtol=1e-4)


def test_reveal_cancel_on_the_papers_cancellation_example():
    """y = relu(x1 - x2) at x = (1, 1), reference 0: the difference cancels, so Rescale (and the gradient
    times input at the reference's side) give nothing, while RevealCancel gives +1/2 and -1/2 (each input
    alone would move the output by 1 or 0; averaged over the two orders: 1/2 and -1/2)."""
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight[:] = torch.tensor([[1.0, -1.0]])
        lin.bias.zero_()
    out = nn.Linear(1, 1)
    with torch.no_grad():
        out.weight.fill_(1.0)
        out.bias.zero_()
    model = nn.Sequential(lin, nn.ReLU(), out)
    x = torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(P.deeplift(model, x, 0.0, 0), torch.zeros(1, 2))
    torch.testing.assert_close(P.deeplift(model, x, 0.0, 0, rule="reveal_cancel"), torch.tensor([[0.5, -0.5]]))


def test_gradient_x_input_and_integrated_gradients_match_captum():
    model, x, t = seq_model(2), seqs(4, seed=5), torch.tensor([2, 0, 1, 1])
    torch.testing.assert_close(A.gradient_x_input(model, x, t),
                               captum_attr.InputXGradient(model).attribute(x, target=t), atol=1e-7, rtol=1e-5)
    base = REF.expand_as(x).contiguous()
    ours = A.integrated_gradients(model, x, REF, t, steps=16, batch_size=10)   # several chunks of path points
    ref = captum_attr.IntegratedGradients(model).attribute(x, baselines=base, target=t, n_steps=16,
                                                            method="riemann_middle")
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-4)


def test_localization_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 50, generator=g).round(decimals=1)          # with ties
    m = torch.rand(4, 50, generator=g) < 0.3
    ours = P.localization_auroc(s, m)
    for i in range(4):
        assert ours[i] == pytest.approx(roc_auc_score(m[i].numpy(), s[i].numpy()))
    assert P.localization_auroc(m.float(), m)[0] == 1.0
    assert np.isnan(P.localization_auroc(s[:1], torch.zeros(1, 50, dtype=torch.bool))[0])


def test_motif_sequences_plant_the_motifs_and_label_them():
    d = P.motif_sequences(400, seed=0)
    assert d.x.shape == (400, 4, 200) and torch.all(d.x.sum(1) == 1)
    assert d.group.bincount().tolist() == [100, 100, 100, 100]
    has = d.motif_mask.any(2)                                        # (n, 2): GATA, TAL1 present
    torch.testing.assert_close(d.y, torch.stack([has[:, 0] & has[:, 1], has[:, 0], has[:, 1]], 1).float())
    assert torch.equal(d.group, has[:, 0].long() + 2 * has[:, 1].long())
    bases = d.x.argmax(1)
    gata = [(s, p) for s, m, p in d.instances if m == 0]
    tal1 = [(s, p) for s, m, p in d.instances if m == 1]
    # the PWMs' certain positions: GATA_disc1 positions 3-5 are G, A, T; TAL1_known1 positions 5-7 are C, A, G
    assert np.mean([bases[s, p + 3:p + 6].tolist() == [2, 0, 3] for s, p in gata]) > 0.98
    assert np.mean([bases[s, p + 5:p + 8].tolist() == [1, 0, 2] for s, p in tal1]) > 0.98
    assert 1 <= len(gata) / 200 <= 3 and not (d.motif_mask[:, 0] & d.motif_mask[:, 1]).any()
    bg = d.x[d.group == 0].mean((0, 2))                              # background frequencies
    torch.testing.assert_close(bg, torch.tensor(P.DNA_BACKGROUND), atol=0.01, rtol=0)
    sub = d.subset([5, 7])
    assert torch.equal(sub.x, d.x[[5, 7]]) and all(s in (0, 1) for s, _, _ in sub.instances)
    assert torch.equal(P.motif_sequences(20, seed=3).x, P.motif_sequences(20, seed=3).x)


def test_sequence_cnn_shapes_and_rejects_too_short_sequences():
    assert SequenceCNN()(torch.zeros(2, 4, 200)).shape == (2, 3)
    with pytest.raises(Exception, match="too short"):
        SequenceCNN(length=30, channels=(4, 4), kernel=11, pool=20)


def test_max_pooling_where_the_reference_window_wins_matches_captum():
    """A reference larger than the input (3 x the background) makes many pooled reference activations exceed
    the input's: the case where a window's difference is negative, which random small models rarely reach."""
    model, x = seq_model(4), seqs(6, seed=7)
    base = 3 * REF
    with torch.no_grad():
        a = model.features[:4](torch.cat([x, base.expand_as(x)]))
        pooled = torch.nn.functional.max_pool1d(a, 20)
    assert (pooled[:6] < pooled[6:] - 1e-3).any()
    for t in range(3):
        ours = P.deeplift(model, x, base, t)
        ref = captum_attr.DeepLift(model).attribute(x, baselines=base.expand_as(x).contiguous(), target=t)
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
        with torch.no_grad():
            delta = model(x)[:, t] - model(base.expand_as(x))[:, t]
        torch.testing.assert_close(ours.sum((1, 2)), delta, atol=1e-5, rtol=1e-4)
