"""Approach 2: IsoFLOP minima. Per budget, each model's loss at exactly that compute, the minimum over N, power laws.

Following Porian et al. (2024): a model's loss at budget C is interpolated linearly in (log C, log L) along its own
curve (no extrapolation); the minimum over N is found by Akima interpolation in (log N, log L) evaluated on a grid of
``(k - 1) * grid_multiplier`` log-spaced sizes (k: the models at that budget), and a minimum on the grid's first or
last point is rejected (it sits on the edge of the sizes trained). D* is found the same way along log D. A bootstrap
(per-point noise on the losses, or resampling the models) gives each log N* a spread; the power laws N* ~ C^a and
D* ~ C^b are fitted with weights 1/sd^2, and their 95% CIs are the percentiles of the same fit on every bootstrap
replicate.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analyses.scaling_laws.approach1 import PowerLaw, fit_power_law


def curves(table: pd.DataFrame, curve_by: Sequence[str] = ("N",)) -> list[dict[str, np.ndarray | float]]:
    """One curve per ``curve_by`` group: N and sorted log C, log D, log L (duplicated C values averaged)."""
    out = []
    for _, group in table.groupby(list(curve_by), sort=True):
        g = group.groupby("C", sort=True).agg(N=("N", "first"), D=("D", "mean"), loss=("loss", "mean")).reset_index()
        out.append({"N": float(g["N"].iloc[0]), "log_c": np.log(g["C"].to_numpy(float)),
                    "log_d": np.log(g["D"].to_numpy(float)), "log_l": np.log(g["loss"].to_numpy(float))})
    return out


def at_budget(curve_list: list[dict], budget: float, tolerance: float = 0.0, max_gap: float | None = None) -> pd.DataFrame:
    """Each curve's (N, D, loss) at compute ``budget``, min loss per N.

    Linear interpolation in (log C, log L) between the curve's two neighbouring points; a budget up to ``tolerance``
    (relative) past the curve's first or last point takes that point's loss (no extrapolation); with ``max_gap``, a
    curve counts only when one of its points lies within that relative distance of the budget (Porian et al.:
    ``tolerance = max_gap = 0.1``).
    """
    lb = np.log(budget)
    rows = []
    for _, cv, lc, x in _reached(curve_list, lb, tolerance, max_gap):
        rows.append({"N": cv["N"], "D": float(np.exp(np.interp(x, lc, cv["log_d"]))) * np.exp(lb - x),
                     "loss": float(np.exp(np.interp(x, lc, cv["log_l"])))})
    frame = pd.DataFrame(rows, columns=["N", "D", "loss"])
    if len(frame):
        frame = frame.loc[frame.groupby("N")["loss"].idxmin()].sort_values("N").reset_index(drop=True)
    return frame


def _reached(curve_list: list[dict], lb: float, tolerance: float, max_gap: float | None) -> Iterator[tuple]:
    """The curves that count at log budget ``lb`` under ``at_budget``'s tolerance and max_gap: (index, curve, its
    sorted log C, ``lb`` clamped to the curve's range)."""
    slack = np.log1p(tolerance) if tolerance > 0 else 0.0
    gap = np.log1p(max_gap) if max_gap is not None else np.inf
    for i, cv in enumerate(curve_list):
        lc = cv["log_c"]
        if not (lb < lc[0] - slack - 1e-12 or lb > lc[-1] + slack + 1e-12 or np.min(np.abs(lc - lb)) > gap + 1e-12):
            yield i, cv, lc, min(max(lb, lc[0]), lc[-1])


MIN_BUDGETS = 3  # usable budgets, drawing on as many measured compute values, that the power laws need


def measured_levels(curve_list: list[dict], budgets: Sequence[float], tolerance: float = 0.0,
                    max_gap: float | None = None) -> int:
    """How many measured compute values the ``budgets`` draw on: the most checkpoints of one curve they interpolate
    between, or the number of budgets that each lie on measured points, whichever is larger.

    Budgets interpolated between the same two checkpoints of every curve (an isoFLOP table with two budgets: every
    budget chosen in between) are mixtures of the same two measurements, not new ones."""
    touched: list[set[int]] = [set() for _ in curve_list]
    on_points = 0
    for budget in budgets:
        lb = np.log(budget)
        used, exact = False, True
        for i, _, lc, x in _reached(curve_list, lb, tolerance, max_gap):
            used = True
            near = np.flatnonzero(np.abs(lc - x) <= 1e-6)
            if len(near):
                touched[i].add(int(near[0]))
            else:
                j = int(np.searchsorted(lc, x))
                touched[i].update((j - 1, j))
                exact = False
        on_points += used and exact
    return max(max((len(t) for t in touched), default=0), on_points)


