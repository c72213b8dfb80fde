"""The decision rule of the verdict, on constructed samples whose answer is known."""
import json
import math
import re

import numpy as np
import pytest
import repro
import torch
from repro.core.verdicts import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Verdict, combine, decide
from scipy import stats


def test_well_above_the_bar_is_reproduced_and_well_below_is_not():
    high = repro.replicates([0.95, 0.96, 0.97, 0.96, 0.95], ">=", 0.9, name="accuracy")
    low = repro.replicates([0.55, 0.6, 0.58, 0.61, 0.57], ">=", 0.9, name="accuracy")
    assert high.outcome == REPRODUCED and low.outcome == NOT_REPRODUCED
    assert high.low > 0.9 and low.high < 0.9


def test_an_interval_across_the_bar_is_inconclusive():
    t = repro.replicates([0.85, 0.95, 0.88, 0.93, 0.9], ">=", 0.9, name="accuracy")
    assert t.low < 0.9 < t.high and t.outcome == INCONCLUSIVE


def test_the_mean_uses_the_t_interval():
    x = np.array([1.0, 2.0, 4.0, 3.0, 2.5])
    t = repro.replicates(x, ">", 0, name="x")
    ci = stats.ttest_1samp(x, 0).confidence_interval(0.95)
    assert t.estimate == pytest.approx(x.mean()) and (t.low, t.high) == pytest.approx((ci.low, ci.high))


def test_three_successes_of_fifty_against_ten_percent_is_inconclusive():
    t = repro.rate(successes=3, trials=50, direction=">=", threshold=0.1, name="attack success")
    assert t.outcome == INCONCLUSIVE and t.estimate == pytest.approx(0.06)
    ci = stats.binomtest(3, 50).proportion_ci(0.95, method="wilson")
    assert (t.low, t.high) == pytest.approx((ci.low, ci.high))


def test_a_rate_needs_two_hundred_items_even_with_a_clear_interval():
    few = repro.rate(successes=0, trials=60, direction=">=", threshold=0.5, name="r")
    many = repro.rate(np.zeros(250, dtype=bool), ">=", 0.5, name="r")
    assert few.high < 0.5 and few.outcome == INCONCLUSIVE and "60 items, fewer than the minimum of 200" in few.reason
    assert many.outcome == NOT_REPRODUCED


def test_four_replicates_are_inconclusive_however_clear():
    t = repro.replicates([10.0, 11.0, 10.5, 10.2], ">=", 1, name="delay")
    assert t.outcome == INCONCLUSIVE and "fewer than the minimum of 5" in t.reason
    assert repro.replicates([10.0, 11.0, 10.5, 10.2, 10.8], ">=", 1, name="delay").outcome == REPRODUCED


@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_the_decision_does_not_depend_on_the_order_of_the_samples(statistic):
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 7)
    ref = repro.replicates(x, ">", 0.3, name="x", statistic=statistic)
    for _ in range(5):
        t = repro.replicates(rng.permutation(x), ">", 0.3, name="x", statistic=statistic)
        assert (t.estimate, t.low, t.high, t.outcome) == (ref.estimate, ref.low, ref.high, ref.outcome)
    a, b = rng.normal(1, 1, 6), rng.normal(0, 1, 6)
    refp = repro.paired(a, b, ">", 0, name="gain", statistic="ratio")
    order = rng.permutation(6)
    p = repro.paired(a[order], b[order], ">", 0, name="gain", statistic="ratio")
    assert (p.low, p.high) == (refp.low, refp.high)


def test_the_printed_line_holds_no_digits(capsys):
    repro.verdict("Wide networks fit random labels", repro.replicates([0.999, 1.0, 1.0, 0.998, 1.0], ">=", 0.99,
                                                                      name="train accuracy at width 512"))
    line = capsys.readouterr().out
    assert line == "REPRODUCED: Wide networks fit random labels\n" and not re.search(r"\d", line)
    for outcome, values in ((NOT_REPRODUCED, [0.2, 0.25, 0.3, 0.22, 0.21]), (INCONCLUSIVE, [0.99, 0.98])):
        repro.verdict("A claim", repro.replicates(values, ">=", 0.9, name="x"))
        assert capsys.readouterr().out == f"{outcome}: A claim\n"


def test_a_paired_comparison_uses_the_pairing():
    # the seeds differ a lot from each other, but A beats B by 0.1 on every seed
    base = np.array([0.2, 0.9, 0.5, 0.7, 0.3, 0.6])
    a, b = base + 0.1 + np.array([0.01, -0.01, 0.0, 0.02, -0.02, 0.0]), base
    assert repro.paired(a, b, ">", 0, name="gain").outcome == REPRODUCED
    assert repro.unpaired(a, b, ">", 0, name="gain").outcome == INCONCLUSIVE
    shuffled = repro.paired(a, b[[3, 0, 5, 1, 4, 2]], ">", 0, name="gain")
    assert shuffled.outcome == INCONCLUSIVE  # the same values without their pairing decide nothing
    with pytest.raises(ValueError, match="one value of each condition per replicate"):
        repro.paired(a, b[:4], ">", 0, name="gain")


def test_an_unpaired_ratio_resamples_each_group_on_its_own():
    rng = np.random.default_rng(1)
    a, b = rng.normal(3.0, 0.3, 12), rng.normal(1.0, 0.1, 9)  # groups of different sizes are allowed
    t = repro.unpaired(a, b, ">=", 2, name="ratio", statistic="ratio")
    assert t.estimate == pytest.approx(a.mean() / b.mean()) and t.low < t.estimate < t.high
    assert t.outcome == REPRODUCED and "two-sample bootstrap" in t.method and t.n == 9
    # the order of the values, and so any pairing, does not matter
    assert repro.unpaired(a[::-1], b[::-1], ">=", 2, name="ratio", statistic="ratio").low == t.low
    assert repro.unpaired(a, b, ">=", 4, name="ratio", statistic="ratio").outcome == NOT_REPRODUCED
    with pytest.raises(ValueError, match="'difference' or 'ratio'"):
        repro.unpaired(a, b, ">", 0, name="x", statistic="median")


