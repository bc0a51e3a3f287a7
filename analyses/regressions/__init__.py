"""Analysis `regressions`: scaling rules of the optimal learning rate, with their uncertainty.

From the minima (found with the ``minima`` settings: ``analysis.minima``'s when that analysis is selected too, else
``MinimaSettings()``, the same defaults):
- ``lr_vs_bs_horizon``: log2 lr* = alpha log2 bs + beta log2 horizon + gamma (WLS, weights from the minima's CIs);
- ``per_horizon``: log2 lr* = alpha log2 bs + gamma_h (one intercept per horizon, SEs from the joint covariance);
- single-factor laws (log2 lr* vs log2 horizon per bs, vs log2 bs per horizon);
- ``norm_band``: log2 lr = A log2 h + B log2 bs + C on the horizon where each (bs, lr)'s output norm enters the band
  (``entry: crossing`` interpolates where the norm crosses c; ``first_in_band`` is the reference's first logged
  horizon in the band); pairs already in the band at their first logged horizon are censored and dropped (counted);
- ``joint_optimum``: per horizon the optimum over (lr, bs) (parabola in log2 bs through the per-bs minima's losses),
  its bootstrap CI, and log2 B*, log2 eta* against log2 horizon, with the norm at the joint optimum;
- a bootstrap over runs (seeds resampled per configuration, minima re-run; each fit its own random stream from the
  seed and the fit's identity) for CIs that include the minima's own uncertainty; and the norm-transfer tables
  (norm at the optimum, top-1 vs equal-lr baseline, norm vs horizon).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, List, Optional, Sequence

import numpy as np
import pandas as pd

from analyses.minima import Minima, MinimaSettings, bs_label, compute_minima, format_horizon, parse_horizon
from analyses.regressions import norm_transfer
from analyses.regressions.bootstrap import (
    bootstrap_ci,
    bootstrap_coefficients,
    fit_stream,
    median_runs_per_configuration,
    resample_runs,
    runs_per_configuration,
    small_sample_inflation,
)
from analyses.regressions.fits import (
    band_bias_note,
    fit_lr_vs_bs_horizon,
    fit_norm_band,
    fit_per_horizon_intercepts,
    law_intercepts,
    norm_band_entries,
    single_factor_fits,
    usable_minima,
)
from analyses.regressions.joint import joint_optima, joint_optimum_at, scaling_fits
from analyses.regressions.report import render_regressions
from toolkit.columns import require_columns
from toolkit.errors import UserError
from toolkit.progress import progress_bar
from toolkit.protocol import AnalysisBase
from toolkit.settings import Choice, Settings, as_settings, boot_count, bounded, ci_level, fail

NAME = "regressions"


@dataclass
class FixedLaw:
    """Coefficients of lr_vs_bs_horizon to hold fixed (null: fitted)."""

    alpha: Optional[float] = None
    beta: Optional[float] = None
    gamma: Optional[float] = None


@dataclass
class FixedBand:
    """Coefficients of the norm-band fit to hold fixed (null: fitted)."""

    A: Optional[float] = None
    B: Optional[float] = None
    C: Optional[float] = None


class CiMethod(Choice):
    """How a bootstrap CI is made from the replicates."""

    normal = "normal"
    percentile = "percentile"
    basic = "basic"


class BandEntry(Choice):
    """Which horizon dates a (bs, lr) pair's entry into the norm band."""

    crossing = "crossing"
    first_in_band = "first_in_band"


class LrStar(Choice):
    """Which lr stands for each minimum: the minima analysis' own, or the run closest to the vertex in (x, loss)."""

    minima = "minima"
    closest_xy = "closest_xy"


@dataclass
class RegressionsBootstrap:
    """Bootstrap over runs (n: 0 switches it off)."""

    n: int = boot_count(100)
    seed: int = 0
    small_sample_correction: bool = True
    ci_method: CiMethod = CiMethod.normal
    level: float = ci_level()


@dataclass
class BandOverlay:
    """Slopes of the constrained overlay on the norm-band figure (both set: C refit with A and B held)."""

    A: Optional[float] = None
    B: Optional[float] = None


