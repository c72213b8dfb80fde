"""Attribution methods against captum and against models whose evidence is known; the metrics on known cases."""
import numpy as np
import pytest
import torch
from torch import nn

from repro import attribution as A
from repro.models import SmallCNN

captum_attr = pytest.importorskip("captum.attr")


def small_cnn(side=12, seed=0):
    torch.manual_seed(seed)
    return SmallCNN(side=side, channels=(4, 6), hidden=16, num_classes=3).eval()


def images(n=3, side=12, seed=1):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


class Softmaxed(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(-1)


def test_gradient_matches_captum_saliency():
    model, x, t = small_cnn(), images(), torch.tensor([0, 2, 1])
    ours = A.gradient_saliency(model, x, t)
    ref = captum_attr.Saliency(model).attribute(x, target=t, abs=True)[:, 0]
    torch.testing.assert_close(ours, ref)
    signed = A.gradient_saliency(model, x, t, absolute=False)
    torch.testing.assert_close(signed, captum_attr.Saliency(model).attribute(x, target=t, abs=False)[:, 0])


@pytest.mark.parametrize("side,window,stride", [(12, 4, 2), (11, 4, 3), (12, 3, 3)])
def test_occlusion_matches_captum(side, window, stride):
    model, x, t = small_cnn(side), images(2, side), torch.tensor([1, 0])
    ours = A.occlusion_saliency(model, x, t, window=window, stride=stride, output="prob", batch_size=7)
    ref = captum_attr.Occlusion(Softmaxed(model)).attribute(
        x, target=t, sliding_window_shapes=(1, window, window), strides=(1, stride, stride), baselines=0.0)[:, 0]
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-4)
    logit = A.occlusion_saliency(model, x, t, window=window, stride=stride, output="logit")
    ref = captum_attr.Occlusion(model).attribute(
        x, target=t, sliding_window_shapes=(1, window, window), strides=(1, stride, stride), baselines=0.0)[:, 0]
    torch.testing.assert_close(logit, ref, atol=1e-5, rtol=1e-4)


def test_grad_cam_matches_captum():
    model, x, t = small_cnn(), images(), torch.tensor([2, 1, 0])
    layer = model.features[3]  # the second convolution
    ours = A.grad_cam(model, layer, x, t, upsample=False)
    ref = captum_attr.LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)[:, 0]
    torch.testing.assert_close(ours, ref)
    up = A.grad_cam(model, layer, x, t)
    ref_up = captum_attr.LayerAttribution.interpolate(ref[:, None], (12, 12), interpolate_mode="bilinear")[:, 0]
    torch.testing.assert_close(up, ref_up)
    assert up.shape == (3, 12, 12) and (up >= 0).all()
    for p in model.parameters():  # a frozen model (no parameter gradients) gives the same maps
        p.requires_grad_(False)
    torch.testing.assert_close(A.grad_cam(model, layer, x, t), up)
    torch.testing.assert_close(A.gradient_saliency(model, x, t), captum_attr.Saliency(model).attribute(x, target=t)[:, 0])


def test_rise_masks_are_shifted_smooth_and_keep_a_fraction_p():
    g = torch.Generator().manual_seed(0)
    m = A.rise_masks(2000, 28, 4, p=0.3, generator=g)
    assert m.shape == (2000, 1, 28, 28) and m.min() >= 0 and m.max() <= 1
    assert abs(m.mean().item() - 0.3) < 0.02
    # bilinear upsampling: many values strictly between 0 and 1; random shifts: masks differ in phase
    assert ((m > 0.05) & (m < 0.95)).float().mean() > 0.2
    assert not torch.equal(m[0], m[1])


def test_rise_equals_its_defining_sum_in_both_batching_paths():
    model, x, t = small_cnn(), images(3), torch.tensor([0, 1, 2])
    masks = A.rise_masks(50, 12, 3, 0.5, generator=torch.Generator().manual_seed(1))
    direct = torch.stack([
        torch.einsum("n,nhw->hw", model(masks * x[b]).softmax(-1)[:, t[b]], masks[:, 0]) / (50 * 0.5)
        for b in range(3)])
    for batch_size in (7, 50, 120):  # chunks of masks; exactly one image; two images per forward batch
        ours = A.rise_saliency(model, x, t, masks=masks, p=0.5, batch_size=batch_size)
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
    sal = A.rise_saliency(Linear(), x, 0, n_masks=3000, cell=4, p=0.5, output="logit",
                          generator=torch.Generator().manual_seed(2))[0]
    block = w.bool()
    far = torch.zeros_like(block)
    far[14:, :8] = True                                   # more than two mask cells away from the block
    assert block.view(-1)[sal.argmax()]
    assert sal[block].mean() > sal[far].mean() + 0.2 * (w * x[0, 0]).sum() * 0.5
    expected_far = 0.5 * (w * x[0, 0]).sum()              # E f(x * M) = p * sum(w x), since E M = p
    assert abs(sal[far].mean() - expected_far) < 0.1 * expected_far


def test_auc_of_known_curves():
    assert A.auc(torch.ones(11)).item() == pytest.approx(1.0)
    assert A.auc(torch.linspace(1, 0, 5)).item() == pytest.approx(0.5)
    assert A.auc(torch.tensor([[0.0, 1.0, 1.0]])).tolist() == pytest.approx([0.75])


