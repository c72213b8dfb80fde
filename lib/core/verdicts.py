"""The verdict: a statistical decision on each claim, from replicates, against a bar from the paper.

A claim is judged by one or more *tests*. Each test takes the measurements of independent replicates
(one value per seed or model, one 0/1 outcome per item for a rate, or per-seed values of two
conditions for "A beats B"), the claim's direction and its bar, and computes the estimate and a 95%
interval with scipy.stats:

    repro.replicates(values, ">=", 5, name="delay factor", statistic="median")   # bootstrap (BCa)
    repro.replicates(values, ">=", 0.9, name="test accuracy")                      # t interval of the mean
    repro.paired(a, b, ">", 0, name="accuracy gain of A over B")                  # paired t / paired bootstrap
    repro.unpaired(a, b, ">", 0, name="...")                                       # Welch t interval
    repro.rate(successes, ">=", 0.1, name="attack success rate")                  # Wilson binomial interval
    repro.exact(value, "<=", 1e-6, tolerance=1e-9, name="...")                    # deterministic, with a tolerance

A test is **REPRODUCED** when its interval lies entirely on the claim's side of the bar, **NOT
REPRODUCED** when it lies entirely on the other side, and **INCONCLUSIVE** when it straddles the bar
or when there are fewer replicates than the minimum (5 seeds; 200 items for a rate). A claim is
REPRODUCED when every one of its tests is, NOT REPRODUCED when any is, INCONCLUSIVE otherwise; a
chapter's outcome combines its claims the same way.

    v = repro.verdict("Networks fit random labels", repro.replicates(train_acc, ">=", 0.99, name="train accuracy"))

prints ``REPRODUCED: Networks fit random labels`` (or ``NOT REPRODUCED: ...``, ``INCONCLUSIVE: ...``):
no numbers, so nbval can compare the line. ``repro.show_verdicts(v1, v2)`` in the next cell shows the
estimates, intervals and bars, stores the machine-readable records (for the status page and sweeps)
and draws the forest plot.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

RECORD_MIME = "application/vnd.repro.record+json"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "REPRODUCED", "NOT REPRODUCED", "INCONCLUSIVE"
OUTCOMES = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
CONFIDENCE = 0.95
MIN_REPLICATES = 5    # seeds (or models) behind a random quantity
MIN_ITEMS = 200       # items behind a rate
N_RESAMPLES = 9999    # bootstrap resamples
DIRECTIONS = (">", ">=", "<", "<=")


def _plain(value):
    """Make a measured value JSON-friendly (numpy/torch scalars to Python numbers)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def json_safe(value):
    """A value as JSON can hold it: numpy/torch scalars to Python, NaN to None, infinities to "inf"/"-inf"."""
    value = _plain(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


@dataclass
class Test:
    """One measured criterion of a claim: an estimate and its interval against a bar."""
    name: str
    estimate: float
    low: float
    high: float
    n: int
    direction: str
    threshold: float
    method: str
    minimum: int = 1
    unit: str = "replicate"
    outcome: str = field(init=False)
    reason: str = field(init=False)

    def __post_init__(self):
        self.outcome, self.reason = decide(self.low, self.high, self.direction, self.threshold, self.n, self.minimum,
                                           self.unit)

    @property
    def bar(self) -> str:
        return f"{self.direction} {self.threshold:g}"

    def record(self) -> dict:
        return json_safe({"name": self.name, "estimate": float(self.estimate), "low": float(self.low),
                          "high": float(self.high), "n": int(self.n), "direction": self.direction,
                          "threshold": float(self.threshold), "method": self.method, "outcome": self.outcome,
                          "reason": self.reason})


def _check_direction(direction: str, threshold) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}.")
    if not (isinstance(threshold, (int, float, np.number)) and math.isfinite(threshold)):
        raise ValueError(f"threshold must be a finite number; got {threshold!r}.")


