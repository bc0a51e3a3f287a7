"""Analysis `regressions`: scaling rules of the optimal learning rate, with their uncertainty.

From the minima (found with the ``minima`` settings: ``analysis.minima``'s when that analysis is selected too, else
``MinimaSettings()``, the same defaults):
- ``lr_vs_bs_horizon``: log2 lr* = alpha log2 bs + beta log2 horizon + gamma (WLS, weights from the minima's CIs);
- ``per_horizon``: log2 lr* = alpha log2 bs + gamma_h (one intercept per horizon, SEs from the joint covariance);
- single-factor laws (log2 lr* vs log2 horizon per bs, vs log2 bs per horizon);
- ``norm_band``: log2 lr = A log2 h + B log2 bs + C on the first horizon whose output norm enters the band;
- a bootstrap over runs (seeds resampled per configuration, minima re-run) for CIs that include the minima's own
  uncertainty; and the norm-transfer tables (norm at the optimum, top-1 vs equal-lr baseline, norm vs horizon).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np
import pandas as pd

from analyses.minima import Minima, MinimaSettings, find_minima
from analyses.regressions import norm_transfer
from analyses.regressions.bootstrap import (
    bootstrap_coefficients,
    median_runs_per_configuration,
    normal_ci,
    runs_per_configuration,
    small_sample_inflation,
)
from analyses.regressions.fits import (
    fit_lr_vs_bs_horizon,
    fit_norm_band,
    fit_per_horizon_intercepts,
    norm_band_points,
    single_factor_fits,
    usable_minima,
)
from toolkit.columns import require_columns
from toolkit.errors import UserError
from toolkit.protocol import AnalysisBase
from toolkit.settings import Settings, as_settings, fail

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


@dataclass
class RegressionsBootstrap:
    """Bootstrap over runs (n: 0 switches it off)."""

    n: int = 100
    seed: int = 0
    small_sample_correction: bool = True


@dataclass
class NormBand:
    """The global fit on the norm band [2^(c-eps), 2^(c+eps)]."""

    enabled: bool = True
    c: Optional[float] = None
    eps: float = 0.25
    lr_bounds: Optional[List[Optional[float]]] = None
    bs_bounds: Optional[List[Optional[float]]] = None
    horizon_bounds: Optional[List[Optional[float]]] = None
    fixed: FixedBand = field(default_factory=FixedBand)


@dataclass
class RegressionsSettings(Settings):
    """Every knob of the regressions analysis; see conf/analysis/regressions.yaml."""

    minima: Optional[MinimaSettings] = None
    weighted: bool = True
    drop_on_edge: bool = True
    fixed: FixedLaw = field(default_factory=FixedLaw)
    bootstrap: RegressionsBootstrap = field(default_factory=RegressionsBootstrap)
    norm_band: NormBand = field(default_factory=NormBand)
    top1_bs: Optional[float] = None
    norm_pairs: Optional[List[Any]] = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.bootstrap.n < 0:
            raise fail(NAME, "bootstrap.n", self.bootstrap.n, "a count >= 0 (0 switches it off)")
        if not self.norm_band.eps > 0:
            raise fail(NAME, "norm_band.eps", self.norm_band.eps, "a half-width > 0 in log2 units")
        for key in ("lr_bounds", "bs_bounds", "horizon_bounds"):
            bounds = getattr(self.norm_band, key)
            if bounds is not None and len(bounds) != 2:
                raise fail(NAME, f"norm_band.{key}", bounds, "[low, high] (either may be null) or null")
        if any(not isinstance(p, list) or len(p) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in p)
               for p in self.norm_pairs or []):
            raise fail(NAME, "norm_pairs", self.norm_pairs, "a list of [lr, bs] pairs of positive numbers, or null")

    @property
    def minima_settings(self) -> MinimaSettings:
        """The minima settings used: the shared ``minima`` node, else the minima analysis' defaults."""
        return self.minima if self.minima is not None else MinimaSettings()


def _given(fixed: Any) -> dict[str, float]:
    """The coefficients of a Fixed* group that are set."""
    return {k: v for k, v in dataclasses.asdict(fixed).items() if v is not None}


