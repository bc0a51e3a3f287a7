"""Analysis `scaling_laws`: compute-optimal allocation by Chinchilla's three approaches, with uncertainty.

- approach 1 (``approach1.py``): the min-loss point per compute budget (the envelope), N* ~ C^a, D* ~ C^b;
- approach 2 (``approach2.py``): IsoFLOP minima per budget (Akima or parabola), weighted power laws, bootstrap CIs;
- approach 3 (``approach3.py``): L(N, D) = E + A/N^alpha + B/D^beta by Huber loss on log L from a grid of starts
  (fast batched multi-start, same optimum as a scipy L-BFGS-B loop), implied N*(C), D*(C), bootstrap CIs.
Figures in ``plots.py``. ``group_by`` fits each group of rows separately.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analyses.scaling_laws import approach1, approach2, approach3
from toolkit.columns import require_columns
from toolkit.errors import UserError
from toolkit.outputs import AnalysisOutput

REQUIRED_COLUMNS = ("N", "D", "C", "loss")
WHO = "scaling_laws"
DEFAULT_BOUNDS = {"alpha": [0, None], "beta": [0, None]}


def _as_list(value: Any) -> list:
    """None, a scalar or a list, as a list."""
    if value is None or value == "":
        return []
    if isinstance(value, (str, int, float)):
        return [value]
    return list(value)


def _approaches(params: Mapping[str, Any]) -> list[int]:
    """The selected approaches, checked."""
    chosen = [int(a) for a in _as_list(params.get("approaches", [1, 2, 3]))]
    bad = [a for a in chosen if a not in (1, 2, 3)]
    if bad or not chosen:
        raise UserError(f"{WHO}: analysis.scaling_laws.approaches must be a non-empty subset of [1, 2, 3], got {chosen}")
    return chosen


def _clean(table: pd.DataFrame) -> pd.DataFrame:
    """N, D, C, loss as positive finite floats, or a one-line error naming the column."""
    require_columns(table, REQUIRED_COLUMNS, WHO)
    out = table.copy()
    for col in REQUIRED_COLUMNS:
        values = pd.to_numeric(out[col], errors="coerce").astype(float)
        bad = ~np.isfinite(values.to_numpy()) | (values.to_numpy() <= 0)
        if bad.any():
            raise UserError(f"{WHO}: column '{col}' has {int(bad.sum())} non-positive or non-finite value(s) "
                            f"(e.g. row {int(np.flatnonzero(bad)[0])}); expected positive finite numbers")
        out[col] = values
    return out


def run_approach1(table: pd.DataFrame, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Approach 1 on one group: summary and the artefacts for tables and figures."""
    bins = int(params.get("bins", 30))
    fit_n, fit_d, env = approach1.fit_envelope(table["N"], table["D"], table["C"], table["loss"], bins=bins)
    summary = {"a": fit_n.exponent, "b": fit_d.exponent, "N_coef": fit_n.coef, "D_coef": fit_d.coef,
               "r2_N": fit_n.r2, "r2_D": fit_d.r2, "n_budgets": len(env), "bins": bins}
    return summary, {"envelope": env, "fit_n": fit_n, "fit_d": fit_d}


