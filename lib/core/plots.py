"""One seaborn theme and the few figure helpers the chapters share."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

PALETTE = "colorblind"


def use_theme() -> None:
    """The book's look: seaborn's whitegrid, colour-blind palette, readable font sizes."""
    sns.set_theme(style="whitegrid", palette=PALETTE, context="notebook",
                  rc={"figure.dpi": 100, "savefig.dpi": 150, "axes.titleweight": "bold", "figure.autolayout": True})


def axes(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6, **kw):
    """A grid of axes sized per panel; returns (fig, axes) with axes flattened when there are several."""
    fig, ax = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    flat = ax.ravel()
    return fig, (flat[0] if len(flat) == 1 else flat)


def label(ax, xlabel: str, ylabel: str, title: str | None = None, legend: bool | None = None):
    """Every axis gets a label with its unit; a title when given; a legend when artists are labelled."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    handles, _ = ax.get_legend_handles_labels()
    if legend or (legend is None and handles):
        ax.legend(frameon=False)
    return ax


def curves(ax, history: pd.DataFrame, x: str, ys: dict, logx: bool = False, **kw):
    """Plot columns of a history DataFrame against ``x``; ``ys`` maps column -> legend label."""
    for col, name in ys.items():
        ax.plot(history[x], history[col], label=name, **kw)
    if logx:
        ax.set_xscale("log")
    return ax


OUTCOME_COLORS = {"REPRODUCED": "#1b9e77", "NOT REPRODUCED": "#d95f02", "INCONCLUSIVE": "#7f7f7f"}


def forest_plot(verdicts, width: float = 7.5, row_height: float | None = None):
    """Every test of every claim: its estimate (dot) and 95% interval (bar) against its bar (dashed line),
    coloured by outcome, the claim's side of the bar shaded. One row per test, each on its own scale."""
    import math

    from matplotlib.patches import Patch

    rows = [(k, v, t) for k, v in enumerate(verdicts, 1) for t in v.tests]
    row_height = row_height or (0.85 if len(rows) <= 8 else 0.6)  # many tests: denser rows
    fig, axs = plt.subplots(len(rows), 1, figsize=(width, 1.1 + row_height * len(rows)), squeeze=False,
                            layout="constrained")
    for ax, (k, v, t) in zip(axs[:, 0], rows):
        finite = [x for x in (t.estimate, t.low, t.high, t.threshold) if math.isfinite(x)]
        lo, hi = min(finite), max(finite)
        pad = 0.15 * (hi - lo) if hi > lo else 0.1 * (abs(hi) or 1.0)
        left, right = lo - pad, hi + pad
        color = OUTCOME_COLORS[t.outcome]
        if t.direction in (">", ">="):
            ax.axvspan(t.threshold, right, color=OUTCOME_COLORS["REPRODUCED"], alpha=0.08, lw=0)
        else:
            ax.axvspan(left, t.threshold, color=OUTCOME_COLORS["REPRODUCED"], alpha=0.08, lw=0)
        ax.axvline(t.threshold, color="k", ls="--", lw=1)
        clip = lambda x: min(max(x, left), right) if not math.isnan(x) else math.nan  # noqa: E731
        if not (math.isnan(t.low) or math.isnan(t.high)):
            ax.plot([clip(t.low), clip(t.high)], [0, 0], color=color, lw=3, solid_capstyle="butt")
        if not math.isnan(t.estimate):
            marker = ">" if t.estimate > right else "<" if t.estimate < left else "o"
            ax.plot([clip(t.estimate)], [0], marker=marker, color=color, ms=8)
        ax.set_xlim(left, right)
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
        ax.grid(False, axis="y")
        ax.set_title(f"claim {k}: {t.name} (bar {t.bar}, n = {t.n}): {t.outcome}", fontsize=8.5, loc="left",
                     fontweight="normal", color=color)
        ax.tick_params(axis="x", labelsize=8)
    axs[-1, 0].set_xlabel("estimate and 95% interval, in each test's own units")
    fig.legend(handles=[Patch(color=c, label=o) for o, c in OUTCOME_COLORS.items()] +
               [Patch(color=OUTCOME_COLORS["REPRODUCED"], alpha=0.15, label="the claim's side of the bar")],
               loc="outside lower center", ncol=4, frameon=False, fontsize=8)
    fig.suptitle("Verdicts: each test's estimate and 95% interval against its bar (dashed)", fontsize=10)
    return fig