def identifiability(result: "IsoflopResult", curve_list: list[dict], n_sizes: int, min_models: int = 3,
                    tolerance: float = 0.0, max_gap: float | None = None) -> str | None:
    """None when the fit's usable budgets can identify N* ~ C^a and D* ~ C^b, else what is missing (with counts):
    >= 3 usable budgets (each with >= max(min_models, 3) model sizes and its minimum inside them) drawing on >= 3
    measured compute values."""
    need = max(min_models, 3)
    ok = result.minima["status"].eq("ok").to_numpy()
    n_ok, n_all = int(ok.sum()), len(result.minima)
    if not n_all:
        return (f"no compute budget is reached by >= {need} model sizes ({n_sizes} distinct N in the table); "
                f"approach 2 needs >= {MIN_BUDGETS} budgets with >= {need} model sizes each")
    if n_ok < MIN_BUDGETS:
        why = "; ".join(f"C={r['budget']:.3g} {r['reason']}" for r in result.rejected[:3])
        return (f"{n_ok} of {n_all} budget(s) usable ({n_sizes} distinct N in the table); approach 2 needs >= "
                f"{MIN_BUDGETS} budgets with >= {need} model sizes each and the minimum inside them"
                + (f" (rejected: {why}{'; ...' if len(result.rejected) > 3 else ''})" if why else ""))
    levels = measured_levels(curve_list, result.minima.loc[ok, "budget"].to_numpy(float), tolerance, max_gap)
    if levels < MIN_BUDGETS:
        return (f"the {n_ok} usable budgets draw on {levels} measured compute value(s) per curve (the others are "
                f"interpolated between the same checkpoints); approach 2 needs >= {MIN_BUDGETS} measured budgets")
    return None


def budget_range(curve_list: list[dict], min_models: int = 3) -> tuple[float, float] | None:
    """The lowest and highest compute that at least ``min_models`` distinct N reach (None if none)."""
    spans: dict[float, list[float]] = {}
    for cv in curve_list:
        lo, hi = spans.get(cv["N"], [np.inf, -np.inf])
        spans[cv["N"]] = [min(lo, cv["log_c"][0]), max(hi, cv["log_c"][-1])]
    if len(spans) < min_models:
        return None
    lows = np.array([s[0] for s in spans.values()])
    highs = np.array([s[1] for s in spans.values()])
    points = np.unique(np.concatenate([lows, highs]))
    coverage = ((lows[None, :] <= points[:, None] + 1e-12) & (highs[None, :] >= points[:, None] - 1e-12)).sum(axis=1)
    good = points[coverage >= min_models]
    if not len(good):
        return None
    return float(np.exp(good.min())), float(np.exp(good.max()))


def choose_budgets(curve_list: list[dict], budgets: Sequence[float] | None, n_budgets: int = 12,
                   min_models: int = 3) -> np.ndarray:
    """The explicit budgets, or ``n_budgets`` log-spaced ones within the range that >= min_models models reach."""
    if budgets:
        return np.sort(np.asarray(list(budgets), float))
    span = budget_range(curve_list, min_models)
    if span is None:
        return np.empty(0)
    lo, hi = span
    if hi <= lo:
        return np.array([lo])
    # a hair inside the range, so the end budgets are not lost to rounding at the curves' first/last points
    return np.exp(np.linspace(np.log(lo) + 1e-9, np.log(hi) - 1e-9, n_budgets))


