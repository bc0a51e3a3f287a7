"""Analysis `regressions`: scaling rules of the optimal learning rate, with their uncertainty.

From the minima (recomputed with ``params.minima`` settings):
- ``lr_vs_bs_horizon``: log2 lr* = alpha log2 bs + beta log2 horizon + gamma (WLS, weights from the minima's CIs);
- ``per_horizon``: log2 lr* = alpha log2 bs + gamma_h (one intercept per horizon, SEs from the joint covariance);
- single-factor laws (log2 lr* vs log2 horizon per bs, vs log2 bs per horizon);
- ``norm_band``: log2 lr = A log2 h + B log2 bs + C on the first horizon whose output norm enters the band;
- a bootstrap over runs (seeds resampled per configuration, minima re-run) for CIs that include the minima's own
  uncertainty; and the norm-transfer tables (norm at the optimum, top-1 vs equal-lr baseline, norm vs horizon).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analyses.regressions import norm_transfer, plots
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
from toolkit.outputs import AnalysisOutput

REQUIRED_COLUMNS = ("lr", "bs", "horizon", "train_loss")


def _minima(table: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
    from analyses.minima import find_minima

    return find_minima(table, settings)


def run(table: pd.DataFrame, params: dict[str, Any], out: AnalysisOutput) -> dict[str, Any]:
    """Fit the lr scaling rules on the table's minima and write coefficients, tables and figures."""
    require_columns(table, REQUIRED_COLUMNS, "regressions")
    minima_settings = {k: v for k, v in dict(params.get("minima") or {}).items() if k != "module"}
    minima_all = _minima(table, minima_settings)
    minima = usable_minima(minima_all, drop_on_edge=bool(params.get("drop_on_edge", True)))
    dropped = len(minima_all) - len(minima)
    if dropped:
        out.warn(f"{dropped} of {len(minima_all)} minima left out of the fits (on the lr grid's edge or degenerate)")
    if minima["bs"].nunique() < 2 or minima["horizon"].nunique() < 2:
        raise UserError(f"regressions need minima at >= 2 batch sizes and >= 2 horizons; usable minima: {len(minima)} "
                        f"at bs {sorted(minima['bs'].unique().tolist())} and horizons {sorted(minima['horizon'].unique().tolist())}")
    weighted = bool(params.get("weighted", True))
    fixed = {k: v for k, v in dict(params.get("fixed") or {}).items() if v is not None}
    main = fit_lr_vs_bs_horizon(minima, weighted=weighted, fixed=fixed)
    per_h = fit_per_horizon_intercepts(minima, weighted=weighted)
    laws = single_factor_fits(minima, weighted=weighted)
    summary: dict[str, Any] = {"lr_vs_bs_horizon": main.to_dict(), "per_horizon": per_h.to_dict(), "n_minima": len(minima_all), "n_used": len(minima)}
    coef_rows = main.rows("lr_vs_bs_horizon") + per_h.rows("per_horizon")

    boot = dict(params.get("bootstrap") or {})
    n_boot = int(boot.get("n", 0))
    if n_boot > 0:
        if runs_per_configuration(table) < 2:
            out.warn("bootstrap over runs skipped: every configuration has a single run (no seeds to resample)")
        else:
            boot_minima = {**minima_settings, "bootstrap": {"n": 0}}

            def refit(replicate: pd.DataFrame) -> dict[str, float]:
                m = usable_minima(_minima(replicate, boot_minima), drop_on_edge=bool(params.get("drop_on_edge", True)))
                return fit_lr_vs_bs_horizon(m, weighted=False, fixed=fixed).params

            samples = bootstrap_coefficients(table, refit, n_boot, int(boot.get("seed", 0)), progress=bool(params.get("progress", True)))
            n_runs = median_runs_per_configuration(table)
            factor = small_sample_inflation(n_runs) if boot.get("small_sample_correction", True) else 1.0
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

    band = dict(params.get("norm_band") or {})
    if band.get("enabled", True) and "output_norm" in table.columns and table["output_norm"].notna().any():
        c = band.get("c")
        c = float(np.nanmedian(np.log2(minima["output_norm"].to_numpy(float)))) if c is None and "output_norm" in minima else c
        eps = float(band.get("eps", 0.25))
        points = norm_band_points(table, float(c), eps, band.get("lr_bounds"), band.get("bs_bounds"), band.get("horizon_bounds"))
        if len(points) > 3:
            band_fit = fit_norm_band(points, fixed={k: v for k, v in dict(band.get("fixed") or {}).items() if v is not None})
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
    top1 = norm_transfer.top1_vs_baseline(table, horizons, params.get("top1_bs"))
    out.table("top1_vs_baseline", top1)
    out.figure("top1_across_horizons", plots.plot_top1_across_horizons(top1))
    curves = norm_transfer.norm_vs_horizon(table, params.get("norm_pairs"))
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
    summary["settings"] = params
    return summary
