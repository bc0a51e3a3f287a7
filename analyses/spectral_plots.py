"""Figures of analysis `spectral`: time vs relative error per shape, with the Pareto front."""
from __future__ import annotations

import math

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ERROR_FLOOR = 1e-8  # exact methods reach ~1e-8; plotted at the floor on the log axis
MARKERS = {"float32": "o", "bfloat16": "s", "float16": "^", "float64": "D"}


def pareto_front(df: pd.DataFrame) -> pd.DataFrame:
    """Rows no other row beats on both time and error, sorted by time (skipped cells, without numbers, left out)."""
    rows = df[df["ms"].notna() & df["rel_error"].notna()].sort_values(["ms", "rel_error"])
    best = math.inf
    keep = []
    for idx, r in rows.iterrows():
        if r["rel_error"] < best:
            keep.append(idx)
            best = r["rel_error"]
    return rows.loc[keep]


def pareto_figure(df: pd.DataFrame):
    """One panel per shape: ms per parameter (log) vs relative error (log), colour = method, marker = dtype; cells
    skipped over their time budget are counted in the panel's title."""
    shapes = list(dict.fromkeys(df["shape"]))
    ncols = min(3, len(shapes))
    nrows = math.ceil(len(shapes) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.8 * nrows), squeeze=False)
    methods = list(dict.fromkeys(df["method"]))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for ax, shape in zip(axes.flat, shapes):
        g = df[df["shape"] == shape].copy()
        n_skipped = int((g["ms"].isna() | g["rel_error"].isna()).sum())
        g = g[g["ms"].notna() & g["rel_error"].notna()]
        title = f"{shape} ({df.loc[df['shape'] == shape, 'device'].iloc[0]})"
        ax.set_title(title + (f", {n_skipped} skipped" if n_skipped else ""), fontsize=10)
        if g.empty:
            ax.text(0.5, 0.5, "every cell skipped\n(cell_budget_s)", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        g["err_plot"] = np.maximum(g["rel_error"].astype(float), ERROR_FLOOR)
        for _, r in g.iterrows():
            ax.scatter(r["ms"], r["err_plot"], color=colors[r["method"]], marker=MARKERS.get(r["dtype"], "x"), s=36,
                       edgecolor="black", linewidth=0.4, zorder=3)
        front = pareto_front(g)
        ax.plot(front["ms"], np.maximum(front["rel_error"], ERROR_FLOOR), color="grey", lw=1, ls="--", zorder=2)
        for level in (0.01, 0.05):
            ax.axhline(level, color="red", lw=0.6, ls=":", zorder=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("ms per parameter")
        ax.set_ylabel("relative error of s1")
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(shapes):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colors[m], marker="o", ls="", label=m) for m in methods]
    handles += [plt.Line2D([], [], color="black", marker=MARKERS.get(d, "x"), ls="", mfc="none", label=d)
                for d in dict.fromkeys(df["dtype"])]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(handles) / 6)))
    fig.suptitle("Spectral-norm estimators: time vs error (dotted: 1% and 5%; dashed: Pareto front)", fontsize=11)
    fig.tight_layout()
    return fig
