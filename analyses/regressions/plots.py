"""Figures for the regressions and norm-transfer analyses; each function returns its figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analyses.regressions.fits import LinearFit  # noqa: E402


def ci_contains_estimate(minima: pd.DataFrame) -> np.ndarray:
    """Per minimum: whether its lr CI is finite and contains its lr* (a grid lr from optimum_from_closest may lie outside)."""
    if not {"lr_ci_low", "lr_ci_high"} <= set(minima.columns):
        return np.zeros(len(minima), bool)
    lo, hi, lr = (minima[k].to_numpy(float) for k in ("lr_ci_low", "lr_ci_high", "lr"))
    with np.errstate(invalid="ignore"):
        return np.isfinite(lo) & np.isfinite(hi) & (lo <= lr) & (lr <= hi)


def _finish(ax, xlabel: str, ylabel: str, **legend) -> None:
    """Label the axes, draw the legend (``legend``: its options) and a light grid."""
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend(**legend)
    ax.grid(alpha=0.3)


def short_label(bs_label: str) -> str:
    """The legend word for the ``bs`` column: ``bs`` for a batch size, else its role (e.g. ``model size N``)."""
    return "bs" if bs_label == "batch size" else bs_label


def plot_lr_bs_fit(minima: pd.DataFrame, fit: LinearFit, intercepts: pd.DataFrame | None = None,
                   bs_label: str = "batch size"):
    """log2 lr* vs log2 bs with one fitted line per horizon (common slope alpha), intercepts with delta-method SEs.

    Error bars are drawn only where the minimum's CI contains its lr* (a CI of the vertex around a grid lr picked by
    ``optimum_from_closest`` need not), so the bars are never negative.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("viridis")
    horizons = np.sort(minima["horizon"].unique())
    inside = ci_contains_estimate(minima)
    for i, h in enumerate(horizons):
        sel = (minima["horizon"] == h).to_numpy()
        g = minima[sel]
        order = np.argsort(g["bs"].to_numpy(float))
        g, ok = g.iloc[order], inside[sel][order]
        color = cmap(i / max(len(horizons) - 1, 1))
        x, y = np.log2(g["bs"].to_numpy(float)), np.log2(g["lr"].to_numpy(float))
        label = f"2^{np.log2(h):g} tokens"
        if intercepts is not None and len(intercepts):
            row = intercepts.iloc[int(np.argmin(np.abs(intercepts["horizon"].to_numpy(float) - h)))]
            label += f" (icpt {row['intercept']:.2f}±{row['intercept_se']:.2f})"
        ax.plot(x[~ok], y[~ok], "o", color=color, label=label if not ok.any() else None)
        if ok.any():
            lo, hi = (np.log2(g[k].to_numpy(float)[ok]) for k in ("lr_ci_low", "lr_ci_high"))
            err = np.clip(np.vstack([y[ok] - lo, hi - y[ok]]), 0.0, None)
            ax.errorbar(x[ok], y[ok], yerr=err, fmt="o", color=color, capsize=3, label=label)
        xs = np.linspace(x.min() - 0.25, x.max() + 0.25, 20)
        ax.plot(xs, fit.params["alpha"] * xs + fit.params["beta"] * np.log2(h) + fit.params["gamma"], "-", color=color, alpha=0.8)
    ax.set_title(f"log2 lr* = {fit.params['alpha']:.3f} log2 bs + {fit.params['beta']:.3f} log2 h + {fit.params['gamma']:.2f}  (R² {fit.r2:.3f})", fontsize=9)
    xlabel = f"{bs_label} (log2)" + (", sequences" if bs_label == "batch size" else "")
    _finish(ax, xlabel, "optimal learning rate (log2)", fontsize=6, ncol=2)
    return fig


