"""Analysis `minima`: the loss minimum over the learning rate at each (token horizon, batch size).

The norm-transfer ``utils.fitting.Config`` workflow, vectorised:

1. **targets** (``resolve_targets``): each requested horizon is matched, per batch size, to the nearest logged
   horizon; within ``horizon_tolerance`` (in log2 units) it is snapped (and a warning says so), beyond it the
   (horizon, bs) is kept as ``method = "unreachable"``; a horizon no batch size reaches is a UserError.
2. **points** (``window_average``): one point per (target, lr): the mean loss over the rows (seeds x logged steps)
   from ``avg_rel_from`` logged rows before the horizon to ``avg_rel_to`` rows after it, as in the norm-transfer
   toolkit (offsets in that batch size's sorted logged horizons; clamped to what is logged) (only for the horizons/bss in
   ``average_h`` / ``average_bs``; the others use the exact horizon), with its std (the std across those rows, or,
   for a seed-aggregated table, ``train_loss_std`` combined with the spread across the window), the geometric
   mean output norm, and the ``max_loss`` filter. One pandas groupby over the selected rows, no loop over rows.
3. **fits** (``fit_groups``): a weighted quadratic ``loss = a x^2 + b x + c`` in ``x = log2 lr`` (or
   ``log2 output_norm``), weights ``1/std^2``, on all points or the ``fit_k`` nearest to the empirical minimum
   (bracketing it when possible); batched over every (horizon, bs) with numpy normal equations, and a batched
   bootstrap (points or residuals; each cell its own random stream from (seed, cell key)) for the CI of the optimal
   lr (``ci_method`` percentile, basic or BCa); in closest mode the CI bootstraps the whole closest-point procedure.

Methods in the output: ``fit`` (vertex), ``fit_closest`` (grid lr closest to the vertex), ``empirical``
(``skip_fit``), ``empirical_fallback`` (the fit failed: too few distinct x), ``empirical_nonconvex`` (a <= 0),
``empirical_extrapolated`` (the vertex lies outside the x range of the fitted points),
``empirical_badfit`` (a convex fit whose vertex loss lies below every point of its group by more than a parabola
through the points can dip between two fitted points, a gap^2 / 4, plus 3 pooled stds (or 3 residual
stds of the fit when it has >= 3 degrees of freedom and that is larger), or by more than the points'
spread, max - min: the parabola does not describe the points, e.g. an outlier or a cliff dragged it),
``too_few_points`` (< 3 points), ``unreachable`` (no logged horizon within tolerance) and ``degenerate``
(``strict_avg`` window not covered). Nothing is dropped silently.
"""
from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, List, Optional

import numpy as np
import pandas as pd

from analyses.minima_report import render_minima
from toolkit.columns import require_columns
from toolkit.errors import UserError
from toolkit.progress import progress_bar
from toolkit.protocol import AnalysisBase
from toolkit.settings import Choice, Settings, as_settings, at_least, boot_count, bounded, ci_level, fail

NAME = "minima"
REQUIRED_COLUMNS = ("lr", "bs", "horizon", "train_loss")
FAILED_METHODS = ("too_few_points", "unreachable", "degenerate")
MIXED_COLUMNS = ("momentum", "decayed", "lr_in", "lr_hidden", "lr_out")
EPS = 1e-9
_POW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:\^|\*\*)\s*(-?\d+(?:\.\d+)?)\s*$")


# ----------------------------------------------------------------------------------------------- settings


def parse_horizon(value: Any, what: str = "horizons") -> int:
    """A token count from a number (268435456, 2.68e8) or a string ('2^28', '2**28', '268435456')."""
    number: float | None = None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        m = _POW.match(value)
        try:
            number = float(m.group(1)) ** float(m.group(2)) if m else float(value.strip().replace("_", ""))
        except ValueError:
            pass
    if number is None or not math.isfinite(number) or number <= 0:
        raise UserError(f"{NAME}: {what}: could not read {value!r}; expected a token count like 268435456 or 2^28")
    return int(round(number))


def format_horizon(h: float) -> str:
    """'2^28' for powers of two, '2^28.02' otherwise."""
    k = math.log2(float(h))
    return f"2^{k:.0f}" if abs(k - round(k)) < 1e-9 else f"2^{k:.2f}"


class FitAxis(Choice):
    """x of the parabola: log2 lr, or log2 output norm."""

    lr = "lr"
    output_norm = "output_norm"


class FitKBy(Choice):
    """Distance for fit_k: |x - x_min|, or Euclidean in (x, loss) scaled by each range."""

    x = "x"
    xy = "xy"


class BootMode(Choice):
    """Bootstrap of the vertex: resample the fitted points, or the fit's residuals."""

    points = "points"
    residuals = "residuals"


class CiMethod(Choice):
    """Interval from the bootstrap replicates: percentile, basic (reflected percentile) or BCa (scipy)."""

    percentile = "percentile"
    basic = "basic"
    bca = "bca"


@dataclass
class MinimaBootstrap:
    """Bootstrap CI of the optimal lr (n: 0 switches it off)."""

    n: int = boot_count(200)
    seed: int = at_least(0, 0, "a whole number")
    level: float = ci_level()
    mode: BootMode = BootMode.points
    ci_method: CiMethod = CiMethod.percentile


@dataclass
class MinimaSettings(Settings):
    """Every knob of the minima analysis (the norm-transfer Config's fitting part); see conf/analysis/minima.yaml."""

    horizons: Any = "pow2"
    horizon_tolerance: float = bounded(0.1, "a distance >= 0 in log2 units", ge=0)
    avg_rel_from: int = bounded(0, "a whole number <= 0 (rows before the horizon)", le=0)
    avg_rel_to: int = 0
    strict_avg: bool = False
    average_h: Optional[List[Any]] = None
    average_bs: Optional[List[float]] = None
    max_loss: Optional[float] = None
    fit_axis: FitAxis = FitAxis.lr
    weighted: bool = True
    fit_k: Optional[int] = bounded(None, "an integer >= 3 (or null for all points)", ge=3)
    fit_k_by: FitKBy = FitKBy.x
    c_fixed: Optional[float] = None
    skip_fit: Any = False
    optimum_from_closest: bool = False
    by: List[str] = field(default_factory=list)
    bootstrap: MinimaBootstrap = field(default_factory=MinimaBootstrap)
    plots: bool = True
    max_panels: int = at_least(12, 1)
    bs_label: Optional[str] = None
    who: ClassVar[str] = NAME

    def __post_init__(self) -> None:
        hs = self.horizons
        self.pow2_only = isinstance(hs, str) and hs.strip().lower() == "pow2"
        if self.pow2_only or hs is None:
            hs = []
        elif not isinstance(hs, (list, tuple)):
            hs = [hs]
        self.target_horizons: tuple[int, ...] | None = tuple(parse_horizon(h) for h in hs) or None
        self.average_h_tokens: tuple[int, ...] | None = (
            None if self.average_h is None else tuple(parse_horizon(h, "average_h") for h in self.average_h))
        super().__post_init__()
        if self.avg_rel_from > self.avg_rel_to:
            raise fail(NAME, "avg_rel_from", self.avg_rel_from, f"<= avg_rel_to ({self.avg_rel_to})")
        if self.bootstrap.ci_method == "bca" and self.bootstrap.mode != "points":
            raise fail(NAME, "bootstrap.ci_method", self.bootstrap.ci_method,
                       "percentile or basic with bootstrap.mode residuals (BCa needs resampled points for its jackknife)")
        skip = self.skip_fit
        self.skip_all = skip is True
        pairs: list[tuple[int, int]] = []
        if isinstance(skip, (list, tuple)):
            for pair in skip:
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise fail(NAME, "skip_fit", skip, "true, false or a list of [horizon, bs] pairs")
                pairs.append((parse_horizon(pair[0], "skip_fit"), int(_number(pair[1], "skip_fit"))))
        elif not isinstance(skip, bool):
            raise fail(NAME, "skip_fit", skip, "true, false or a list of [horizon, bs] pairs")
        self.skip_pairs = frozenset(pairs)

    def to_dict(self) -> dict[str, Any]:
        """The settings for summary.json, with the horizons as token counts."""
        out = super().to_dict()
        if self.target_horizons:
            out["horizons"] = list(self.target_horizons)
        return out