@dataclass
class NormBand:
    """The global fit on the norm band [2^(c-eps), 2^(c+eps)]."""

    enabled: bool = True
    c: Optional[float] = None
    eps: float = bounded(0.25, "a half-width > 0 in log2 units", gt=0)
    entry: BandEntry = BandEntry.crossing
    drop_censored: bool = True
    lr_bounds: Optional[List[Optional[float]]] = None
    lr_open: bool = False
    bs_bounds: Optional[List[Optional[float]]] = None
    horizon_bounds: Optional[List[Optional[float]]] = None
    fixed: FixedBand = field(default_factory=FixedBand)
    overlay: BandOverlay = field(default_factory=BandOverlay)


@dataclass
class JointOptimum:
    """The optimum over (lr, bs) per horizon and its scaling with the horizon."""

    enabled: bool = True


@dataclass
class RegressionsSettings(Settings):
    """Every knob of the regressions analysis; see conf/analysis/regressions.yaml."""

    minima: Optional[MinimaSettings] = None
    lr_star: LrStar = LrStar.minima
    weighted: bool = True
    drop_on_edge: bool = True
    fixed: FixedLaw = field(default_factory=FixedLaw)
    bootstrap: RegressionsBootstrap = field(default_factory=RegressionsBootstrap)
    norm_band: NormBand = field(default_factory=NormBand)
    joint: JointOptimum = field(default_factory=JointOptimum)
    top1_bs: Optional[float] = None
    norm_pairs: Optional[List[Any]] = None
    models_by: Optional[str] = None
    models_horizon: Optional[Any] = None
    who: ClassVar[str] = NAME

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("lr_bounds", "bs_bounds", "horizon_bounds"):
            bounds = getattr(self.norm_band, key)
            if bounds is not None and len(bounds) != 2:
                raise fail(NAME, f"norm_band.{key}", bounds, "[low, high] (either may be null) or null")
        if (self.norm_band.overlay.A is None) != (self.norm_band.overlay.B is None):
            raise fail(NAME, "norm_band.overlay", dataclasses.asdict(self.norm_band.overlay), "both A and B set, or neither")
        if any(not isinstance(p, list) or len(p) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in p)
               for p in self.norm_pairs or []):
            raise fail(NAME, "norm_pairs", self.norm_pairs, "a list of [lr, bs] pairs of positive numbers, or null")
        if self.models_by is not None and self.models_by not in self.minima_settings.by:
            raise fail(NAME, "models_by", self.models_by, f"one of the minima's by columns {list(self.minima_settings.by)} or null")
        self.models_horizon_tokens = None if self.models_horizon is None else parse_horizon(self.models_horizon, "models_horizon")

    @property
    def minima_settings(self) -> MinimaSettings:
        """The minima settings used: the shared ``minima`` node, else the minima analysis' defaults."""
        return self.minima if self.minima is not None else MinimaSettings()


def _given(fixed: Any) -> dict[str, float]:
    """The coefficients of a Fixed* group that are set."""
    return {k: v for k, v in dataclasses.asdict(fixed).items() if v is not None}


def closest_xy_lr(minima: pd.DataFrame, points: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Each convex fit's lr replaced by the lr of its point closest to the vertex in (x, loss) (the reference's rule)."""
    out = minima.copy()
    a, b, c = (out[k].to_numpy(float) for k in ("a", "b", "c"))
    convex = np.isfinite(a) & (a > 0) & out["method"].isin(["fit", "fit_closest"]).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        x0 = -b / (2 * a)
        y0 = c - b * b / (4 * a)
    keys = ["horizon", "bs", *by]
    groups = {k if isinstance(k, tuple) else (k,): g for k, g in points.groupby(keys, sort=False, dropna=False)}
    for i in np.flatnonzero(convex):
        key = tuple(out[k].iloc[i] for k in keys)
        g = groups.get(key)
        if g is None or not len(g):
            continue
        d = (g["x"].to_numpy(float) - x0[i]) ** 2 + (g["loss"].to_numpy(float) - y0[i]) ** 2
        j = int(np.argmin(d))
        for col, value in (("lr", float(g["lr"].iloc[j])), ("log2_lr", float(np.log2(g["lr"].iloc[j]))),
                           ("output_norm", float(2.0 ** g["log2_norm"].iloc[j])), ("output_norm_at", "closest_xy")):
            out.iloc[i, out.columns.get_loc(col)] = value
    out.loc[convex, "method"] = "fit_closest_xy"
    return out


def _usable(table: pd.DataFrame, ms: MinimaSettings, s: "RegressionsSettings") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all minima, usable minima) with the lr_star rule applied."""
    result = compute_minima(table, ms)
    minima = closest_xy_lr(result.minima, result.points, ms.by) if s.lr_star == "closest_xy" else result.minima
    return minima, usable_minima(minima, drop_on_edge=s.drop_on_edge)


