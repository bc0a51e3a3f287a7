"""Figures of the minima analysis: minima vs horizon and the fitted parabolas, as PNG (matplotlib) and HTML (plotly).

``label`` names what the ``bs`` column holds (a batch size, or e.g. the model size N under ``recipe=lr_table``), so
axes and legends say what the data is.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

FAILED = ("too_few_points", "unreachable", "degenerate")
FONT = 11


def short_label(label: str) -> str:
    """'bs' for a batch size, else the label itself (legend entries: 'bs 64', 'model size N 9.4e+07')."""
    return "bs" if label == "batch size" else label


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.3g}"
    except (TypeError, ValueError):
        return str(v)


def _ok(minima: pd.DataFrame) -> pd.DataFrame:
    return minima[~minima["method"].isin(FAILED) & np.isfinite(minima["lr"].to_numpy(float))]


def _series(frame: pd.DataFrame, by: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """One (key, rows sorted by horizon) per (bs, *by) of ``frame``."""
    keys = ["bs", *[c for c in by if c in frame.columns]]
    return [((k if isinstance(k, tuple) else (k,)), g.sort_values("horizon"))
            for k, g in frame.groupby(keys, sort=True, dropna=False)]


def _series_name(key: tuple, label: str, by: Sequence[str]) -> str:
    name = f"{short_label(label)} {_fmt(key[0])}"
    return name + "".join(f", {c} {v}" for c, v in zip(by, key[1:]))


def _ci_err(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log2 lr and the (non-negative) distances to its CI ends; 0 where there is no CI."""
    y = np.log2(g["lr"].to_numpy(float))
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = y - np.log2(g["lr_ci_low"].to_numpy(float)) if "lr_ci_low" in g else np.full(len(g), np.nan)
        hi = np.log2(g["lr_ci_high"].to_numpy(float)) - y if "lr_ci_high" in g else np.full(len(g), np.nan)
    return y, np.clip(np.nan_to_num(lo), 0, None), np.clip(np.nan_to_num(hi), 0, None)


def plot_minima_vs_horizon(minima: pd.DataFrame, label: str = "batch size", by: Sequence[str] = ()) -> plt.Figure:
    """Optimal learning rate vs tokens, one line per ``bs`` value (log2 axes; hollow markers on the grid's edge)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    series = _series(_ok(minima), by)
    colors = plt.get_cmap("viridis")
    for i, (key, g) in enumerate(series):
        color = colors(i / max(len(series) - 1, 1))
        x = np.log2(g["horizon"].to_numpy(float))
        y, lo, hi = _ci_err(g)
        if (lo > 0).any() or (hi > 0).any():
            ax.errorbar(x, y, yerr=np.vstack([lo, hi]), fmt="none", ecolor=color, alpha=0.6, capsize=3)
        ax.plot(x, y, "-", color=color, label=_series_name(key, label, by))
        edge = g["on_edge"].to_numpy(bool)
        ax.scatter(x[~edge], y[~edge], color=color, zorder=3)
        ax.scatter(x[edge], y[edge], facecolors="none", edgecolors=color, zorder=3)
    ax.set_xlabel("log2 tokens", fontsize=FONT)
    ax.set_ylabel("log2 optimal learning rate", fontsize=FONT)
    ax.set_title(f"optimal learning rate per horizon and {label}\n(bars: CI; hollow: on the lr grid's edge)", fontsize=FONT)
    ax.tick_params(labelsize=FONT - 1)
    if series:
        ax.legend(fontsize=FONT - 2, title=label, title_fontsize=FONT - 2, loc="best", ncol=2 if len(series) > 8 else 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def parabola_panels(minima: pd.DataFrame, by: Sequence[str] = ()) -> list[tuple]:
    """The panels of the parabola figure: one per (horizon, *by) that has a minimum, in order."""
    groups = minima[~minima["method"].isin(FAILED)]
    keys = ["horizon", *[c for c in by if c in groups.columns]]
    return list(groups[keys].drop_duplicates().sort_values(keys).itertuples(index=False, name=None))


def _panel_title(key: tuple, by: Sequence[str]) -> str:
    return f"2^{math.log2(float(key[0])):.3g} tokens" + "".join(f", {c} {v}" for c, v in zip(by, key[1:]))


def _cells(minima: pd.DataFrame, points: pd.DataFrame, key: tuple, by: Sequence[str]):
    """(minimum row, its points) for every bs of one panel."""
    cols = ["horizon", *[c for c in by if c in minima.columns]]
    sel = np.ones(len(minima), bool)
    for c, v in zip(cols, key):
        sel &= (minima[c] == v).to_numpy() if not (isinstance(v, float) and math.isnan(v)) else minima[c].isna().to_numpy()
    rows = minima[sel & ~minima["method"].isin(FAILED).to_numpy()].sort_values("bs")
    for r in rows.itertuples(index=False):
        psel = (points["horizon"] == r.horizon) & (points["bs"] == r.bs) if len(points) else None
        for c in cols[1:]:
            if psel is not None and c in points.columns:
                psel &= points[c] == getattr(r, c)
        yield r, (points[psel] if psel is not None else points)


def _axis_and_colors(minima: pd.DataFrame, colormap: Callable[[list[float]], list]) -> tuple[str, dict]:
    """The parabolas' x-axis label, and a colour per bs value from ``colormap`` (of positions in [0, 1])."""
    axis_label = "log2 output norm" if len(minima) and str(minima["fit_axis"].iloc[0]) == "output_norm" else "log2 lr"
    bss = sorted(_ok(minima)["bs"].unique()) if len(minima) else []
    return axis_label, dict(zip(bss, colormap([i / max(len(bss) - 1, 1) for i in range(len(bss))]) if bss else []))


