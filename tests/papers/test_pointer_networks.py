"""Pointer networks and their tasks: hulls against Qhull, tours against exhaustive search, the
coverage metric on polygons with known areas, and the models' output shapes."""
import itertools
import math

import numpy as np
import pytest
import torch
from repro import ParameterError
from repro.papers import pointer_networks as s
from scipy.spatial import ConvexHull


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread avoids thread hand-off costs on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def scipy_hull(points):
    """Qhull's vertices (counter-clockwise in 2-D), rotated to start at the lowest index."""
    v = list(ConvexHull(points).vertices)
    k = v.index(min(v))
    return v[k:] + v[:k]


@pytest.mark.parametrize("n", [3, 4, 7, 10, 30, 120])
def test_hull_matches_scipy(n):
    g = torch.Generator().manual_seed(n)
    pts = s.uniform_points(64, n, g)
    ours = s.convex_hull_sequences(pts)
    assert ours == [scipy_hull(p) for p in pts.double().numpy()]
    assert s.convex_hull_sequences(pts, method="scipy") == ours
    tok = s.hull_tokens(pts)
    assert tok.shape == (64, max(len(h) for h in ours) + 1)
    assert all(tok[b, len(h)] == s.END and (tok[b, len(h) + 1:] == s.PAD).all() for b, h in enumerate(ours))


def test_hull_areas_match_scipy():
    pts = s.uniform_points(20, 12, torch.Generator().manual_seed(5))
    assert s.hull_areas(pts) == pytest.approx([ConvexHull(p).volume for p in pts.double().numpy()])


def test_square_hull_is_counter_clockwise_from_lowest_index():
    pts = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0], [0.4, 0.6]]])
    assert s.convex_hull_sequences(pts) == [[1, 2, 4, 3]]
    assert s.hull_tokens(pts).tolist() == [[2, 3, 5, 4, s.END]]


def test_tokens_round_trip():
    seqs = [[0, 3, 1], [4, 2, 1, 0, 3]]
    tok = s.to_tokens(seqs)
    assert tok.tolist() == [[1, 4, 2, 0, -1, -1], [5, 3, 2, 1, 4, 0]]
    back, ended = s.from_tokens(tok)
    assert back == seqs and ended.all()
    _, ended = s.from_tokens(torch.tensor([[1, 2, 3]]))
    assert not ended[0]


@pytest.mark.parametrize("n", [4, 6])
def test_tsp_brute_force_matches_exhaustive_search(n):
    g = torch.Generator().manual_seed(n)
    pts = s.uniform_points(5, n, g)
    tours, lengths = s.tsp_brute_force(pts)
    for b in range(5):
        p = pts[b].double().numpy()
        best = min(sum(np.linalg.norm(p[t[i]] - p[t[(i + 1) % n]]) for i in range(n))
                   for t in itertools.permutations(range(n)))
        assert lengths[b].item() == pytest.approx(best, rel=1e-5)
        t = tours[b].tolist()
        assert sorted(t) == list(range(n)) and t[0] == 0 and t[1] < t[-1]
    assert torch.allclose(s.tour_length(pts, tours), lengths, rtol=1e-5)


def test_tsp_batch_and_nearest_neighbour():
    g = torch.Generator().manual_seed(0)
    pts, tok, lengths = s.tsp_batch(16, 6, g)
    assert tok.shape == (16, 7) and (tok[:, -1] == s.END).all()
    assert torch.allclose(s.tour_length(pts, tok[:, :-1] - 1), lengths, rtol=1e-5)
    nn_tours = s.nearest_neighbour_tours(pts)
    assert all(sorted(t) == list(range(6)) for t in nn_tours.tolist())
    assert (s.tour_length(pts, nn_tours) >= lengths - 1e-5).all()


def test_polygon_area_and_simplicity():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    assert s.polygon_area(square) == pytest.approx(1.0)
    assert s.polygon_area(square[::-1]) == pytest.approx(-1.0)
    assert s.is_simple_polygon(square)
    assert not s.is_simple_polygon(square[[0, 2, 1, 3]])           # a bow-tie
    assert not s.is_simple_polygon(square[:2])
    assert not s.is_simple_polygon(square[[0, 1, 1, 2]])           # a repeated vertex
    pentagon = np.array([[math.cos(a), math.sin(a)] for a in np.linspace(0, 2 * math.pi, 6)[:-1]])
    assert s.polygon_area(pentagon) == pytest.approx(2.5 * math.sin(2 * math.pi / 5))


