"""Scaling-law approaches recover planted laws, match independent reimplementations, and write their outputs."""
from __future__ import annotations

import json
import lzma
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import Akima1DInterpolator

import analyses.scaling_laws as scaling_laws
from analyses.scaling_laws import approach1, approach2, approach3
from toolkit.errors import UserError
from toolkit.outputs import AnalysisOutput
from toolkit.scaling_data import load_porian

# Chinchilla's fitted law (Hoffmann et al. 2022), the planted truth
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
A_TRUE = BETA / (ALPHA + BETA)
LOOP_GRID = {"a": [0.0, 10.0], "b": [0.0, 10.0], "e": [-1.0, 0.5], "alpha": [0.5, 1.5], "beta": [0.5, 1.5]}
SMALL_GRID = {"a": [0.0, 10.0, 20.0], "b": [0.0, 10.0, 20.0], "e": [-1.0, 0.0, 1.0], "alpha": [0.5, 1.5], "beta": [0.5, 1.5]}


def law(n, d, e=E, a=A, b=B, alpha=ALPHA, beta=BETA):
    """The planted L(N, D)."""
    return e + a / n**alpha + b / d**beta


def parametric_points(n_models=12, n_tokens=20, noise=0.002, seed=0, **params) -> pd.DataFrame:
    """A grid of (N, D) with multiplicative log-normal noise on the loss."""
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(1e7, 1e9, n_models), n_tokens)
    d = np.tile(np.geomspace(1e8, 1e11, n_tokens), n_models)
    loss = law(n, d, **params) * np.exp(rng.normal(0, noise, n.size))
    return pd.DataFrame({"N": n, "D": d, "C": 6 * n * d, "loss": loss})


def isoflop_table(n_models=15, n_tokens=60, noise=0.002, seed=0, n_range=(1e7, 1e9), d_range=(1e8, 1e11)) -> pd.DataFrame:
    """Each model's loss curve along D (every checkpoint a point), with noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in np.geomspace(*n_range, n_models):
        d = np.geomspace(*d_range, n_tokens)
        loss = law(n, d) * np.exp(rng.normal(0, noise, d.size)) if noise else law(n, d)
        rows.append(pd.DataFrame({"N": n, "D": d, "C": 6 * n * d, "loss": loss}))
    return pd.concat(rows, ignore_index=True)


# ---------------------------------------------------------------- approach 3


def test_approach3_recovers_planted_parameters():
    """0.2% noise on 240 points: every parameter back within the stated tolerance, about 3x the largest error seen
    over noise seeds 0-4 (E 1%, A 8%, B 2%, alpha 1.6%, beta 0.4%, a 0.8%: A is the weakly identified one)."""
    t = parametric_points()
    fit = approach3.fit_parametric(t["N"], t["D"], t["loss"])
    p = fit.params
    assert p["alpha"] == pytest.approx(ALPHA, rel=0.05)
    assert p["beta"] == pytest.approx(BETA, rel=0.02)
    assert p["E"] == pytest.approx(E, rel=0.03)
    assert p["A"] == pytest.approx(A, rel=0.25)
    assert p["B"] == pytest.approx(B, rel=0.06)
    assert p["a"] == pytest.approx(A_TRUE, rel=0.025)
    assert p["b"] == pytest.approx(1 - A_TRUE, rel=0.025)
    assert fit.n_starts == 4500 and fit.n_points == 240
    assert not fit.warnings


def test_approach3_fast_fit_equals_scipy_loop_on_a_small_grid():
    """Batched multi-start + polish = the straightforward scipy L-BFGS-B loop: same optimum, objective no worse."""
    t = parametric_points(n_models=8, n_tokens=12, noise=0.005, seed=3)
    grid = approach3.make_grid(LOOP_GRID)
    bounds = approach3.bounds_array({"alpha": [0, None], "beta": [0, None]})
    log_args = (np.log(t["N"].to_numpy()), np.log(t["D"].to_numpy()), np.log(t["loss"].to_numpy()), 1e-3)
    loop_theta, loop_f = approach3.fit_scipy_loop(t["N"], t["D"], t["loss"], grid=grid, bounds=bounds)
    fit = approach3.fit_parametric(t["N"], t["D"], t["loss"], grid=grid, bounds=bounds)
    assert fit.objective <= loop_f * (1 + 1e-9)
    assert fit.objective == pytest.approx(float(approach3.objective(fit.theta, *log_args)), rel=1e-12)
    fast, loop = approach3.parameters(fit.theta), approach3.parameters(loop_theta)
    for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
        assert float(f"{fast[name]:.3g}") == pytest.approx(float(f"{loop[name]:.3g}"), rel=1e-3, abs=0), name


def test_approach3_analytic_gradient_matches_finite_differences():
    """The gradient used by the polish and the batched solver is the objective's gradient."""
    t = parametric_points(n_models=5, n_tokens=6, noise=0.01)
    args = (np.log(t["N"].to_numpy()), np.log(t["D"].to_numpy()), np.log(t["loss"].to_numpy()), 1e-3)
    theta = np.array([6.0, 6.2, 0.5, 0.33, 0.29])
    f, g = approach3.objective_and_grad(theta, *args)
    eps = 1e-7
    fd = [(approach3.objective(theta + eps * np.eye(5)[i], *args) - approach3.objective(theta - eps * np.eye(5)[i], *args)) / (2 * eps)
          for i in range(5)]
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-9)
    batched_f, batched_g, _ = approach3._lm_quantities(theta[None, :], *args[:3], 1e-3, None)
    assert batched_f[0] == pytest.approx(f, rel=1e-12)
    np.testing.assert_allclose(batched_g[0], g, rtol=1e-10, atol=1e-14)