def decide(low: float, high: float, direction: str, threshold: float, n: int = 1, minimum: int = 1,
           unit: str = "replicate") -> tuple:
    """The outcome of one test and the reason in words: the interval [low, high] against the bar."""
    _check_direction(direction, threshold)
    if n < minimum:
        return INCONCLUSIVE, f"{n} {unit}{'' if n == 1 else 's'}, fewer than the minimum of {minimum}"
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE, "no interval could be computed"
    upward = direction in (">", ">=")
    strict = direction in (">", "<")
    lo, hi = (low, high) if upward else (-high, -low)
    t = threshold if upward else -threshold
    if lo > t or (lo == t and not strict):
        return REPRODUCED, "the interval lies on the claim's side of the bar"
    if hi < t or (hi == t and strict):
        return NOT_REPRODUCED, "the interval lies on the other side of the bar"
    return INCONCLUSIVE, "the interval straddles the bar"


def combine(outcomes) -> str:
    """REPRODUCED when all are, NOT REPRODUCED when any is, INCONCLUSIVE otherwise (and for none)."""
    outcomes = list(outcomes)
    if outcomes and all(o == REPRODUCED for o in outcomes):
        return REPRODUCED
    if any(o == NOT_REPRODUCED for o in outcomes):
        return NOT_REPRODUCED
    return INCONCLUSIVE


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

def _values(x, what: str) -> np.ndarray:
    a = np.asarray(_as_numpy(x), dtype=float).ravel()
    if np.isnan(a).any():
        raise ValueError(f"{what} contains NaN; drop or resolve the failed replicates first and say so.")
    return a