def _number(value: Any, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{NAME}: {what} should be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise UserError(f"{NAME}: {what} should be a finite number, got {value!r}")
    return out


# ----------------------------------------------------------------------------------------------- input


def _prepare(table: pd.DataFrame, s: MinimaSettings) -> pd.DataFrame:
    """Numeric working columns (lr, bs, horizon, loss, log2 norm, std parts); bad values raise UserError."""
    require_columns(table, REQUIRED_COLUMNS, NAME)
    require_columns(table, s.by, f"{NAME} (option by)")
    if s.fit_axis == "output_norm":
        require_columns(table, ["output_norm"], f"{NAME} (fit_axis output_norm)")
    work = pd.DataFrame(index=table.index)
    for col in ("lr", "bs", "horizon"):
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            raise UserError(f"{NAME}: column '{col}' has {int(bad.sum())} missing, non-numeric or non-positive value(s) "
                            f"(e.g. {table[col].to_numpy()[bad][0]!r}); expected positive numbers")
        work[col] = values
    loss = pd.to_numeric(table["train_loss"], errors="coerce").to_numpy(float)
    work["loss"] = np.where(np.isfinite(loss), loss, np.nan)  # diverged (inf) counts as missing
    if "output_norm" in table.columns:
        norm = pd.to_numeric(table["output_norm"], errors="coerce").to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            work["log2_norm"] = np.where(np.isfinite(norm) & (norm > 0), np.log2(np.where(norm > 0, norm, 1.0)), np.nan)
    else:
        work["log2_norm"] = np.nan
    if "train_loss_std" in table.columns:
        std = pd.to_numeric(table["train_loss_std"], errors="coerce").to_numpy(float)
        work["var_in"] = np.where(np.isfinite(loss), std**2, np.nan)
    for col in s.by:
        work[col] = table[col].to_numpy()
    return work


def _run_label(table: pd.DataFrame, i: int) -> str:
    for col in ("name", "run_id"):
        if col in table.columns:
            return str(table[col].iloc[i])
    return f"lr={table['lr'].iloc[i]:g}, bs={table['bs'].iloc[i]:g}"


# ----------------------------------------------------------------------------------------------- targets


def pair_codes(work: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the code of its (bs, horizon) pair (``bs_code * n_horizons + horizon_code``); sorted bs and horizons."""
    bs_codes, bs_values = pd.factorize(work["bs"].to_numpy(), sort=True)
    h_codes, h_values = pd.factorize(work["horizon"].to_numpy(), sort=True)
    return bs_codes.astype(np.int64) * len(h_values) + h_codes, np.asarray(bs_values), np.asarray(h_values)


def resolve_targets(table: pd.DataFrame, work: pd.DataFrame, s: MinimaSettings, warn: Callable[[str], None],
                    codes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One row per (target horizon, bs) with the snapped centre and window; plus (pair key, target) edges.

    Returns ``(targets, edge_key, edge_gid)`` where ``edge_key`` codes a logged (bs, horizon) pair of ``work``
    (``bs_code * n_horizons + horizon_code``) and ``edge_gid`` the target row whose window contains it.
    """
    row_key, bs_values, h_values = codes if codes is not None else pair_codes(work)
    n_h = len(h_values)
    pairs = np.flatnonzero(np.bincount(row_key, minlength=len(bs_values) * n_h))
    pair_bs, pair_h = pairs // n_h, pairs % n_h
    log2_h = np.log2(np.asarray(h_values, float))
    if s.target_horizons:
        targets_h = list(dict.fromkeys(s.target_horizons))
    else:
        targets_h = [int(round(h)) for h in h_values]
        if s.pow2_only:
            powers = [h for h in targets_h if h > 0 and h & (h - 1) == 0]
            if powers:  # else: no logged horizon is a power of two, so every logged horizon is used
                targets_h = powers
    tol = s.horizon_tolerance
    rows: list[dict[str, Any]] = []
    edge_key: list[np.ndarray] = []
    edge_gid: list[np.ndarray] = []
    per_bs = [np.flatnonzero(pair_bs == b) for b in range(len(bs_values))]
    for H in targets_h:
        lH = math.log2(H)
        snapped: list[str] = []
        clipped: list[str] = []  # batch sizes whose averaging window the logged rows cut
        reached = False
        for b, bs in enumerate(bs_values):
            idx = per_bs[b]
            lh_b = log2_h[pair_h[idx]]  # sorted: factorize(sort=True) and np.unique keep horizon order
            j = int(np.clip(np.searchsorted(lh_b, lH), 1, len(lh_b) - 1)) if len(lh_b) > 1 else 0
            if len(lh_b) > 1 and abs(lh_b[j - 1] - lH) <= abs(lh_b[j] - lH):
                j -= 1
            dist = abs(lh_b[j] - lH)
            if not s.target_horizons and dist > EPS:
                continue  # every horizon in the table: each batch size only at the horizons it logs
            row: dict[str, Any] = {"gid": len(rows), "horizon": int(H), "bs": _as_int(bs), "log2_horizon": lH,
                                   "horizon_used": float(2.0 ** lh_b[j]), "snapped": False, "status": "ok", "reason": ""}
            rows.append(row)
            if dist > tol + EPS:
                row.update(status="unreachable", reason=f"nearest logged horizon of bs {bs:g} is "
                           f"{format_horizon(2.0 ** lh_b[j])}, {dist:.3g} (log2) from {format_horizon(H)} > "
                           f"horizon_tolerance {tol:g}")
                continue
            reached = True
            if dist > EPS:
                row["snapped"] = True
                snapped.append(f"{bs:g}")
            centre = lh_b[j]
            row["log2_horizon_used"] = centre
            apply = (s.average_h_tokens is None or any(abs(math.log2(a) - lH) <= EPS for a in s.average_h_tokens)) and \
                    (s.average_bs is None or any(abs(a - bs) <= EPS for a in s.average_bs))
            lo_i, hi_i = (j + s.avg_rel_from, j + s.avg_rel_to) if apply else (j, j)
            covered = lo_i >= 0 and hi_i <= len(lh_b) - 1
            lo_i, hi_i = max(lo_i, 0), min(hi_i, len(lh_b) - 1)
            row["window_lo"], row["window_hi"] = 2.0 ** lh_b[lo_i], 2.0 ** lh_b[hi_i]
            row["averaged"] = apply and hi_i > lo_i
            if s.strict_avg and apply and not covered:
                row.update(status="degenerate", reason=f"strict_avg: window of rows {s.avg_rel_from:+d}.."
                           f"{s.avg_rel_to:+d} around {format_horizon(2.0 ** centre)} not covered; bs {bs:g} logs "
                           f"{format_horizon(2.0 ** lh_b[0])}..{format_horizon(2.0 ** lh_b[-1])}")
                continue
            if apply and not covered:  # a one-sided window dates the point earlier (or later) than the horizon
                row["reason"] = (f"averaging window cut to rows {lo_i - j:+d}..{hi_i - j:+d} around "
                                 f"{format_horizon(2.0 ** centre)} (the logged rows end there)")
                clipped.append(f"{bs:g}")
            inside = idx[lo_i:hi_i + 1]
            edge_key.append(pairs[inside])
            edge_gid.append(np.full(len(inside), row["gid"], dtype=np.int64))
            row["skip_fit"] = s.skip_all or (int(H), _as_int(bs)) in s.skip_pairs
        if not reached:
            _unreachable_error(table, work, H, log2_h, tol)
        if clipped:
            warn(f"horizon {format_horizon(H)}: the averaging window of rows {s.avg_rel_from:+d}..{s.avg_rel_to:+d} is cut "
                 f"at the first or last logged row for bs {', '.join(clipped)}, so those points average one side only "
                 f"(strict_avg=true leaves such cells out)")
        if snapped:
            used = sorted({format_horizon(r["horizon_used"]) for r in rows if r["horizon"] == H and r["snapped"]})
            warn(f"horizon {format_horizon(H)} is not logged exactly for bs {', '.join(snapped)}: "
                 f"using the nearest logged horizon {', '.join(used)} (within horizon_tolerance {tol:g})")
    targets = pd.DataFrame(rows)
    for col in ("log2_horizon_used", "window_lo", "window_hi"):
        targets[col] = targets[col].astype(float) if col in targets else np.nan
    for col in ("averaged", "skip_fit"):
        targets[col] = targets[col].map(lambda v: isinstance(v, (bool, np.bool_)) and bool(v)) if col in targets else False
    keys, gids = (np.concatenate(e) if e else np.zeros(0, np.int64) for e in (edge_key, edge_gid))
    return targets, keys, gids


def _as_int(v: Any) -> Any:
    f = float(v)
    return int(f) if f == int(f) else f


def _unreachable_error(table: pd.DataFrame, work: pd.DataFrame, H: int, log2_h: np.ndarray, tol: float) -> None:
    lH = math.log2(H)
    if lH > log2_h[-1]:
        i = int(np.argmax(work["horizon"].to_numpy()))
        raise UserError(f"{NAME}: horizon {format_horizon(H)} is beyond every run: the largest logged horizon is "
                        f"{format_horizon(2.0 ** log2_h[-1])} (run {_run_label(table, i)})")
    j = int(np.argmin(np.abs(log2_h - lH)))
    raise UserError(f"{NAME}: horizon {format_horizon(H)} is not within horizon_tolerance {tol:g} (log2) of any logged "
                    f"horizon; the nearest is {format_horizon(2.0 ** log2_h[j])}")


# ----------------------------------------------------------------------------------------------- points


def window_average(work: pd.DataFrame, edge_key: np.ndarray, edge_gid: np.ndarray, s: MinimaSettings,
                   codes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """One point per (target gid, lr[, by]): mean loss, its std, n rows, geometric-mean norm; max_loss applied.

    ``std`` is the sample std across the rows (seeds x window) of a per-run table; for a seed-aggregated table
    (``train_loss_std`` present) it is sqrt(mean(train_loss_std^2) + population variance of the window's means).
    """
    row_key, bs_values, h_values = codes if codes is not None else pair_codes(work)
    order = np.argsort(edge_key, kind="stable")
    ek, eg = edge_key[order], edge_gid[order]
    counts = np.bincount(ek, minlength=len(bs_values) * len(h_values))
    starts = np.cumsum(counts) - counts
    row_counts = counts[row_key] if len(work) else np.zeros(0, np.int64)
    sel = np.flatnonzero(row_counts > 0)
    reps = row_counts[sel]
    rows = np.repeat(sel, reps)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(reps) - reps, reps)
    gid = eg[starts[row_key[rows]] + within]
    cols = ["lr", "loss", "log2_norm", *s.by] + (["var_in"] if "var_in" in work else [])
    frame = pd.DataFrame({**{c: work[c].to_numpy()[rows] for c in cols}, "gid": gid})
    frame = frame[np.isfinite(frame["loss"].to_numpy())]
    agg: dict[str, Any] = dict(loss=("loss", "mean"), n_rows=("loss", "size"), log2_norm=("log2_norm", "mean"))
    if "var_in" in frame:
        agg.update(var_in=("var_in", "mean"), var_between=("loss", "var"))
    else:
        agg["std"] = ("loss", "std")
    pts = frame.groupby(["gid", "lr", *s.by], sort=True, dropna=False).agg(**agg).reset_index()
    if "var_in" in pts:
        n = pts["n_rows"].to_numpy(float)
        between = np.nan_to_num(pts.pop("var_between").to_numpy(float)) * np.where(n > 1, (n - 1) / np.maximum(n, 1), 0.0)
        pts["std"] = np.sqrt(pts.pop("var_in").to_numpy(float) + between)
    pts["log2_lr"] = np.log2(pts["lr"].to_numpy(float))
    if s.max_loss is not None:
        pts = pts[pts["loss"].to_numpy() <= s.max_loss]
    return pts.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- fitting


def fit_parabolas(X: np.ndarray, Y: np.ndarray, W: np.ndarray, M: np.ndarray,
                  c_fixed: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched weighted quadratic fits on padded (G, P) arrays with mask M; returns a, b, c and an ok mask."""
    W, X0, Y0 = (np.where(M, v, 0.0) for v in (W, X, Y))
    n_par = 3 if c_fixed is None else 2
    xs = np.sort(np.where(M, X, np.inf), axis=1)
    with np.errstate(invalid="ignore"):
        new_value = np.concatenate([np.ones((len(xs), 1), bool), np.diff(xs, axis=1) > 1e-12], axis=1)
    distinct = np.sum(np.isfinite(xs) & new_value, axis=1)
    ok = (distinct >= n_par) & (W.sum(axis=1) > 0)
    if c_fixed is None:
        m = (W * X0).sum(axis=1) / np.maximum(W.sum(axis=1), 1e-300)  # centre x for conditioning
        xc = np.where(M, X0 - m[:, None], 0.0)
        T = Y0
    else:
        xc, T = X0, Y0 - c_fixed
    # normal equations from weighted moments: S_k = sum w x^k, R_k = sum w t x^k
    x2 = xc * xc
    S = [W.sum(axis=1), (W * xc).sum(axis=1), (W * x2).sum(axis=1), (W * x2 * xc).sum(axis=1), (W * x2 * x2).sum(axis=1)]
    wt = W * T
    R = [wt.sum(axis=1), (wt * xc).sum(axis=1), (wt * x2).sum(axis=1)]
    A = np.stack([np.stack([S[4 - i - j] for j in range(n_par)], -1) for i in range(n_par)], 1)  # A[i, j] = S_{4-i-j}
    r = np.stack([R[2 - i] for i in range(n_par)], -1)
    A[~ok] = np.eye(n_par)
    r[~ok] = 0.0
    try:
        beta = np.linalg.solve(A, r[..., None])[..., 0]
    except np.linalg.LinAlgError:
        beta = np.stack([np.linalg.lstsq(A[g], r[g], rcond=None)[0] for g in range(len(A))]) if len(A) else r
    if c_fixed is None:
        a, bc, cc = beta[:, 0], beta[:, 1], beta[:, 2]
        b = bc - 2 * a * m
        c = cc - bc * m + a * m**2
    else:
        a, b = beta[:, 0], beta[:, 1]
        c = np.full(len(a), float(c_fixed))
    bad = ~ok | ~np.isfinite(a) | ~np.isfinite(b)
    a, b, c = (np.where(bad, np.nan, v) for v in (a, b, c))
    return a, b, c, ok & ~bad


def row_percentiles(values: np.ndarray, q: Sequence[float]) -> list[np.ndarray]:
    """Per-row percentiles of the finite values (linear interpolation, like numpy's default); NaN for empty rows."""
    v = np.where(np.isfinite(values), values, np.inf)
    v.sort(axis=1)
    n = np.isfinite(v).sum(axis=1)
    out = []
    rows = np.arange(len(v))
    for p in q:
        pos = p / 100.0 * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        frac = pos - lo
        with np.errstate(invalid="ignore"):
            val = v[rows, lo] * (1 - frac) + np.where(frac > 0, v[rows, hi], 0.0) * frac
        out.append(np.where(n > 0, val, np.nan))
    return out


def _pad(points: pd.DataFrame, n_groups: int,
         cols: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Padded (G, P) arrays of ``cols`` per group (points must be sorted by gid), the validity mask, and each
    point's (gid, position) in them."""
    gid = points["gid"].to_numpy()
    counts = np.bincount(gid, minlength=n_groups)
    P = max(int(counts.max()) if len(counts) else 0, 1)
    pos = np.arange(len(gid)) - np.repeat(np.cumsum(counts) - counts, counts)
    M = np.zeros((n_groups, P), bool)
    M[gid, pos] = True
    out = {}
    for c in cols:
        arr = np.full((n_groups, P), np.nan)
        arr[gid, pos] = points[c].to_numpy(float)
        out[c] = arr
    return out, M, gid, pos


def _select_fit_points(X: np.ndarray, Y: np.ndarray, M: np.ndarray, i_emp: np.ndarray, s: MinimaSettings) -> np.ndarray:
    """Mask of the points each fit uses: all, or the fit_k nearest to the empirical minimum, bracketing it if possible."""
    n = M.sum(axis=1)
    if s.fit_k is None:
        return M.copy()
    G = len(X)
    x_emp = X[np.arange(G), i_emp]
    if s.fit_k_by == "xy":
        def spread(a: np.ndarray) -> np.ndarray:
            lo, hi = np.nanmin(np.where(M, a, np.nan), axis=1), np.nanmax(np.where(M, a, np.nan), axis=1)
            return np.where(hi > lo, hi - lo, 1.0)[:, None]
        y_emp = Y[np.arange(G), i_emp]
        d = ((X - x_emp[:, None]) / spread(X)) ** 2 + ((Y - y_emp[:, None]) / spread(Y)) ** 2
    else:
        d = np.abs(X - x_emp[:, None])
    d = np.where(M, d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    k = np.minimum(s.fit_k, n)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(X.shape[1])[None, :].repeat(G, 0), axis=1)
    F = M & (rank < k[:, None])
    left = (F & (X < x_emp[:, None])).any(axis=1)
    right = (F & (X > x_emp[:, None])).any(axis=1)
    for g in np.flatnonzero(~(left & right) & (k < n)):
        for j in order[g, k[g]:]:
            if not M[g, j]:
                break
            if (not left[g] and X[g, j] < x_emp[g]) or (not right[g] and X[g, j] > x_emp[g]):
                chosen = np.flatnonzero(F[g])
                far = chosen[np.argmax(np.abs(X[g, chosen] - x_emp[g]))]
                F[g, far], F[g, j] = False, True
                left[g] = (F[g] & (X[g] < x_emp[g])).any()
                right[g] = (F[g] & (X[g] > x_emp[g])).any()
                if left[g] and right[g]:
                    break
    return F


def _weights(S: np.ndarray, F: np.ndarray, weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    """1/std^2 per point (missing or zero std -> the group's median positive std); uniform where no std is known."""
    if not weighted:
        return np.where(F, 1.0, 0.0), np.zeros(len(S), bool)
    good = F & np.isfinite(S) & (S > 0)
    has = good.any(axis=1)
    med = np.where(has, row_percentiles(np.where(good, S, np.nan), [50.0])[0], 1.0)
    std = np.where(good, S, med[:, None])
    return np.where(F, np.where(has[:, None], 1.0 / std**2, 1.0), 0.0), has


def cell_key_text(key: Sequence[Any]) -> str:
    """A stable text of a cell's key values (numbers normalised, so 64 and 64.0 give the same text)."""
    return "|".join(_key_part(v) for v in key)


def _key_part(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, float, np.integer, np.floating)):
        f = float(v)
        return repr(int(f)) if f.is_integer() else repr(f)
    return str(v)


def cell_rng(seed: int, key: Sequence[Any]) -> np.random.Generator:
    """The bootstrap's random stream of one cell: a SeedSequence of (seed, a stable hash of the cell's key values)."""
    h = int.from_bytes(hashlib.blake2b(cell_key_text(key).encode("utf-8"), digest_size=8).digest(), "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), h & 0xFFFFFFFF, h >> 32]))


def _bootstrap_vertex(X: np.ndarray, Y: np.ndarray, W: np.ndarray, F: np.ndarray, a: np.ndarray, b: np.ndarray,
                      c: np.ndarray, groups: np.ndarray, keys: Sequence[Sequence[Any]], s: MinimaSettings,
                      tick: Callable[[int], Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(len(groups), n) bootstrap vertices x and their losses (NaN where a replicate is non-convex or degenerate).

    Each cell draws from its own stream (``cell_rng(seed, key)``), so its replicates do not depend on the other cells.
    """
    boot = s.bootstrap
    B = int(boot.n)
    vx = np.full((len(groups), B), np.nan)
    vy = np.full((len(groups), B), np.nan)
    if B <= 0 or not len(groups):
        return vx, vy
    # compact each group's fit points to the left: (g, K)
    Fg = F[groups]
    k = Fg.sum(axis=1)
    K = int(k.max())
    order = np.argsort(~Fg, axis=1, kind="stable")[:, :K]
    Xc, Yc, Wc = (np.take_along_axis(A[groups], order, axis=1) for A in (X, Y, W))
    valid = np.arange(K)[None, :] < k[:, None]
    chunk = max(1, 2_000_000 // max(B * K, 1))
    for lo in range(0, len(groups), chunk):
        sl = slice(lo, lo + chunk)
        g_n = len(Xc[sl])
        idx = np.zeros((g_n, B, K), np.int64)
        for i in range(g_n):
            kg = int(k[lo + i])
            idx[i, :, :kg] = cell_rng(boot.seed, keys[groups[lo + i]]).integers(0, kg, size=(B, kg))
        if boot.mode == "points":
            xb, yb, wb = (np.take_along_axis(np.broadcast_to(A[sl][:, None, :], (g_n, B, K)), idx, axis=2)
                          for A in (Xc, Yc, Wc))
        else:
            gsl = groups[sl]
            fitted = a[gsl][:, None] * Xc[sl] ** 2 + b[gsl][:, None] * Xc[sl] + c[gsl][:, None]
            resid = np.where(valid[sl], Yc[sl] - fitted, 0.0)
            xb, wb = (np.broadcast_to(A[sl][:, None, :], (g_n, B, K)) for A in (Xc, Wc))
            yb = fitted[:, None, :] + np.take_along_axis(np.broadcast_to(resid[:, None, :], (g_n, B, K)), idx, axis=2)
        mb = np.broadcast_to(valid[sl][:, None, :], (g_n, B, K))
        ab, bb, cb, okb = fit_parabolas(*(np.reshape(v, (g_n * B, K)) for v in (xb, yb, wb, mb)), s.c_fixed)
        vx[sl], vy[sl] = (v.reshape(g_n, B) for v in _vertex(ab, bb, cb, okb & (ab > 0)))
        if tick is not None:
            tick(g_n)
    return vx, vy


def _vertex(a: np.ndarray, b: np.ndarray, c: np.ndarray, convex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertex (x, loss) of each parabola a x^2 + b x + c where ``convex``, NaN elsewhere."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(convex, -b / (2 * a), np.nan), np.where(convex, c - b**2 / (4 * a), np.nan)


def bca_interval(x: np.ndarray, y: np.ndarray, w: np.ndarray, rng: np.random.Generator, s: MinimaSettings,
                 slope: float = 1.0, icept: float = 0.0) -> tuple[float, float]:
    """BCa interval (scipy.stats.bootstrap, points resampled in pairs) of log2 lr at one cell's vertex; NaN if it fails."""
    from scipy import stats

    def vertex(xs: np.ndarray, ys: np.ndarray, ws: np.ndarray, axis: int = -1) -> np.ndarray:
        xs, ys, ws = (np.moveaxis(np.asarray(v, float), axis, -1) for v in (xs, ys, ws))
        shape, n = xs.shape[:-1], xs.shape[-1]
        flat = [v.reshape(-1, n) for v in (xs, ys, ws)]
        aa, bb, cc, ok = fit_parabolas(*flat, np.ones_like(flat[0], bool), s.c_fixed)
        return (icept + slope * _vertex(aa, bb, cc, ok & (aa > 0))[0]).reshape(shape)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = stats.bootstrap((x, y, w), vertex, paired=True, vectorized=True, n_resamples=int(s.bootstrap.n),
                                  confidence_level=float(s.bootstrap.level), method="BCa", rng=rng)
        except ValueError:  # scipy refuses degenerate data
            return math.nan, math.nan
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (lo, hi) if slope >= 0 else (hi, lo)


EMPIRICAL_METHODS = ("empirical", "empirical_fallback", "empirical_nonconvex", "empirical_extrapolated",
                     "empirical_badfit", "too_few_points")


def fit_groups(targets: pd.DataFrame, points: pd.DataFrame, s: MinimaSettings, by_key: Sequence[Any] = (),
               tick: Callable[[int], Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit every target group at once; returns (minima, points with x, y, weight and used_in_fit).

    ``by_key`` (the ``by`` values of this part of the table) joins (horizon, bs) in each cell's identity, from which
    its bootstrap stream is derived; ``tick(n)`` is called as cells are done (for a progress bar).
    """
    G = len(targets)
    points = points.sort_values(["gid", "log2_lr"], kind="stable").reset_index(drop=True)
    xcol = "log2_lr" if s.fit_axis == "lr" else "log2_norm"
    if s.fit_axis == "output_norm":
        points = points[np.isfinite(points["log2_norm"].to_numpy())].reset_index(drop=True)
    arr, M, gid, pos = _pad(points, G, ["log2_lr", "log2_norm", "loss", "std"])
    X, Y, S, L, N = arr[xcol], arr["loss"], arr["std"], arr["log2_lr"], arr["log2_norm"]
    n = M.sum(axis=1)
    rows = np.arange(G)
    i_emp = np.argmin(np.where(M, Y, np.inf), axis=1)
    F = _select_fit_points(X, Y, M, i_emp, s)
    W, weighted = _weights(S, F, s.weighted)
    status = targets["status"].to_numpy(object)
    skip = targets["skip_fit"].fillna(False).to_numpy(bool)
    can_fit = (status == "ok") & (n >= 3) & ~skip
    a, b, c, ok = fit_parabolas(X, Y, W, F & can_fit[:, None], s.c_fixed)
    ok &= can_fit
    convex = ok & (a > 0)
    x0, y0 = _vertex(a, b, c, convex)
    # a vertex outside the fitted points' x range is an extrapolation, never reported as the optimum
    fxmin = np.min(np.where(F, X, np.inf), axis=1)
    fxmax = np.max(np.where(F, X, -np.inf), axis=1)
    with np.errstate(invalid="ignore"):
        extrap = convex & ((x0 < fxmin - 1e-9) | (x0 > fxmax + 1e-9))
    inside = convex & ~extrap
    # a vertex loss below every observed point by more than a parabola through the points can dip between two
    # neighbouring fitted points (a gap^2 / 4) plus 3 times the points' pooled std, or by more than the points' spread
    # (max - min), is a failed fit (an outlier or a cliff dragged the parabola), not an optimum
    y_lo = np.min(np.where(M, Y, np.inf), axis=1)
    y_spread = np.where(n > 0, np.max(np.where(M, Y, -np.inf), axis=1) - y_lo, np.nan)
    with np.errstate(invalid="ignore"):
        left = np.max(np.where(F & (X <= x0[:, None]), X, -np.inf), axis=1)
        right = np.min(np.where(F & (X >= x0[:, None]), X, np.inf), axis=1)
        dip = np.where(inside, a * (right - left) ** 2 / 4, np.nan)
    good_s = F & np.isfinite(S) & (S > 0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # pooled std (a median of 2-seed stds is far too noisy), and the fit's own residual scatter where it has
        # at least 3 degrees of freedom (with fewer, scatter and misfit cannot be told apart): all there is to go on
        # when a point's std is unknown (one seed)
        noise = np.sqrt(np.where(good_s, S**2, 0.0).sum(axis=1) / np.maximum(good_s.sum(axis=1), 1))
        resid = np.where(F, Y - (a[:, None] * X**2 + b[:, None] * X + c[:, None]), 0.0)
        dof = F.sum(axis=1) - 3
        scatter = np.sqrt((resid**2).sum(axis=1) / np.maximum(dof, 1))
        noise = np.where(dof >= 3, np.fmax(noise, scatter), noise)
    allowed = np.minimum(y_spread, dip + 3 * noise)
    with np.errstate(invalid="ignore"):
        badfit = inside & (y0 < y_lo - allowed - 1e-9 * np.maximum(1.0, np.abs(y_lo)))
    fitted = inside & ~badfit

    method = np.where(status != "ok", status, "fit").astype(object)
    method[(status == "ok") & (n < 3)] = "too_few_points"
    method[(status == "ok") & (n >= 3) & skip] = "empirical"
    method[can_fit & ~ok] = "empirical_fallback"
    method[ok & ~convex] = "empirical_nonconvex"
    method[extrap] = "empirical_extrapolated"
    method[badfit] = "empirical_badfit"
    if s.optimum_from_closest:
        method[fitted] = "fit_closest"
    empirical = np.isin(method, EMPIRICAL_METHODS) & (n > 0)

    # x range of each group's grid (all its points)
    xmin = np.nanmin(np.where(M, X, np.inf), axis=1)
    xmax = np.nanmax(np.where(M, X, -np.inf), axis=1)
    # log2 lr as a function of x (identity on the lr axis; a linear fit of log2 lr on log2 norm over the fit points)
    if s.fit_axis == "lr":
        slope, icept = np.ones(G), np.zeros(G)
    else:
        Wf = np.where(F, 1.0, 0.0)
        sw = np.maximum(Wf.sum(axis=1), 1e-300)
        mx = (Wf * np.nan_to_num(X)).sum(axis=1) / sw
        my = (Wf * np.nan_to_num(L)).sum(axis=1) / sw
        sxx = (Wf * (np.nan_to_num(X) - mx[:, None]) ** 2).sum(axis=1)
        sxy = (Wf * (np.nan_to_num(X) - mx[:, None]) * (np.nan_to_num(L) - my[:, None])).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(sxx > 0, sxy / sxx, np.nan)
        icept = my - slope * mx

    x_opt = np.where(fitted, x0, np.nan)
    loss_opt = np.where(fitted, y0, np.nan)
    log2_lr = icept + slope * x_opt
    norm_at = np.full(G, "", dtype=object)
    closest = np.full(G, -1)
    if s.optimum_from_closest and fitted.any():  # the fitted point nearest to the vertex in (x, loss), as the
        d = np.where(F, (X - x0[:, None]) ** 2 + (Y - y0[:, None]) ** 2, np.inf)  # norm-transfer reference picks it
        closest[fitted] = np.argmin(d, axis=1)[fitted]
    closest[empirical] = i_emp[empirical]
    use_point = closest >= 0
    cj = np.maximum(closest, 0)
    log2_lr, loss_opt, x_opt, log2_norm_opt = (np.where(use_point, A[rows, cj], v) for A, v in
                                               ((L, log2_lr), (Y, loss_opt), (X, x_opt), (N, np.nan)))
    norm_at[use_point] = "closest_point"
    if s.fit_axis == "output_norm":
        vertex = fitted & ~use_point
        log2_norm_opt[vertex] = x0[vertex]
        norm_at[vertex] = "vertex"
    else:
        for g in np.flatnonzero(fitted & ~use_point):
            good = M[g] & np.isfinite(N[g])
            if good.sum() >= 2:
                log2_norm_opt[g] = np.interp(x0[g], X[g, good], N[g, good])
                norm_at[g] = "vertex_interp"
    has_min = (fitted | empirical) & (method != "too_few_points")
    with np.errstate(invalid="ignore"):
        on_edge = has_min & ((x_opt <= xmin + 1e-9) | (x_opt >= xmax - 1e-9))

    ci_lo, ci_hi = np.full(G, np.nan), np.full(G, np.nan)
    n_boot_ok = np.zeros(G, int)
    ci_used = np.full(G, "", dtype=object)
    ci_widened, no_ci = np.zeros(G, bool), np.zeros(G, bool)
    groups = np.flatnonzero(fitted)
    B = int(s.bootstrap.n)
    if B > 0 and len(groups):
        keys = [(int(h), _as_int(bs), *by_key) for h, bs in zip(targets["horizon"], targets["bs"])]
        vx, vy = _bootstrap_vertex(X, Y, W, F, a, b, c, groups, keys, s, tick)
        if s.optimum_from_closest:  # the whole procedure per replicate: its vertex, then the fitted point nearest to it
            d = ((X[groups][:, None, :] - vx[:, :, None]) ** 2 + (Y[groups][:, None, :] - vy[:, :, None]) ** 2)
            jb = np.argmin(np.where(F[groups][:, None, :], np.nan_to_num(d, nan=np.inf), np.inf), axis=2)
            lv = np.where(np.isfinite(vx), np.take_along_axis(L[groups], jb, axis=1), np.nan)
            how = "percentile"  # a grid-valued statistic: its CI is a range of grid lrs
        else:
            lv = icept[groups, None] + slope[groups, None] * vx
            how = str(s.bootstrap.ci_method)
        good = np.isfinite(lv)
        n_boot_ok[groups] = good.sum(axis=1)
        enough = good.sum(axis=1) >= max(2, B // 2)
        tail = (1 - s.bootstrap.level) / 2 * 100
        q_lo, q_hi = row_percentiles(lv, [tail, 100 - tail])
        est = log2_lr[groups]
        used = np.full(len(groups), how, dtype=object)
        lo, hi = (2 * est - q_hi, 2 * est - q_lo) if how == "basic" else (q_lo.copy(), q_hi.copy())
        if how == "bca":
            for i, g in enumerate(groups):
                if not enough[i]:
                    continue
                f = F[g]
                b_lo, b_hi = bca_interval(X[g, f], Y[g, f], W[g, f], cell_rng(s.bootstrap.seed, keys[g]), s,
                                          float(slope[g]), float(icept[g]))
                if math.isfinite(b_lo) and math.isfinite(b_hi):
                    lo[i], hi[i] = b_lo, b_hi
                else:
                    used[i] = "percentile"  # BCa does not apply (non-convex replicates or jackknife fits)
        with np.errstate(invalid="ignore"):
            widened = enough & ((est < lo) | (est > hi))
        lo, hi = np.minimum(lo, est), np.maximum(hi, est)
        ci_lo[groups] = np.where(enough, np.exp2(lo), np.nan)
        ci_hi[groups] = np.where(enough, np.exp2(hi), np.nan)
        ci_used[groups] = np.where(enough, used, "")
        ci_widened[groups] = widened
        no_ci[groups] = ~enough
    if tick is not None:
        tick(G - (len(groups) if B > 0 else 0))

    reason = targets["reason"].to_numpy(object).copy()
    axis = "lr" if s.fit_axis == "lr" else "output norm"
    for g in range(G):
        m = method[g]
        if m == "too_few_points":
            reason[g] = f"{n[g]} point(s) after filters; a fit needs 3"
        elif m == "empirical_fallback":
            reason[g] = "fewer distinct x values than parabola parameters"
        elif m == "empirical_nonconvex":
            reason[g] = f"fitted a = {a[g]:.3g} <= 0"
        elif m == "empirical_extrapolated":
            reason[g] = (f"fitted vertex at log2 {axis} {x0[g]:.3g} lies outside the fitted points' range "
                         f"[{fxmin[g]:.3g}, {fxmax[g]:.3g}] (an extrapolation): empirical minimum used")
        elif m == "empirical_badfit":
            reason[g] = (f"fitted vertex loss {y0[g]:.4g} is {y_lo[g] - y0[g]:.3g} below the lowest point {y_lo[g]:.4g}, "
                         f"more than the parabola dips between the fitted points plus 3 pooled std, or the points' spread "
                         f"({allowed[g]:.3g})")
        elif no_ci[g]:
            reason[g] = f"bootstrap: {n_boot_ok[g]} of {B} replicates gave a convex fit; no CI"
    out = targets[["horizon", "bs"]].copy()
    for col in s.by:
        out[col] = np.nan
    out = out.assign(  # in this column order
        lr=np.exp2(log2_lr), loss=loss_opt, on_edge=on_edge, lr_ci_low=ci_lo, lr_ci_high=ci_hi, n_points=n,
        n_fit=np.where(ok, F.sum(axis=1), 0), method=method, log2_lr=log2_lr,
        log2_horizon=targets["log2_horizon"].to_numpy(float), horizon_used=targets["horizon_used"].to_numpy(float),
        snapped=targets["snapped"].to_numpy(bool), averaged=targets["averaged"].to_numpy(bool), fit_axis=s.fit_axis,
        x_opt=x_opt, x_vertex=x0, loss_vertex=y0, a=np.where(ok, a, np.nan), b=np.where(ok, b, np.nan),
        c=np.where(ok, c, np.nan), weighted=weighted & ok, n_boot_ok=n_boot_ok, ci_method=ci_used,
        ci_widened=ci_widened, output_norm=np.exp2(log2_norm_opt), output_norm_at=norm_at, reason=reason)
    pts = points.copy()
    pts["x"] = X[gid, pos]
    pts["weight"] = W[gid, pos]
    pts["used_in_fit"] = F[gid, pos] & ok[gid]
    pts = pts.merge(targets[["gid", "horizon", "bs"]], on="gid", how="left")
    return out, pts


# ----------------------------------------------------------------------------------------------- entry points


@dataclass
class MinimaResult:
    """The minima table, the points behind it (for plots) and the warnings raised on the way."""

    minima: pd.DataFrame
    points: pd.DataFrame
    warnings: list[str]
    settings: MinimaSettings


def compute_minima(table: pd.DataFrame, settings: Mapping[str, Any] | MinimaSettings | None,
                   warn: Callable[[str], None] | None = None, progress: bool = False) -> MinimaResult:
    """Minima and their points for every (horizon, bs[, by]) of ``table`` (see the module docstring).

    ``progress``: a tqdm bar over the cells while they are fitted and bootstrapped (total: the number of cells).
    """
    s = as_settings(MinimaSettings, settings)
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        if warn is not None:
            warn(msg)

    if "horizon" in table.columns:  # step 0 (before any token, W&B's usual first row) has no optimum: left out
        at_zero = (pd.to_numeric(table["horizon"], errors="coerce") == 0).to_numpy()
        if at_zero.any():
            table = table[~at_zero]
    work = _prepare(table, s)
    if not len(work):
        raise UserError(f"{NAME}: the table is empty; expected rows with {', '.join(REQUIRED_COLUMNS)}")
    mixed = [c for c in MIXED_COLUMNS if c in table.columns and c not in s.by and c != "lr"
             and table[c].nunique(dropna=True) > 1 and not (c == "lr_hidden" and _same(table, "lr", "lr_hidden"))]
    if mixed:
        _warn(f"column(s) {', '.join(mixed)} take several values but minima are over lr only: points with the same "
              f"(horizon, bs, lr) are averaged across them; set by: [{', '.join(mixed)}] to split them")
    if s.by:
        splits = [(key if isinstance(key, tuple) else (key,), _targets_of(table.loc[sub.index], sub, s, _warn))
                  for key, sub in work.groupby(list(s.by), sort=True, dropna=False)]
    else:
        splits = [((), _targets_of(table, work, s, _warn))]
    total = sum(len(stage[1]) for _, stage in splits)
    parts = []
    with progress_bar(total, f"{NAME}: fit + bootstrap", enabled=progress, unit="cell") as bar:
        for key, (sub, targets, keys, gids, codes) in splits:
            pts = window_average(sub, keys, gids, s, codes)
            res = fit_groups(targets, pts, s, key, bar.update)
            for col, val in zip(s.by, key):
                res[0][col] = val
                res[1][col] = val
            parts.append(res)
    minima = pd.concat([p[0] for p in parts], ignore_index=True)
    points = pd.concat([p[1] for p in parts], ignore_index=True)
    n_nonconvex = int((minima["method"] == "empirical_nonconvex").sum())
    if n_nonconvex:
        _warn(f"{n_nonconvex} fit(s) are not convex (a <= 0): empirical minimum used, method empirical_nonconvex")
    for sel, what, then in (  # "<n> <what>, e.g. <the first 5 cells>: <then>"
            (minima["method"] == "empirical_extrapolated", "fit(s) put the vertex outside the fitted points' range",
             "empirical minimum used, method empirical_extrapolated (extend the lr grid there; see reason)"),
            (minima["ci_widened"].astype(bool), "bootstrap CI(s) did not contain their own estimate and were widened "
             "to it (column ci_widened)", "the replicates are skewed, the estimate is unstable there"),
            (minima["method"] == "empirical_badfit", "fit(s) put the vertex loss below every point by more than the "
             "points' spread", "empirical minimum used, method empirical_badfit (an outlier or a diverged run? "
             "see reason)"),
            (minima["on_edge"], "minimum(s) on the edge of the lr grid", "extend the sweep there")):
        hit = minima[sel]
        if len(hit):
            where = ", ".join(f"({format_horizon(h)}, bs {b:g})" for h, b in list(zip(hit["horizon"], hit["bs"]))[:5])
            _warn(f"{len(hit)} {what}, e.g. {where}: {then}")
    bad = minima[minima["method"].isin(FAILED_METHODS)]
    if len(bad):
        _warn(f"{len(bad)} (horizon, bs) group(s) without a minimum: "
              + "; ".join(f"({format_horizon(h)}, bs {b:g}): {m}" for h, b, m in list(zip(bad["horizon"], bad["bs"], bad["method"]))[:5]))
    return MinimaResult(minima.reset_index(drop=True), points, warnings, s)


def _same(table: pd.DataFrame, a: str, b: str) -> bool:
    x, y = pd.to_numeric(table[a], errors="coerce"), pd.to_numeric(table[b], errors="coerce")
    return bool(np.allclose(x.fillna(-1), y.fillna(-1)))


def _targets_of(table: pd.DataFrame, work: pd.DataFrame, s: MinimaSettings, warn: Callable[[str], None]) -> tuple:
    """(work, targets, edge keys, edge gids, pair codes) of one ``by`` part of the table."""
    codes = pair_codes(work)
    return (work, *resolve_targets(table, work, s, warn, codes), codes)


def find_minima(table: pd.DataFrame, settings: Mapping[str, Any] | MinimaSettings | None = None,
                warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The minima table: one row per (horizon, bs) with lr, loss, on_edge, lr CI, n_points, method, a, b, c, ..."""
    return compute_minima(table, settings, warn).minima


def summarize(minima: pd.DataFrame, s: MinimaSettings) -> dict[str, Any]:
    """Counts for summary.json: groups, fitted, on edge, degenerate, per method."""
    method = minima["method"].astype(str)
    return {
        "n_groups": int(len(minima)),
        "n_fitted": int(method.isin(["fit", "fit_closest"]).sum()),
        "n_empirical": int(method.str.startswith("empirical").sum()),
        "n_badfit": int((method == "empirical_badfit").sum()),
        "n_extrapolated": int((method == "empirical_extrapolated").sum()),
        "n_on_edge": int(minima["on_edge"].sum()),
        "n_degenerate": int(method.isin(FAILED_METHODS).sum()),
        "methods": {k: int(v) for k, v in method.value_counts().sort_index().items()},
        "horizons": sorted(int(h) for h in minima["horizon"].unique()),
        "batch_sizes": sorted(_as_int(b) for b in minima["bs"].unique()),
        "output_norm_at": "vertex (fit_axis output_norm)" if s.fit_axis == "output_norm" else
                          "log2 norm interpolated linearly in log2 lr at the vertex; the closest point for empirical minima",
        "ci_method": ("percentile (of the closest grid lr per replicate)" if s.optimum_from_closest else
                      str(s.bootstrap.ci_method)) if s.bootstrap.n > 0 else "none",
        "n_with_ci": int(np.isfinite(minima["lr_ci_low"].to_numpy(float)).sum()),
        "n_ci_widened": int(minima["ci_widened"].astype(bool).sum()) if "ci_widened" in minima else 0,
        "median_ci_width_log2": _median_width(minima),
    }


def _median_width(minima: pd.DataFrame) -> float | None:
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.log2(minima["lr_ci_high"].to_numpy(float)) - np.log2(minima["lr_ci_low"].to_numpy(float))
    w = w[np.isfinite(w)]
    return float(np.median(w)) if len(w) else None


def run(table: pd.DataFrame, params: Mapping[str, Any] | None, out: Any) -> dict[str, Any]:
    """Find the minima, write minima.csv, points.csv and the figures; return the summary."""
    s = as_settings(MinimaSettings, params)
    result = compute_minima(table, s, out.warn, progress=bool(getattr(out, "progress", False)))
    minima = result.minima
    out.table("minima", minima)
    out.table("points", result.points)
    if s.plots:
        from analyses import minima_plots

        label = bs_label(table, s)
        level = f"{100 * s.bootstrap.level:g}% CI" if s.bootstrap.n > 0 else "no CI (bootstrap.n 0)"
        out.figure("minima_vs_horizon", minima_plots.plot_minima_vs_horizon(minima, label),
                   caption=f"optimal learning rate vs tokens, one line per {label} ({level} bars; hollow: on the lr grid's edge)")
        out.figure("minima_vs_horizon_interactive", minima_plots.plotly_minima_vs_horizon(minima, label),
                   caption=f"interactive: optimal learning rate vs tokens per {label}; hover for lr*, CI, method, n_points")
        panels = minima_plots.parabola_panels(minima, s.by)
        if len(panels) > s.max_panels:
            out.warn(f"parabolas.png shows the first {s.max_panels} of {len(panels)} panels (max_panels); "
                     f"parabolas_interactive.html has them all")
        out.figure("parabolas", minima_plots.plot_parabola_grid(minima, result.points, max_panels=s.max_panels,
                                                                by=s.by, label=label),
                   caption=f"loss vs log2 {'output norm' if s.fit_axis == 'output_norm' else 'lr'} per horizon, one colour "
                           f"per {label}: points, fitted parabolas, star at the reported optimum")
        out.figure("parabolas_interactive", minima_plots.plotly_parabolas(minima, result.points, by=s.by, label=label),
                   caption=f"interactive: the fitted parabolas of one horizon at a time (menu), one colour per {label}")
    return {"settings": s.to_dict(), **summarize(minima, s)}


def bs_label(table: pd.DataFrame, s: MinimaSettings) -> str:
    """What the ``bs`` column holds, for axis labels: ``bs_label``, else the table's ``attrs['bs_label']``, else batch size."""
    if s.bs_label:
        return str(s.bs_label)
    attrs = getattr(table, "attrs", {}) or {}
    return str(attrs.get("bs_label") or "batch size")


class Minima(AnalysisBase):
    """The minima analysis (``_target_: analyses.minima.Minima``)."""

    name = NAME
    settings_type = MinimaSettings
    REQUIRED_COLUMNS = REQUIRED_COLUMNS
    report_tables = staticmethod(render_minima)

    def required_columns(self, settings: MinimaSettings) -> tuple[str, ...]:
        """lr, bs, horizon, train_loss, the ``by`` columns, and output_norm when the parabola is in it."""
        extra = ("output_norm",) if settings.fit_axis == "output_norm" else ()
        return (*REQUIRED_COLUMNS, *settings.by, *extra)

    def carried_columns(self, settings: MinimaSettings) -> tuple[str, ...]:
        """The ``by`` columns."""
        return tuple(settings.by)

    def run(self, table: pd.DataFrame, settings: MinimaSettings, out: Any) -> dict[str, Any]:
        """See the module-level ``run``."""
        return run(table, settings, out)