def available_horizons(table: pd.DataFrame, ms: MinimaSettings) -> tuple[MinimaSettings, list[int]]:
    """The minima settings with requested horizons the data cannot reach (beyond horizon_tolerance) removed, and those."""
    if not ms.target_horizons:
        return ms, []
    logged = np.log2(np.unique(pd.to_numeric(table["horizon"], errors="coerce").dropna().to_numpy(float)))
    logged = logged[np.isfinite(logged)]
    if not len(logged):
        return ms, []
    keep, missing = [], []
    for h in ms.target_horizons:
        (keep if np.min(np.abs(logged - np.log2(h))) <= ms.horizon_tolerance + 1e-9 else missing).append(h)
    if not missing:
        return ms, []
    if not keep:
        raise UserError(f"{NAME}: none of the requested horizons {', '.join(format_horizon(h) for h in ms.target_horizons)} is "
                        f"logged (within horizon_tolerance {ms.horizon_tolerance:g}); the data spans "
                        f"{format_horizon(2.0 ** logged.min())}..{format_horizon(2.0 ** logged.max())}")
    return dataclasses.replace(ms, horizons=list(keep)), missing


def _boot_settings(ms: MinimaSettings, horizons: Sequence[int] | None = None) -> MinimaSettings:
    """The minima settings for a bootstrap replicate: no inner bootstrap, optionally only some horizons."""
    only = {} if horizons is None else {"horizons": list(horizons)}
    return dataclasses.replace(ms, bootstrap=dataclasses.replace(ms.bootstrap, n=0), plots=False, **only)


