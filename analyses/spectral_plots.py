"""Figures of analysis `spectral`: time vs relative error per shape, with the Pareto front (PNG and interactive HTML)."""
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


def _panels(df: pd.DataFrame) -> tuple[list, int, int, list[str]]:
    """The shapes (one panel each), the grid's columns and rows, and each panel's title (skipped cells counted)."""
    shapes = list(dict.fromkeys(df["shape"]))
    ncols = min(3, len(shapes))
    titles = []
    for shape in shapes:
        g = df[df["shape"] == shape]
        n_skipped = int((g["ms"].isna() | g["rel_error"].isna()).sum())
        titles.append(f"{shape} ({g['device'].iloc[0]})" + (f", {n_skipped} skipped" if n_skipped else ""))
    return shapes, ncols, math.ceil(len(shapes) / ncols), titles


def pareto_figure(df: pd.DataFrame):
    """One panel per shape: ms per parameter (log) vs relative error (log), colour = method, marker = dtype; cells
    skipped over their time budget are counted in the panel's title."""
    shapes, ncols, nrows, titles = _panels(df)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.8 * nrows), squeeze=False)
    methods = list(dict.fromkeys(df["method"]))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for ax, shape, title in zip(axes.flat, shapes, titles):
        g = df[(df["shape"] == shape) & df["ms"].notna() & df["rel_error"].notna()].copy()
        ax.set_title(title, fontsize=10)
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


PLOTLY_SYMBOLS = {"float32": "circle", "bfloat16": "square", "float16": "triangle-up", "float64": "diamond"}


def pareto_interactive(df: pd.DataFrame):
    """The time-vs-error figure as plotly (HTML): one panel per shape, one legend entry per method (toggles it in
    every panel), symbol = dtype, dashed Pareto front; hovering a point shows method, dtype, shape, ms and error."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    shapes, ncols, nrows, titles = _panels(df)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.07, vertical_spacing=0.12)
    methods = list(dict.fromkeys(df["method"]))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    colors = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    shown: set[str] = set()
    for i, shape in enumerate(shapes):
        row, col = i // ncols + 1, i % ncols + 1
        g = df[(df["shape"] == shape) & df["ms"].notna() & df["rel_error"].notna()].copy()
        if g.empty:
            continue
        g["err_plot"] = np.maximum(g["rel_error"].astype(float), ERROR_FLOOR)
        for method, m in g.groupby("method", sort=False):
            custom = np.column_stack([m["method"].astype(str), m["dtype"].astype(str), m["shape"].astype(str),
                                      m["rel_error"].astype(float), m["batch"].astype(int)])
            fig.add_trace(go.Scatter(
                x=m["ms"], y=m["err_plot"], mode="markers", name=str(method), legendgroup=str(method),
                showlegend=method not in shown, customdata=custom,
                marker={"color": colors[method], "size": 10, "line": {"color": "black", "width": 0.5},
                        "symbol": [PLOTLY_SYMBOLS.get(d, "x") for d in m["dtype"]]},
                hovertemplate=("%{customdata[0]} (%{customdata[1]})<br>shape %{customdata[2]}, batch %{customdata[4]}"
                               "<br>%{x:.4g} ms per parameter<br>relative error %{customdata[3]:.3g}<extra></extra>"),
            ), row=row, col=col)
            shown.add(method)
        front = pareto_front(g)
        fig.add_trace(go.Scatter(x=front["ms"], y=np.maximum(front["rel_error"].astype(float), ERROR_FLOOR), mode="lines",
                                 line={"color": "grey", "dash": "dash", "width": 1}, hoverinfo="skip", showlegend=False),
                      row=row, col=col)
        for level in (0.01, 0.05):
            fig.add_hline(y=level, line={"color": "red", "dash": "dot", "width": 0.8}, row=row, col=col)
        fig.update_xaxes(type="log", title_text="ms per parameter", row=row, col=col)
        fig.update_yaxes(type="log", title_text="relative error of s1", row=row, col=col)
    dtypes = ", ".join(f"{d}: {PLOTLY_SYMBOLS.get(d, 'x')}" for d in dict.fromkeys(df["dtype"]))
    fig.update_layout(template="plotly_white", height=360 * nrows + 80, width=max(560, 440 * ncols),
                      title=f"Spectral-norm estimators: time vs error (symbol = dtype: {dtypes}; dashed: Pareto front)",
                      legend={"title": {"text": "method (click to hide)"}})
    return fig