def test_approach3_allocation_formula_is_the_argmin_of_the_law():
    """N*(C) from G and the exponents minimises L(N, C/(6N)) numerically."""
    theta = np.array([np.log(A), np.log(B), np.log(E), ALPHA, BETA])
    c = 1e21
    n_star, d_star = approach3.compute_optimal(theta, np.array([c]))
    n = np.geomspace(n_star[0] / 3, n_star[0] * 3, 20001)
    best = n[np.argmin(law(n, c / (6 * n)))]
    assert n_star[0] == pytest.approx(best, rel=1e-3)
    assert 6 * n_star[0] * d_star[0] == pytest.approx(c, rel=1e-9)
    assert approach3.parameters(theta)["a"] == pytest.approx(A_TRUE)


def test_approach3_bootstrap_refits_equal_full_refits_and_cover_the_truth():
    """Warm-started batched refits reach the optimum a full multi-start fit finds on the same resampled points, and
    on this data set the 95% CIs of alpha, beta and a cover the truth (calibration over seeds: the slow test)."""
    t = parametric_points(seed=1)
    n, d, loss = (t[c].to_numpy() for c in ("N", "D", "loss"))
    fit = approach3.fit_parametric(n, d, loss, grid=approach3.make_grid(SMALL_GRID))
    samples = approach3.bootstrap_parametric(n, d, loss, fit, n_boot=100, seed=5)
    rng = np.random.default_rng(5)
    for i in range(2):
        counts = np.bincount(rng.integers(0, len(n), len(n)), minlength=len(n)).astype(float)
        full = approach3.fit_parametric(n, d, loss, weights=counts, grid=approach3.make_grid(SMALL_GRID))
        np.testing.assert_allclose(samples[i, 3:], full.theta[3:], rtol=1e-3)
    natural = approach3.natural_samples(samples)
    for name, truth in (("alpha", ALPHA), ("beta", BETA), ("a", A_TRUE)):
        lo, hi = approach3.percentile_ci(natural[name])
        assert lo < truth < hi, name
        assert hi - lo < 0.05 * truth, name  # not covering by being vague


@pytest.mark.slow
def test_approach3_bootstrap_spread_matches_the_spread_over_noise_seeds():
    """The bootstrap sd of alpha and a is the sd of the estimates over independent noisy tables (within 2x)."""
    estimates, boot_sds = [], []
    for seed in range(8):
        t = parametric_points(seed=seed)
        n, d, loss = (t[c].to_numpy() for c in ("N", "D", "loss"))
        fit = approach3.fit_parametric(n, d, loss, grid=approach3.make_grid(SMALL_GRID))
        natural = approach3.natural_samples(approach3.bootstrap_parametric(n, d, loss, fit, n_boot=200, seed=seed))
        estimates.append([fit.params["alpha"], fit.params["a"]])
        boot_sds.append([np.std(natural["alpha"]), np.std(natural["a"])])
    ratio = np.mean(boot_sds, axis=0) / np.std(estimates, axis=0, ddof=1)
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio


def test_approach3_warns_when_the_top_starts_disagree():
    """One token count: E and B/D^beta cannot be told apart, so distinct optima fit equally well; reported."""
    n, d = np.geomspace(1e7, 1e9, 10), np.full(10, 1e10)
    fit = approach3.fit_parametric(n, d, law(n, d), grid=approach3.make_grid(SMALL_GRID),
                                   bounds=approach3.bounds_array({"alpha": [0, None], "beta": [0, None]}))
    assert any("top starts disagree" in w for w in fit.warnings), fit.warnings
    assert fit.params["alpha"] == pytest.approx(ALPHA, rel=1e-4)  # the identified part is still right
    well_posed = parametric_points(n_models=6, n_tokens=8, noise=0.0)
    clean = approach3.fit_parametric(well_posed["N"], well_posed["D"], well_posed["loss"], grid=approach3.make_grid(SMALL_GRID))
    assert not any("disagree" in w for w in clean.warnings), clean.warnings


def test_approach3_warns_on_a_bound():
    """A best fit pinned to a bound is reported."""
    t = parametric_points(n_models=6, n_tokens=8)
    bounds = approach3.bounds_array({"alpha": [0.4, 2.0], "beta": [0.0, None]})
    fit = approach3.fit_parametric(t["N"], t["D"], t["loss"], grid=approach3.make_grid(SMALL_GRID), bounds=bounds)
    assert fit.theta[3] == pytest.approx(0.4)
    assert any("lower bound of alpha" in w for w in fit.warnings)


# ---------------------------------------------------------------- approach 2


def test_approach2_recovers_planted_exponent_within_its_ci():
    """Noisy isoFLOP table: the planted a = beta/(alpha+beta) lies inside approach 2's bootstrap CI."""
    res = approach2.fit_isoflop(isoflop_table(), n_boot=300, seed=1)
    lo, hi = approach3.percentile_ci(res.a_samples)
    assert lo < A_TRUE < hi
    assert hi - lo < 0.1
    assert res.fit_n.exponent + res.fit_d.exponent == pytest.approx(1.0, abs=0.02)
    assert (res.minima["status"] == "ok").sum() >= 8


def porian_plain(table: pd.DataFrame, budgets, multiplier=25):
    """Porian et al.'s isoFLOP procedure written out plainly: interpolate each run at the budget, Akima over log N."""
    log_c_star, log_n_star = [], []
    for c in budgets:
        found = []
        for n, run in table.groupby("N"):
            run = run.sort_values("C")
            if c < run["C"].iloc[0] or c > run["C"].iloc[-1]:
                continue
            found.append((n, np.exp(np.interp(np.log(c), np.log(run["C"]), np.log(run["loss"])))))
        if len(found) < 3:
            continue
        found.sort()
        ns = np.array([f[0] for f in found])
        ls = np.array([f[1] for f in found])
        n_grid = np.geomspace(ns.min(), ns.max(), (len(ns) - 1) * multiplier)
        interp = np.exp(Akima1DInterpolator(np.log(ns), np.log(ls))(np.log(n_grid)))
        i = int(np.argmin(interp))
        if i in (0, len(n_grid) - 1):
            continue
        log_c_star.append(np.log(c))
        log_n_star.append(np.log(n_grid[i]))
    slope, _ = np.polyfit(log_c_star, log_n_star, 1)
    return slope


def test_approach2_akima_equals_plain_porian_reimplementation():
    """Same budgets, unweighted: the same exponent as the plain procedure; the weighted fit stays close."""
    table = isoflop_table(noise=0.003, seed=2)
    budgets = list(np.geomspace(2e16, 1e20, 10))
    plain = porian_plain(table, budgets)
    ours = approach2.fit_isoflop(table, budgets=budgets, n_boot=0)
    assert ours.fit_n.exponent == pytest.approx(plain, abs=1e-9)
    weighted = approach2.fit_isoflop(table, budgets=budgets, n_boot=200, seed=0)
    assert weighted.fit_n.exponent == pytest.approx(plain, abs=0.02)