def run(table: pd.DataFrame, params: Mapping[str, Any] | RegressionsSettings | None, out: Any) -> dict[str, Any]:
    """Fit the lr scaling rules on the table's minima and write coefficients, tables and figures."""
    from analyses.regressions import plots

    s = as_settings(RegressionsSettings, params, who=NAME)
    progress = bool(getattr(out, "progress", True))
    minima_settings = s.minima_settings
    role = bs_label(table, minima_settings)  # what the bs column holds, for the figures' labels
    require_columns(table, Minima().required_columns(minima_settings), NAME)
    minima_settings, missing = available_horizons(table, minima_settings)
    if missing:
        out.warn(f"requested horizon(s) {', '.join(format_horizon(h) for h in missing)} are not logged (the data stops at "
                 f"{format_horizon(float(pd.to_numeric(table['horizon'], errors='coerce').max()))}): the regressions use "
                 f"{', '.join(format_horizon(h) for h in minima_settings.target_horizons)}")
    minima_all, minima = _usable(table, minima_settings, s)
    dropped = len(minima_all) - len(minima)
    if dropped:
        out.warn(f"{dropped} of {len(minima_all)} minima left out of the fits (on the lr grid's edge or degenerate)")
    if minima["bs"].nunique() < 2 or minima["horizon"].nunique() < 2:
        raise UserError(f"regressions need minima at >= 2 batch sizes and >= 2 horizons; usable minima: {len(minima)} "
                        f"at bs {sorted(minima['bs'].unique().tolist())} and horizons {sorted(minima['horizon'].unique().tolist())}")
    fixed = _given(s.fixed)
    main = fit_lr_vs_bs_horizon(minima, weighted=s.weighted, fixed=fixed)
    per_h = fit_per_horizon_intercepts(minima, weighted=s.weighted)
    laws = single_factor_fits(minima, weighted=s.weighted)
    horizons = sorted(minima["horizon"].unique())
    intercepts = law_intercepts(main, horizons)
    summary: dict[str, Any] = {"lr_vs_bs_horizon": main.to_dict(), "per_horizon": per_h.to_dict(), "n_minima": len(minima_all),
                               "n_used": len(minima), "horizons_missing": [int(h) for h in missing],
                               "law_intercepts": intercepts.to_dict(orient="records")}
    coef_rows = main.rows("lr_vs_bs_horizon") + per_h.rows("per_horizon")
    out.table("law_intercepts", intercepts)

    n_boot = s.bootstrap.n
    can_boot = n_boot > 0 and runs_per_configuration(table) >= 2
    factor = 1.0
    if n_boot > 0 and not can_boot:
        out.warn("bootstrap over runs skipped: every configuration has a single run (no seeds to resample)")
    if can_boot:
        boot_minima = _boot_settings(minima_settings)

        def refit(replicate: pd.DataFrame) -> dict[str, float]:
            return fit_lr_vs_bs_horizon(_usable(replicate, boot_minima, s)[1], weighted=False, fixed=fixed).params

        samples = bootstrap_coefficients(table, refit, n_boot, s.bootstrap.seed, ("lr_vs_bs_horizon",), progress,
                                         "regressions: bootstrap lr_vs_bs_horizon")
        n_runs = median_runs_per_configuration(table)
        factor = small_sample_inflation(n_runs) if s.bootstrap.small_sample_correction else 1.0
        summary["bootstrap"] = {"n": n_boot, "n_ok": int(samples.notna().all(axis=1).sum()) if len(samples.columns) else 0,
                                "runs_per_configuration": n_runs, "inflation": factor, "ci_method": str(s.bootstrap.ci_method),
                                "level": s.bootstrap.level}
        for name, value in main.params.items():  # a CI per free coefficient
            if name in fixed or name not in samples:
                continue
            se, ci = bootstrap_ci(value, samples[name].to_numpy(float), str(s.bootstrap.ci_method), s.bootstrap.level,
                                  factor)
            summary["bootstrap"][f"{name}_se"], summary["bootstrap"][f"{name}_ci"] = se, ci
            coef_rows.append({"fit": "lr_vs_bs_horizon_bootstrap", "coefficient": name, "value": value, "se": se,
                              "ci_low": ci[0], "ci_high": ci[1], "fixed": False, "r2": np.nan,
                              "n": int(samples[name].notna().sum())})

    if s.joint.enabled:
        joint = joint_optima(minima)
        se_cols: dict[str, np.ndarray] = {}
        if can_boot:
            reps = {}
            with progress_bar(n_boot * len(joint), "regressions: bootstrap joint optimum", enabled=progress, unit="replicate") as bar:
                for h in joint["horizon"]:
                    rng = fit_stream(s.bootstrap.seed, "joint_optimum", int(h))
                    ms_h = _boot_settings(minima_settings, [int(h)])
                    vals = []
                    for _ in range(n_boot):
                        try:
                            m = _usable(resample_runs(table, rng), ms_h, s)[1]
                            r = joint_optimum_at(m[m["horizon"] == h]) if len(m) else {}
                        except UserError:
                            r = {}
                        vals.append({k: r.get(k, np.nan) if r.get("status") == "ok" else np.nan
                                     for k in ("log2_bs_star", "log2_lr_star", "loss_star")})
                        bar.update(1)
                    reps[h] = pd.DataFrame(vals)
            for col in ("log2_bs_star", "log2_lr_star", "loss_star"):
                cis = [bootstrap_ci(float(est), reps[h][col].to_numpy(float), str(s.bootstrap.ci_method),
                                    s.bootstrap.level, factor) for h, est in zip(joint["horizon"], joint[col])]
                joint[f"{col}_se"] = [se for se, _ in cis]
                joint[f"{col}_ci_low"], joint[f"{col}_ci_high"] = [c[0] for _, c in cis], [c[1] for _, c in cis]
                se_cols[col] = np.asarray([se for se, _ in cis], float)
            joint["n_boot_ok"] = [int(reps[h]["log2_bs_star"].notna().sum()) for h in joint["horizon"]]
        scaling = scaling_fits(joint, se_cols or None)
        good = joint[joint["status"] == "ok"]
        norm_star = good["log2_norm_star"].to_numpy(float)
        norm_star = norm_star[np.isfinite(norm_star)]
        summary["joint_optimum"] = {
            "per_horizon": joint.to_dict(orient="records"), **scaling,
            "log2_norm_at_joint_optimum": {"mean": float(np.mean(norm_star)) if len(norm_star) else float("nan"),
                                           "std": float(np.std(norm_star, ddof=1)) if len(norm_star) > 1 else float("nan"),
                                           "n": int(len(norm_star))},
            "n_on_edge": int(good["on_edge"].sum()),
        }
        bad = joint[joint["status"] != "ok"]
        if len(bad):
            out.warn(f"joint optimum missing at {len(bad)} horizon(s): "
                     + "; ".join(f"{format_horizon(h)}: {r}" for h, r in zip(bad["horizon"], bad["reason"])))
        if good["on_edge"].any():
            out.warn(f"joint optimum B* on or beyond the batch-size grid's edge at {int(good['on_edge'].sum())} horizon(s): "
                     f"extrapolated; extend the bs grid there")
        out.table("joint_optimum", joint)
        if len(good):
            out.figure("joint_optimum", plots.plot_joint_optimum(joint, scaling, role),
                       caption="B* and eta* (optimum over lr and bs) against the horizon, with bootstrap CIs and the log2-log2 fits")

    band = s.norm_band
    if band.enabled and "output_norm" in table.columns and table["output_norm"].notna().any():
        c = band.c
        c = float(np.nanmedian(np.log2(minima["output_norm"].to_numpy(float)))) if c is None and "output_norm" in minima else c
        eps = band.eps
        entries = norm_band_entries(table, float(c), eps, band.lr_bounds, band.bs_bounds, band.horizon_bounds, str(band.entry),
                                    band.lr_open, band.drop_censored)
        points = entries[entries["status"] == "used"].reset_index(drop=True)
        counts = {k: int(v) for k, v in entries["status"].value_counts().items()}
        n_cens = counts.get("left_censored", 0)
        if n_cens:
            out.warn(f"norm band: {n_cens} (bs, lr) pair(s) are already in the band at their first logged horizon (their entry "
                     f"lies before the data): left out of the fit as censored (norm_band_entries.csv, status left_censored)")
        out.table("norm_band_entries", entries)
        if len(points) > 3:
            band_fit = fit_norm_band(points, fixed=_given(band.fixed))
            summary["norm_band"] = {**band_fit.to_dict(), "c": c, "eps": eps, "entry": str(band.entry), "n_pairs": int(len(entries)),
                                    "n_used": int(len(points)), "n_left_censored": n_cens,
                                    "n_not_reached": counts.get("not_reached", 0), "n_out_of_bounds": counts.get("out_of_bounds", 0),
                                    "bias_note": band_bias_note(str(band.entry), eps, _norm_slope(table))}
            coef_rows += band_fit.rows("norm_band")
            overlay = None
            if band.overlay.A is not None:
                overlay = fit_norm_band(points, fixed={"A": band.overlay.A, "B": band.overlay.B})
                summary["norm_band"]["overlay"] = overlay.to_dict()
                coef_rows += overlay.rows("norm_band_overlay")
            out.table("norm_band_points", points)
            out.figure("norm_band_fit", plots.plot_norm_band_fit(points, band_fit, table, float(c), eps, overlay),
                       caption=f"lr against the horizon where each (bs, lr) enters the norm band ({band.entry}), with the global fit"
                               + (" and the constrained overlay (dashed)" if overlay is not None else ""))
        else:
            out.warn(f"norm band 2^({c:g}±{eps:g}): only {len(points)} (bs, lr) pair(s) reach it; fit skipped")

    norms, spread = norm_transfer.optimum_norm_spread(minima)
    if len(norms):
        summary["optimum_output_norm"] = spread
        out.table("optimum_output_norm", norms)
        out.figure("optimum_output_norm", plots.plot_optimum_norm(norms),
                   caption="output norm at each (horizon, bs) optimum: flat lines mean the optimal norm transfers")
        models_h = _nearest(horizons, s.models_horizon_tokens)
        out.figure("minima_at_horizon_across_models", plots.plot_minima_at_horizon_across_models(minima, models_h, s.models_by),
                   caption=f"loss against output norm of each bs's minimum at {format_horizon(models_h)} tokens, one line per "
                           + (f"{s.models_by}" if s.models_by else "sweep"))
    top1 = norm_transfer.top1_vs_baseline(table, horizons, s.top1_bs)
    out.table("top1_vs_baseline", top1)
    out.figure("top1_across_horizons", plots.plot_top1_across_horizons(top1),
               caption="best loss per horizon at one bs against the best equal-lr configuration, and their lrs")
    curves = norm_transfer.norm_vs_horizon(table, s.norm_pairs)
    if len(curves):
        out.table("norm_vs_horizon", curves)
        out.figure("norm_vs_horizon", plots.plot_norm_vs_horizon(curves), caption="output norm against horizon for chosen (lr, bs) pairs")
        out.figure("loss_norm_lr_3d", plots.plotly_loss_norm_lr_3d(table, float(horizons[-1])),
                   caption=f"interactive: loss against output norm and lr at {format_horizon(horizons[-1])} tokens")
    if {"lr_in", "lr_hidden", "lr_out"} <= set(table.columns) and table[["lr_in", "lr_hidden", "lr_out"]].notna().all(axis=1).any():
        at = table[np.isclose(table["horizon"].to_numpy(float), float(horizons[-1]))]
        triples = at.groupby(["lr_in", "lr_hidden", "lr_out"], as_index=False)["train_loss"].mean()
        if len(triples):
            out.figure("lr_triples", plots.plotly_lr_triples(triples), caption="interactive: per-layer lr triples coloured by loss")

    out.table("coefficients", pd.DataFrame(coef_rows))
    out.table("single_factor_laws", laws)
    out.table("minima_used", minima)
    clipped = int((~plots.ci_contains_estimate(minima)).sum())
    out.figure("lr_bs_fit", plots.plot_lr_bs_fit(minima, main, intercepts, role), caption="log2 lr* against log2 bs per horizon with the fitted law (error bars: the minima's CIs"
               + (f"; {clipped} CI(s) not containing their lr* are not drawn)" if clipped else ")"))
    out.figure("lr_star_vs_horizon", plots.plotly_lr_star_vs_horizon(minima, main, role),
               caption="interactive: lr* against horizon per bs with the fitted law; hover for the CI, loss and method")
    summary.update(single_factor_laws=laws.to_dict(orient="records"), settings=s.to_dict())
    return summary


