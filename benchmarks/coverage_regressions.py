"""Coverage of the planted law by the regressions' bootstrap CIs over many generated demo sweeps.

For each of ``--sweeps`` sweeps (toolkit.demo, planted log2 lr* = A log2 h + B log2 bs + C, 2 seeds per
configuration) the run bootstrap of lr_vs_bs_horizon is drawn once and every ``ci_method`` (with and without the
small-sample correction) is made from the same replicates; it prints, per method and coefficient, the share of sweeps
whose 95% CI holds the planted value and the mean CI width.

    python benchmarks/coverage_regressions.py --sweeps 50 --boot 100 --jobs 4
"""
from __future__ import annotations

import argparse
import dataclasses
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

HORIZONS = [2**26, 2**28, 2**30]
METHODS = ("normal", "percentile", "basic")


def sweep_table(seed: int):
    """The demo sweep of generator seed ``seed`` as the lr_bs_sweep table, and its planted constants."""
    from toolkit.demo import make_lr_bs_sweep

    sweep = make_lr_bs_sweep(seed=seed, log_every_tokens=2**25)
    return sweep.lr_bs_table(), sweep.planted


def one(args: tuple[int, int]) -> list[dict]:
    """CIs of alpha and beta by every method on one sweep."""
    from analyses import regressions
    from analyses.regressions.bootstrap import bootstrap_ci, bootstrap_coefficients, median_runs_per_configuration, small_sample_inflation
    from analyses.regressions.fits import fit_lr_vs_bs_horizon
    from toolkit.settings import as_settings

    seed, n_boot = args
    table, planted = sweep_table(seed)
    s = as_settings(regressions.RegressionsSettings, {"minima": {"horizons": HORIZONS, "plots": False, "bootstrap": {"n": 100}}})
    ms = s.minima_settings
    main = fit_lr_vs_bs_horizon(regressions._usable(table, ms, s)[1], weighted=s.weighted)
    boot_ms = dataclasses.replace(ms, bootstrap=dataclasses.replace(ms.bootstrap, n=0), plots=False)
    samples = bootstrap_coefficients(table, lambda r: fit_lr_vs_bs_horizon(regressions._usable(r, boot_ms, s)[1], weighted=False).params,
                                     n_boot, 0, ("lr_vs_bs_horizon",), progress=False)
    factor = small_sample_inflation(median_runs_per_configuration(table))
    rows = []
    for name, truth in (("alpha", planted["B"]), ("beta", planted["A"])):
        for method in METHODS:
            for corrected in (True, False):
                _, ci = bootstrap_ci(main.params[name], samples[name].to_numpy(float), method, 0.95, factor if corrected else 1.0)
                rows.append({"sweep": seed, "coefficient": name, "method": method, "corrected": corrected,
                             "covered": bool(ci[0] <= truth <= ci[1]), "width": ci[1] - ci[0]})
        rows.append({"sweep": seed, "coefficient": name, "method": "wls_t", "corrected": False,
                     "covered": bool(main.ci[name][0] <= truth <= main.ci[name][1]), "width": main.ci[name][1] - main.ci[name][0]})
    return rows


def coverage(n_sweeps: int, n_boot: int, jobs: int = 1, first_seed: int = 100) -> pd.DataFrame:
    """One row per (coefficient, method, corrected): coverage of the planted value and mean width."""
    tasks = [(first_seed + i, n_boot) for i in range(n_sweeps)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(one, tasks))
    else:
        results = [one(t) for t in tasks]
    frame = pd.DataFrame([r for rows in results for r in rows])
    return frame.groupby(["coefficient", "method", "corrected"], as_index=False).agg(
        coverage=("covered", "mean"), width=("width", "mean"), sweeps=("covered", "size"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=50)
    parser.add_argument("--boot", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    table = coverage(args.sweeps, args.boot, args.jobs)
    with pd.option_context("display.width", 120):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"nominal 95%; {args.sweeps} sweeps x {args.boot} bootstrap replicates; default: normal, corrected")



if __name__ == "__main__":
    main()
