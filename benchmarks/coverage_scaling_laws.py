"""Coverage of the scaling-law CIs: how often the 95% interval of the exponent a holds the planted one.

Tables are generated with a planted Chinchilla law L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28 (a = beta/(alpha+beta)
= 0.4516):

- approach 2: 15 model sizes (1e7..1e9) each with a loss curve of 60 checkpoints (D 1e8..1e11), Gaussian noise of
  SD ``--noise2`` on every loss (the bootstrap's own noise model, noise_std = the same SD), 12 automatic budgets;
- approach 3: 8 x 10 (N, D) grid points with log-normal noise ``--noise3``, a 108-start grid, resampling bootstrap;
- approach 1 (``--approaches 1``): Chinchilla's isoFLOP design, 20 budgets (1e18..1e22) x 15 sizes spread a decade
  either side of the planted N*(C), log-normal noise ``--noise3``; the envelope refitted on resampled points.

For each of ``--tables`` tables and each CI method (percentile, basic, bca) it prints the approach, the method, the
share of tables whose CI holds the planted a (coverage, nominal 0.95), the mean CI width, and the mean estimate.

    python benchmarks/coverage_scaling_laws.py --tables 60
    python benchmarks/coverage_scaling_laws.py --tables 50 --approaches 2 --boot 400
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from analyses.scaling_laws import approach2, approach3
from analyses.scaling_laws.intervals import CI_METHODS, bootstrap_ci, stream

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
A_TRUE = BETA / (ALPHA + BETA)
SMALL_GRID = {"a": [0.0, 10.0, 20.0], "b": [0.0, 10.0, 20.0], "e": [-1.0, 0.0, 1.0], "alpha": [0.5, 1.5], "beta": [0.5, 1.5]}


def law(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The planted L(N, D)."""
    return E + A / n**ALPHA + B / d**BETA


def isoflop_table(seed: int, noise: float, n_models: int = 15, n_tokens: int = 60) -> pd.DataFrame:
    """Loss curves of ``n_models`` sizes, Gaussian noise of SD ``noise`` on every checkpoint."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in np.geomspace(1e7, 1e9, n_models):
        d = np.geomspace(1e8, 1e11, n_tokens)
        rows.append(pd.DataFrame({"N": n, "D": d, "C": 6 * n * d, "loss": law(n, d) + noise * rng.standard_normal(d.size)}))
    return pd.concat(rows, ignore_index=True)


def grid_table(seed: int, noise: float, n_models: int = 8, n_tokens: int = 10) -> pd.DataFrame:
    """A grid of (N, D) points with log-normal noise ``noise``."""
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(1e7, 1e9, n_models), n_tokens)
    d = np.tile(np.geomspace(1e8, 1e11, n_tokens), n_models)
    return pd.DataFrame({"N": n, "D": d, "C": 6 * n * d, "loss": law(n, d) * np.exp(noise * rng.standard_normal(n.size))})


EDGE_SHARE = {"value": 0.02}  # approach2.max_edge_share used (the analysis's default unless --edge-share)


def isoflop_design(seed: int, noise: float, n_budgets: int = 20, sizes: int = 15) -> pd.DataFrame:
    """At each budget, sizes spread over a decade either side of the planted N*(C), log-normal noise."""
    rng = np.random.default_rng(seed)
    theta = np.array([np.log(A), np.log(B), np.log(E), ALPHA, BETA])
    rows = []
    for c in np.geomspace(1e18, 1e22, n_budgets):
        n = approach3.compute_optimal(theta, np.array([c]))[0][0] * np.geomspace(0.1, 10, sizes)
        d = c / (6 * n)
        rows.append(pd.DataFrame({"N": n, "D": d, "C": c, "loss": law(n, d) * np.exp(noise * rng.standard_normal(sizes))}))
    return pd.concat(rows, ignore_index=True)


def intervals_approach1(seed: int, noise: float, n_boot: int) -> tuple[float, dict[str, list[float]]]:
    """Approach 1's estimate of a and its CI by every method on one generated table."""
    from analyses.scaling_laws import approach1

    t = isoflop_design(seed, noise)
    n, d, c, loss = (t[k].to_numpy() for k in ("N", "D", "C", "loss"))
    est = approach1.fit_envelope(n, d, c, loss)[0].exponent
    a_s, _ = approach1.bootstrap_envelope(n, d, c, loss, n_boot, stream(seed, "approach1"))
    jk, _ = approach1.jackknife_envelope(n, d, c, loss)
    return est, {m: bootstrap_ci(a_s, est, m, 0.95, jk if m == "bca" else None) for m in CI_METHODS}


