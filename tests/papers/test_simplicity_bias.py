"""Tests for the simplicity-bias data generators: LMS-k data, S-randomization and MNIST-over-Fashion images."""
import pytest
import torch
from repro import data
from repro.core.params import ParameterError
from repro.papers import simplicity_bias as P


@pytest.mark.parametrize("k", [3, 5, 7])
def test_every_lms_coordinate_alone_predicts_the_label(k):
    s = P.lms_data(3000, 1000, dim=6, k=k, seed=1)
    x, y = torch.cat([s.x_train, s.x_test]), torch.cat([s.y_train, s.y_test])
    assert x.shape == (4000, 6) and x.abs().max() <= 1.0
    assert y.float().mean() == pytest.approx(0.5)
    # linear coordinate: the sign is the label, with margin 0.1
    assert torch.equal((x[:, 0] > 0).long(), y) and x[:, 0].abs().min() >= 0.1 - 1e-6
    neg, pos = P._slab_intervals(k, 0.1)
    for j in range(1, 6):
        in_pos = torch.zeros(len(x), dtype=torch.bool)
        in_neg = torch.zeros(len(x), dtype=torch.bool)
        for lo, hi in pos:
            in_pos |= (x[:, j] >= lo - 1e-6) & (x[:, j] <= hi + 1e-6)
        for lo, hi in neg:
            in_neg |= (x[:, j] >= lo - 1e-6) & (x[:, j] <= hi + 1e-6)
        assert torch.equal(in_pos, y == 1) and torch.equal(in_neg, y == 0)  # the slab decides the class
        # neighbouring slabs of different classes are 2 * margin apart: no point within the gaps
        gaps = sorted(neg + pos)
        for (a, b), (c, d) in zip(gaps[:-1], gaps[1:]):
            assert c - b == pytest.approx(0.2)


def test_slab_geometry_matches_the_papers_5_slab_numbers():
    neg, pos = P._slab_intervals(5, 0.1)  # released code: width (2 - 8m)/5, offsets (1 + 6m)/5, (3 + 8m)/5
    flat = lambda iv: [v for pair in iv for v in pair]  # noqa: E731
    assert flat(neg) == pytest.approx([-1.0, -0.76, -0.12, 0.12, 0.76, 1.0])
    assert flat(pos) == pytest.approx([-0.56, -0.32, 0.32, 0.56])


def test_five_slab_centre_holds_three_quarters_of_class_zero():
    s = P.lms_data(20000, 10, dim=3, k=5)
    x0 = s.x_train[s.y_train == 0, 1:]
    assert (x0.abs() <= 0.12).float().mean().item() == pytest.approx(0.75, abs=0.02)


def test_s_randomize_keeps_marginals_and_kills_the_dependence():
    s = P.lms_data(4000, 10, dim=5, k=5)
    g = torch.Generator().manual_seed(0)
    xr = P.s_randomize(s.x_train, [0], g)
    # the scrambled column is a permutation of the original one; the others are untouched
    assert torch.equal(xr[:, 0].sort().values, s.x_train[:, 0].sort().values)
    assert torch.equal(xr[:, 1:], s.x_train[:, 1:])
    # the linear coordinate no longer predicts the label (about half of the signs agree)
    agree = ((xr[:, 0] > 0).long() == s.y_train).float().mean().item()
    assert abs(agree - 0.5) < 0.05
    # a block is permuted jointly: rows of the block stay together
    xb = P.s_randomize(s.x_train, torch.tensor([False, True, True, False, False]), g)
    rows = {tuple(r) for r in s.x_train[:, 1:3].tolist()}
    assert all(tuple(r) in rows for r in xb[:, 1:3].tolist())


def test_lms_rejects_bad_parameters():
    with pytest.raises(ParameterError):
        P.lms_data(10, 10, k=4)
    with pytest.raises(ParameterError):
        P.lms_data(10, 10, slab_margin=0.3)


def test_mnist_fashion_blocks_pairs_classes():
    try:
        s, mask = P.mnist_fashion_blocks(200, n_test=100)
    except data.MissingDataError:
        pytest.skip("Fashion-MNIST or MNIST-5k not installed")
    assert s.x_train.shape == (200, 1568) and mask.sum() == 784 and mask[:784].all()
    m, f = data.mnist5k(), data.fashion_mnist()
    # every top block is a training digit of the label's class; every bottom block a Fashion item of its class
    for i in range(20):
        top, bottom, c = s.x_train[i, :784], s.x_train[i, 784:], s.y_train[i].item()
        hit = (m.x_train == top).all(1).nonzero().flatten()
        assert len(hit) and (m.y_train[hit] == (0, 1)[c]).all()
        hit = (f.x_train == bottom).all(1).nonzero().flatten()
        assert len(hit) and (f.y_train[hit] == (2, 4)[c]).all()
