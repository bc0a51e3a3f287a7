"""The joint optimum over (lr, bs) at each horizon and its scaling with the horizon (pure functions).

At a horizon, each batch size's minimum (lr*(bs), L*(bs)) comes from ``minima``. The joint optimum is the vertex of
the parabola ``L* = a x^2 + b x + c`` in ``x = log2 bs`` through those losses: ``log2 B* = -b / 2a``. The optimal lr
there, ``log2 eta*``, is the per-horizon line ``log2 lr* = s x + t`` (least squares over the same batch sizes)
evaluated at ``log2 B*``; the output norm at the joint optimum is interpolated the same way. Then ``log2 B*`` and
``log2 eta*`` are fitted against ``log2 horizon``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

JOINT_COLUMNS = ("horizon", "log2_horizon", "n_bs", "log2_bs_star", "bs_star", "log2_lr_star", "lr_star", "loss_star",
                 "log2_norm_star", "curvature", "on_edge", "status", "reason")


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of y on x (slope 0 through the mean with one distinct x)."""
    if len(np.unique(x)) < 2:
        return 0.0, float(np.mean(y))
    slope, icept = np.polyfit(x, y, 1)
    return float(slope), float(icept)


def joint_optimum_at(group: pd.DataFrame) -> dict[str, Any]:
    """The joint optimum of one horizon's per-bs minima (columns bs, lr, loss[, output_norm])."""
    g = group[np.isfinite(group["loss"].to_numpy(float)) & (group["lr"].to_numpy(float) > 0)].sort_values("bs")
    out: dict[str, Any] = {"n_bs": int(g["bs"].nunique()), "log2_bs_star": np.nan, "bs_star": np.nan, "log2_lr_star": np.nan,
                           "lr_star": np.nan, "loss_star": np.nan, "log2_norm_star": np.nan, "curvature": np.nan,
                           "on_edge": False, "status": "ok", "reason": ""}
    if out["n_bs"] < 3:
        out.update(status="too_few_bs", reason=f"{out['n_bs']} batch size(s) with a minimum; the parabola in log2 bs needs 3")
        return out
    x = np.log2(g["bs"].to_numpy(float))
    y = g["loss"].to_numpy(float)
    a, b, c = np.polyfit(x, y, 2)
    out["curvature"] = float(a)
    if not a > 0:
        out.update(status="nonconvex", reason=f"loss* is not convex in log2 bs (a = {a:.3g}); no interior optimum")
        return out
    xs = -b / (2 * a)
    out.update(log2_bs_star=float(xs), bs_star=float(2.0**xs), loss_star=float(c - b * b / (4 * a)),
               on_edge=bool(xs <= x.min() or xs >= x.max()))
    if out["on_edge"]:
        out["reason"] = "B* at or beyond the batch-size grid's edge (extrapolated)"
    slope, icept = _line(x, np.log2(g["lr"].to_numpy(float)))
    out["log2_lr_star"] = float(slope * xs + icept)
    out["lr_star"] = float(2.0 ** out["log2_lr_star"])
    if "output_norm" in g.columns:
        norm = g["output_norm"].to_numpy(float)
        good = np.isfinite(norm) & (norm > 0)
        if good.sum() >= 2:
            ns, ni = _line(x[good], np.log2(norm[good]))
            out["log2_norm_star"] = float(ns * xs + ni)
    return out


def joint_optima(minima: pd.DataFrame) -> pd.DataFrame:
    """One row per horizon: the joint optimum (B*, eta*, L*, norm) of its usable per-bs minima."""
    rows = [{"horizon": float(h), "log2_horizon": float(np.log2(float(h))), **joint_optimum_at(g)}
            for h, g in minima.groupby("horizon", sort=True)]
    return pd.DataFrame(rows, columns=list(JOINT_COLUMNS))


def scaling_fits(joint: pd.DataFrame, se: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """log2 B* and log2 eta* against log2 horizon (WLS with 1/se^2 from the bootstrap when given, else OLS); se aligned with joint."""
    from analyses.regressions.fits import fit_linear

    keep = (joint["status"] == "ok").to_numpy()
    ok = joint[keep].reset_index(drop=True)
    out: dict[str, Any] = {}
    for name, col in (("bs_star", "log2_bs_star"), ("lr_star", "log2_lr_star")):
        y = ok[col].to_numpy(float)
        good = np.isfinite(y)
        if good.sum() < 3:
            out[name] = {"note": f"{int(good.sum())} horizon(s) with a joint optimum; the fit needs 3"}
            continue
        w = None
        if se is not None and col in se:
            s = np.asarray(se[col], float)[keep][good]
            if np.isfinite(s).all() and (s > 0).all():
                w = 1.0 / s**2
        design = pd.DataFrame({"slope": ok["log2_horizon"].to_numpy(float), "intercept": 1.0})
        fit = fit_linear(design.loc[good].reset_index(drop=True), y[good], w)
        out[name] = {**fit.to_dict(), "weighted": w is not None}
    return out