def _nearest(horizons: Sequence[float], wanted: float | None) -> float:
    """The horizon of ``horizons`` nearest ``wanted`` in log2 (the largest when None)."""
    if wanted is None:
        return float(horizons[-1])
    lh = np.log2(np.asarray(horizons, float))
    return float(horizons[int(np.argmin(np.abs(lh - np.log2(wanted))))])


def _norm_slope(table: pd.DataFrame) -> float:
    """The median slope of log2 output norm on log2 lr at fixed (bs, horizon): how far the band's edge is from c in lr."""
    frame = table[["lr", "bs", "horizon", "output_norm"]].dropna()
    frame = frame[(frame["output_norm"] > 0) & (frame["lr"] > 0)]
    if frame.empty:
        return float("nan")
    frame = frame.groupby(["bs", "horizon", "lr"], as_index=False)["output_norm"].mean()
    slopes = [np.polyfit(np.log2(g["lr"].to_numpy(float)), np.log2(g["output_norm"].to_numpy(float)), 1)[0]
              for _, g in frame.groupby(["bs", "horizon"]) if len(g) >= 3]
    return float(np.median(slopes)) if slopes else float("nan")


class Regressions(AnalysisBase):
    """The regressions analysis (``_target_: analyses.regressions.Regressions``)."""

    name = NAME
    settings_type = RegressionsSettings
    report_tables = staticmethod(render_regressions)

    def required_columns(self, settings: RegressionsSettings) -> tuple[str, ...]:
        """What the minima need: lr, bs, horizon, train_loss and the minima's ``by`` columns (output_norm if fitted on it)."""
        return tuple(Minima().required_columns(settings.minima_settings))

    def carried_columns(self, settings: RegressionsSettings) -> tuple[str, ...]:
        """The minima's ``by`` columns."""
        return tuple(Minima().carried_columns(settings.minima_settings))

    def run(self, table: pd.DataFrame, settings: RegressionsSettings, out: Any) -> dict[str, Any]:
        """See the module-level ``run``."""
        return run(table, settings, out)