def _as_numpy(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


STATISTICS = {"mean": np.mean, "median": np.median}


def _bootstrap(data: tuple, statistic, paired: bool) -> tuple[float, float, str]:
    """A 95% bootstrap interval (BCa; the percentile interval when BCa is undefined, e.g. for tied or
    infinite values). Resampling uses a fixed generator, so the interval is reproducible."""
    finite = all(np.isfinite(d).all() for d in data)
    degenerate = all(np.ptp(d) == 0 for d in data)
    if degenerate:
        est = float(statistic(*data))
        return est, est, "all replicates equal"
    for method in (("BCa", "percentile") if finite else ("percentile",)):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns where BCa is undefined; the NaN is handled below
            res = stats.bootstrap(data, statistic, paired=paired, vectorized=False, n_resamples=N_RESAMPLES,
                                  confidence_level=CONFIDENCE, method=method, rng=np.random.default_rng(0))
        low, high = res.confidence_interval
        if not (math.isnan(low) or math.isnan(high)):
            return float(low), float(high), f"bootstrap {method}"
    return math.nan, math.nan, "bootstrap failed"


def replicates(values, direction: str, threshold: float, *, name: str, statistic: str = "mean") -> Test:
    """A random quantity measured once per independent replicate (seed, model, dataset draw).

    ``statistic="mean"``: Student's t interval (scipy.stats.ttest_1samp), which keeps its coverage with
    few replicates; ``"median"`` (or a function of one array): a bootstrap interval. Infinite values (a
    run that never reached a level within its budget) are allowed for the median.
    """
    _check_direction(direction, threshold)
    x = np.sort(_values(values, name))  # sorted: the resampling, and so the decision, ignores the order
    n = len(x)
    if statistic == "mean":
        if not np.isfinite(x).all():
            raise ValueError(f"{name}: the mean of infinite values is undefined; use statistic='median'.")
        est = float(x.mean()) if n else math.nan
        if n >= 2 and np.ptp(x) > 0:
            low, high = stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
            method = f"t interval of the mean over {n} replicates"
        else:
            low = high = est
            method = f"mean over {n} replicates (all equal)" if n >= 2 else "one replicate" if n else "no replicates"
        return Test(name, est, float(low), float(high), n, direction, threshold, method, MIN_REPLICATES)
    fn = STATISTICS.get(statistic, statistic)
    if not callable(fn):
        raise ValueError(f"statistic must be 'mean', 'median' or a function; got {statistic!r}.")
    label = statistic if isinstance(statistic, str) else getattr(fn, "__name__", "statistic")
    est = float(fn(x)) if n else math.nan
    if n >= 2:
        low, high, how = _bootstrap((x,), fn, paired=False)
        method = f"{label} over {n} replicates, {how}"
    else:
        low = high = est
        method = "one replicate" if n == 1 else "no replicates"
    return Test(name, est, low, high, n, direction, threshold, method, MIN_REPLICATES)


def _ratio_of_means(a, b):
    return np.mean(a) / np.mean(b)


def paired(a, b, direction: str, threshold: float = 0.0, *, name: str, statistic: str = "difference") -> Test:
    """Two conditions measured on the same replicates (seed k of A beside seed k of B).

    ``statistic="difference"``: the mean of the per-replicate differences a - b, with the paired t
    interval (scipy.stats.ttest_rel); ``"median difference"``: their median, bootstrapped;
    ``"ratio"``: mean(a) / mean(b), a paired bootstrap (scipy.stats.bootstrap with ``paired=True``).
    """
    _check_direction(direction, threshold)
    a, b = _values(a, name), _values(b, name)
    if a.shape != b.shape:
        raise ValueError(f"{name}: a paired test needs one value of each condition per replicate; "
                         f"got {len(a)} and {len(b)}.")
    order = np.lexsort((b, a))  # the pairs in a fixed order: the decision ignores the order they came in
    a, b = a[order], b[order]
    n = len(a)
    if statistic == "difference":
        d = a - b
        est = float(d.mean()) if n else math.nan
        if n >= 2 and np.ptp(d) > 0:
            low, high = stats.ttest_rel(a, b).confidence_interval(CONFIDENCE)
            method = f"paired t interval of the mean difference over {n} replicates"
        else:
            low = high = est
            method = f"mean difference over {n} replicates" + (" (all equal)" if n >= 2 else "")
        return Test(name, est, float(low), float(high), n, direction, threshold, method, MIN_REPLICATES)
    if statistic == "median difference":
        fn, label = (lambda x, y: np.median(x - y)), "median difference"
    elif statistic == "ratio":
        fn, label = _ratio_of_means, "ratio of means"
    else:
        raise ValueError(f"statistic must be 'difference', 'median difference' or 'ratio'; got {statistic!r}.")
    est = float(fn(a, b)) if n else math.nan
    if n >= 2:
        low, high, how = _bootstrap((a, b), fn, paired=True)
    else:
        low = high = est
        how = "one replicate"
    return Test(name, est, low, high, n, direction, threshold, f"{label} over {n} pairs, paired {how}",
                MIN_REPLICATES)


def unpaired(a, b, direction: str, threshold: float = 0.0, *, name: str, statistic: str = "difference") -> Test:
    """Two conditions measured on independent replicates.

    ``statistic="difference"``: the difference of means, Welch's t interval (scipy.stats.ttest_ind);
    ``"ratio"``: mean(a) / mean(b), a two-sample bootstrap (each condition resampled on its own).
    """
    _check_direction(direction, threshold)
    if statistic not in ("difference", "ratio"):
        raise ValueError(f"statistic must be 'difference' or 'ratio'; got {statistic!r}.")
    a, b = np.sort(_values(a, name)), np.sort(_values(b, name))
    n = min(len(a), len(b))
    if statistic == "ratio":
        est = float(_ratio_of_means(a, b)) if n else math.nan
        if n >= 2:
            low, high, how = _bootstrap((a, b), _ratio_of_means, paired=False)
        else:
            low = high = est
            how = "one replicate" if n else "no replicates"
        return Test(name, est, low, high, n, direction, threshold,
                    f"ratio of means ({len(a)} and {len(b)} replicates), two-sample {how}", MIN_REPLICATES)
    est = float(a.mean() - b.mean()) if n else math.nan
    if n >= 2 and (np.ptp(a) > 0 or np.ptp(b) > 0):
        low, high = stats.ttest_ind(a, b, equal_var=False).confidence_interval(CONFIDENCE)
    else:
        low = high = est
    return Test(name, est, float(low), float(high), n, direction, threshold,
                f"Welch t interval of the difference of means ({len(a)} and {len(b)} replicates)", MIN_REPLICATES)


def rate(outcomes=None, direction: str = ">=", threshold: float = 0.5, *, name: str, successes: int | None = None,
         trials: int | None = None) -> Test:
    """A rate over independent items: per-item 0/1 ``outcomes``, or ``successes`` out of ``trials``.
    The Wilson score interval (scipy.stats.binomtest); at least 200 items are needed to decide."""
    _check_direction(direction, threshold)
    if outcomes is not None:
        o = _values(outcomes, name)
        if not np.isin(o, (0, 1)).all():
            raise ValueError(f"{name}: the outcomes of a rate must be 0 or 1 (or booleans).")
        k, n = int(o.sum()), len(o)
    else:
        if successes is None or trials is None:
            raise ValueError(f"{name}: give per-item outcomes, or successes and trials.")
        k, n = int(successes), int(trials)
        if not 0 <= k <= n:
            raise ValueError(f"{name}: successes must be between 0 and trials; got {k} of {n}.")
    if n == 0:
        return Test(name, math.nan, math.nan, math.nan, 0, direction, threshold, "no items", MIN_ITEMS, "item")
    ci = stats.binomtest(k, n).proportion_ci(CONFIDENCE, method="wilson")
    return Test(name, k / n, float(ci.low), float(ci.high), n, direction, threshold,
                f"{k} of {n} items, Wilson interval", MIN_ITEMS, "item")


def exact(value, direction: str, threshold: float, *, name: str, tolerance: float) -> Test:
    """A quantity with no randomness (an exact kernel, a closed form), judged within a numerical tolerance:
    the interval is value +- tolerance."""
    _check_direction(direction, threshold)
    v = float(_plain(_as_numpy(value)))
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"{name}: tolerance must be a finite number >= 0; got {tolerance!r}.")
    return Test(name, v, v - tolerance, v + tolerance, 1, direction, threshold,
                f"deterministic, numerical tolerance {tolerance:g}", 1)