def test_global_parabola_is_biased_where_akima_is_not():
    """Why the default is Akima: with fixed model sizes the optimum drifts across the sizes as C grows, and one
    parabola over all N per budget is pulled towards the middle of the sizes (a too-small exponent)."""
    table = isoflop_table(n_models=17, n_tokens=80, noise=0.0, n_range=(1e6, 1e10), d_range=(1e6, 1e13))
    budgets = list(np.geomspace(1e17, 1e21, 9))
    akima = approach2.fit_isoflop(table, budgets=budgets, n_boot=0, method="akima")
    local = approach2.fit_isoflop(table, budgets=budgets, n_boot=0, method="parabola", parabola_points=5)
    global_ = approach2.fit_isoflop(table, budgets=budgets, n_boot=0, method="parabola", parabola_points=None)
    assert akima.fit_n.exponent == pytest.approx(A_TRUE, abs=0.002)
    assert local.fit_n.exponent == pytest.approx(A_TRUE, abs=0.002)
    assert A_TRUE - global_.fit_n.exponent > 0.01


def test_approach2_rejects_edge_minima_and_budgets_with_too_few_models():
    """A budget whose minimum is the smallest model is rejected and reported; explicit budgets out of reach too."""
    table = isoflop_table(n_models=6, n_tokens=30, noise=0.0, n_range=(1e8, 1e10))
    res = approach2.fit_isoflop(table, budgets=[1e18, 1e20, 1e25], n_boot=0)
    status = dict(zip(res.minima["budget"], res.minima["status"]))
    assert "edge" in status[1e18]
    assert status[1e20] == "ok"
    assert "too few" in status[1e25]
    assert {r["budget"] for r in res.rejected} == {1e18, 1e25}


def test_approach2_budgets_lie_where_three_models_reach():
    """Default budgets are log-spaced inside the range covered by >= 3 model sizes."""
    table = isoflop_table(n_models=5, n_tokens=10, noise=0.0)
    curves = approach2.curves(table)
    lo, hi = approach2.budget_range(curves, 3)
    budgets = approach2.choose_budgets(curves, None, 7)
    assert len(budgets) == 7 and budgets[0] >= lo and budgets[-1] <= hi
    assert all(len(approach2.at_budget(curves, b)) >= 3 for b in budgets)


def test_approach2_min_over_runs_of_one_size_and_max_gap():
    """Several runs per size (curve_by run_id): at each budget the best run of each N counts; a curve whose nearest
    point is farther than max_gap from the budget is left out (Porian et al.'s flop tolerance)."""
    good = isoflop_table(n_models=7, n_tokens=30, noise=0.0).assign(run_id=lambda f: "good-" + f["N"].astype(str))
    worse = good.assign(loss=good["loss"] * 1.05, run_id=lambda f: "bad-" + f["N"].astype(str))
    both = pd.concat([good, worse], ignore_index=True)
    budgets = list(np.geomspace(1e17, 1e19, 4))
    alone = approach2.fit_isoflop(good, budgets=budgets, n_boot=0)
    mixed = approach2.fit_isoflop(both, budgets=budgets, n_boot=0, curve_by=["run_id"])
    np.testing.assert_allclose(mixed.minima["N_star"], alone.minima["N_star"], rtol=1e-12)
    by_n = approach2.fit_isoflop(both, budgets=budgets, n_boot=0, curve_by=["N"])  # the two runs averaged: 2.5% up
    np.testing.assert_allclose(by_n.minima["loss_star"], alone.minima["loss_star"] * 1.025, rtol=1e-3)
    sparse = isoflop_table(n_models=7, n_tokens=4, noise=0.0)  # checkpoints a factor 10 apart
    curves = approach2.curves(sparse)
    budget = float(np.sqrt(sparse["C"].iloc[0] * sparse["C"].iloc[1]))  # halfway (in log) between two checkpoints
    assert len(approach2.at_budget(curves, budget)) >= 1
    assert len(approach2.at_budget(curves, budget, max_gap=0.1)) == 0
    assert len(approach2.at_budget(curves, float(sparse["C"].iloc[1]) * 1.05, max_gap=0.1)) >= 1


@pytest.mark.slow
def test_approach2_ci_coverage_over_noise_seeds():
    """Over 12 noisy tables the 95% CI covers the planted a in most (seen: 9 of 12). Noise biases the Akima minima a
    little (mean a 0.012 below the truth here, 0.0006 without noise): the CI is not fully calibrated."""
    covered, estimates = 0, []
    for seed in range(12):
        res = approach2.fit_isoflop(isoflop_table(seed=seed), n_boot=300, seed=seed)
        lo, hi = approach3.percentile_ci(res.a_samples)
        covered += lo < A_TRUE < hi
        estimates.append(res.fit_n.exponent)
    assert covered >= 8
    assert abs(np.mean(estimates) - A_TRUE) < 0.02