def run(table: pd.DataFrame, params: Mapping[str, Any] | RegressionsSettings | None, out: Any) -> dict[str, Any]:
    """Fit the lr scaling rules on the table's minima and write coefficients, tables and figures."""
    from analyses.regressions import plots

    s = as_settings(RegressionsSettings, params, who=NAME)
    minima_settings = s.minima_settings
    require_columns(table, Minima().required_columns(minima_settings), NAME)
    minima_all = find_minima(table, minima_settings)
    minima = usable_minima(minima_all, drop_on_edge=s.drop_on_edge)
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
    summary: dict[str, Any] = {"lr_vs_bs_horizon": main.to_dict(), "per_horizon": per_h.to_dict(), "n_minima": len(minima_all), "n_used": len(minima)}
    coef_rows = main.rows("lr_vs_bs_horizon") + per_h.rows("per_horizon")

    n_boot = s.bootstrap.n
    if n_boot > 0:
        if runs_per_configuration(table) < 2:
            out.warn("bootstrap over runs skipped: every configuration has a single run (no seeds to resample)")
        else:
            boot_minima = dataclasses.replace(minima_settings, bootstrap=dataclasses.replace(minima_settings.bootstrap, n=0))

            def refit(replicate: pd.DataFrame) -> dict[str, float]:
                m = usable_minima(find_minima(replicate, boot_minima), drop_on_edge=s.drop_on_edge)
                return fit_lr_vs_bs_horizon(m, weighted=False, fixed=fixed).params

            samples = bootstrap_coefficients(table, refit, n_boot, s.bootstrap.seed, progress=s.progress)
            n_runs = median_runs_per_configuration(table)
            factor = small_sample_inflation(n_runs) if s.bootstrap.small_sample_correction else 1.0
            summary["bootstrap"] = {"n": n_boot, "n_ok": int(samples.notna().all(axis=1).sum()) if len(samples.columns) else 0,
                                    "runs_per_configuration": n_runs, "inflation": factor}
            for name in ("alpha", "beta", "gamma"):
                if name in samples:
                    se = float(np.nanstd(samples[name].to_numpy(float), ddof=1)) * factor
                    summary["bootstrap"][f"{name}_se"] = se
                    summary["bootstrap"][f"{name}_ci"] = normal_ci(main.params[name], se)
                    main_ci = summary["bootstrap"][f"{name}_ci"]
                    coef_rows.append({"fit": "lr_vs_bs_horizon_bootstrap", "coefficient": name, "value": main.params[name],
                                      "se": summary["bootstrap"][f"{name}_se"], "ci_low": main_ci[0], "ci_high": main_ci[1],
                                      "fixed": name in fixed, "r2": main.r2, "n": n_boot})

    band = s.norm_band
    if band.enabled and "output_norm" in table.columns and table["output_norm"].notna().any():
        c = band.c
        c = float(np.nanmedian(np.log2(minima["output_norm"].to_numpy(float)))) if c is None and "output_norm" in minima else c
        eps = band.eps
        points = norm_band_points(table, float(c), eps, band.lr_bounds, band.bs_bounds, band.horizon_bounds)
        if len(points) > 3:
            band_fit = fit_norm_band(points, fixed=_given(band.fixed))
            summary["norm_band"] = {**band_fit.to_dict(), "c": c, "eps": eps}
            coef_rows += band_fit.rows("norm_band")
            out.table("norm_band_points", points)
            out.figure("norm_band_fit", plots.plot_norm_band_fit(points, band_fit, table, float(c), eps))
        else:
            out.warn(f"norm band 2^({c:g}±{eps:g}): only {len(points)} (bs, lr) pair(s) reach it; fit skipped")

    norms, spread = norm_transfer.optimum_norm_spread(minima)
    if len(norms):
        summary["optimum_output_norm"] = spread
        out.table("optimum_output_norm", norms)
        out.figure("optimum_output_norm", plots.plot_optimum_norm(norms))
    horizons = sorted(minima["horizon"].unique())
    top1 = norm_transfer.top1_vs_baseline(table, horizons, s.top1_bs)
    out.table("top1_vs_baseline", top1)
    out.figure("top1_across_horizons", plots.plot_top1_across_horizons(top1))
    curves = norm_transfer.norm_vs_horizon(table, s.norm_pairs)
    if len(curves):
        out.table("norm_vs_horizon", curves)
        out.figure("norm_vs_horizon", plots.plot_norm_vs_horizon(curves))
        out.figure("loss_norm_lr_3d", plots.plotly_loss_norm_lr_3d(table, float(horizons[-1])))
    if {"lr_in", "lr_hidden", "lr_out"} <= set(table.columns) and table[["lr_in", "lr_hidden", "lr_out"]].notna().all(axis=1).any():
        at = table[np.isclose(table["horizon"].to_numpy(float), float(horizons[-1]))]
        triples = at.groupby(["lr_in", "lr_hidden", "lr_out"], as_index=False)["train_loss"].mean()
        if len(triples):
            out.figure("lr_triples", plots.plotly_lr_triples(triples))

    out.table("coefficients", pd.DataFrame(coef_rows))
    out.table("single_factor_laws", laws)
    out.table("minima_used", minima)
    out.figure("lr_bs_fit", plots.plot_lr_bs_fit(minima, main))
    summary["single_factor_laws"] = laws.to_dict(orient="records")
    summary["settings"] = s.to_dict()
    return summary


class Regressions(AnalysisBase):
    """The regressions analysis (``_target_: analyses.regressions.Regressions``)."""

    name = NAME
    settings_type = RegressionsSettings

    def required_columns(self, settings: RegressionsSettings) -> tuple[str, ...]:
        """What the minima need: lr, bs, horizon, train_loss and the minima's ``by`` columns (output_norm if fitted on it)."""
        return tuple(Minima().required_columns(settings.minima_settings))

    def carried_columns(self, settings: RegressionsSettings) -> tuple[str, ...]:
        """The minima's ``by`` columns."""
        return tuple(Minima().carried_columns(settings.minima_settings))

    def run(self, table: pd.DataFrame, settings: RegressionsSettings, out: Any) -> dict[str, Any]:
        """See the module-level ``run``."""
        return run(table, settings, out)
