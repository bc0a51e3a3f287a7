"""Weighted least-squares fits of log2 optimal lr on log2 batch size and log2 horizon (pure functions)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import UserError

Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975), written out: scipy.stats takes a second to import


@dataclass
class LinearFit:
    """A linear fit with its uncertainty: coefficients, standard errors, 95% CIs, R^2 and n."""

    params: dict[str, float]
    se: dict[str, float]
    ci: dict[str, list[float]]
    r2: float
    n: int
    fixed: dict[str, float] = field(default_factory=dict)
    cov: pd.DataFrame | None = None

    def to_dict(self) -> dict[str, Any]:
        """Flat mapping {name, name_se, name_ci, ..., r2, n, fixed}."""
        out: dict[str, Any] = {}
        for name, value in self.params.items():
            out.update({name: value, f"{name}_se": self.se[name], f"{name}_ci": self.ci[name]})
        out["r2"], out["n"] = self.r2, self.n
        if self.fixed:
            out["fixed"] = dict(self.fixed)
        return out

    def rows(self, fit_name: str) -> list[dict[str, Any]]:
        """One row per coefficient for coefficients.csv."""
        return [{"fit": fit_name, "coefficient": k, "value": v, "se": self.se[k], "ci_low": self.ci[k][0], "ci_high": self.ci[k][1],
                 "fixed": k in self.fixed, "r2": self.r2, "n": self.n} for k, v in self.params.items()]


def fit_linear(design: pd.DataFrame, y: np.ndarray, weights: np.ndarray | None = None, fixed: dict[str, float] | None = None) -> LinearFit:
    """WLS of y on the design's columns; ``fixed`` coefficients are moved to an offset, the rest refit."""
    fixed = {k: float(v) for k, v in (fixed or {}).items() if v is not None}
    unknown = set(fixed) - set(design.columns)
    if unknown:
        raise UserError(f"cannot fix {sorted(unknown)}: the fit's coefficients are {list(design.columns)}")
    y = np.asarray(y, dtype=float)
    offset = sum((design[k].to_numpy(float) * v for k, v in fixed.items()), np.zeros(len(y)))
    free = [c for c in design.columns if c not in fixed]
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    ok = np.isfinite(y) & np.isfinite(w) & (w > 0) & np.isfinite(design.to_numpy(float)).all(axis=1)
    n = int(ok.sum())
    if n <= len(free):
        raise UserError(f"too few points for the fit: {n} usable point(s) for {len(free)} free coefficient(s) ({', '.join(free)})")
    params: dict[str, float] = dict(fixed)
    se: dict[str, float] = dict.fromkeys(fixed, 0.0)
    ci: dict[str, list[float]] = {k: [v, v] for k, v in fixed.items()}
    cov = None
    target = y[ok] - offset[ok]
    if free:
        import statsmodels.api as sm

        res = sm.WLS(target, design.loc[ok, free].to_numpy(float), weights=w[ok]).fit()
        bse = np.asarray(res.bse, dtype=float)
        for i, name in enumerate(free):
            params[name], se[name] = float(res.params[i]), float(bse[i])
            ci[name] = [float(v) for v in np.asarray(res.conf_int(0.05))[i]]
        cov = pd.DataFrame(np.asarray(res.cov_params()), index=free, columns=free)
        fitted = design.loc[ok, free].to_numpy(float) @ np.asarray(res.params) + offset[ok]
    else:
        fitted = offset[ok]
    ordered = {k: params[k] for k in design.columns}
    resid = y[ok] - fitted
    ybar = np.average(y[ok], weights=w[ok])
    ss_tot = float(np.sum(w[ok] * (y[ok] - ybar) ** 2))
    r2 = float(1 - np.sum(w[ok] * resid**2) / ss_tot) if ss_tot > 0 else float("nan")
    return LinearFit(ordered, {k: se[k] for k in ordered}, {k: ci[k] for k in ordered}, r2, n, fixed, cov)


def minima_weights(minima: pd.DataFrame) -> np.ndarray | None:
    """Weights 1/se^2 of log2 lr* from the minima's 95% CIs; None when no CI is available."""
    if not {"lr_ci_low", "lr_ci_high"} <= set(minima.columns):
        return None
    width = np.log2(minima["lr_ci_high"].to_numpy(float)) - np.log2(minima["lr_ci_low"].to_numpy(float))
    se = width / (2 * Z95)
    good = np.isfinite(se) & (se > 0)
    if not good.any():
        return None
    floor = np.median(se[good]) * 0.1  # a zero-width CI must not get infinite weight
    se = np.where(good, np.maximum(se, floor), np.median(se[good]))
    return 1.0 / se**2


def usable_minima(minima: pd.DataFrame, drop_on_edge: bool = True) -> pd.DataFrame:
    """Minima rows that can enter a regression: finite lr, not degenerate, optionally not on the grid's edge."""
    keep = np.isfinite(minima["lr"].to_numpy(float)) & (minima["lr"].to_numpy(float) > 0)
    if "method" in minima:
        keep &= ~minima["method"].astype(str).isin(["too_few_points", "unreachable", "degenerate"]).to_numpy()
    if drop_on_edge and "on_edge" in minima:
        keep &= ~minima["on_edge"].fillna(False).astype(bool).to_numpy()
    return minima.loc[keep].reset_index(drop=True)