class FractionModel(nn.Module):
    """Class 0's probability is the mean pixel value of a binary image (and class 1's is the rest)."""

    def forward(self, x):
        q = x.flatten(1).mean(1).clamp(1e-12, 1 - 1e-12)
        return torch.stack([q.log(), (1 - q).log()], 1)


def test_deletion_and_insertion_curves_on_a_trivial_model():
    x = torch.ones(1, 1, 4, 4)
    sal = torch.rand(1, 4, 4)
    d = A.deletion_insertion_curves(FractionModel(), x, sal, 0, steps=4, mode="deletion")
    torch.testing.assert_close(d[0], torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    i = A.deletion_insertion_curves(FractionModel(), x, sal, 0, steps=4, mode="insertion",
                                    substrate=torch.zeros_like(x))
    torch.testing.assert_close(i[0], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert A.auc(d).item() == pytest.approx(0.5) and A.auc(i).item() == pytest.approx(0.5)


def test_deletion_rewards_the_true_evidence_and_insertion_too():
    """Only the top-left 3x3 block drives the class: deleting it first must give the lower deletion area,
    inserting it first the higher insertion area, than the reverse order."""
    class Block(nn.Module):
        def forward(self, x):
            s = x[:, 0, :3, :3].sum((1, 2))
            return torch.stack([4 * s - 18, torch.zeros_like(s)], 1)

    x = torch.ones(1, 1, 8, 8)
    good = torch.zeros(1, 8, 8)
    good[0, :3, :3] = 1
    res_good = A.deletion_insertion_auc(Block(), x, good, 0, steps=16)
    res_bad = A.deletion_insertion_auc(Block(), x, -good, 0, steps=16)
    assert res_good["deletion"] < res_bad["deletion"] - 0.3
    assert res_good["insertion"] > res_bad["insertion"] + 0.3
    assert res_good["deletion_curve"].shape == (1, 17)


def test_gaussian_blur_keeps_constants_away_from_the_border_and_smooths():
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 10] = 1.0
    b = A.gaussian_blur(x, 11, 5.0)
    assert b.sum().item() == pytest.approx(1.0, abs=1e-5) and b.max() < 0.05
    c = A.gaussian_blur(torch.ones(1, 1, 21, 21), 5, 2.0)
    assert c[0, 0, 5:-5, 5:-5].allclose(torch.ones(11, 11))


def test_pointing_game_and_energy_in_box():
    boxes = torch.tensor([[0, 0, 2, 2], [2, 2, 4, 4]])
    mask = A.box_mask(boxes, 4)
    assert mask.sum((1, 2)).tolist() == [4, 4] and mask[1, 3, 3] and not mask[1, 1, 1]
    sal = torch.zeros(2, 4, 4)
    sal[0, 1, 1] = 2.0       # peak inside the first box
    sal[1, 0, 0] = 2.0       # peak outside the second box
    assert A.pointing_game(sal, mask).tolist() == [True, False]
    assert A.pointing_game(torch.ones(2, 4, 4), mask).tolist() == [False, False]  # a tie is a miss
    near = torch.zeros(1, 6, 6)
    near[0, 3, 3] = 1.0      # one pixel outside the box [0, 3) x [0, 3)
    m = A.box_mask(torch.tensor([[0, 0, 3, 3]]), 6)
    assert A.pointing_game(near, m).tolist() == [False]
    assert A.pointing_game(near, m, tolerance=1).tolist() == [True]
    e = A.energy_in_box(sal + 5.0, mask)  # a constant offset does not count
    torch.testing.assert_close(e, torch.tensor([1.0, 0.0]))
    assert A.energy_in_box(torch.ones(1, 4, 4), mask[:1]).tolist() == [0.0]


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    r = A.paired_bootstrap(a + 1.0, a)
    assert r["mean"] == pytest.approx(1.0) and r["low"] == pytest.approx(1.0) and r["high"] == pytest.approx(1.0)
    r = A.paired_bootstrap(rng.normal(0.3, 1, 400), np.zeros(400))
    assert r["low"] < r["mean"] < r["high"] and r["low"] > 0


def test_evidence_canvas_puts_the_digit_in_its_box_and_the_distractors_outside():
    digits = torch.zeros(50, 28, 28)
    digits[:, 4:24, 4:24] = 1.0                      # a full 20x20 square: after resizing it fills the box
    distractors = torch.full((10, 28, 28), 0.5)
    x, boxes = A.evidence_canvas(digits, distractors, side=28, digit_side=14, n_distractors=2,
                                 distractor_side=7, seed=3)
    assert x.shape == (50, 1, 28, 28) and boxes.shape == (50, 4)
    mask = A.box_mask(boxes, 28)
    assert (x[:, 0][mask] == 1.0).all()              # the digit fills its box
    outside = x[:, 0].masked_fill(mask, 0)
    assert (outside.flatten(1).max(1).values == 0.5).all()   # distractors present, never on the box
    assert ((outside > 0).sum((1, 2)) >= 49).all()   # at least one whole 7x7 distractor
    x2, b2 = A.evidence_canvas(digits, distractors, seed=3)
    assert torch.equal(x, x2) and torch.equal(boxes, b2)
    with pytest.raises(ValueError):
        A.evidence_canvas(digits, distractors, side=20, digit_side=14, distractor_side=7)
