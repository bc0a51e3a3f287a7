"""Approach 1: the envelope. The Pareto frontier of loss against compute (the lowest loss seen at or below each C,
as Hoffmann et al. define the envelope), then N* ~ C^a and D* ~ C^b through its points, with bootstrap CIs."""
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


MIN_BUDGETS = 3  # budgets that trade N against D that approach 1 needs


def budgets(c: np.ndarray, bins: int = 30) -> np.ndarray:
    """Each row's compute budget: its C when there are at most ``bins`` distinct C, else the centre of its bin of log C."""
    c = np.asarray(c, float)
    if not len(c) or len(np.unique(c)) <= bins:
        return c.copy()
    edges = np.linspace(np.log(c.min()), np.log(c.max()), bins + 1)
    index = np.clip(np.searchsorted(edges, np.log(c), side="right") - 1, 0, bins - 1)
    return np.exp((edges[index] + edges[index + 1]) / 2)


def distinct(x: np.ndarray) -> int:
    """How many distinct positive values (equal to 1e-9 relative)."""
    x = np.asarray(x, float)
    return int(len(np.unique(np.round(np.log(x), 9)))) if len(x) else 0


def _trades(log_n: np.ndarray, log_d: np.ndarray) -> bool:
    """Whether some model of a budget has a larger N and a smaller D than another (the budget's compute is split
    differently, so its min-loss point is a minimum over N; with one N, a constant D or D growing with N it is not)."""
    frame = pd.DataFrame({"n": log_n, "d": log_d}).groupby("n")["d"].agg(["min", "max"]).sort_index()
    if len(frame) < 2:
        return False
    earlier_max = frame["max"].cummax().shift(1).to_numpy()
    return bool(np.any(frame["min"].to_numpy()[1:] < earlier_max[1:]))


def identifiability(n: np.ndarray, d: np.ndarray, c: np.ndarray, bins: int = 30) -> str | None:
    """None when the envelope can identify N* ~ C^a: >= 3 budgets that each hold >= 2 distinct N splitting the
    budget differently (a larger N with a smaller D); else what is missing, with the counts.

    A budget whose models do not trade N against D has the largest model as its "optimum" whatever the losses: with
    one N in the table the fit returns a = 0, b = 1, with a constant D a = 1; through two budgets any line passes."""
    log_n, log_d = np.round(np.log(np.asarray(n, float)), 9), np.round(np.log(np.asarray(d, float)), 9)
    frame = pd.DataFrame({"budget": budgets(c, bins), "n": log_n, "d": log_d})
    sizes = frame.groupby("budget")["n"].nunique()
    trading = sum(_trades(g["n"].to_numpy(), g["d"].to_numpy()) for _, g in frame.groupby("budget"))
    if trading >= MIN_BUDGETS:
        return None
    kind = "distinct C" if len(np.unique(np.asarray(c, float))) <= bins else f"bins of log C, approach1.bins={bins}"
    return (f"{len(sizes)} compute budget(s) ({kind}): {int((sizes >= 2).sum())} with >= 2 distinct N, {trading} "
            f"of them trading N against D (a larger N with a smaller D); the table has {distinct(n)} distinct N and "
            f"{distinct(d)} distinct D; approach 1 needs >= {MIN_BUDGETS} such budgets")


def frontier(c: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Indices of the Pareto frontier of loss against compute, cheapest first: the points whose loss is lower than
    every point's at a smaller or equal C (of points tied on C, only the lowest loss can be on it)."""
    c, loss = np.asarray(c, float), np.asarray(loss, float)
    if not len(c):
        return np.empty(0, int)
    order = np.lexsort((loss, c))
    ordered = loss[order]
    best_before = np.r_[np.inf, np.minimum.accumulate(ordered)[:-1]]
    return order[ordered < best_before]


def envelope(n: np.ndarray, d: np.ndarray, c: np.ndarray, loss: np.ndarray) -> pd.DataFrame:
    """The envelope's points (the Pareto frontier of loss against C), cheapest first: budget (= C), C, N, D, loss."""
    frame = pd.DataFrame({"N": np.asarray(n, float), "D": np.asarray(d, float), "C": np.asarray(c, float),
                          "loss": np.asarray(loss, float)})
    keep = frontier(frame["C"].to_numpy(), frame["loss"].to_numpy())
    best = frame.iloc[keep].reset_index(drop=True)
    best.insert(0, "budget", best["C"])
    return best[["budget", "C", "N", "D", "loss"]]


def fit_envelope(n: np.ndarray, d: np.ndarray, c: np.ndarray, loss: np.ndarray) -> tuple[PowerLaw, PowerLaw, pd.DataFrame]:
    """Power laws N* ~ C^a and D* ~ C^b through the envelope points (x: each point's own C)."""
    env = envelope(n, d, c, loss)
    return fit_power_law(env["C"], env["N"]), fit_power_law(env["C"], env["D"]), env


def _slope(log_x: np.ndarray, log_y: np.ndarray) -> float:
    """Least-squares slope of log y on log x (NaN without spread)."""
    if len(log_x) < 2 or np.ptp(log_x) == 0:
        return float("nan")
    dx = log_x - log_x.mean()
    return float(dx @ (log_y - log_y.mean()) / (dx @ dx))


def bootstrap_envelope(n: np.ndarray, d: np.ndarray, c: np.ndarray, loss: np.ndarray, n_boot: int,
                       rng: np.random.Generator, tick=None) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the envelope fit on ``n_boot`` tables of the points resampled with replacement (``tick``: called
    after each replicate, for a progress bar)."""
    log_n, log_d, log_c = (np.log(np.asarray(x, float)) for x in (n, d, c))
    loss = np.asarray(loss, float)
    m = len(loss)
    a_s, b_s = np.full(n_boot, np.nan), np.full(n_boot, np.nan)
    for i in range(n_boot):
        pick = rng.integers(0, m, m)
        keep = pick[frontier(log_c[pick], loss[pick])]
        a_s[i], b_s[i] = _slope(log_c[keep], log_n[keep]), _slope(log_c[keep], log_d[keep])
        if tick is not None:
            tick()
    return a_s, b_s


def jackknife_envelope(n: np.ndarray, d: np.ndarray, c: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out (a, b) over the envelope's own points (leaving out a point off the envelope changes nothing)."""
    log_n, log_d, log_c = (np.log(np.asarray(x, float)) for x in (n, d, c))
    loss = np.asarray(loss, float)
    a_j, b_j = [], []
    for i in frontier(log_c, loss):
        idx = np.delete(np.arange(len(loss)), i)
        keep = idx[frontier(log_c[idx], loss[idx])]
        a_j.append(_slope(log_c[keep], log_n[keep]))
        b_j.append(_slope(log_c[keep], log_d[keep]))
    return np.array(a_j), np.array(b_j)