def test_approach2_bootstrap_is_fast_and_seeded():
    """1,000 replicates over 12 budgets well under 10 s; the same seed gives the same CIs."""
    import time

    table = isoflop_table()
    started = time.perf_counter()
    first = approach2.fit_isoflop(table, n_budgets=12, n_boot=1000, seed=7)
    assert time.perf_counter() - started < 10
    again = approach2.fit_isoflop(table, n_budgets=12, n_boot=1000, seed=7)
    np.testing.assert_array_equal(first.a_samples, again.a_samples)
    resampled = approach2.fit_isoflop(table, n_budgets=6, n_boot=100, seed=7, bootstrap="resample")
    assert np.isfinite(approach3.percentile_ci(resampled.a_samples)).all()


# ---------------------------------------------------------------- approach 1


def test_approach1_envelope_follows_the_planted_allocation():
    """The envelope (Pareto frontier) of dense loss curves gives N* ~ C^a near the planted a. Fixed sizes make the
    frontier a staircase (each size holds it over a range of C) and the ends are cut by the sizes trained, so it
    sits 0.02 below the truth here (tests/test_scaling_ci.py: the isoFLOP design recovers it within 0.01)."""
    table = isoflop_table(n_models=25, n_tokens=60, noise=0.0, n_range=(1e6, 1e10), d_range=(1e6, 1e13))
    fit_n, fit_d, env = approach1.fit_envelope(table["N"], table["D"], table["C"], table["loss"])
    assert len(env) == 247 and env["N"].nunique() == 25
    assert fit_n.exponent == pytest.approx(A_TRUE, abs=0.03)
    assert fit_n.exponent + fit_d.exponent == pytest.approx(1.0, abs=1e-9)


def test_power_law_fit_is_exact_on_a_power_law():
    """log-log least squares recovers exponent and coefficient."""
    x = np.geomspace(1, 1e6, 7)
    fit = approach1.fit_power_law(x, 3.0 * x**0.7)
    assert fit.exponent == pytest.approx(0.7) and fit.coef == pytest.approx(3.0)


# ---------------------------------------------------------------- run() and outputs

FAST = {
    "approaches": [1, 2, 3],
    "approach1": {"bootstrap": {"n": 100, "seed": 0}},
    "approach2": {"n_budgets": 8, "bootstrap": {"n": 100, "seed": 0}},
    "approach3": {"grid": SMALL_GRID, "bootstrap": {"n": 50, "seed": 0}},
}


def test_run_writes_summary_tables_and_figures(tmp_path):
    """Through a real AnalysisOutput: the summary contract, CSV tables and non-empty PNGs."""
    table = isoflop_table(n_models=10, n_tokens=25)
    out = AnalysisOutput(tmp_path, "scaling_laws")
    summary = scaling_laws.run(table, FAST, out)
    final = out.commit(summary)
    written = json.loads((final / "summary.json").read_text())
    assert set(written["approach1"]) >= {"a", "b"}
    assert set(written["approach2"]) >= {"a", "b", "a_ci", "b_ci", "n_budgets", "rejected"}
    keys3 = {"E", "A", "B", "alpha", "beta", "a", "b", "E_ci", "A_ci", "B_ci", "alpha_ci", "beta_ci", "a_ci", "b_ci",
             "huber_delta", "n_points"}
    assert set(written["approach3"]) >= keys3
    for key in ("a_ci", "b_ci"):
        lo, hi = written["approach2"][key]
        assert lo <= hi
    assert written["approach3"]["alpha_ci"][0] <= written["approach3"]["alpha"] <= written["approach3"]["alpha_ci"][1]
    assert written["approach3"]["n_points"] == len(table)
    assert written["approach3"]["huber_delta"] == 1e-3
    minima = pd.read_csv(final / "approach2_minima.csv")
    assert {"budget", "N_star", "D_star", "loss_star", "status"} <= set(minima.columns)
    assert (final / "approach1_envelope.csv").exists() and (final / "approach3_optima.csv").exists()
    for name in ("isoflop_curves", "optimal_allocation", "parametric_contours"):
        png = final / f"{name}.png"
        assert png.exists() and png.stat().st_size > 1000