def run_approach2(table: pd.DataFrame, params: Mapping[str, Any], warn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Approach 2 on one group: summary and artefacts."""
    boot = dict(params.get("bootstrap") or {})
    method = str(params.get("method", "akima"))
    if method not in ("akima", "parabola"):
        raise UserError(f"{WHO}: approach2.method must be akima or parabola, got '{method}'")
    mode = str(boot.get("mode", "noise"))
    if mode not in ("noise", "resample"):
        raise UserError(f"{WHO}: approach2.bootstrap.mode must be noise or resample, got '{mode}'")
    curve_by = [str(c) for c in _as_list(params.get("curve_by"))] or (["run_id"] if "run_id" in table.columns else ["N"])
    require_columns(table, curve_by, f"{WHO} (approach2.curve_by)")
    max_gap = params.get("max_gap")
    parabola_points = params.get("parabola_points", 5)
    res = approach2.fit_isoflop(
        table, budgets=[float(b) for b in _as_list(params.get("budgets"))] or None,
        n_budgets=int(params.get("n_budgets", 12)), min_models=int(params.get("min_models", 3)), curve_by=curve_by,
        tolerance=float(params.get("tolerance", 0.0)), max_gap=None if max_gap is None else float(max_gap), method=method,
        grid_multiplier=int(params.get("grid_multiplier", 25)),
        parabola_points=None if parabola_points is None else int(parabola_points),
        n_boot=int(boot.get("n", 1000)), bootstrap=mode, noise_std=float(boot.get("noise_std", 0.005)),
        seed=int(boot.get("seed", 0)), weighted=bool(params.get("weighted", True)),
        min_std_factor=float(params.get("min_std_factor", 0.33)))
    n_ok = int(res.minima["status"].eq("ok").sum())
    if res.rejected:
        warn(f"approach 2: {len(res.rejected)} of {len(res.minima)} budget(s) rejected: "
             + "; ".join(f"C={r['budget']:.3g} ({r['reason']})" for r in res.rejected[:5]))
    if n_ok < 2:
        warn(f"approach 2: only {n_ok} usable budget(s); no power law fitted")
    summary = {"a": res.fit_n.exponent, "b": res.fit_d.exponent,
               "a_ci": approach3.percentile_ci(res.a_samples), "b_ci": approach3.percentile_ci(res.b_samples),
               "N_coef": res.fit_n.coef, "D_coef": res.fit_d.coef, "n_budgets": n_ok, "rejected": res.rejected,
               "method": method, "curve_by": curve_by, "bootstrap": {"n": int(boot.get("n", 1000)), "mode": mode}}
    return summary, {"result": res}


def _bounds(params: Mapping[str, Any]) -> np.ndarray | None:
    """Approach 3's bounds from the config (None: unbounded)."""
    spec = params.get("bounds", DEFAULT_BOUNDS)
    if spec is None:
        return None
    try:
        return approach3.bounds_array({k: (None if v is None else list(v)) for k, v in dict(spec).items()})
    except (TypeError, ValueError) as exc:
        raise UserError(f"{WHO}: approach3.bounds: {exc}; expected e.g. {{alpha: [0, null], beta: [0, null]}}") from None


def run_approach3(table: pd.DataFrame, params: Mapping[str, Any], warn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Approach 3 on one group: summary and artefacts."""
    delta = float(params.get("huber_delta", 1e-3))
    if not delta > 0:
        raise UserError(f"{WHO}: approach3.huber_delta must be > 0, got {delta}")
    grid_spec = params.get("grid")
    try:
        grid = approach3.make_grid(None if grid_spec is None else {k: _as_list(v) for k, v in dict(grid_spec).items()})
    except ValueError as exc:
        raise UserError(f"{WHO}: approach3.grid: {exc}; expected lists of starts for a, b, e, alpha, beta") from None
    bounds = _bounds(params)
    schedule = [tuple(int(v) for v in pair) for pair in _as_list(params.get("schedule", approach3.DEFAULT_SCHEDULE))]
    n, d, loss = (table[c].to_numpy(float) for c in ("N", "D", "loss"))
    started = time.perf_counter()
    fit = approach3.fit_parametric(n, d, loss, delta=delta, grid=grid, bounds=bounds, schedule=schedule,
                                   n_polish=int(params.get("polish", 5)))
    fit_seconds = time.perf_counter() - started
    for note in fit.warnings:
        warn(note)
    p = fit.params
    summary: dict[str, Any] = {k: p[k] for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G")}
    boot = dict(params.get("bootstrap") or {})
    n_boot = int(boot.get("n", 1000))
    samples = np.empty((0, 5))
    if n_boot > 0:
        started = time.perf_counter()
        samples = approach3.bootstrap_parametric(n, d, loss, fit, n_boot=n_boot, seed=int(boot.get("seed", 0)), bounds=bounds)
        summary["bootstrap_seconds"] = time.perf_counter() - started
    natural = approach3.natural_samples(samples)
    for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
        summary[f"{name}_ci"] = approach3.percentile_ci(natural[name])
    summary.update({"huber_delta": delta, "n_points": fit.n_points, "objective": fit.objective, "n_starts": fit.n_starts,
                    "n_boot": n_boot, "fit_seconds": fit_seconds, "log_params": dict(zip(approach3.PARAM_NAMES, fit.theta))})
    return summary, {"fit": fit, "samples": samples}


def fit_group(table: pd.DataFrame, params: Mapping[str, Any], approaches: list[int], warn) -> tuple[dict, dict]:
    """Every selected approach on one group of rows."""
    summary, artefacts = {}, {}
    for k, fn in ((1, run_approach1), (2, run_approach2), (3, run_approach3)):
        if k in approaches:
            sub = dict(params.get(f"approach{k}") or {})
            s, a = fn(table, sub) if k == 1 else fn(table, sub, warn)
            summary[f"approach{k}"], artefacts[f"approach{k}"] = s, a
    return summary, artefacts


def _tables(label: str | None, artefacts: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The per-group CSV tables."""
    out = {}
    if "approach1" in artefacts:
        out["approach1_envelope"] = artefacts["approach1"]["envelope"]
    if "approach2" in artefacts:
        res = artefacts["approach2"]["result"]
        out["approach2_minima"] = res.minima
        out["approach2_isoflop_points"] = res.points
    if "approach3" in artefacts:
        fit = artefacts["approach3"]["fit"]
        top = pd.DataFrame(fit.top, columns=[*approach3.PARAM_NAMES, "objective"])
        top.insert(0, "rank", np.arange(1, len(top) + 1))
        out["approach3_optima"] = top
        samples = artefacts["approach3"]["samples"]
        if len(samples):
            out["approach3_bootstrap"] = pd.DataFrame(approach3.natural_samples(samples))
    if label is not None:
        out = {k: v.assign(group=label) for k, v in out.items()}
    return out


def run(table: pd.DataFrame, params: dict[str, Any], out: AnalysisOutput) -> dict[str, Any]:
    """Fit the selected approaches (per group) and write summary fields, per-budget tables and figures."""
    from analyses.scaling_laws import plots

    approaches = _approaches(params)
    group_by = [str(c) for c in _as_list(params.get("group_by"))]
    require_columns(table, [*REQUIRED_COLUMNS, *group_by], WHO)
    table = _clean(table)
    if not len(table):
        raise UserError(f"{WHO}: the table is empty; expected rows with N, D, C, loss")
    figures = bool(params.get("figures", True))
    if group_by:
        groups = {"/".join(str(v) for v in (key if isinstance(key, tuple) else (key,))): g
                  for key, g in table.groupby(group_by, sort=True, dropna=False)}
    else:
        groups = {None: table}
    summary: dict[str, Any] = {}
    collected: dict[str, list[pd.DataFrame]] = {}
    for label, group in groups.items():
        def warn(message: str, label=label) -> None:
            out.warn(message if label is None else f"group {label}: {message}")

        try:
            s, artefacts = fit_group(group.reset_index(drop=True), params, approaches, warn)
        except UserError as exc:
            if label is None:
                raise
            warn(str(exc))
            continue
        if label is None:
            summary.update(s)
        else:
            summary.setdefault("groups", {})[label] = s
        for name, frame in _tables(label, artefacts).items():
            collected.setdefault(name, []).append(frame)
        if figures:
            suffix = "" if label is None else "_" + "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in label)
            for name, fig in plots.figures(group, artefacts, title=label).items():
                out.figure(name + suffix, fig)
    if group_by and not summary.get("groups"):
        raise UserError(f"{WHO}: no group of {', '.join(group_by)} could be fitted (see the warnings above)")
    for name, frames in collected.items():
        out.table(name, pd.concat(frames, ignore_index=True))
    summary["n_points"] = len(table)
    if group_by:
        summary["group_by"] = group_by
    return summary
