"""Benchmark: analysis scaling_laws, approach 3's multi-start fit and both bootstraps.

Data: 240 points (12 model sizes x 20 token counts) of Chinchilla's law L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28
with 0.5% log-normal noise. Timed:

1. the straightforward approach 3: ``scipy.optimize.minimize(method="L-BFGS-B")`` (numerical gradient) once per
   start of Besiroglu et al.'s 4,500-point grid, best optimum kept (``approach3.fit_scipy_loop``);
2. the vectorised fit ``approach3.fit_parametric`` from the same grid: same optimum (every parameter to 3
   significant digits, objective no worse) and the speed-up (target >= 100x);
3. 1,000 bootstrap refits of approach 3 (target < 60 s on a 2-core machine);
4. approach 2 with 1,000 bootstrap samples over 12 budgets on an isoFLOP table (target < 10 s).

The scipy loop takes about half an hour on 2 cores. ``--loop-starts K`` runs it on K starts drawn from the grid
(seeded) and extrapolates its time to 4,500 starts (the optimum comparison is then against the fast fit on the
same K starts, and the ratio is marked as extrapolated).

    python benchmarks/bench_scaling_laws.py
    python benchmarks/bench_scaling_laws.py --loop-starts 300
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from analyses.scaling_laws import approach2, approach3

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
NAMES = ("E", "A", "B", "alpha", "beta", "a", "b")


def law(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Chinchilla's fitted L(N, D)."""
    return E + A / n**ALPHA + B / d**BETA


def parametric_points(noise: float = 0.005, seed: int = 0) -> pd.DataFrame:
    """240 points: 12 sizes x 20 token counts, multiplicative noise."""
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(1e7, 1e9, 12), 20)
    d = np.tile(np.geomspace(1e8, 1e11, 20), 12)
    return pd.DataFrame({"N": n, "D": d, "loss": law(n, d) * np.exp(rng.normal(0, noise, n.size))})


def isoflop_table(noise: float = 0.002, seed: int = 0) -> pd.DataFrame:
    """15 sizes, each a 60-checkpoint loss curve along D (C = 6 N D)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in np.geomspace(1e7, 1e9, 15):
        d = np.geomspace(1e8, 1e11, 60)
        rows.append(pd.DataFrame({"N": n, "D": d, "C": 6 * n * d, "loss": law(n, d) * np.exp(rng.normal(0, noise, d.size))}))
    return pd.concat(rows, ignore_index=True)


def sig3(x: float) -> float:
    """x rounded to 3 significant digits."""
    return float(f"{x:.3g}")


def timed(fn, repeat: int = 1):
    """(best wall time over repeat calls, the last result)."""
    best, result = np.inf, None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop-starts", type=int, default=None,
                        help="run the scipy loop on this many grid starts only and extrapolate its time (default: all 4,500)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="fast-fit timings: best of this many")
    args = parser.parse_args(argv)

    t = parametric_points()
    n, d, loss = (t[c].to_numpy() for c in ("N", "D", "loss"))
    grid = approach3.make_grid()
    loop_grid, extrapolated = grid, False
    if args.loop_starts is not None and args.loop_starts < len(grid):
        rng = np.random.default_rng(0)
        loop_grid = grid[np.sort(rng.choice(len(grid), args.loop_starts, replace=False))]
        extrapolated = True
    print(f"approach 3 on {len(t)} points, grid of {len(grid)} starts (Besiroglu et al. 2024), Huber delta 1e-3")

    fast_s, fit = timed(lambda: approach3.fit_parametric(n, d, loss), repeat=args.repeat)
    print(f"  vectorised fit: {fast_s:.2f} s (best of {args.repeat}), objective {fit.objective:.10g}")
    loop_s, (loop_theta, loop_f) = timed(lambda: approach3.fit_scipy_loop(n, d, loss, grid=loop_grid))
    loop_full_s = loop_s * len(grid) / len(loop_grid)
    print(f"  scipy L-BFGS-B loop: {loop_s:.1f} s on {len(loop_grid)} starts"
          + (f" -> {loop_full_s:.0f} s extrapolated to {len(grid)}" if extrapolated else ""))
    if extrapolated:  # compare optima on the same starts
        same = approach3.fit_parametric(n, d, loss, grid=loop_grid)
        compare_f, compare_p = same.objective, approach3.parameters(same.theta)
    else:
        compare_f, compare_p = fit.objective, fit.params
    loop_p = approach3.parameters(loop_theta)
    print("  parameter      scipy loop    vectorised")
    agree = True
    for name in NAMES:
        ok = sig3(loop_p[name]) == sig3(compare_p[name])
        agree &= ok
        print(f"  {name:<10} {loop_p[name]:>14.6g} {compare_p[name]:>13.6g}  {'same to 3 s.f.' if ok else 'DIFFERENT'}")
    no_worse = compare_f <= loop_f * (1 + 1e-9)
    print(f"  objective  {loop_f:>14.10g} {compare_f:>13.10g}  {'no worse' if no_worse else 'WORSE'}")
    ratio = loop_full_s / fast_s
    print(f"  speed-up: {ratio:.0f}x{' (loop time extrapolated)' if extrapolated else ''} (target >= 100x)")

    boot_s, samples = timed(lambda: approach3.bootstrap_parametric(n, d, loss, fit, n_boot=args.n_boot, seed=0))
    natural = approach3.natural_samples(samples)
    print(f"approach 3 bootstrap: {args.n_boot} refits in {boot_s:.1f} s (target < 60 s); "
          f"alpha 95% CI {approach3.percentile_ci(natural['alpha'])}, a 95% CI {approach3.percentile_ci(natural['a'])}")

    table = isoflop_table()
    iso_s, res = timed(lambda: approach2.fit_isoflop(table, n_budgets=12, n_boot=args.n_boot, seed=0))
    n_ok = int(res.minima["status"].eq("ok").sum())
    print(f"approach 2: {args.n_boot} bootstrap samples over 12 budgets ({n_ok} accepted) in {iso_s:.2f} s "
          f"(target < 10 s); a = {res.fit_n.exponent:.4f}, 95% CI {approach3.percentile_ci(res.a_samples)}")

    print("ratios: " + ", ".join([
        f"parametric fit {ratio:.0f}x faster than the scipy loop" + (" (extrapolated)" if extrapolated else ""),
        f"bootstrap {boot_s / 60:.2f} of its 60 s budget",
        f"approach 2 {iso_s / 10:.2f} of its 10 s budget"]))
    passed = agree and no_worse and ratio >= 100 and boot_s < 60 and iso_s < 10
    print("targets met" if passed else "TARGETS MISSED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