def test_run_selected_approaches_only(tmp_path):
    """approaches=[2] writes only approach 2's summary."""
    out = AnalysisOutput(tmp_path, "scaling_laws")
    summary = scaling_laws.run(isoflop_table(n_models=8, n_tokens=20), {**FAST, "approaches": [2], "figures": False}, out)
    assert "approach2" in summary and "approach1" not in summary and "approach3" not in summary


def test_group_by_fits_each_group(tmp_path):
    """Two datasets with different laws: groups keyed by value, each fitted on its own rows (the same fit as on
    those rows alone), each recovering its own planted alpha.

    The 'code' law has alpha = 0.5: over N in [1e7, 1e9] its A/N^alpha term only falls from 0.13 to 0.013, so alpha
    and A trade off against each other and 0.2% loss noise on 160 points moves alpha by ~0.03 (seed 0: 0.447).
    0.05% noise keeps alpha within ~0.015 across seeds; the tolerance below is twice that.
    """
    steep = isoflop_table(n_models=8, n_tokens=20, noise=0.0005).assign(dataset="web", seed=1)
    other = parametric_points(n_models=8, n_tokens=20, noise=0.0005, alpha=0.5, beta=0.25).assign(dataset="code", seed=1)
    table = pd.concat([steep, other], ignore_index=True)
    out = AnalysisOutput(tmp_path, "scaling_laws")
    params = {**FAST, "approaches": [1, 3], "group_by": ["dataset", "seed"], "figures": False,
              "approach3": {**FAST["approach3"], "bootstrap": {"n": 0}}}
    summary = scaling_laws.run(table, params, out)
    assert set(summary["groups"]) == {"web/1", "code/1"}
    assert "approach1" not in summary and "approach3" not in summary  # only per group
    for label, rows, planted in (("code/1", other, 0.5), ("web/1", steep, ALPHA)):
        got = summary["groups"][label]["approach3"]
        alone = approach3.fit_parametric(rows["N"], rows["D"], rows["loss"], grid=approach3.make_grid(SMALL_GRID),
                                         bounds=approach3.bounds_array({"alpha": [0, None], "beta": [0, None]}))
        assert got["alpha"] == pytest.approx(alone.params["alpha"], rel=1e-6), label
        assert got["n_points"] == len(rows)
        assert got["alpha"] == pytest.approx(planted, abs=0.03), label
        env_alone = approach1.fit_envelope(rows["N"], rows["D"], rows["C"], rows["loss"])[0]
        assert summary["groups"][label]["approach1"]["a"] == pytest.approx(env_alone.exponent, rel=1e-9), label
    final = out.commit(summary)
    assert set(pd.read_csv(final / "approach1_envelope.csv")["group"]) == {"web/1", "code/1"}


def test_run_rejects_bad_tables(tmp_path):
    """Missing columns and non-positive values fail with one line naming the column."""
    out = AnalysisOutput(tmp_path, "scaling_laws")
    with pytest.raises(UserError, match="missing column"):
        scaling_laws.run(pd.DataFrame({"N": [1.0], "D": [1.0], "loss": [1.0]}), {}, out)
    bad = isoflop_table(n_models=4, n_tokens=5)
    bad.loc[3, "loss"] = -1.0
    with pytest.raises(UserError, match="column 'loss'"):
        scaling_laws.run(bad, {}, out)
    with pytest.raises(UserError, match="approaches"):
        scaling_laws.run(isoflop_table(n_models=4, n_tokens=5), {"approaches": [4]}, out)


# ---------------------------------------------------------------- Porian loader


def porian_frame() -> pd.DataFrame:
    """Two runs in the layout of Porian et al.'s results: loss curves as Series indexed by step."""
    runs = []
    for width, depth in ((96, 3), (128, 4)):
        steps = np.arange(0, 50, 10)
        runs.append({"width": width, "depth": depth, "bs": 8, "seq_len": 2048, "vocab_size": 50432, "lr": 1e-3,
                     "dataset": "rw", "train/loss": pd.Series(6.0 - 0.01 * steps, index=steps)})
    return pd.DataFrame(runs)