def test_area_coverage_on_known_polygons():
    # the unit square's corners (indices 0-3) and an interior point (index 4)
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.25]]).expand(7, 5, 2)
    target = s.to_tokens([[0, 1, 2, 3]] * 7)
    pred = s.to_tokens([[0, 1, 2, 3],        # the hull: coverage 1
                        [0, 1, 2],           # a triangle: half the square
                        [0, 4, 1, 2, 3],     # a dent through the interior point: 1 - 1/8
                        [0, 2, 1, 3],        # a bow-tie: invalid
                        [0, 1, 1, 2],        # a repeated point: invalid
                        [0, 1, 5, 3],        # a point that does not exist: invalid
                        [0, 1]])             # two points: invalid
    cov, valid = s.area_coverage(pts, pred, target)
    assert valid.tolist() == [True, True, True, False, False, False, False]
    assert cov == pytest.approx([1.0, 0.5, 0.875, 0, 0, 0, 0])
    no_end = torch.tensor([[1, 2, 3, 4]])
    assert not s.area_coverage(pts[:1], no_end, target[:1])[1][0]
    m = s.hull_metrics(pts, pred, target)
    assert m["accuracy"] == pytest.approx(1 / 7) and m["invalid"] == pytest.approx(4 / 7)
    assert m["coverage (valid)"] == pytest.approx(2.375 / 3)


def test_sequence_accuracy_counts_whole_sequences():
    target = s.to_tokens([[0, 1, 2], [3, 1, 0]])
    assert s.sequence_accuracy(target, target) == 1.0
    assert s.sequence_accuracy(s.to_tokens([[0, 1, 2], [3, 1]]), target) == 0.5
    assert s.sequence_accuracy(torch.tensor([[1, 2, 3, 4], [4, 2, 1, 0]]), target) == 0.5   # no END: wrong


def models(vocab=10, hidden=16):
    torch.manual_seed(0)
    return {"lstm": s.Seq2Seq(vocab, hidden), "attention": s.Seq2Seq(vocab, hidden, attention=True),
            "pointer": s.PointerNet(hidden)}


def test_output_shapes():
    g = torch.Generator().manual_seed(0)
    pts, tok = s.hull_batch(4, 8, g)
    for name, m in models().items():
        out = m(pts, tok)
        assert out.shape == (4, tok.shape[1], 9 if name == "pointer" else 11)
        assert m.decode(pts).shape == (4, 9)
        assert m.decode(pts, max_len=5).shape == (4, 5)


def test_pointer_output_grows_with_the_input_but_seq2seq_does_not():
    g = torch.Generator().manual_seed(1)
    m = models()
    for n in (5, 10, 40):
        pts, tok = s.hull_batch(3, n, g)
        assert m["pointer"](pts, tok).shape[-1] == n + 1
        if n <= 10:
            assert m["lstm"](pts, tok).shape[-1] == 11
        else:
            with pytest.raises(ParameterError):
                m["attention"](pts, tok)
            assert m["attention"].decode(pts).max() <= 10       # it can only name the first 10 points


def test_greedy_decoding_agrees_with_teacher_forcing():
    """Stepping the decoder one token at a time computes the same logits as the batched forward pass."""
    g = torch.Generator().manual_seed(2)
    pts = s.uniform_points(6, 7, g)
    for m in models().values():
        pred = m.decode(pts, max_len=8)
        tok = torch.where(pred == s.PAD, torch.zeros_like(pred), pred)
        logits = m(pts, tok)
        keep = pred != s.PAD
        assert (logits.argmax(-1)[keep] == pred[keep]).all()


def test_tour_constraint_gives_permutations():
    g = torch.Generator().manual_seed(3)
    pts = s.uniform_points(20, 6, g)
    pred = models()["pointer"].decode(pts, constrain="tour")
    assert (pred[:, 6] == s.END).all()
    assert all(sorted(t) == list(range(1, 7)) for t in pred[:, :6].tolist())
    distinct = models()["lstm"].decode(pts, constrain="distinct")
    for row in s.from_tokens(distinct)[0]:
        assert len(row) == len(set(row))


def test_fit_learns_to_copy():
    torch.manual_seed(0)
    m = s.PointerNet(16)
    g = torch.Generator().manual_seed(0)

    def sample(step):
        pts = s.uniform_points(32, 4, g)
        return pts, s.to_tokens([[0, 1, 2, 3]] * 32)

    pts, tok = sample(0)
    before = s.sequence_accuracy(m.decode(pts), tok)
    hist = s.fit(m, sample, steps=200, lr=1e-2, eval_every=100, progress=False)
    assert list(hist.step) == [100, 200]
    assert before < 0.2 and s.sequence_accuracy(m.decode(pts), tok) > 0.9
