"""Figures of the scaling-law analysis: isoFLOP curves (matplotlib and an interactive plotly version), N* and D* vs C,
the parametric fit's contours; ``figures`` gives each with its one-line caption."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.interpolate import Akima1DInterpolator  # noqa: E402

from analyses.scaling_laws import approach3  # noqa: E402


def _akima_curve(pts: pd.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, loss) on ``size`` points of the Akima interpolant of log loss in log N through one budget's points."""
    x = np.log(pts["N"].to_numpy())
    grid = np.linspace(x[0], x[-1], size)
    return np.exp(grid), np.exp(Akima1DInterpolator(x, np.log(pts["loss"].to_numpy()))(grid))


def _per_budget(points: pd.DataFrame) -> Iterator[tuple[np.ndarray, float, pd.DataFrame]]:
    """(colour, budget, its points sorted by N) per budget, cheapest first."""
    budgets = sorted(points["budget"].unique())
    for color, c in zip(plt.cm.viridis(np.linspace(0, 0.9, max(len(budgets), 1))), budgets):
        yield color, c, points[points["budget"] == c].sort_values("N")


def isoflop_figure(points: pd.DataFrame, minima: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """Loss vs N at each budget (points and their Akima interpolant) with the accepted minima marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, c, pts in _per_budget(points):
        ax.scatter(pts["N"], pts["loss"], s=12, color=color)
        if len(pts) >= 3:
            ax.plot(*_akima_curve(pts, 200), color=color, lw=1, label=f"C={c:.2g}")
    ok = minima[minima["status"] == "ok"]
    ax.scatter(ok["N_star"], ok["loss_star"], marker="*", s=90, color="crimson", zorder=5, label="minimum")
    ax.set(xscale="log", yscale="log", xlabel="N (parameters)", ylabel="loss",
           title=f"IsoFLOP curves{'' if title is None else ' - ' + title}")
    ax.legend(fontsize=6, ncol=2)
    return fig


def _band(ax: plt.Axes, c: np.ndarray, lines: np.ndarray, color: str) -> None:
    """Shade the 2.5-97.5 percentile band of sampled lines (rows: samples, columns: C)."""
    lines = lines[np.all(np.isfinite(lines), axis=1)]
    if len(lines) >= 10:
        lo, hi = np.percentile(lines, [2.5, 97.5], axis=0)
        ax.fill_between(c, lo, hi, color=color, alpha=0.2, lw=0)


def allocation_figure(artefacts: dict[str, Any], c_range: tuple[float, float], title: str | None = None) -> plt.Figure:
    """N* and D* vs C: approach 1's envelope, approach 2's minima (with 1-sd bars) and fits, approach 3's allocation."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    c = np.geomspace(*c_range, 100)
    for ax, key in zip(axes, ("N", "D")):
        if "approach1" in artefacts:
            env, fit = artefacts["approach1"]["envelope"], artefacts["approach1"][f"fit_{key.lower()}"]
            ax.scatter(env["C"], env[key], s=10, color="tab:gray", label="approach 1 envelope")
            if np.isfinite(fit.exponent):
                ax.plot(c, fit(c), color="tab:gray", ls="--", label=f"approach 1: {fit.exponent:.3f}")
        if "approach2" in artefacts:
            res = artefacts["approach2"]["result"]
            ok = res.minima[res.minima["status"] == "ok"]
            sd, y = ok[f"log_{key}_sd"].to_numpy(float), ok[f"{key}_star"].to_numpy(float)
            err = np.vstack([y - y * np.exp(-np.nan_to_num(sd)), y * np.exp(np.nan_to_num(sd)) - y])
            ax.errorbar(ok["budget"], y, yerr=err, fmt="o", ms=4, color="tab:blue", label="approach 2 minima")
            fit = res.fit_n if key == "N" else res.fit_d
            if np.isfinite(fit.exponent):
                ax.plot(c, fit(c), color="tab:blue", label=f"approach 2: {fit.exponent:.3f}")
                slope = res.a_samples if key == "N" else res.b_samples
                inter = res.line_samples["a_intercept" if key == "N" else "b_intercept"]
                if len(slope):
                    _band(ax, c, np.exp(inter[:, None] + slope[:, None] * np.log(c)[None, :]), "tab:blue")
        if "approach3" in artefacts:
            fit3, samples = artefacts["approach3"]["fit"], artefacts["approach3"]["samples"]
            n_star, d_star = approach3.compute_optimal(fit3.theta, c)
            ax.plot(c, n_star if key == "N" else d_star, color="tab:red",
                    label=f"approach 3: {fit3.params['a' if key == 'N' else 'b']:.3f}")
            if len(samples):
                lines = np.array([approach3.compute_optimal(t, c)[0 if key == "N" else 1] for t in samples[:400]])
                _band(ax, c, lines, "tab:red")
        ax.set(xscale="log", yscale="log", xlabel="C (FLOPs)", ylabel=f"{key}*")
        ax.legend(fontsize=7)
    fig.suptitle(f"Compute-optimal allocation{'' if title is None else ' - ' + title}")
    fig.tight_layout()
    return fig


def contour_figure(table: pd.DataFrame, fit: approach3.ParametricFit, title: str | None = None) -> plt.Figure:
    """Contours of the fitted L(N, D) over the data's range, the data, and the efficient frontier N*(C), D*(C)."""
    fig, ax = plt.subplots(figsize=(7, 5))
    n_lo, n_hi = table["N"].min() / 2, table["N"].max() * 2
    d_lo, d_hi = table["D"].min() / 2, table["D"].max() * 2
    nn, dd = np.meshgrid(np.geomspace(n_lo, n_hi, 120), np.geomspace(d_lo, d_hi, 120))
    ll = np.exp(approach3.predict_log_loss(fit.theta, np.log(nn.ravel()), np.log(dd.ravel()))).reshape(nn.shape)
    cs = ax.contourf(nn, dd, ll, levels=np.quantile(ll, np.linspace(0, 1, 16)), cmap="viridis_r")
    fig.colorbar(cs, ax=ax, label="fitted loss")
    ax.scatter(table["N"], table["D"], c="white", edgecolors="black", s=10, lw=0.4, label="data")
    c = np.geomspace(6 * n_lo * d_lo, 6 * n_hi * d_hi, 200)
    n_star, d_star = approach3.compute_optimal(fit.theta, c)
    inside = (n_star >= n_lo) & (n_star <= n_hi) & (d_star >= d_lo) & (d_star <= d_hi)
    ax.plot(n_star[inside], d_star[inside], color="crimson", lw=2, label="efficient frontier")
    ax.set(xscale="log", yscale="log", xlim=(n_lo, n_hi), ylim=(d_lo, d_hi), xlabel="N (parameters)",
           ylabel="D (tokens)")
    p = fit.params
    ax.set_title(f"L = {p['E']:.3g} + {p['A']:.3g}/N^{p['alpha']:.3f} + {p['B']:.3g}/D^{p['beta']:.3f}"
                 + ("" if title is None else f" - {title}"), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def isoflop_interactive(points: pd.DataFrame, minima: pd.DataFrame, title: str | None = None) -> Any:
    """Plotly: loss vs N per budget (points and their Akima interpolant, one trace per budget, toggled from the legend)
    with the fitted minima; hover gives N, D, loss and the budget."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for color, c, pts in _per_budget(points):
        rgb = "rgb({:.0f},{:.0f},{:.0f})".format(*(255 * color[:3]))
        name = f"C={c:.3g}"
        fig.add_trace(go.Scatter(
            x=pts["N"], y=pts["loss"], mode="markers", name=name, legendgroup=name, marker={"color": rgb, "size": 6},
            customdata=np.column_stack([pts["D"], np.full(len(pts), c)]),
            hovertemplate="N=%{x:.4g}<br>D=%{customdata[0]:.4g}<br>loss=%{y:.5g}<br>C=%{customdata[1]:.3g}<extra></extra>"))
        if len(pts) >= 3:
            n_grid, curve = _akima_curve(pts, 120)
            fig.add_trace(go.Scatter(x=n_grid, y=curve, mode="lines", name=name, legendgroup=name,
                                     showlegend=False, line={"color": rgb, "width": 1}, hoverinfo="skip"))
    ok = minima[minima["status"] == "ok"]
    if len(ok):
        fig.add_trace(go.Scatter(
            x=ok["N_star"], y=ok["loss_star"], mode="markers", name="fitted minimum",
            marker={"symbol": "star", "size": 13, "color": "crimson"},
            customdata=np.column_stack([ok["budget"], ok["D_star"], ok["log_N_sd"]]),
            hovertemplate="minimum at C=%{customdata[0]:.3g}<br>N*=%{x:.4g}<br>D*=%{customdata[1]:.4g}"
                          "<br>loss*=%{y:.5g}<br>sd(log N*)=%{customdata[2]:.3f}<extra></extra>"))
    fig.update_layout(title=f"IsoFLOP curves{'' if title is None else ' - ' + title}", xaxis_title="N (parameters)",
                      yaxis_title="loss", xaxis_type="log", yaxis_type="log", template="plotly_white", height=520)
    return fig


def figures(table: pd.DataFrame, artefacts: dict[str, Any], title: str | None = None) -> dict[str, tuple[Any, str]]:
    """Every figure the selected approaches allow, by file stem: (figure, one-line caption)."""
    out: dict[str, tuple[Any, str]] = {}
    if "approach2" in artefacts:
        res = artefacts["approach2"]["result"]
        if len(res.points):
            n_ok = int(res.minima["status"].eq("ok").sum())
            out["isoflop_curves"] = (isoflop_figure(res.points, res.minima, title),
                                     f"Loss vs N at each of {res.points['budget'].nunique()} compute budgets (Akima "
                                     f"interpolant), with the {n_ok} accepted minima starred (approach 2).")
            out["isoflop_interactive"] = (isoflop_interactive(res.points, res.minima, title),
                                          "Interactive isoFLOP curves: loss vs N per budget with the fitted minima "
                                          "(hover for N, D, loss; click a budget in the legend to hide it).")
    out["optimal_allocation"] = (allocation_figure(artefacts, (float(table["C"].min()), float(table["C"].max())), title),
                                 "Compute-optimal N* and D* vs C per approach, with the fitted power laws and their "
                                 "95% bootstrap bands.")
    if "approach3" in artefacts:
        p = artefacts["approach3"]["fit"].params
        out["parametric_contours"] = (contour_figure(table, artefacts["approach3"]["fit"], title),
                                      f"Contours of the fitted L(N, D) (alpha={p['alpha']:.3f}, beta={p['beta']:.3f}) "
                                      "over the data, with the efficient frontier N*(C), D*(C) (approach 3).")
    return out