def test_porian_pickle_refused_without_allow_pickle(tmp_path):
    """Unpickling runs code: refused with a clear message unless allowed explicitly; then one row per step."""
    path = tmp_path / "experiment_results.pickle.xz"
    with lzma.open(path, "wb") as fh:
        pickle.dump(porian_frame(), fh)
    with pytest.raises(UserError, match="allow_pickle=True"):
        load_porian(path)
    frame = load_porian(path, allow_pickle=True)
    assert list(frame.columns[:4]) == ["N", "D", "C", "loss"]
    assert len(frame) == 8  # step 0 dropped (D = 0)
    first = frame.iloc[0]
    assert first["D"] == 10 * 8 * 2048
    assert first["C"] == pytest.approx(6 * first["N"] * first["D"])
    assert set(frame["dataset"]) == {"rw"}


# ---------------------------------------------------------------- identifiability: degenerate tables are no results


def planted(n, d, noise=0.002, seed=0) -> pd.DataFrame:
    """Points of the planted law at the given (N, D), with log-normal noise on the loss."""
    n, d = np.asarray(n, float), np.asarray(d, float)
    loss = law(n, d) * np.exp(np.random.default_rng(seed).normal(0, noise, n.size))
    return pd.DataFrame({"N": n, "D": d, "C": 6 * n * d, "loss": loss})


SIZES = np.geomspace(1e7, 1e9, 7)
DEGENERATE = {
    "one_N": planted(np.full(40, 1e8), np.geomspace(1e8, 1e11, 40)),  # one model along its tokens
    "two_budgets": planted(np.r_[SIZES, SIZES], np.r_[1e18 / (6 * SIZES), 1e19 / (6 * SIZES)]),  # isoFLOPs at 2 C
    "D_constant": planted(np.geomspace(1e7, 1e9, 40), np.full(40, 1e10)),  # every size on the same tokens
}
# which approaches each table can identify, and a word of the reason of the others
IDENTIFIES = {"one_N": {}, "two_budgets": {3: None}, "D_constant": {}}
REASONS = {
    ("one_N", 1): "1 distinct N", ("one_N", 2): "1 distinct N", ("one_N", 3): "1 distinct N",
    ("two_budgets", 1): "2 compute budget(s) (distinct C)", ("two_budgets", 2): "2 measured compute value(s)",
    ("D_constant", 1): "1 distinct D", ("D_constant", 2): "no compute budget is reached by >= 3 model sizes",
    ("D_constant", 3): "1 distinct D",
}
QUICK = {"figures": False, "approach2": {"bootstrap": {"n": 50}}, "approach3": {"grid": SMALL_GRID, "bootstrap": {"n": 50}}}


@pytest.mark.parametrize("case,k", sorted(REASONS), ids=[f"{c}-approach{k}" for c, k in sorted(REASONS)])
def test_an_approach_the_data_cannot_identify_gives_no_numbers(case, k, tmp_path):
    """Each approach alone on a degenerate table: no a/b (the old code gave approach 1 a = 0, b = 1 on one N and
    approach 3 a CI far from the truth), a one-line error naming what is missing, with its counts."""
    out = AnalysisOutput(tmp_path, "scaling_laws")
    with pytest.raises(UserError) as err:
        scaling_laws.run(DEGENERATE[case], {**QUICK, "approaches": [k]}, out)
    message = str(err.value)
    assert message.startswith("scaling_laws: no approach can be fitted") and "\n" not in message
    assert f"approach {k}: " in message and REASONS[(case, k)] in message, message
    assert any(w.startswith(f"approach {k} not identifiable") and REASONS[(case, k)] in w for w in out.warnings)


def test_two_budgets_leave_out_approaches_1_and_2_and_approach_3_still_runs(tmp_path):
    """summary.json: approach1/2 {identifiable: false, reason} with no numbers, a warning each; approach 3 is
    fitted (two budgets still spread N and D) and its CI covers the planted a."""
    out = AnalysisOutput(tmp_path, "scaling_laws")
    summary = scaling_laws.run(DEGENERATE["two_budgets"], QUICK, out)
    written = json.loads((out.commit(summary) / "summary.json").read_text())
    for k in (1, 2):
        assert set(written[f"approach{k}"]) == {"identifiable", "reason"}
        assert written[f"approach{k}"]["identifiable"] is False
        assert REASONS[("two_budgets", k)] in written[f"approach{k}"]["reason"]
        assert any(w.startswith(f"approach {k} not identifiable") for w in written["warnings"])
    third = written["approach3"]
    assert third["identifiable"] is True
    assert third["a_ci"][0] < A_TRUE < third["a_ci"][1]
    assert not any(w.startswith("approach 3") for w in written["warnings"])