def fit_lr_vs_bs_horizon(minima: pd.DataFrame, weighted: bool = True, fixed: dict[str, float] | None = None) -> LinearFit:
    """log2 lr* = alpha log2 bs + beta log2 horizon + gamma."""
    design = pd.DataFrame({"alpha": np.log2(minima["bs"].to_numpy(float)), "beta": np.log2(minima["horizon"].to_numpy(float)), "gamma": 1.0})
    return fit_linear(design, np.log2(minima["lr"].to_numpy(float)), minima_weights(minima) if weighted else None, fixed)


def fit_per_horizon_intercepts(minima: pd.DataFrame, weighted: bool = True) -> LinearFit:
    """log2 lr* = alpha log2 bs + gamma_h (one intercept per horizon, SEs from the joint covariance)."""
    design = pd.DataFrame({"alpha": np.log2(minima["bs"].to_numpy(float)),
                           **{f"gamma_h{np.log2(h):g}": (minima["horizon"].to_numpy() == h).astype(float)
                              for h in np.sort(minima["horizon"].unique())}})
    return fit_linear(design, np.log2(minima["lr"].to_numpy(float)), minima_weights(minima) if weighted else None)


def single_factor_fits(minima: pd.DataFrame, weighted: bool = True) -> pd.DataFrame:
    """Slopes of log2 lr* on log2 horizon per batch size and on log2 bs per horizon, each with SE and CI."""
    rows = []
    weights = minima_weights(minima) if weighted else None
    for factor, by in (("horizon", "bs"), ("bs", "horizon")):
        for value, group in minima.groupby(by):
            w = None if weights is None else weights[group.index.to_numpy()]
            base = {"law": f"lr_vs_{factor}", "by": by, "value": value, "n": len(group)}
            if group[factor].nunique() < 2 or len(group) < 3:
                rows.append({**base, "slope": np.nan, "note": f"needs >= 3 points over >= 2 {factor} values"})
                continue
            design = pd.DataFrame({"slope": np.log2(group[factor].to_numpy(float)), "intercept": 1.0})
            fit = fit_linear(design, np.log2(group["lr"].to_numpy(float)), w)
            rows.append({**base, "slope": fit.params["slope"], "slope_se": fit.se["slope"], "slope_ci_low": fit.ci["slope"][0],
                         "slope_ci_high": fit.ci["slope"][1], "intercept": fit.params["intercept"], "intercept_se": fit.se["intercept"],
                         "r2": fit.r2, "note": ""})
    return pd.DataFrame(rows)


ENTRY_RULES = ("first_in_band", "crossing")


def _within(values: np.ndarray, bounds: Any, open_interval: bool = False) -> np.ndarray:
    """Mask of values inside [low, high] (either may be None); strictly inside when ``open_interval``."""
    keep = np.ones(len(values), bool)
    if bounds:
        low, high = bounds
        if low is not None:
            keep &= values > float(low) if open_interval else values >= float(low)
        if high is not None:
            keep &= values < float(high) if open_interval else values <= float(high)
    return keep


