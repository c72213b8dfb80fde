"""RISE masks and saliency, the evidence canvases and the localization scores of the RISE chapter."""
from __future__ import annotations

import pytest
import torch
from repro.methods import attribution as A
from repro.nn.models import SmallCNN
from repro.papers import rise as P
from torch import nn


def small_cnn(side=12, seed=0):
    torch.manual_seed(seed)
    return SmallCNN(side=side, channels=(4, 6), hidden=16, num_classes=3).eval()


def images(n=3, side=12, seed=1):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def test_rise_masks_are_shifted_smooth_and_keep_a_fraction_p():
    g = torch.Generator().manual_seed(0)
    m = P.rise_masks(2000, 28, 4, p=0.3, generator=g)
    assert m.shape == (2000, 1, 28, 28) and m.min() >= 0 and m.max() <= 1
    assert abs(m.mean().item() - 0.3) < 0.02
    # bilinear upsampling: many values strictly between 0 and 1; random shifts: masks differ in phase
    assert ((m > 0.05) & (m < 0.95)).float().mean() > 0.2
    assert not torch.equal(m[0], m[1])


def test_rise_equals_its_defining_sum_in_both_batching_paths():
    model, x, t = small_cnn(), images(3), torch.tensor([0, 1, 2])
    masks = P.rise_masks(50, 12, 3, 0.5, generator=torch.Generator().manual_seed(1))
    direct = torch.stack([
        torch.einsum("n,nhw->hw", model(masks * x[b]).softmax(-1)[:, t[b]], masks[:, 0]) / (50 * 0.5)
        for b in range(3)])
    for batch_size in (7, 50, 120):  # chunks of masks; exactly one image; two images per forward batch
        ours = P.rise_saliency(model, x, t, masks=masks, p=0.5, batch_size=batch_size)
        torch.testing.assert_close(ours, direct, atol=1e-6, rtol=1e-5)


def test_rise_finds_the_evidence_of_a_linear_model():
    """A linear model that reads only a 6x6 block: RISE must peak there. For a linear score,
    E[f(x*M) | M(l)=1] = f-mean + covariance term, so the map is the block's weight*input smoothed by
    the masks' correlation: highest on the block and flat (= E f(x*M)) far from it."""
    side = 24
    w = torch.zeros(side, side)
    w[3:9, 14:20] = 1.0

    class Linear(nn.Module):
        def forward(self, x):
            s = (x[:, 0] * w).sum((1, 2))
            return torch.stack([s, torch.zeros_like(s)], 1)

    x = torch.rand(1, 1, side, side, generator=torch.Generator().manual_seed(0)) + 0.5
    sal = P.rise_saliency(Linear(), x, 0, n_masks=3000, cell=4, p=0.5, output="logit",
                          generator=torch.Generator().manual_seed(2))[0]
    block = w.bool()
    far = torch.zeros_like(block)
    far[14:, :8] = True                                   # more than two mask cells away from the block
    assert block.view(-1)[sal.argmax()]
    assert sal[block].mean() > sal[far].mean() + 0.2 * (w * x[0, 0]).sum() * 0.5
    expected_far = 0.5 * (w * x[0, 0]).sum()              # E f(x * M) = p * sum(w x), since E M = p
    assert abs(sal[far].mean() - expected_far) < 0.1 * expected_far


def test_pointing_game_and_energy_in_box():
    boxes = torch.tensor([[0, 0, 2, 2], [2, 2, 4, 4]])
    mask = P.box_mask(boxes, 4)
    assert mask.sum((1, 2)).tolist() == [4, 4] and mask[1, 3, 3] and not mask[1, 1, 1]
    sal = torch.zeros(2, 4, 4)
    sal[0, 1, 1] = 2.0       # peak inside the first box
    sal[1, 0, 0] = 2.0       # peak outside the second box
    assert A.pointing_game(sal, mask).tolist() == [True, False]
    assert A.pointing_game(torch.ones(2, 4, 4), mask).tolist() == [False, False]  # a tie is a miss
    near = torch.zeros(1, 6, 6)
    near[0, 3, 3] = 1.0      # one pixel outside the box [0, 3) x [0, 3)
    m = P.box_mask(torch.tensor([[0, 0, 3, 3]]), 6)
    assert A.pointing_game(near, m).tolist() == [False]
    assert A.pointing_game(near, m, tolerance=1).tolist() == [True]
    e = P.energy_in_box(sal + 5.0, mask)  # a constant offset does not count
    torch.testing.assert_close(e, torch.tensor([1.0, 0.0]))
    assert P.energy_in_box(torch.ones(1, 4, 4), mask[:1]).tolist() == [0.0]


def test_evidence_canvas_puts_the_digit_in_its_box_and_the_distractors_outside():
    digits = torch.zeros(50, 28, 28)
    digits[:, 4:24, 4:24] = 1.0                      # a full 20x20 square: after resizing it fills the box
    distractors = torch.full((10, 28, 28), 0.5)
    x, boxes = P.evidence_canvas(digits, distractors, side=28, digit_side=14, n_distractors=2,
                                 distractor_side=7, seed=3)
    assert x.shape == (50, 1, 28, 28) and boxes.shape == (50, 4)
    mask = P.box_mask(boxes, 28)
    assert (x[:, 0][mask] == 1.0).all()              # the digit fills its box
    outside = x[:, 0].masked_fill(mask, 0)
    assert (outside.flatten(1).max(1).values == 0.5).all()   # distractors present, never on the box
    assert ((outside > 0).sum((1, 2)) >= 49).all()   # at least one whole 7x7 distractor
    x2, b2 = P.evidence_canvas(digits, distractors, seed=3)
    assert torch.equal(x, x2) and torch.equal(boxes, b2)
    with pytest.raises(ValueError):
        P.evidence_canvas(digits, distractors, side=20, digit_side=14, distractor_side=7)


def test_explain_and_score_gives_every_method_and_score_per_canvas():
    model, x = small_cnn(), images(5)
    boxes = torch.tensor([[0, 0, 6, 6]] * 5)
    masks = P.rise_masks(40, 12, 3, 0.5, generator=torch.Generator().manual_seed(2))
    out = P.explain_and_score(model, x, boxes, masks, model.features[-2], p=0.5, occlusion_window=4,
                              occlusion_stride=2, blur_klen=3, blur_sigma=1.0, steps=6, chunk=2)
    assert out["target"].shape == (5,)
    for m in P.METHODS:
        assert out["saliency"][m].shape == (5, 12, 12)
        assert out["deletion_curve"][m].shape == (5, 7)
        for key in ("deletion", "insertion", "hit", "energy"):
            assert out[key][m].shape == (5,)
            assert ((out[key][m] >= 0) & (out[key][m] <= 1)).all()
    direct = P.rise_saliency(model, x, out["target"], masks=masks, p=0.5)
    torch.testing.assert_close(out["saliency"]["RISE"], direct)