# ------------------------------------------------------------------------------------------------
# Claims
# ------------------------------------------------------------------------------------------------

@dataclass
class Verdict:
    claim: str
    tests: list
    evidence: dict = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return combine(t.outcome for t in self.tests)

    @property
    def reproduced(self) -> bool:
        return self.outcome == REPRODUCED

    @property
    def line(self) -> str:
        return f"{self.outcome}: {self.claim}"

    def record(self) -> dict:
        return {"claim": self.claim, "outcome": self.outcome, "tests": [t.record() for t in self.tests],
                "evidence": json_safe(self.evidence)}

    def table(self):
        import pandas as pd
        return pd.DataFrame([{"test": t.name, "estimate": _fmt(t.estimate),
                              "95% interval": f"[{_fmt(t.low)}, {_fmt(t.high)}]", "n": t.n, "bar": t.bar,
                              "outcome": t.outcome, "method": t.method} for t in self.tests])

    def text(self) -> str:
        lines = [self.line]
        for t in self.tests:
            lines.append(f"  {t.name}: {_fmt(t.estimate)}, 95% interval [{_fmt(t.low)}, {_fmt(t.high)}], n = {t.n}, "
                         f"bar {t.bar} -> {t.outcome} ({t.reason}; {t.method})")
        if self.evidence:
            width = max(len(k) for k in self.evidence)
            lines.append("  evidence:")
            lines += [f"    {k:<{width}}  {_fmt(v)}" for k, v in self.evidence.items()]
        return "\n".join(lines)

    def show(self) -> None:
        """Display the tests and the evidence, and store the record in the notebook."""
        _display(self.text(), {RECORD_MIME: self.record()})


def verdict(claim: str, *tests: Test, evidence: dict | None = None) -> Verdict:
    """Decide a claim from its tests and print the verdict line, and nothing else (the cell nbval checks)."""
    if not isinstance(claim, str) or not claim.strip():
        raise ValueError("claim must be a non-empty sentence.")
    if not tests or not all(isinstance(t, Test) for t in tests):
        raise ValueError("a verdict needs at least one test (repro.replicates, paired, unpaired, rate or exact).")
    v = Verdict(claim.strip(), list(tests), dict(evidence or {}))
    print(v.line)
    return v


def chapter_outcome(verdicts) -> str:
    return combine(v.outcome for v in verdicts)


def show_verdicts(*verdicts: Verdict, plot: bool = True):
    """Each claim's tests and evidence (records stored for the status page), then the forest plot."""
    for v in verdicts:
        v.show()
    if plot:
        import matplotlib.pyplot as plt

        from .plots import forest_plot
        forest_plot(verdicts)
        plt.show()


def _display(text: str, data: dict) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is not None:
            display({"text/plain": text, **data}, raw=True)
            return
    except ImportError:
        pass
    print(text)


def _fmt(value) -> str:
    value = _plain(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
