"""Figures for the correlations analysis: matplotlib figures (PNG) and the interactive rank scatter (plotly, HTML)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _fmt(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _side(summary: Mapping[str, Any], side: str) -> str:
    """The rank axis title of one side: its run, or how many runs it averages."""
    runs = list((summary.get("sides", {}).get(side) or {}).get("runs") or [])
    return f"rank, side {side} ({runs[0] if len(runs) == 1 else f'{len(runs)} runs averaged'})"


def _stats(summary: Mapping[str, Any], level: str) -> str:
    res = summary.get(level, {})
    return f"Spearman {_fmt(res.get('spearman'))}, Kendall {_fmt(res.get('kendall'))}"


def plot_rank_scatter(aligned: pd.DataFrame, summary: Mapping[str, Any], levels: Sequence[str]):
    """One panel per level: rank on side a vs rank on side b, with Spearman and Kendall in the title."""
    fig, axes = plt.subplots(1, len(levels), figsize=(4.6 * len(levels), 4.4), squeeze=False)
    for ax, level in zip(axes[0], levels):
        g = aligned[aligned["level"] == level]
        size = 14 if len(g) < 500 else 3
        ax.scatter(g["a_rank"], g["b_rank"], s=size, alpha=0.6 if len(g) < 500 else 0.25, color="tab:blue", linewidths=0)
        hi = max(len(g), 1)
        ax.plot([1, hi], [1, hi], color="0.6", lw=0.8, ls="--")
        ax.set_title(f"{level} (n={len(g)})\n{_stats(summary, level)}", fontsize=10)
        ax.set_xlabel(_side(summary, "a"))
        ax.set_ylabel(_side(summary, "b"))
    fig.tight_layout()
    return fig


WEBGL_ABOVE = 2000  # points per panel above which the interactive scatter uses WebGL (a Fira 1B column level: 16,800)


def rank_scatter_interactive(aligned: pd.DataFrame, summary: Mapping[str, Any], levels: Sequence[str]):
    """The rank scatter as a plotly figure, one panel per level; hovering a point shows its member (level names and
    group values), key, both ranks and both reduced values."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = [f"{level} (n={int((aligned['level'] == level).sum())}): {_stats(summary, level)}" for level in levels]
    fig = make_subplots(rows=1, cols=len(levels), subplot_titles=titles, horizontal_spacing=0.08)
    for i, level in enumerate(levels, start=1):
        g = aligned[aligned["level"] == level]
        custom = np.column_stack([g["member"].astype(str), g["key"].astype(str), g["a"].astype(float), g["b"].astype(float)])
        trace = go.Scattergl if len(g) > WEBGL_ABOVE else go.Scatter
        fig.add_trace(trace(
            x=g["a_rank"], y=g["b_rank"], mode="markers", name=level, showlegend=False, customdata=custom,
            marker={"size": 7 if len(g) < 500 else 4, "opacity": 0.7 if len(g) < 500 else 0.4, "color": "#1f77b4"},
            hovertemplate=(f"level {level}, member %{{customdata[0]}}<br>%{{customdata[1]}}<br>"
                           "rank a %{x}, rank b %{y}<br>a %{customdata[2]:.4g}, b %{customdata[3]:.4g}<extra></extra>"),
        ), row=1, col=i)
        hi = max(len(g), 1)
        fig.add_trace(go.Scatter(x=[1, hi], y=[1, hi], mode="lines", line={"color": "grey", "dash": "dash", "width": 1},
                                 hoverinfo="skip", showlegend=False), row=1, col=i)
        fig.update_xaxes(title_text=_side(summary, "a"), row=1, col=i)
        fig.update_yaxes(title_text=_side(summary, "b"), row=1, col=i)
    fig.update_layout(template="plotly_white", height=480, width=max(520, 480 * len(levels)),
                      title="Rank of each family member on side a vs side b (dashed: identical ranking)")
    return fig


def plot_over_time(over_time: pd.DataFrame):
    """Spearman (solid) and Kendall (dashed) across each level's members at every step."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (level, g) in enumerate(over_time.groupby("level", sort=False)):
        color = f"C{i}"
        ax.plot(g["step"], g["spearman"], color=color, lw=1.4, label=f"{level}: Spearman")
        ax.plot(g["step"], g["kendall"], color=color, lw=1.2, ls="--", label=f"{level}: Kendall")
    ax.set_xlabel("step")
    ax.set_ylabel("rank correlation (a vs b)")
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
