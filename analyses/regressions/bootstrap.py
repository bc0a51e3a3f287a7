"""Bootstrap over a sweep's runs: resample each configuration's runs (seeds), re-run minima, refit."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

CONFIG_KEYS = ("lr", "bs", "momentum", "decayed", "lr_in", "lr_hidden", "lr_out")


def resample_runs(table: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """One bootstrap replicate: within each configuration, draw its runs with replacement."""
    keys = [k for k in CONFIG_KEYS if k in table.columns]
    runs = table[[*keys, "run_id"]].drop_duplicates("run_id")
    codes = runs.groupby(keys, dropna=False).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    codes_sorted = codes[order]
    starts = np.flatnonzero(np.r_[True, codes_sorted[1:] != codes_sorted[:-1]])
    sizes = np.diff(np.r_[starts, len(codes_sorted)])
    draws = starts.repeat(sizes) + (rng.random(len(codes_sorted)) * sizes.repeat(sizes)).astype(int)
    picked = runs["run_id"].to_numpy()[order][draws]
    by_run = table.groupby("run_id", sort=False).indices
    pieces = [by_run[run_id] for run_id in picked]
    out = table.iloc[np.concatenate(pieces)].copy()
    out["run_id"] = np.concatenate([np.full(len(idx), f"b{i}", dtype=object) for i, idx in enumerate(pieces)])
    return out


def small_sample_inflation(runs_per_config: float) -> float:
    """sqrt(n / (n - 1)): resampling n runs with replacement understates the variance by (n - 1) / n."""
    return float(np.sqrt(runs_per_config / (runs_per_config - 1))) if runs_per_config > 1 else 1.0


def median_runs_per_configuration(table: pd.DataFrame) -> float:
    """The median number of runs per configuration (the n of the small-sample correction)."""
    keys = [k for k in CONFIG_KEYS if k in table.columns]
    return float(table[[*keys, "run_id"]].drop_duplicates().groupby(keys, dropna=False).size().median())


def runs_per_configuration(table: pd.DataFrame) -> int:
    """The largest number of runs any configuration has (1 means there is nothing to resample)."""
    if "run_id" not in table.columns:
        return 1
    keys = [k for k in CONFIG_KEYS if k in table.columns]
    return int(table[[*keys, "run_id"]].drop_duplicates().groupby(keys, dropna=False).size().max())


CI_METHODS = ("normal", "percentile", "basic")


def fit_stream(seed: int, *identity: Any) -> np.random.Generator:
    """A generator of its own for one fit: SeedSequence(seed, spawn_key = a stable hash of the fit's identity).

    The same seed and identity (e.g. ``("joint_optimum", horizon)``) always give the same stream, whatever other
    fits or horizons the run asks for; different identities give independent streams.
    """
    digest = hashlib.sha256(repr(tuple(str(v) for v in identity)).encode()).digest()
    key = tuple(int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4))
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def bootstrap_coefficients(table: pd.DataFrame, refit: Callable[[pd.DataFrame], dict[str, float]], n: int, seed: int,
                           identity: tuple = ("lr_vs_bs_horizon",), progress: bool = True, desc: str = "bootstrap") -> pd.DataFrame:
    """Coefficients of ``refit`` on ``n`` run-resampled replicates drawn from ``fit_stream(seed, *identity)`` (failed: NaN rows)."""
    from toolkit.progress import progress_bar

    rng = fit_stream(seed, *identity)
    rows = []
    with progress_bar(n, desc, enabled=progress, unit="replicate") as bar:
        for _ in range(n):
            try:
                rows.append(refit(resample_runs(table, rng)))
            except Exception:  # noqa: BLE001 - a replicate whose fit is degenerate counts as missing
                rows.append({})
            bar.update(1)
    return pd.DataFrame(rows)


def bootstrap_ci(estimate: float, samples: np.ndarray, method: str = "normal", level: float = 0.95,
                 inflation: float = 1.0) -> tuple[float, list[float]]:
    """(se, [low, high]) from bootstrap replicates: normal (estimate -/+ z se), percentile or basic; NaN replicates ignored.

    ``inflation`` widens the interval about the estimate (the small-sample factor sqrt(n/(n-1)) for n runs per
    configuration): se times it, and each percentile's distance from the estimate times it.
    """
    v = np.asarray(samples, float)
    v = v[np.isfinite(v)]
    if len(v) < 2 or not np.isfinite(estimate):
        return float("nan"), [float("nan"), float("nan")]
    se = float(np.std(v, ddof=1)) * inflation
    if method == "normal":
        return se, normal_ci(estimate, se, level)
    tail = (1 - level) / 2
    q_lo, q_hi = (float(q) for q in np.quantile(v, [tail, 1 - tail]))
    if method == "percentile":
        lo, hi = q_lo, q_hi
    elif method == "basic":
        lo, hi = 2 * estimate - q_hi, 2 * estimate - q_lo
    else:
        raise ValueError(f"unknown ci_method {method!r}; expected one of {', '.join(CI_METHODS)}")
    return se, [float(estimate + inflation * (lo - estimate)), float(estimate + inflation * (hi - estimate))]


def normal_ci(estimate: float, se: float, level: float = 0.95) -> list[float]:
    """estimate -/+ z * se (NaN when the bootstrap gave no spread)."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    return [float(estimate - z * se), float(estimate + z * se)]