def plot_norm_band_fit(points: pd.DataFrame, fit: LinearFit, table: pd.DataFrame, c: float, eps: float,
                       overlay: LinearFit | None = None):
    """The norm-band points and the global fit log2 lr = A log2 h + B log2 bs + C, one line per batch size.

    ``overlay`` (a fit with A and B held, C refit: the reference's overlay_solid_A/B) is drawn dashed.
    """
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    cmap = plt.get_cmap("plasma")
    sizes = np.sort(points["bs"].unique()) if len(points) else []
    for i, bs in enumerate(sizes):
        g = points[points["bs"] == bs]
        color = cmap(i / max(len(sizes) - 1, 1))
        x = np.log2(g["horizon"].to_numpy(float))
        ax.plot(x, np.log2(g["lr"].to_numpy(float)), "o", color=color, label=f"bs {bs:g}")
        xs = np.linspace(x.min(), x.max(), 20) if len(x) else np.array([])
        ax.plot(xs, fit.params["A"] * xs + fit.params["B"] * np.log2(bs) + fit.params["C"], "-", color=color)
        if overlay is not None:
            ax.plot(xs, overlay.params["A"] * xs + overlay.params["B"] * np.log2(bs) + overlay.params["C"], "--", color=color)
    title = f"A={fit.params['A']:.3f}  B={fit.params['B']:.3f}  C={fit.params['C']:.2f}  n={fit.n}"
    if overlay is not None:
        title += f"\ndashed: A={overlay.params['A']:g}, B={overlay.params['B']:g} held, C={overlay.params['C']:.2f}"
    ax.set_title(title, fontsize=9)
    _finish(ax, "tokens (2^k)", "learning rate (log2)", fontsize=7)
    norms = table.dropna(subset=["output_norm"]).groupby(["horizon"])["output_norm"]
    h = np.log2(np.asarray(norms.median().index, dtype=float))
    ax2.fill_between(h, np.log2(norms.quantile(0.1).to_numpy(float)), np.log2(norms.quantile(0.9).to_numpy(float)), alpha=0.3, label="runs (10-90%)")
    ax2.axhspan(c - eps, c + eps, color="tab:green", alpha=0.3, label=f"band 2^({c:g}±{eps:g})")
    _finish(ax2, "tokens (2^k)", "output norm (log2)", fontsize=7)
    return fig


def plot_top1_across_horizons(top1: pd.DataFrame):
    """Best loss per horizon against the equal-lr baseline (left) and the lr of each (right).

    The right panel shows the lrs, not the loss gap: without per-layer lrs the top-1 run is the equal-lr run, the gap
    is zero and a bar chart of it is empty.
    """
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.log2(top1["horizon"].to_numpy(float))
    ax.plot(x, top1["best_loss"], "o-", label="top-1 run")
    ax.plot(x, top1["baseline_loss"], "s--", label="equal-lr baseline")
    gap = (top1["baseline_loss"] - top1["best_loss"]).to_numpy(float)
    if np.isfinite(gap).any():
        ax.set_title(f"gain over baseline: {np.nanmin(gap):.3g} .. {np.nanmax(gap):.3g}", fontsize=9)
    _finish(ax, "tokens (2^k)", "train loss", fontsize=8)
    for col, style, label in (("best_lr", "o-", "top-1 lr"), ("baseline_lr", "s--", "baseline lr"),
                              ("best_lr_in", "^:", "top-1 lr_in"), ("best_lr_out", "v:", "top-1 lr_out")):
        if col in top1.columns and top1[col].notna().any():
            ax2.plot(x, np.log2(top1[col].to_numpy(float)), style, label=label)
    _finish(ax2, "tokens (2^k)", "learning rate (log2)", fontsize=8)
    return fig


