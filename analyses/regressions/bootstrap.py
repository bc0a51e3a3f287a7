"""Bootstrap over a sweep's runs: resample each configuration's runs (seeds), re-run minima, refit."""
from __future__ import annotations

from collections.abc import Callable

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
    pieces, new_ids = [], []
    for i, run_id in enumerate(picked):
        idx = by_run[run_id]
        pieces.append(idx)
        new_ids.append(np.full(len(idx), f"b{i}", dtype=object))
    out = table.iloc[np.concatenate(pieces)].copy()
    out["run_id"] = np.concatenate(new_ids)
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


def bootstrap_coefficients(table: pd.DataFrame, refit: Callable[[pd.DataFrame], dict[str, float]], n: int, seed: int,
                           progress: bool = True) -> pd.DataFrame:
    """Coefficients of ``refit`` on ``n`` run-resampled replicates (failed replicates are NaN rows)."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    rows = []
    for _ in tqdm(range(n), desc="bootstrap", disable=True if not progress else None, leave=False):
        try:
            rows.append(refit(resample_runs(table, rng)))
        except Exception:  # noqa: BLE001 - a replicate whose fit is degenerate counts as missing
            rows.append({})
    return pd.DataFrame(rows)


def normal_ci(estimate: float, se: float, level: float = 0.95) -> list[float]:
    """estimate -/+ z * se (NaN when the bootstrap gave no spread)."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    return [float(estimate - z * se), float(estimate + z * se)]
