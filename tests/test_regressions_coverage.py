"""The regressions' CIs cover the demo sweep's planted law at (about) their nominal rate."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyses import regressions
from toolkit.demo import make_lr_bs_sweep
from toolkit.outputs import AnalysisOutput

HORIZONS = [2**26, 2**28, 2**30]


def sweep_table(seed: int) -> tuple[pd.DataFrame, dict]:
    sweep = make_lr_bs_sweep(seed=seed, log_every_tokens=2**25)
    return sweep.lr_bs_table(), sweep.planted


def regress(table: pd.DataFrame, tmp_path, n_boot: int) -> dict:
    params = {"minima": {"horizons": HORIZONS, "plots": False, "bootstrap": {"n": 100, "seed": 0}}, "bootstrap": {"n": n_boot, "seed": 1},
              "norm_band": {"enabled": False}, "joint": {"enabled": False}}
    out = AnalysisOutput(tmp_path, "regressions", progress=False)
    summary = regressions.run(table, params, out)
    out.discard()
    return summary


def test_demo_sweep_planted_law_inside_the_reported_cis(tmp_path):
    table, planted = sweep_table(seed=0)
    fit = regress(table, tmp_path, n_boot=30)["lr_vs_bs_horizon"]
    assert fit["alpha_ci"][0] <= planted["B"] <= fit["alpha_ci"][1]
    assert fit["beta_ci"][0] <= planted["A"] <= fit["beta_ci"][1]
    assert fit["n"] == 12 and fit["r2"] > 0.99


@pytest.mark.slow
def test_default_bootstrap_ci_covers_the_planted_law_in_90_to_97_percent_of_50_sweeps(tmp_path):
    """The default ci_method (normal, small-sample corrected) at nominal 95%: coverage in [0.90, 0.97] over 50 sweeps."""
    assert regressions.RegressionsSettings().bootstrap.ci_method == "normal"
    hits = {"alpha": 0, "beta": 0}
    for seed in range(50):
        table, planted = sweep_table(seed=100 + seed)
        boot = regress(table, tmp_path, n_boot=100)["bootstrap"]
        hits["alpha"] += boot["alpha_ci"][0] <= planted["B"] <= boot["alpha_ci"][1]
        hits["beta"] += boot["beta_ci"][0] <= planted["A"] <= boot["beta_ci"][1]
    assert 45 <= hits["alpha"] <= 48 and 45 <= hits["beta"] <= 48, hits


def test_small_sample_inflation_restores_the_variance_of_a_mean_of_n_runs():
    """Resampling n runs with replacement shrinks the variance of their mean by (n - 1)/n; the factor undoes it."""
    from analyses.regressions.bootstrap import median_runs_per_configuration, resample_runs, small_sample_inflation

    assert small_sample_inflation(1) == 1.0
    assert small_sample_inflation(2) == pytest.approx(np.sqrt(2))
    assert small_sample_inflation(4) == pytest.approx(np.sqrt(4 / 3))
    rng = np.random.default_rng(0)
    n, n_configs = 3, 400  # 400 configurations of n runs each; the statistic is each configuration's mean
    table = pd.DataFrame({"lr": np.repeat(np.arange(n_configs), n) * 1e-4 + 1e-4, "bs": 32,
                          "run_id": [f"r{i}" for i in range(n * n_configs)], "value": rng.normal(0, 1, n * n_configs)})
    assert median_runs_per_configuration(table) == n
    boots = np.array([resample_runs(table, rng).groupby("lr")["value"].mean().to_numpy() for _ in range(150)])
    sample_var = table.groupby("lr")["value"].var(ddof=1).to_numpy()
    ratio = float(np.mean(boots.var(axis=0, ddof=1)) / np.mean(sample_var))
    # E[bootstrap variance of the mean] = (n-1)/n * s^2/n; times the factor^2 it is s^2/n, the variance of the mean
    assert ratio == pytest.approx((n - 1) / n / n, rel=0.08)
    assert ratio * small_sample_inflation(n) ** 2 == pytest.approx(1 / n, rel=0.08)
