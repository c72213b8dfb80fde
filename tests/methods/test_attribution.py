"""Attribution methods against captum and against models whose evidence is known; the metrics on known cases."""
import pytest
import torch
from repro.methods import attribution as A
from repro.nn.models import SmallCNN
from torch import nn

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