def plot_parabola_grid(minima: pd.DataFrame, points: pd.DataFrame, max_panels: int = 12, by: Sequence[str] = (),
                       label: str = "batch size") -> plt.Figure:
    """One panel per horizon (and ``by`` value), one colour per ``bs``: points, fitted parabola, star at the optimum."""
    panels = parabola_panels(minima, by)[:max_panels]
    n = max(len(panels), 1)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.8 * rows), squeeze=False)
    axis_label, color_of = _axis_and_colors(minima, lambda pos: [plt.get_cmap("viridis")(p) for p in pos])
    for ax, key in zip(axes.ravel(), panels):
        for r, pts in _cells(minima, points, key, by):
            color = color_of.get(r.bs, "C0")
            name = f"{short_label(label)} {_fmt(r.bs)}" + ("" if r.method in ("fit", "fit_closest") else f" ({r.method})")
            if len(pts):
                used = pts["used_in_fit"].to_numpy(bool)
                ax.plot(pts["x"][used], pts["loss"][used], "o", ms=4, color=color, label=name)
                ax.plot(pts["x"][~used], pts["loss"][~used], "o", ms=4, mfc="none", color=color)
                if np.isfinite(r.a):
                    xs = np.linspace(pts["x"].min(), pts["x"].max(), 100)
                    ax.plot(xs, r.a * xs**2 + r.b * xs + r.c, "-", color=color, lw=1.2)
            if np.isfinite(r.x_opt) and np.isfinite(r.loss):
                ax.plot([r.x_opt], [r.loss], "*", color="k", ms=11, zorder=4)
        ax.set_title(_panel_title(key, by), fontsize=FONT)
        ax.tick_params(labelsize=FONT - 2)
        ax.set_xlabel(axis_label, fontsize=FONT - 1)
        ax.set_ylabel("train loss", fontsize=FONT - 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=FONT - 3, loc="best")
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    if not panels:
        axes[0, 0].set_visible(True)
        axes[0, 0].text(0.5, 0.5, "no (horizon, bs) with a minimum", ha="center", va="center")
    fig.suptitle("fitted parabolas (hollow: not fitted; star: the reported optimum)", fontsize=FONT + 1)
    fig.tight_layout()
    return fig