def norm_band_entries(table: pd.DataFrame, c: float, eps: float, lr_bounds=None, bs_bounds=None, horizon_bounds=None,
                      entry: str = "first_in_band", lr_open: bool = False, drop_censored: bool = True) -> pd.DataFrame:
    """Every (bs, lr) pair with its band-entry horizon and a ``status``: used, left_censored, not_reached, out_of_bounds.

    ``entry``: ``first_in_band`` is the first logged horizon whose output norm lies in [2^(c-eps), 2^(c+eps)] (the
    norm-transfer reference); ``crossing`` is the horizon where log2 norm crosses c, interpolated linearly in log2
    horizon between the two logged horizons around it. A pair whose norm is already in the band (``first_in_band``)
    or above c (``crossing``) at its first logged horizon entered before the data starts: ``left_censored`` (its
    entry horizon is only an upper bound), dropped when ``drop_censored``. The horizon bounds are applied to the
    entry horizon after the search (a pair is never moved to the bound); the lr bounds are open intervals when
    ``lr_open`` (the reference keeps 0 < lr < 1).
    """
    for col in ("lr", "bs", "horizon", "output_norm"):
        if col not in table.columns:
            raise UserError(f"norm-band fit: missing column '{col}'; the table has: {', '.join(table.columns)}")
    if entry not in ENTRY_RULES:
        raise UserError(f"norm-band fit: entry '{entry}' is not one of {', '.join(ENTRY_RULES)}")
    frame = table[["lr", "bs", "horizon", "output_norm"]].dropna()
    frame = frame[(frame["output_norm"] > 0) & (frame["horizon"] > 0)]
    frame = frame[_within(frame["lr"].to_numpy(float), lr_bounds, lr_open) & _within(frame["bs"].to_numpy(float), bs_bounds)]
    frame = frame.groupby(["bs", "lr", "horizon"], as_index=False)["output_norm"].mean().sort_values(["bs", "lr", "horizon"])
    rows = []
    for (bs, lr), g in frame.groupby(["bs", "lr"], sort=True):
        lh = np.log2(g["horizon"].to_numpy(float))
        ln = np.log2(g["output_norm"].to_numpy(float))
        row = {"bs": bs, "lr": lr, "horizon": np.nan, "output_norm": np.nan, "first_logged_horizon": float(2.0 ** lh[0]),
               "status": "not_reached"}
        # first_in_band: the first horizon in the band; crossing: the first at or above c (interpolated unless first)
        hits = np.flatnonzero((ln >= c - eps) & (ln <= c + eps) if entry == "first_in_band" else ln >= c)
        j = int(hits[0]) if len(hits) else None
        if j is not None and (j == 0 or entry == "first_in_band"):
            row.update(horizon=float(2.0 ** lh[j]), output_norm=float(2.0 ** ln[j]),
                       status="left_censored" if j == 0 else "used")
        elif j is not None:
            t = (c - ln[j - 1]) / (ln[j] - ln[j - 1])
            row.update(horizon=float(2.0 ** (lh[j - 1] + t * (lh[j] - lh[j - 1]))), output_norm=float(2.0**c),
                       status="used")
        rows.append(row)
    out = pd.DataFrame(rows, columns=["bs", "lr", "horizon", "output_norm", "first_logged_horizon", "status"])
    if not drop_censored:
        out.loc[out["status"] == "left_censored", "status"] = "used"
    found = out["horizon"].notna().to_numpy()
    outside = found & ~_within(out["horizon"].to_numpy(float), horizon_bounds)
    out.loc[outside & (out["status"] == "used").to_numpy(), "status"] = "out_of_bounds"
    return out.reset_index(drop=True)


def norm_band_points(table: pd.DataFrame, c: float, eps: float, lr_bounds=None, bs_bounds=None, horizon_bounds=None,
                     entry: str = "first_in_band", lr_open: bool = False, drop_censored: bool = True) -> pd.DataFrame:
    """The (bs, lr) pairs that enter the fit: ``norm_band_entries`` with status ``used``."""
    entries = norm_band_entries(table, c, eps, lr_bounds, bs_bounds, horizon_bounds, entry, lr_open, drop_censored)
    used = entries[entries["status"] == "used"]
    return used[["bs", "lr", "horizon", "output_norm"]].sort_values(["bs", "lr"]).reset_index(drop=True)


def band_bias_note(entry: str, eps: float, norm_slope: float | None = None) -> str:
    """What the band-entry estimator measures and how it is biased (for summary.json)."""
    if entry == "first_in_band":
        slope = f"{norm_slope:.3g}" if norm_slope is not None and np.isfinite(norm_slope) and norm_slope != 0 else "s"
        return (f"first_in_band dates each (bs, lr) at the first logged horizon whose norm reaches 2^(c-{eps:g}), the band's "
                f"lower edge, not its centre: when the norm at the optimum is 2^c and log2 norm rises by {slope} per unit of "
                f"log2 lr, C is biased by about -{eps:g}/{slope} (and by the logging grid, since the first logged horizon "
                f"lies after the true entry, which also tilts A). Use entry: crossing for the horizon where the norm crosses c.")
    return ("crossing interpolates the horizon where log2 norm crosses c between the two logged horizons around it; "
            "unbiased when log2 norm is locally linear in log2 horizon and 2^c is the norm at the optimum.")


def law_intercepts(fit: "LinearFit", horizons: Any) -> pd.DataFrame:
    """Per-horizon intercepts gamma + beta log2 h of lr_vs_bs_horizon, SEs by the delta method from the joint covariance."""
    rows = []
    cov = fit.cov
    free = set() if cov is None else set(cov.index)  # a fixed coefficient has no row in cov: its terms drop out
    for h in horizons:
        z = float(np.log2(float(h)))
        value = fit.params["gamma"] + fit.params["beta"] * z
        terms = (("gamma", "gamma", 1.0), ("beta", "beta", z * z), ("gamma", "beta", 2 * z))
        var = sum(w * cov.loc[i, k] for i, k, w in terms if {i, k} <= free)
        se = float(np.sqrt(max(float(var), 0.0)))
        rows.append({"horizon": float(h), "log2_horizon": z, "intercept": float(value), "intercept_se": se,
                     "ci_low": float(value - Z95 * se), "ci_high": float(value + Z95 * se)})
    return pd.DataFrame(rows)


def fit_norm_band(points: pd.DataFrame, fixed: dict[str, float] | None = None) -> LinearFit:
    """log2 lr = A log2 horizon + B log2 bs + C on the norm-band points (any of A, B, C may be fixed)."""
    design = pd.DataFrame({"A": np.log2(points["horizon"].to_numpy(float)), "B": np.log2(points["bs"].to_numpy(float)), "C": 1.0})
    return fit_linear(design, np.log2(points["lr"].to_numpy(float)), None, fixed)