def intervals_approach2(seed: int, noise: float, n_boot: int) -> tuple[float, dict[str, list[float]]]:
    """Approach 2's estimate of a and its CI by every method on one generated table."""
    res = approach2.fit_isoflop(isoflop_table(seed, noise), n_boot=n_boot, noise_std=noise, seed=seed,
                                max_edge_share=EDGE_SHARE["value"])
    jk_a, _ = approach2.jackknife_exponents(res)
    est = res.fit_n.exponent
    return est, {m: bootstrap_ci(res.a_samples, est, m, 0.95, jk_a if m == "bca" else None) for m in CI_METHODS}


def intervals_approach3(seed: int, noise: float, n_boot: int) -> tuple[float, dict[str, list[float]]]:
    """Approach 3's estimate of a and its CI by every method on one generated table."""
    t = grid_table(seed, noise)
    n, d, loss = (t[c].to_numpy() for c in ("N", "D", "loss"))
    bounds = approach3.bounds_array({"alpha": [0, None], "beta": [0, None]})
    fit = approach3.fit_parametric(n, d, loss, grid=approach3.make_grid(SMALL_GRID), bounds=bounds, n_polish=2)
    samples = approach3.natural_samples(approach3.bootstrap_parametric(n, d, loss, fit, n_boot=n_boot, bounds=bounds,
                                                                       rng=stream(seed, "approach3")))
    jk = approach3.natural_samples(approach3.jackknife_parametric(n, d, loss, fit, bounds=bounds))
    est = fit.params["a"]
    return est, {m: bootstrap_ci(samples["a"], est, m, 0.95, jk["a"] if m == "bca" else None) for m in CI_METHODS}


def coverage(approach: int, tables: int, n_boot: int, noise: float, first_seed: int = 0) -> dict[str, dict[str, float]]:
    """Per CI method: coverage of the planted a, mean width, mean estimate over ``tables`` generated tables."""
    fn = {1: intervals_approach1, 2: intervals_approach2, 3: intervals_approach3}[approach]
    hits = {m: [] for m in CI_METHODS}
    widths = {m: [] for m in CI_METHODS}
    estimates = []
    for seed in range(first_seed, first_seed + tables):
        est, cis = fn(seed, noise, n_boot)
        estimates.append(est)
        for m, (lo, hi) in cis.items():
            hits[m].append(lo <= A_TRUE <= hi)
            widths[m].append(hi - lo)
    return {m: {"coverage": float(np.mean(hits[m])), "width": float(np.nanmean(widths[m])),
                "mean_a": float(np.mean(estimates))} for m in CI_METHODS}


def main(argv: list[str] | None = None) -> None:
    """Print approach, method, coverage, width for each approach asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=60)
    parser.add_argument("--boot", type=int, default=300)
    parser.add_argument("--approaches", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--noise2", type=float, default=0.005, help="approach 2: SD of the loss noise")
    parser.add_argument("--noise3", type=float, default=0.005, help="approach 3: log-normal SD of the loss noise")
    parser.add_argument("--edge-share", type=float, default=None,
                        help="approach 2: max_edge_share (default: the analysis's default)")
    ns = parser.parse_args(argv)
    from analyses.scaling_laws import Approach2Settings

    EDGE_SHARE["value"] = Approach2Settings().max_edge_share if ns.edge_share is None else ns.edge_share
    print(f"approach 2: max_edge_share = {EDGE_SHARE['value']}")
    print(f"planted a = {A_TRUE:.4f}; {ns.tables} tables, {ns.boot} bootstrap replicates each, nominal 0.95")
    print(f"{'approach':>8}  {'method':<10}  {'coverage':>8}  {'width':>8}  {'mean a':>8}  seconds")
    for k in ns.approaches:
        started = time.perf_counter()
        result = coverage(k, ns.tables, ns.boot, ns.noise2 if k == 2 else ns.noise3)
        took = time.perf_counter() - started
        for m, r in result.items():
            print(f"{k:>8}  {m:<10}  {r['coverage']:>8.3f}  {r['width']:>8.4f}  {r['mean_a']:>8.4f}  {took:.0f}", flush=True)


if __name__ == "__main__":
    main()