def test_paired_statistics():
    a, b = np.array([2.0, 4.0, 6.0, 8.0, 10.0]), np.array([1.0, 2.0, 3.0, 4.0, 5.1])
    assert repro.paired(a, b, ">", 1.5, name="r", statistic="ratio").estimate == pytest.approx(30 / 15.1)
    md = repro.paired(a, b, ">", 0, name="d", statistic="median difference")
    assert md.estimate == pytest.approx(3.0) and md.outcome == REPRODUCED


def test_directions_and_strictness():
    assert decide(1.0, 2.0, ">=", 1.0)[0] == REPRODUCED and decide(1.0, 2.0, ">", 1.0)[0] == INCONCLUSIVE
    assert decide(0.0, 1.0, ">", 1.0)[0] == NOT_REPRODUCED and decide(0.0, 1.0, ">=", 1.0)[0] == INCONCLUSIVE
    assert decide(0.1, 0.2, "<", 0.5)[0] == REPRODUCED and decide(0.6, 0.7, "<=", 0.5)[0] == NOT_REPRODUCED
    with pytest.raises(ValueError, match="direction must be one of"):
        decide(0, 1, "=>", 0)


def test_a_median_with_runs_that_never_reached_the_level():
    t = repro.replicates([100, 200, math.inf, math.inf, math.inf], ">=", 1000, name="steps", statistic="median")
    assert t.estimate == math.inf and t.outcome in (REPRODUCED, INCONCLUSIVE)
    with pytest.raises(ValueError, match="use statistic='median'"):
        repro.replicates([1, math.inf, 2, 3, 4], ">", 0, name="steps")
    with pytest.raises(ValueError, match="contains NaN"):
        repro.replicates([1, math.nan, 2, 3, 4], ">", 0, name="steps")


def test_identical_replicates_give_a_point_interval():
    t = repro.replicates(torch.ones(6), ">=", 0.99, name="train accuracy", statistic="median")
    assert t.low == t.high == 1.0 and t.outcome == REPRODUCED


def test_an_exact_quantity_is_judged_within_its_tolerance():
    assert repro.exact(1e-12, "<=", 1e-9, tolerance=1e-10, name="error").outcome == REPRODUCED
    assert repro.exact(1e-9, "<=", 1e-9, tolerance=1e-10, name="error").outcome == INCONCLUSIVE


def test_a_claim_combines_its_tests_and_a_chapter_its_claims(capsys):
    r = repro.replicates([1, 1.1, 1.2, 1.05, 1.15], ">", 0, name="a")
    n = repro.replicates([1, 1.1, 1.2, 1.05, 1.15], "<", 0, name="b")
    i = repro.replicates([1, 1.1], ">", 0, name="c")
    assert repro.verdict("x", r, r).outcome == REPRODUCED
    assert repro.verdict("x", r, i).outcome == INCONCLUSIVE
    assert repro.verdict("x", r, i, n).outcome == NOT_REPRODUCED
    assert combine([]) == INCONCLUSIVE
    with pytest.raises(ValueError, match="needs at least one test"):
        repro.verdict("x")


def test_the_record_is_json_and_carries_estimate_interval_n_and_bar(capsys):
    v = repro.verdict("Claim", repro.replicates(np.array([0.5, 0.6, 0.55, 0.58, 0.52]), ">=", 0.5, name="acc"),
                      evidence={"epochs": np.int64(3), "loss": torch.tensor(0.25)})
    rec = json.loads(json.dumps(v.record()))
    t = rec["tests"][0]
    assert rec["outcome"] == v.outcome and rec["evidence"] == {"epochs": 3, "loss": 0.25}
    assert set(t) >= {"name", "estimate", "low", "high", "n", "direction", "threshold", "outcome", "method"}
    assert t["n"] == 5 and t["threshold"] == 0.5
    v.show()
    shown = capsys.readouterr().out
    assert "acc:" in shown and "95% interval" in shown and "epochs" in shown


def test_forest_plot_draws_one_row_per_test_coloured_by_outcome():
    import matplotlib
    matplotlib.use("Agg")
    from repro.core.plots import OUTCOME_COLORS, forest_plot
    v1 = Verdict("a", [repro.replicates([1, 2, 3, 2, 2], ">", 0, name="x"),
                                          repro.rate(successes=1, trials=300, direction=">=", threshold=0.5, name="y")])
    v2 = Verdict("b", [repro.replicates([1, 2, math.inf, 5, 6], ">", 10, name="z", statistic="median")])
    fig = forest_plot([v1, v2])
    assert len(fig.axes) == 3
    colors = [ax.lines[-1].get_color() for ax in fig.axes]
    assert colors[0] == OUTCOME_COLORS[REPRODUCED] and colors[1] == OUTCOME_COLORS[NOT_REPRODUCED]
    assert all(ax.get_xlabel() or ax is not fig.axes[-1] for ax in fig.axes)


def test_records_hold_infinities_as_json_can(capsys):
    v = repro.verdict("x", repro.replicates([1, 2, math.inf, math.inf, math.inf], ">=", 3, name="steps",
                                            statistic="median"), evidence={"t": math.inf, "u": math.nan})
    text = json.dumps(v.record(), allow_nan=False)
    assert '"estimate": "inf"' in text and '"t": "inf"' in text and '"u": null' in text