def test_identifiable_designs_pass_the_checks():
    """The checks do not refuse what the approaches can fit: three isoFLOP budgets, a dense grid, the curves."""
    rows = [(n, c / (6 * n)) for c in (1e18, 1e19, 1e20) for n in np.geomspace(1e7, 1e10, 9)]
    three = planted(*zip(*rows), noise=0.0)
    for table in (three, parametric_points(n_models=6, n_tokens=8), isoflop_table(n_models=7, n_tokens=20)):
        assert approach1.identifiability(table["N"], table["D"], table["C"]) is None
        assert approach3.identifiability(table["N"], table["D"]) is None
        res = approach2.fit_isoflop(table, n_boot=0)
        assert approach2.identifiability(res, approach2.curves(table), table["N"].nunique()) is None
    n = np.geomspace(1e7, 1e9, 10)  # D = 20 N: N and D vary, but together
    assert "collinear" in approach3.identifiability(n, 20 * n)
    assert "5 points for 5 parameters" in approach3.identifiability(n[:5], np.geomspace(1e8, 1e11, 5) * [1, 2, 1, 2, 1])


def test_a_group_that_cannot_be_fitted_is_a_warning_and_the_others_are_fitted(tmp_path):
    """group_by: the one-N group is named in a warning (one prefix), the good group is fitted."""
    table = pd.concat([DEGENERATE["one_N"].assign(dataset="bad"), isoflop_table(n_models=8, n_tokens=20).assign(dataset="good")],
                      ignore_index=True)
    out = AnalysisOutput(tmp_path, "scaling_laws")
    summary = scaling_laws.run(table, {**QUICK, "approaches": [1, 2], "group_by": ["dataset"]}, out)
    assert set(summary["groups"]) == {"good"}
    assert summary["groups"]["good"]["approach1"]["identifiable"] is True
    assert any(w.startswith("group bad: no approach can be fitted") for w in out.warnings), out.warnings
    assert not any("scaling_laws: " in w for w in out.warnings)


# ---------------------------------------------------------------- group_by columns carried by the recipe, end to end


def test_group_by_columns_are_carried_by_the_recipe_through_run_py(tmp_path):
    """run.py on a flat CSV with a dataset column: group_by=[dataset] needs no recipe.keep_columns (the pipeline adds
    ScalingLaws.carried_columns); a group_by column that does not exist is one line naming it once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from toolkit.settings import as_settings

    settings = as_settings(scaling_laws.ScalingLawsSettings, {"group_by": ["dataset"], "approaches": [1, 2]})
    assert tuple(scaling_laws.ScalingLaws().carried_columns(settings)) == ("dataset",)
    root = Path(__file__).resolve().parents[1]
    path = tmp_path / "flat.csv"
    pd.concat([isoflop_table(n_models=7, n_tokens=12, seed=1).assign(dataset="web"),
               isoflop_table(n_models=7, n_tokens=12, seed=2).assign(dataset="code")], ignore_index=True).to_csv(path, index=False)

    def run_py(group_by: str, out: str) -> subprocess.CompletedProcess:
        args = [sys.executable, str(root / "run.py"), f"tracker.path={path}", "recipe=scaling_table",
                "analysis=[scaling_laws]", f"analysis.scaling_laws.group_by=[{group_by}]",
                "analysis.scaling_laws.approaches=[1,2]", "analysis.scaling_laws.approach2.bootstrap.n=20",
                "analysis.scaling_laws.figures=false", f"cache.dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / out}"]
        return subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "MPLBACKEND": "Agg"})

    ok = run_py("dataset", "ok")
    assert ok.returncode == 0, ok.stderr[-3000:]
    summary = json.loads((tmp_path / "ok" / "scaling_laws" / "summary.json").read_text())
    assert set(summary["groups"]) == {"web", "code"} and summary["group_by"] == ["dataset"]
    for group in summary["groups"].values():
        assert group["approach1"]["identifiable"] and group["approach2"]["identifiable"]
    assert "dataset" in pd.read_parquet(tmp_path / "ok" / "table.parquet").columns

    bad = run_py("nosuch", "bad")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-3000:]
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, bad.stderr[-3000:]
    assert errors[0].count("nosuch") == 1, errors[0]
    for prefix in ("scaling_laws: ", "recipe scaling_table: "):
        assert prefix * 2 not in errors[0], errors[0]
