"""Norm-transfer tables: output norm at the optimum, top-1 run vs the equal-lr baseline, norm vs horizon."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from toolkit.errors import UserError

LAYER_LRS = ("lr_in", "lr_hidden", "lr_out")


def optimum_norm_spread(minima: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Output norm at each (horizon, bs) optimum and its spread in log2 (overall and per horizon)."""
    if "output_norm" not in minima.columns:
        return pd.DataFrame(), {}
    rows = minima.dropna(subset=["output_norm"])
    rows = rows[rows["output_norm"] > 0][["horizon", "bs", "lr", "output_norm"]].copy()
    rows["log2_output_norm"] = np.log2(rows["output_norm"].to_numpy(float))
    log_norm = rows["log2_output_norm"].to_numpy(float)
    spread = {
        "log2_mean": float(np.mean(log_norm)) if len(rows) else float("nan"),
        "log2_std": float(np.std(log_norm, ddof=1)) if len(rows) > 1 else float("nan"),
        "log2_range": float(np.ptp(log_norm)) if len(rows) else float("nan"),
        "n": int(len(rows)),
    }
    per_h = rows.groupby("horizon")["log2_output_norm"].agg(["mean", "std", "count"]).reset_index()
    spread["per_horizon_log2_std_max"] = float(per_h["std"].max()) if len(per_h) else float("nan")
    return rows.reset_index(drop=True), spread


def _at_horizons(table: pd.DataFrame, horizons: Sequence[float]) -> pd.DataFrame:
    available = np.sort(table["horizon"].dropna().unique())
    if not len(available):
        raise UserError("no horizons in the table")
    picked = {float(h): float(available[np.argmin(np.abs(np.log2(available) - np.log2(float(h))))]) for h in horizons}
    return table[table["horizon"].isin(list(picked.values()))]


def top1_vs_baseline(table: pd.DataFrame, horizons: Sequence[float], bs: float | None = None) -> pd.DataFrame:
    """Per horizon, the best configuration at a fixed batch size against the best equal-lr configuration."""
    frame = table.dropna(subset=["train_loss"])
    if bs is None:
        bs = float(frame["bs"].mode().iloc[0])
    frame = frame[np.isclose(frame["bs"].to_numpy(float), float(bs))]
    if frame.empty:
        raise UserError(f"top-1: no run has bs={bs:g}; batch sizes: {sorted(table['bs'].unique().tolist())}")
    frame = _at_horizons(frame, horizons)
    keys = ["lr", *[c for c in LAYER_LRS if c in frame.columns and frame[c].notna().any()]]
    means = frame.groupby(["horizon", *keys], dropna=False)["train_loss"].mean().reset_index()
    layered = [c for c in LAYER_LRS if c in means.columns]
    if layered:
        vals = means[layered].to_numpy(float)
        equal = np.isclose(vals, vals[:, :1]).all(axis=1) | np.isnan(vals).all(axis=1)
    else:
        equal = np.ones(len(means), dtype=bool)
    means["equal_lr"] = equal
    rows = []
    for h, g in means.groupby("horizon"):
        best = g.loc[g["train_loss"].idxmin()]
        base = g[g["equal_lr"]]
        row = {"horizon": h, "bs": bs, "best_loss": best["train_loss"], **{f"best_{k}": best[k] for k in keys}}
        b = base.loc[base["train_loss"].idxmin()] if len(base) else {"train_loss": np.nan, "lr": np.nan}
        row.update({"baseline_loss": b["train_loss"], "baseline_lr": b["lr"]})
        rows.append(row)
    return pd.DataFrame(rows)


def norm_vs_horizon(table: pd.DataFrame, pairs: Sequence[Sequence[float]] | None = None, max_pairs: int = 6) -> pd.DataFrame:
    """Mean output norm per horizon for chosen (lr, bs) pairs (nearest grid values); default: the pairs nearest the median lr."""
    if "output_norm" not in table.columns or (frame := table.dropna(subset=["output_norm"])).empty:
        return pd.DataFrame(columns=["lr", "bs", "horizon", "output_norm"])
    grid = frame[["lr", "bs"]].drop_duplicates()
    if not pairs:
        median_lr = float(np.exp2(np.median(np.log2(grid["lr"].to_numpy(float)))))
        chosen = grid.assign(d=np.abs(np.log2(grid["lr"].to_numpy(float)) - np.log2(median_lr))).sort_values(["d", "bs"]).head(max_pairs)
        wanted = list(zip(chosen["lr"], chosen["bs"]))
    else:
        wanted = []
        for lr, bs in pairs:
            d = np.abs(np.log2(grid["lr"].to_numpy(float)) - np.log2(float(lr))) + 10 * np.abs(np.log2(grid["bs"].to_numpy(float)) - np.log2(float(bs)))
            nearest = grid.iloc[int(np.argmin(d))]
            wanted.append((nearest["lr"], nearest["bs"]))
    keys = pd.MultiIndex.from_tuples(wanted, names=["lr", "bs"])
    picked = frame.set_index(["lr", "bs"]).loc[lambda f: f.index.isin(keys)].reset_index()
    return picked.groupby(["lr", "bs", "horizon"], as_index=False)["output_norm"].mean()
