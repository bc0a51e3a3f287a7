"""Approach 1: the envelope. Minimum loss per compute budget over all (N, D), then N* ~ C^a and D* ~ C^b."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class PowerLaw:
    """log y = exponent log x + log coef, by (weighted) least squares."""

    exponent: float
    coef: float
    r2: float
    n: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Evaluate coef * x^exponent."""
        return self.coef * np.asarray(x, float) ** self.exponent


def fit_power_law(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> PowerLaw:
    """Fit y = coef x^exponent by least squares in log-log (weights on the log residuals)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    w = np.ones_like(lx) if weights is None else np.asarray(weights, float)
    ok = np.isfinite(lx) & np.isfinite(ly) & np.isfinite(w) & (w > 0)
    lx, ly, w = lx[ok], ly[ok], w[ok]
    if len(lx) < 2 or np.ptp(lx) == 0:
        return PowerLaw(float("nan"), float("nan"), float("nan"), int(len(lx)))
    mx, my = np.average(lx, weights=w), np.average(ly, weights=w)
    slope = float(np.sum(w * (lx - mx) * (ly - my)) / np.sum(w * (lx - mx) ** 2))
    intercept = my - slope * mx
    resid = ly - (intercept + slope * lx)
    tot = np.sum(w * (ly - my) ** 2)
    r2 = float(1 - np.sum(w * resid**2) / tot) if tot > 0 else float("nan")
    return PowerLaw(slope, float(np.exp(intercept)), r2, int(len(lx)))


def envelope(n: np.ndarray, d: np.ndarray, c: np.ndarray, loss: np.ndarray, bins: int = 30) -> pd.DataFrame:
    """The min-loss point per compute budget: per distinct C when there are at most ``bins`` of them, else per bin of log C."""
    frame = pd.DataFrame({"N": np.asarray(n, float), "D": np.asarray(d, float), "C": np.asarray(c, float),
                          "loss": np.asarray(loss, float)})
    if not len(frame):
        return frame.assign(budget=[])
    if frame["C"].nunique() <= bins:
        frame["budget"] = frame["C"]
    else:
        edges = np.linspace(np.log(frame["C"].min()), np.log(frame["C"].max()), bins + 1)
        index = np.clip(np.searchsorted(edges, np.log(frame["C"]), side="right") - 1, 0, bins - 1)
        frame["budget"] = np.exp((edges[index] + edges[index + 1]) / 2)
    best = frame.loc[frame.groupby("budget")["loss"].idxmin()].sort_values("budget").reset_index(drop=True)
    return best[["budget", "C", "N", "D", "loss"]]


def fit_envelope(n: np.ndarray, d: np.ndarray, c: np.ndarray, loss: np.ndarray, bins: int = 30) -> tuple[PowerLaw, PowerLaw, pd.DataFrame]:
    """Power laws N* ~ C^a and D* ~ C^b through the envelope points (x: each point's own C)."""
    env = envelope(n, d, c, loss, bins=bins)
    return fit_power_law(env["C"], env["N"]), fit_power_law(env["C"], env["D"]), env