def plotly_minima_vs_horizon(minima: pd.DataFrame, label: str = "batch size", by: Sequence[str] = ()) -> Any:
    """Interactive minima vs horizon: one trace per ``bs`` value, CI bars, hover with lr*, CI, method and n_points."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, g in _series(_ok(minima), by):
        y, lo, hi = _ci_err(g)
        hover = [f"tokens 2^{math.log2(h):.3g}<br>{short_label(label)} {_fmt(key[0])}<br>lr* {lr:.4g}"
                 f"<br>CI [{_fmt(cl)}, {_fmt(ch)}]<br>method {m}<br>n_points {int(npt)}" + ("<br>on the lr grid's edge" if e else "")
                 for h, lr, cl, ch, m, npt, e in zip(g["horizon"], g["lr"], g.get("lr_ci_low", np.nan), g.get("lr_ci_high", np.nan),
                                                     g["method"], g["n_points"], g["on_edge"].astype(bool))]
        fig.add_trace(go.Scatter(x=np.log2(g["horizon"].to_numpy(float)), y=y, mode="lines+markers",
                                 name=_series_name(key, label, by), text=hover, hoverinfo="text",
                                 error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
                                 marker=dict(symbol=["circle-open" if e else "circle" for e in g["on_edge"].astype(bool)], size=8)))
    fig.update_layout(title=f"optimal learning rate per horizon and {label}", xaxis_title="log2 tokens",
                      yaxis_title="log2 optimal learning rate", legend_title=label, template="plotly_white")
    return fig


def plotly_parabolas(minima: pd.DataFrame, points: pd.DataFrame, by: Sequence[str] = (), label: str = "batch size") -> Any:
    """Interactive parabolas: a menu picks the horizon (and ``by`` value); one colour per ``bs``, hover on every point."""
    import plotly.graph_objects as go
    from plotly.colors import sample_colorscale

    panels = parabola_panels(minima, by)
    axis_label, color_of = _axis_and_colors(minima, lambda pos: sample_colorscale("Viridis", pos))
    fig = go.Figure()
    owner: list[int] = []
    for p, key in enumerate(panels):
        for r, pts in _cells(minima, points, key, by):
            color = color_of.get(r.bs, "#1f77b4")
            name = f"{short_label(label)} {_fmt(r.bs)}"
            if len(pts):
                hover = [f"{name}<br>{axis_label} {x:.3f}<br>loss {y:.4f}<br>{'fitted' if u else 'not fitted'}"
                         for x, y, u in zip(pts["x"], pts["loss"], pts["used_in_fit"])]
                fig.add_trace(go.Scatter(x=pts["x"], y=pts["loss"], mode="markers", name=name, legendgroup=name,
                                         marker=dict(color=color, symbol=["circle" if u else "circle-open" for u in pts["used_in_fit"]]),
                                         text=hover, hoverinfo="text", visible=p == 0))
                owner.append(p)
                if np.isfinite(r.a):
                    xs = np.linspace(pts["x"].min(), pts["x"].max(), 100)
                    fig.add_trace(go.Scatter(x=xs, y=r.a * xs**2 + r.b * xs + r.c, mode="lines", line=dict(color=color),
                                             name=f"{name} fit", legendgroup=name, showlegend=False, hoverinfo="skip",
                                             visible=p == 0))
                    owner.append(p)
            if np.isfinite(r.x_opt) and np.isfinite(r.loss):
                ci = f"[{_fmt(r.lr_ci_low)}, {_fmt(r.lr_ci_high)}]"
                fig.add_trace(go.Scatter(x=[r.x_opt], y=[r.loss], mode="markers", legendgroup=name, showlegend=False,
                                         marker=dict(symbol="star", size=14, color=color, line=dict(color="black", width=1)),
                                         text=[f"{name}<br>lr* {r.lr:.4g} CI {ci}<br>method {r.method}<br>n_points {int(r.n_points)}"],
                                         hoverinfo="text", visible=p == 0))
                owner.append(p)
    buttons = [dict(label=_panel_title(key, by), method="update",
                    args=[{"visible": [o == p for o in owner]}, {"title": f"fitted parabolas at {_panel_title(key, by)}"}])
               for p, key in enumerate(panels)]
    first = _panel_title(panels[0], by) if panels else "no (horizon, bs) with a minimum"
    fig.update_layout(title=f"fitted parabolas at {first}", xaxis_title=axis_label, yaxis_title="train loss",
                      legend_title=label, template="plotly_white",
                      updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=1.15, yanchor="top")]
                      if buttons else [])
    return fig