def _norm_figure(frame: pd.DataFrame, by: list[str], style: str, label: str, ylabel: str):
    """log2 output norm against log2 horizon, one line per ``by`` group (``label``: its legend, formatted by key)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, g in frame.groupby(by):
        g = g.sort_values("horizon")
        ax.plot(np.log2(g["horizon"].to_numpy(float)), np.log2(g["output_norm"].to_numpy(float)), style,
                label=label.format(*key))
    _finish(ax, "tokens (2^k)", ylabel, fontsize=7)
    return fig


def plot_norm_vs_horizon(curves: pd.DataFrame):
    """Output norm against horizon for chosen (lr, bs) pairs."""
    return _norm_figure(curves, ["lr", "bs"], "-", "lr {0:.3g}, bs {1:g}", "output norm (log2)")


def plot_optimum_norm(norm_at_opt: pd.DataFrame):
    """Output norm at the optimum per horizon, one line per batch size (is it constant?)."""
    return _norm_figure(norm_at_opt, ["bs"], "o-", "bs {0:g}", "output norm at the optimum (log2)")


def plotly_loss_norm_lr_3d(table: pd.DataFrame, horizon: float):
    """Interactive 3D scatter of loss vs output norm vs lr at one horizon (one trace per batch size)."""
    import plotly.graph_objects as go

    at = table[np.isclose(table["horizon"].to_numpy(float), horizon)]
    fig = go.Figure()
    for bs, g in at.groupby("bs"):
        fig.add_trace(go.Scatter3d(x=np.log2(g["lr"]), y=np.log2(g["output_norm"]), z=g["train_loss"], mode="markers",
                                   name=f"bs {bs:g}", marker={"size": 4}))
    fig.update_layout(title=f"loss vs output norm vs lr at 2^{np.log2(horizon):g} tokens",
                      scene={"xaxis_title": "lr (log2)", "yaxis_title": "output norm (log2)", "zaxis_title": "train loss"})
    return fig


def plotly_lr_triples(triples: pd.DataFrame):
    """Parallel coordinates of per-layer lr triples (lr_in, lr_hidden, lr_out) coloured by loss, best highlighted."""
    import plotly.graph_objects as go

    dims = [{"label": f"{c} (log2)", "values": np.log2(triples[c].to_numpy(float))} for c in ("lr_in", "lr_hidden", "lr_out")]
    dims.append({"label": "train loss", "values": triples["train_loss"].to_numpy(float)})
    fig = go.Figure(go.Parcoords(line={"color": triples["train_loss"], "colorscale": "Viridis_r", "showscale": True}, dimensions=dims))
    b = triples.loc[triples["train_loss"].idxmin()]
    fig.update_layout(title=f"per-layer lr: best lr_in={b.lr_in:.3g}, lr_hidden={b.lr_hidden:.3g}, lr_out={b.lr_out:.3g} (loss {b.train_loss:.4f})")
    return fig


def plot_joint_optimum(joint: pd.DataFrame, scaling: dict, bs_label: str = "batch size"):
    """log2 B* and log2 eta* against log2 horizon (bootstrap CIs where present) with their fitted lines."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    good = joint[joint["status"] == "ok"]
    x = good["log2_horizon"].to_numpy(float)
    best = "B* (log2, sequences)" if bs_label == "batch size" else f"optimal {bs_label} (log2)"
    for ax, col, name, label in ((axes[0], "log2_bs_star", "bs_star", best),
                                 (axes[1], "log2_lr_star", "lr_star", "eta* (log2)")):
        y = good[col].to_numpy(float)
        if {f"{col}_ci_low", f"{col}_ci_high"} <= set(good.columns):
            lo, hi = good[f"{col}_ci_low"].to_numpy(float), good[f"{col}_ci_high"].to_numpy(float)
            ok = np.isfinite(lo) & np.isfinite(hi) & (lo <= y) & (y <= hi)
            ax.errorbar(x[ok], y[ok], yerr=np.vstack([y[ok] - lo[ok], hi[ok] - y[ok]]), fmt="o", capsize=3)
            ax.plot(x[~ok], y[~ok], "o", color="tab:blue")
        else:
            ax.plot(x, y, "o")
        edge = good["on_edge"].to_numpy(bool)
        if edge.any():
            ax.plot(x[edge], y[edge], "x", color="tab:red", markersize=10, label=f"on the {short_label(bs_label)} grid's edge")
        law = scaling.get(name, {})
        if "slope" in law and len(x):
            xs = np.linspace(x.min(), x.max(), 20)
            ax.plot(xs, law["slope"] * xs + law["intercept"], "-", color="tab:orange",
                    label=f"slope {law['slope']:.3f} [{law['slope_ci'][0]:.3f}, {law['slope_ci'][1]:.3f}]")
        ax.set(xlabel="tokens (log2)", ylabel=label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return fig


def plot_minima_at_horizon_across_models(minima: pd.DataFrame, horizon: float, model_col: str | None = None):
    """Loss against log2 output norm of each bs's minimum at one horizon, one line per model (marker size: bs).

    The band is the mean -/+ 1 sd of the best minimum's log2 norm across models (the reference's
    ``plot_minima_at_horizon_across_models``; models are the values of a minima ``by`` column, or the one sweep).
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    at = minima[np.isclose(minima["horizon"].to_numpy(float), float(horizon))]
    at = at[np.isfinite(at["output_norm"].to_numpy(float)) & (at["output_norm"].to_numpy(float) > 0)]
    groups = at.groupby(model_col, sort=True) if model_col else [("sweep", at)]
    sizes = {b: 20 * 1.6**i for i, b in enumerate(sorted(at["bs"].unique()))}
    best_x = []
    cmap = plt.get_cmap("tab10")
    for i, (model, g) in enumerate(groups):
        g = g.sort_values("bs")
        x = np.log2(g["output_norm"].to_numpy(float))
        color = cmap(i % 10)
        ax.plot(x, g["loss"].to_numpy(float), "-", color=color, label=str(model))
        ax.scatter(x, g["loss"].to_numpy(float), s=[sizes[b] for b in g["bs"]], facecolors="none", edgecolors=color)
        j = int(np.argmin(g["loss"].to_numpy(float)))
        best_x.append(x[j])
        ax.scatter([x[j]], [g["loss"].iloc[j]], s=sizes[g["bs"].iloc[j]], color=color)
    if best_x:
        m, sd = float(np.mean(best_x)), float(np.std(best_x))
        ax.axvspan(m - sd, m + sd, color="grey", alpha=0.2)
        ax.axvline(m, ls="--", color="grey", lw=1)
    ax.set_title(f"minima at 2^{np.log2(horizon):g} tokens (marker size: bs)", fontsize=9)
    _finish(ax, "output norm at the minimum (log2)", "loss at the minimum", fontsize=7)
    return fig


def plotly_lr_star_vs_horizon(minima: pd.DataFrame, fit: LinearFit, bs_label: str = "batch size"):
    """Interactive lr* against horizon, one trace per bs with the fitted law as a line; hover shows CI, loss and method."""
    import plotly.graph_objects as go

    fig = go.Figure()
    palette = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725", "#e76f51", "#264653", "#f4a261"]
    for i, (bs, g) in enumerate(minima.groupby("bs", sort=True)):
        g = g.sort_values("horizon")
        ok = ci_contains_estimate(g)
        x, y = np.log2(g["horizon"].to_numpy(float)), np.log2(g["lr"].to_numpy(float))
        with np.errstate(divide="ignore", invalid="ignore"):
            lo, hi = (np.where(ok, np.log2(g[k].to_numpy(float)), np.nan) if ok.any() else np.full(len(g), np.nan)
                      for k in ("lr_ci_low", "lr_ci_high"))
        color = palette[i % len(palette)]
        custom = np.column_stack([g["lr"].to_numpy(float), lo, hi, g["loss"].to_numpy(float), g["method"].astype(str).to_numpy()])
        word = short_label(bs_label)
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=f"{word} {bs:g}", marker={"color": color, "size": 9},
                                 error_y={"type": "data", "symmetric": False, "array": np.nan_to_num(hi - y),
                                          "arrayminus": np.nan_to_num(y - lo)},
                                 customdata=custom,
                                 hovertemplate="lr*=%{customdata[0]:.4g}<br>log2 CI [%{customdata[1]:.3f}, %{customdata[2]:.3f}]"
                                               "<br>loss %{customdata[3]:.4f}<br>method %{customdata[4]}<extra>" + f"{word} {bs:g}</extra>"))
        xs = np.linspace(x.min(), x.max(), 20)
        fig.add_trace(go.Scatter(x=xs, y=fit.params["alpha"] * np.log2(bs) + fit.params["beta"] * xs + fit.params["gamma"],
                                 mode="lines", line={"color": color, "dash": "dash"}, name=f"law, {word} {bs:g}", hoverinfo="skip"))
    fig.update_layout(title=f"lr* vs horizon: log2 lr* = {fit.params['alpha']:.3f} log2 bs + {fit.params['beta']:.3f} log2 h "
                            f"+ {fit.params['gamma']:.2f}", xaxis_title="tokens (log2)", yaxis_title="lr* (log2)")
    return fig
