"""Bootstrap confidence intervals (percentile, basic, BCa) and per-cell random streams for the scaling-law fits."""
from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

CI_METHODS = ("percentile", "basic", "bca")


def stream(seed: int, *identity: object) -> np.random.Generator:
    """A random stream derived from ``seed`` and an identity (group label, budget, ...) through numpy's SeedSequence:
    the same identity gets the same draws whatever else is fitted beside it."""
    key = tuple(zlib.crc32(repr(_canonical(part)).encode()) for part in identity)
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=key))


def _canonical(part: object) -> object:
    """Floats by their 12 significant digits (a budget read back from CSV is the same budget)."""
    if isinstance(part, (float, np.floating)):
        return float(f"{float(part):.12g}")
    if isinstance(part, (np.integer,)):
        return int(part)
    return part


def acceleration(jackknife: Sequence[float] | np.ndarray) -> float:
    """BCa's acceleration from leave-one-out estimates (Efron 1987): sum(d^3) / (6 sum(d^2)^1.5), d = mean - theta_i."""
    jk = np.asarray(jackknife, float)
    jk = jk[np.isfinite(jk)]
    if len(jk) < 3:
        return float("nan")
    d = jk.mean() - jk
    den = 6.0 * np.sum(d * d) ** 1.5
    return float(np.sum(d**3) / den) if den > 0 else 0.0


def bootstrap_ci(samples: np.ndarray, estimate: float, method: str = "percentile", level: float = 0.95,
                 jackknife: Sequence[float] | np.ndarray | None = None) -> list[float]:
    """[low, high] from bootstrap replicates of a statistic whose point estimate is ``estimate``.

    percentile: the replicates' quantiles; basic: 2 estimate - the upper and lower quantiles (the bootstrap's
    estimate of the estimator's error, reflected); bca: percentile with the quantiles moved by the bias correction
    z0 (share of replicates below the estimate) and the acceleration from ``jackknife`` (leave-one-out estimates;
    none: 0, i.e. bias-corrected percentile). NaNs when there are no finite replicates."""
    x = np.asarray(samples, float)
    x = x[np.isfinite(x)]
    if not len(x) or not np.isfinite(estimate) and method != "percentile":
        return [float("nan"), float("nan")]
    tail = (1 - level) / 2
    if method in ("percentile", "basic"):
        lo, hi = np.quantile(x, [tail, 1 - tail])
        if method == "basic":
            lo, hi = 2 * estimate - hi, 2 * estimate - lo
        return [float(lo), float(hi)]
    if method == "bca":
        from scipy.stats import norm

        share = (np.sum(x < estimate) + 0.5 * np.sum(x == estimate)) / len(x)
        share = min(max(share, 0.5 / len(x)), 1 - 0.5 / len(x))
        z0 = float(norm.ppf(share))
        acc = 0.0 if jackknife is None else acceleration(jackknife)
        acc = 0.0 if not np.isfinite(acc) else acc
        z = norm.ppf(np.array([tail, 1 - tail]))
        adj = norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))
        lo, hi = np.quantile(x, np.clip(adj, 0, 1))
        return [float(lo), float(hi)]
    raise ValueError(f"unknown ci method '{method}' (expected one of {', '.join(CI_METHODS)})")
