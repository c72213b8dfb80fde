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