def akima_minimum(x: np.ndarray, y: np.ndarray, grid_multiplier: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """argmin of the Akima interpolant of y(x) on a grid of (k-1)*multiplier points; y (k,) or (k, B).

    Returns (x*, y*) with NaN where the minimum is on the grid's first or last point (the edge).
    """
    from scipy.interpolate import Akima1DInterpolator

    y2 = y.reshape(len(x), -1)
    grid = np.linspace(x[0], x[-1], max((len(x) - 1) * grid_multiplier, 3))
    values = Akima1DInterpolator(x, y2, axis=0)(grid)
    idx = np.nanargmin(np.where(np.isfinite(values), values, np.inf), axis=0)
    edge = (idx == 0) | (idx == len(grid) - 1)
    x_star, y_star = (np.where(edge, np.nan, v) for v in (grid[idx], values[idx, np.arange(values.shape[1])]))
    return (x_star, y_star) if y.ndim > 1 else (x_star[:1], y_star[:1])


def parabola_minimum(x: np.ndarray, y: np.ndarray, points: int | None = 5) -> tuple[np.ndarray, np.ndarray]:
    """Vertex of a parabola through the ``points`` points nearest the empirical minimum (None: all points).

    NaN where the empirical minimum is the first or last point, the parabola opens downwards, or the vertex falls
    outside the points fitted.
    """
    y2 = y.reshape(len(x), -1)
    k = len(x)
    x_star, y_star = np.full(y2.shape[1], np.nan), np.full(y2.shape[1], np.nan)
    arg = np.nanargmin(y2, axis=0)
    span = k if points is None else min(points, k)  # the points fitted around the empirical minimum
    for i0 in np.unique(arg):
        cols = np.flatnonzero(arg == i0)
        lo = int(min(max(i0 - span // 2, 0), k - span))
        hi = lo + span
        if (i0 == 0 or i0 == k - 1) and points is not None:
            continue
        c2, c1, c0 = np.polyfit(x[lo:hi], y2[lo:hi, cols], 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            vx = -c1 / (2 * c2)
        ok = (c2 > 0) & (vx > x[lo]) & (vx < x[hi - 1])
        x_star[cols] = np.where(ok, vx, np.nan)
        y_star[cols] = np.where(ok, c0 + c1 * vx + c2 * vx * vx, np.nan)
    return (x_star, y_star) if y.ndim > 1 else (x_star[:1], y_star[:1])


def find_minimum(x: np.ndarray, y: np.ndarray, method: str = "akima", grid_multiplier: int = 25,
                 parabola_points: int | None = 5) -> tuple[np.ndarray, np.ndarray]:
    """Minimum of log L over x (log N or log D) by the configured method; NaN where rejected."""
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    if method == "akima":
        return akima_minimum(x, y, grid_multiplier)
    if method == "parabola":
        return parabola_minimum(x, y, parabola_points)
    raise ValueError(f"unknown minimum method '{method}' (expected akima or parabola)")


@dataclass
class IsoflopResult:
    """Per-budget minima, the fitted laws and the bootstrap replicates."""

    minima: pd.DataFrame
    points: pd.DataFrame
    fit_n: PowerLaw
    fit_d: PowerLaw
    a_samples: np.ndarray
    b_samples: np.ndarray
    line_samples: dict[str, np.ndarray] = field(default_factory=dict)
    rejected: list[dict] = field(default_factory=list)


def porian_noise_sd(loss: np.ndarray, low: float = 0.005, high: float = 0.1, log_loss_low: float = 3.0,
                    log_loss_high: float = 6.0) -> np.ndarray:
    """Porian et al.'s seed-noise SD of each loss (their ``get_noise_for_loss``): ``low`` where log(loss) <=
    log_loss_low, ``high`` where log(loss) >= log_loss_high, else log-linear between (log log_loss_low, log low) and
    (log log_loss_high, log high) in log(loss), as their code does (so losses below e^log_loss_low all get ``low``)."""
    log_l = np.log(np.asarray(loss, float))
    mid = np.exp(np.interp(log_l, [np.log(log_loss_low), np.log(log_loss_high)], [np.log(low), np.log(high)]))
    return np.where(log_l >= log_loss_high, high, np.where(log_l <= log_loss_low, low, mid))


def _bootstrap_minima(x: np.ndarray, loss: np.ndarray, n_boot: int, rng: np.random.Generator, mode: str,
                      noise_std: float | np.ndarray, method: str, grid_multiplier: int,
                      parabola_points: int | None) -> np.ndarray:
    """(n_boot,) minima locations of resampled or noised isoFLOP curves (NaN where rejected); ``noise_std`` a number
    or one SD per point."""
    if n_boot <= 0:
        return np.empty(0)
    k = len(x)
    if mode == "noise":
        sd = np.broadcast_to(np.asarray(noise_std, float), (k,))[:, None]
        noisy = loss[:, None] + sd * rng.standard_normal((k, n_boot))
        noisy = np.where(noisy > 0, noisy, np.nan)
        return find_minimum(x, np.log(noisy), method, grid_multiplier, parabola_points)[0]
    if mode == "resample":
        out = np.full(n_boot, np.nan)
        picks = np.sort(rng.integers(0, k, (n_boot, k)), axis=1)
        for i in range(n_boot):
            sel = np.unique(picks[i])
            if len(sel) >= 3:
                out[i] = find_minimum(x[sel], np.log(loss[sel]), method, grid_multiplier, parabola_points)[0][0]
        return out
    raise ValueError(f"unknown bootstrap mode '{mode}' (expected noise or resample)")


def _line_samples(log_c: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted LS slope and intercept per replicate; y (budgets, B) with NaN where a replicate has no minimum."""
    m = np.isfinite(y) & (w[:, None] > 0)
    ww = np.where(m, w[:, None], 0.0)
    yy = np.where(m, y, 0.0)
    x = log_c[:, None]
    s0, sx, sy = ww.sum(0), (ww * x).sum(0), (ww * yy).sum(0)
    sxx, sxy = (ww * x * x).sum(0), (ww * x * yy).sum(0)
    den = s0 * sxx - sx * sx
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (s0 * sxy - sx * sy) / den
        intercept = (sy - slope * sx) / s0
    bad = (m.sum(0) < 2) | ~np.isfinite(slope)
    return np.where(bad, np.nan, slope), np.where(bad, np.nan, intercept)


def _sd_floor(x: np.ndarray, min_std_factor: float, spacing: str, grid_multiplier: int) -> float:
    """The floor of a minimum's bootstrap SD: ``min_std_factor`` x the mean log spacing of the sizes (``sizes``), or
    x grid_multiplier x the spacing of the Akima search grid (``grid``: Porian et al.'s ``min_std``)."""
    span, k = float(np.ptp(x)), len(x)
    if spacing == "grid":
        points = max((k - 1) * grid_multiplier, 3)
        return min_std_factor * grid_multiplier * span / (points - 1)
    return min_std_factor * span / (k - 1)


def fit_isoflop(table: pd.DataFrame, *, budgets: Sequence[float] | None = None, n_budgets: int = 12,
                min_models: int = 3, curve_by: Sequence[str] = ("N",), tolerance: float = 0.0,
                max_gap: float | None = None, method: str = "akima",
                grid_multiplier: int = 25, parabola_points: int | None = 5, n_boot: int = 1000,
                bootstrap: str = "noise", noise_std: float = 0.005, seed: int = 0, weighted: bool = True,
                min_std_factor: float = 0.33, noise_model: str = "constant",
                seed_noise: Mapping[str, float] | None = None, bs_median_as_obs: bool = False,
                min_std_spacing: str = "sizes", stream_key: Sequence[object] = (), tick=None,
                max_edge_share: float = 0.5) -> IsoflopResult:
    """Approach 2 on a table with N, D, C, loss: per-budget minima, their bootstrap spread, power laws with CIs.

    Each budget's bootstrap draws come from its own stream (``intervals.stream(seed, *stream_key, budget)``), so
    adding or dropping a budget or a group does not change another's draws. ``noise_model``: ``constant`` adds
    N(0, noise_std) to each loss, ``porian`` N(0, porian_noise_sd(loss, **seed_noise)). ``bs_median_as_obs``: each
    budget's observation is the median of its bootstrap N* (D*), not the point estimate (Porian et al.).
    ``max_edge_share``: a budget is rejected when more than this share of its bootstrap minima fall on the edge of
    the sizes (Porian et al.: half).
    ``tick(k)``: called with the replicates done, for a progress bar."""
    from analyses.scaling_laws.intervals import stream

    curve_list = curves(table, curve_by)
    chosen = choose_budgets(curve_list, budgets, n_budgets, min_models)
    rows, point_rows, rejected = [], [], []
    boot_n, boot_d = [], []
    for c in chosen:
        pts = at_budget(curve_list, float(c), tolerance, max_gap)
        point_rows.extend({"budget": c, **r} for r in pts.to_dict("records"))
        row = {"budget": float(c), "n_models": len(pts), "N_star": np.nan, "D_star": np.nan, "loss_star": np.nan,
               "log_N_sd": np.nan, "log_D_sd": np.nan, "n_boot_valid": 0, "status": "ok",
               "N_star_point": np.nan, "D_star_point": np.nan}
        bn, bd = np.full(max(n_boot, 0), np.nan), np.full(max(n_boot, 0), np.nan)
        if len(pts) < max(min_models, 3):
            row["status"] = f"too few models ({len(pts)} < {max(min_models, 3)})"
        else:
            x_n, x_d, loss = np.log(pts["N"].to_numpy()), np.log(pts["D"].to_numpy()), pts["loss"].to_numpy()
            n_star, l_star = find_minimum(x_n, np.log(loss), method, grid_multiplier, parabola_points)
            d_star, _ = find_minimum(x_d, np.log(loss), method, grid_multiplier, parabola_points)
            if not (np.isfinite(n_star[0]) and np.isfinite(d_star[0])):
                row["status"] = "minimum on the edge of the sizes trained"
            else:
                row.update(N_star=float(np.exp(n_star[0])), D_star=float(np.exp(d_star[0])), loss_star=float(np.exp(l_star[0])))
                row.update(N_star_point=row["N_star"], D_star_point=row["D_star"])
                if n_boot > 0:
                    rng = stream(seed, *stream_key, float(c))
                    sd = noise_std if noise_model == "constant" else porian_noise_sd(loss, **dict(seed_noise or {}))
                    state = rng.bit_generator.state
                    bn = _bootstrap_minima(x_n, loss, n_boot, rng, bootstrap, sd, method, grid_multiplier, parabola_points)
                    rng.bit_generator.state = state  # the same noise draws for the D* minima
                    bd = _bootstrap_minima(x_d, loss, n_boot, rng, bootstrap, sd, method, grid_multiplier, parabola_points)
                    ok_n, ok_d = np.isfinite(bn), np.isfinite(bd)
                    row["n_boot_valid"] = int((ok_n & ok_d).sum())
                    least = (1 - max_edge_share) * n_boot
                    if ok_n.sum() < least or ok_d.sum() < least:
                        row["status"] = (f"unstable: over {max_edge_share:.0%} of the bootstrap minima on the edge"
                                         if max_edge_share != 0.5 else "unstable: over half the bootstrap minima on the edge")
                    else:
                        for key, x, b, good in (("N", x_n, bn, ok_n), ("D", x_d, bd, ok_d)):
                            floor = _sd_floor(x, min_std_factor, min_std_spacing, grid_multiplier)
                            row[f"log_{key}_sd"] = max(float(np.std(b[good])), floor) * n_boot / good.sum()
                            if bs_median_as_obs:
                                row[f"{key}_star"] = float(np.median(np.exp(b[good])))
        if row["status"] != "ok":
            rejected.append({"budget": float(c), "reason": row["status"]})
            bn, bd = np.full(max(n_boot, 0), np.nan), np.full(max(n_boot, 0), np.nan)
        rows.append(row)
        boot_n.append(bn)
        boot_d.append(bd)
        if tick is not None and n_boot > 0:
            tick(n_boot)  # a budget rejected before its bootstrap counts as done
    minima = pd.DataFrame(rows, columns=["budget", "n_models", "N_star", "D_star", "loss_star", "log_N_sd", "log_D_sd",
                                         "n_boot_valid", "status", "N_star_point", "D_star_point"])
    ok = minima["status"].eq("ok").to_numpy()
    use_w = weighted and n_boot > 0
    w_n = np.where(ok, 1 / minima["log_N_sd"].to_numpy(float) ** 2, 0.0) if use_w else ok.astype(float)
    w_d = np.where(ok, 1 / minima["log_D_sd"].to_numpy(float) ** 2, 0.0) if use_w else ok.astype(float)
    fit_n = fit_power_law(minima["budget"].to_numpy(float), minima["N_star"].to_numpy(float), np.nan_to_num(w_n))
    fit_d = fit_power_law(minima["budget"].to_numpy(float), minima["D_star"].to_numpy(float), np.nan_to_num(w_d))
    log_c = np.log(minima["budget"].to_numpy(float))
    if n_boot > 0 and len(minima):
        a_s, a_i = _line_samples(log_c, np.vstack(boot_n), np.nan_to_num(w_n))
        b_s, b_i = _line_samples(log_c, np.vstack(boot_d), np.nan_to_num(w_d))
    else:
        a_s = a_i = b_s = b_i = np.empty(0)
    points = pd.DataFrame(point_rows, columns=["budget", "N", "D", "loss"])
    return IsoflopResult(minima, points, fit_n, fit_d, a_s, b_s, {"a_intercept": a_i, "b_intercept": b_i}, rejected)


def jackknife_exponents(result: IsoflopResult, weighted: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-budget-out exponents a and b (the same weighted fits without each usable budget), for BCa."""
    m = result.minima[result.minima["status"].eq("ok")]
    if len(m) < 3:
        return np.empty(0), np.empty(0)
    log_c = np.log(m["budget"].to_numpy(float))
    out = []
    for key, sd in (("N_star", "log_N_sd"), ("D_star", "log_D_sd")):
        y = np.log(m[key].to_numpy(float))
        s = m[sd].to_numpy(float)
        w = 1 / s**2 if weighted and np.all(np.isfinite(s)) else np.ones(len(m))
        drop = ~np.eye(len(m), dtype=bool)  # row i: every budget but the i-th
        slope, _ = _line_samples(log_c, np.where(drop, y[:, None], np.nan), w)
        out.append(slope)
    return out[0], out[1]
