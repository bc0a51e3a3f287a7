"""Scaling laws: approach 1's envelope is the Pareto frontier, with a bootstrap CI; CI methods; per-cell random
streams; progress bars; figure captions and the interactive isoFLOP figure."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import analyses.scaling_laws as scaling_laws
from analyses.scaling_laws import approach1, approach2, approach3, intervals
from toolkit.outputs import AnalysisOutput

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_scaling_laws import A_TRUE, SMALL_GRID, isoflop_table, law, parametric_points  # noqa: E402


def isoflop_design(n_budgets=40, sizes=41, noise=0.001, seed=0) -> pd.DataFrame:
    """Chinchilla's isoFLOP design: at each budget, sizes spread over a decade either side of the planted N*(C)."""
    rng = np.random.default_rng(seed)
    theta = np.array([np.log(406.4), np.log(410.7), np.log(1.69), 0.34, 0.28])
    rows = []
    for c in np.geomspace(1e18, 1e22, n_budgets):
        n_star, _ = approach3.compute_optimal(theta, np.array([c]))
        n = n_star[0] * np.geomspace(0.1, 10, sizes)
        d = c / (6 * n)
        rows.append(pd.DataFrame({"N": n, "D": d, "C": c, "loss": law(n, d) * np.exp(noise * rng.standard_normal(sizes))}))
    return pd.concat(rows, ignore_index=True)


def dominated_brute_force(c: np.ndarray, loss: np.ndarray, kept: np.ndarray) -> tuple[int, int]:
    """(kept points some other point at <= C beats, dropped points that no point at <= C beats or ties first)."""
    kept_set = set(int(i) for i in kept)
    beaten_kept, lost_dropped = 0, 0
    for i in range(len(c)):
        others = np.arange(len(c)) != i
        if i in kept_set:
            beaten_kept += bool(np.any(others & (c <= c[i]) & (loss < loss[i])))
        else:
            lost_dropped += not bool(np.any(others & (c <= c[i]) & (loss <= loss[i])))
    return beaten_kept, lost_dropped


# ---------------------------------------------------------------- approach 1: the envelope


@pytest.mark.parametrize("table", [parametric_points(n_models=6, n_tokens=8), isoflop_table(n_models=8, n_tokens=20),
                                   isoflop_design(n_budgets=12, sizes=9)], ids=["grid", "curves", "isoflops"])
def test_envelope_keeps_exactly_the_points_no_cheaper_point_beats(table):
    """Checked point by point: no kept point is beaten by one at a smaller or equal C, every dropped point is. (The old
    per-bin minimum kept 3 of 19 beaten points on the 6 x 8 grid, where every distinct C was its own 'budget'.)"""
    env = approach1.envelope(table["N"], table["D"], table["C"], table["loss"])
    kept = approach1.frontier(table["C"], table["loss"])
    assert len(env) == len(kept) and np.all(np.diff(env["C"]) > 0) and np.all(np.diff(env["loss"]) < 0)
    assert dominated_brute_force(table["C"].to_numpy(), table["loss"].to_numpy(), kept) == (0, 0)


def test_envelope_recovers_the_planted_allocation_with_a_ci():
    """The isoFLOP design's envelope is each budget's best size: a and b near the planted ones (within the grid's
    resolution), and the bootstrap CI holds them."""
    table = isoflop_design()
    out_dir = AnalysisOutput(Path(pytest.importorskip("tempfile").mkdtemp()), "scaling_laws")
    summary = scaling_laws.run(table, {"approaches": [1], "figures": False, "approach1": {"bootstrap": {"n": 300}}}, out_dir)
    first = summary["approach1"]
    assert first["a"] == pytest.approx(A_TRUE, abs=0.01) and first["b"] == pytest.approx(1 - A_TRUE, abs=0.01)
    assert first["n_envelope"] == 40  # one point per budget: each budget's best beats every cheaper budget's
    lo, hi = first["a_ci"]
    assert lo < A_TRUE < hi and hi - lo < 0.05
    assert first["ci_method"] == "percentile" and first["n_boot"] == 300


def test_envelope_of_one_dominating_size_is_not_identifiable(tmp_path):
    """When the largest model beats every other at each C, the envelope holds one size: reported, no numbers."""
    sizes = np.geomspace(1e7, 1e9, 5)
    rows = [(n, c / (6 * n), c) for c in (1e17, 1e18, 1e19, 1e20) for n in sizes]
    n, d, c = (np.array(v, float) for v in zip(*rows))
    table = pd.DataFrame({"N": n, "D": d, "C": c, "loss": 10 - np.log(n) * 0.1 - np.log(c) * 0.01})
    summary, _ = scaling_laws.run_approach1(table, scaling_laws.Approach1Settings())
    assert summary["identifiable"] is False and "1 model size" in summary["reason"]


# ---------------------------------------------------------------- CI methods


def test_ci_methods_on_a_known_bootstrap_distribution():
    """percentile: the quantiles; basic: reflected about the estimate; bca with z0 = a = 0 is the percentile interval,
    and with a shifted distribution it moves by the bias correction as the formula says."""
    x = norm.ppf((np.arange(20000) + 0.5) / 20000)  # an exact N(0, 1) sample
    lo, hi = intervals.bootstrap_ci(x, 0.0, "percentile")
    assert (lo, hi) == pytest.approx((-1.96, 1.96), abs=2e-3)
    assert intervals.bootstrap_ci(x + 1.0, 0.5, "basic") == pytest.approx([0.5 - 1.96 - 0.5, 0.5 + 1.96 - 0.5], abs=2e-3)
    assert intervals.bootstrap_ci(x, 0.0, "bca") == pytest.approx([lo, hi], abs=2e-3)
    z0 = norm.ppf(np.mean(x < 0.3))  # estimate 0.3: z0 = 0.3
    expected = np.quantile(x, norm.cdf(2 * z0 + norm.ppf([0.025, 0.975])))
    assert intervals.bootstrap_ci(x, 0.3, "bca") == pytest.approx(list(expected), abs=1e-9)
    jk = np.array([0.0, 0.1, 0.5, 1.5])  # skewed leave-one-out estimates: acceleration by Efron's formula
    d = jk.mean() - jk
    assert intervals.acceleration(jk) == pytest.approx(np.sum(d**3) / (6 * np.sum(d**2) ** 1.5))
    with pytest.raises(ValueError, match="unknown ci method"):
        intervals.bootstrap_ci(x, 0.0, "student")


def test_ci_method_setting_reaches_the_summary(tmp_path):
    """ci_method=basic on approach 2: the summary's a_ci is 2a - the percentile interval reversed."""
    table = isoflop_table(n_models=10, n_tokens=25)
    out = AnalysisOutput(tmp_path, "scaling_laws")
    base = {"approaches": [2], "figures": False, "approach2": {"n_budgets": 8, "bootstrap": {"n": 200}}}
    pct = scaling_laws.run(table, base, out)["approach2"]
    basic = scaling_laws.run(table, {**base, "approach2": {**base["approach2"], "ci_method": "basic"}}, out)["approach2"]
    assert basic["a"] == pct["a"] and basic["ci_method"] == "basic"
    assert basic["a_ci"] == pytest.approx([2 * pct["a"] - pct["a_ci"][1], 2 * pct["a"] - pct["a_ci"][0]], rel=1e-12)
    bca = scaling_laws.run(table, {**base, "approach2": {**base["approach2"], "ci_method": "bca"}}, out)["approach2"]
    assert bca["a_ci"][0] < bca["a"] < bca["a_ci"][1]


def test_jackknife_of_approach2_equals_refits_without_each_budget():
    """Leave-one-budget-out exponents equal the weighted power-law fit on the other budgets, computed directly."""
    res = approach2.fit_isoflop(isoflop_table(), n_boot=100, seed=3)
    jk_a, _ = approach2.jackknife_exponents(res)
    ok = res.minima[res.minima["status"].eq("ok")].reset_index(drop=True)
    for i in (0, len(ok) // 2, len(ok) - 1):
        rest = ok.drop(index=i)
        fit = approach1.fit_power_law(rest["budget"], rest["N_star"], 1 / rest["log_N_sd"] ** 2)
        assert jk_a[i] == pytest.approx(fit.exponent, rel=1e-10)


# ---------------------------------------------------------------- random streams


def test_a_budgets_draws_do_not_depend_on_the_other_budgets():
    """Approach 2 with budgets [b1, b2, b3, b4] and with [b2, b3]: the same bootstrap sd at b2 and b3 (no floor)."""
    table = isoflop_table()
    budgets = list(np.geomspace(3e17, 3e19, 4))
    full = approach2.fit_isoflop(table, budgets=budgets, n_boot=200, seed=4, min_std_factor=0).minima.set_index("budget")
    part = approach2.fit_isoflop(table, budgets=budgets[1:3], n_boot=200, seed=4, min_std_factor=0).minima.set_index("budget")
    np.testing.assert_array_equal(full.loc[part.index, "log_N_sd"], part["log_N_sd"])
    other_seed = approach2.fit_isoflop(table, budgets=budgets[1:3], n_boot=200, seed=5, min_std_factor=0).minima
    assert not np.array_equal(other_seed["log_N_sd"], part["log_N_sd"].to_numpy())


def test_a_groups_ci_does_not_depend_on_the_other_groups(tmp_path):
    """group_by: group 'web' gets the same CIs (approaches 1, 2, 3) whether or not another group is fitted beside it,
    and differs from what the same rows get under another label (the label is part of the stream's identity)."""
    web = isoflop_table(n_models=8, n_tokens=20, seed=1).assign(dataset="web")
    code = isoflop_table(n_models=8, n_tokens=20, seed=2).assign(dataset="code")
    params = {"figures": False, "group_by": ["dataset"], "approach1": {"bootstrap": {"n": 50}},
              "approach2": {"n_budgets": 6, "bootstrap": {"n": 50}}, "approach3": {"grid": SMALL_GRID, "bootstrap": {"n": 30}}}
    out = AnalysisOutput(tmp_path, "scaling_laws")
    both = scaling_laws.run(pd.concat([code, web], ignore_index=True), params, out)["groups"]["web"]
    alone = scaling_laws.run(web, params, out)["groups"]["web"]
    renamed = scaling_laws.run(web.assign(dataset="other"), params, out)["groups"]["other"]
    for k in (1, 2, 3):
        assert both[f"approach{k}"]["a_ci"] == alone[f"approach{k}"]["a_ci"], k
        assert both[f"approach{k}"]["a"] == alone[f"approach{k}"]["a"], k
    for k in (1, 3):  # the estimates do not depend on the draws (approach 2's weights do)
        assert renamed[f"approach{k}"]["a"] == pytest.approx(alone[f"approach{k}"]["a"], rel=1e-9), k
    for k in (1, 2, 3):
        assert renamed[f"approach{k}"]["a_ci"] != alone[f"approach{k}"]["a_ci"], k


def test_stream_identity():
    """The same seed and identity give the same draws; floats equal to 12 digits are the same identity."""
    a = intervals.stream(1, "g", 1e18).standard_normal(3)
    np.testing.assert_array_equal(a, intervals.stream(1, "g", float("1.000000000000e18")).standard_normal(3))
    assert not np.array_equal(a, intervals.stream(1, "h", 1e18).standard_normal(3))
    assert not np.array_equal(a, intervals.stream(2, "g", 1e18).standard_normal(3))


# ---------------------------------------------------------------- progress bars


def test_progress_bars_have_their_totals(tmp_path, monkeypatch):
    """Bars on approach 1 and 2's bootstraps, approach 3's starts and bootstrap: built with the known total, enabled by
    out.progress, and advanced to it."""
    made = []

    class Bar:
        def __init__(self, total, desc, enabled, unit):
            self.total, self.desc, self.enabled, self.unit, self.n = total, desc, enabled, unit, 0
            made.append(self)

        def update(self, k=1):
            self.n += k

        def close(self):
            pass

    monkeypatch.setattr(scaling_laws, "progress_bar", lambda total, desc, enabled=True, unit="run": Bar(total, desc, enabled, unit))
    table = isoflop_table(n_models=8, n_tokens=20)
    out = AnalysisOutput(tmp_path, "scaling_laws", progress=True)
    params = {"figures": False, "approach1": {"bootstrap": {"n": 40}}, "approach2": {"n_budgets": 6, "bootstrap": {"n": 50}},
              "approach3": {"grid": SMALL_GRID, "bootstrap": {"n": 30}, "schedule": [[4, 40], [4, 10]]}}
    summary = scaling_laws.run(table, params, out)
    bars = {b.desc: b for b in made}
    assert bars["approach 1 bootstrap"].total == 40
    assert bars["approach 2 bootstrap"].total == 50 * 6
    assert summary["approach2"]["n_budgets"] + len(summary["approach2"]["rejected"]) == 6
    assert bars["approach 3 starts"].total == 108 + 40 + 10  # the starts entering each stage, then the final run
    assert bars["approach 3 bootstrap"].total == 30
    for b in made:
        assert b.enabled and b.n == b.total, (b.desc, b.n, b.total)
    made.clear()
    scaling_laws.run(table, params, AnalysisOutput(tmp_path, "scaling_laws", progress=False))
    assert made and not any(b.enabled for b in made)


# ---------------------------------------------------------------- figures


def test_every_figure_has_a_caption_and_the_interactive_isoflop_figure_is_written(tmp_path):
    """Each figure file is named in summary.json "figures" with a one-line caption; the plotly isoFLOP figure holds one
    point trace per budget and the accepted minima, with hover text."""
    table = isoflop_table(n_models=10, n_tokens=25)
    out = AnalysisOutput(tmp_path, "scaling_laws")
    params = {"approach1": {"bootstrap": {"n": 20}}, "approach2": {"n_budgets": 8, "bootstrap": {"n": 50}},
              "approach3": {"grid": SMALL_GRID, "bootstrap": {"n": 20}}}
    summary = scaling_laws.run(table, params, out)
    final = out.commit(summary)
    written = json.loads((final / "summary.json").read_text())
    figures = sorted(p.name for p in final.iterdir() if p.suffix in (".png", ".html"))
    assert figures == ["isoflop_curves.png", "isoflop_interactive.html", "optimal_allocation.png", "parametric_contours.png"]
    assert set(written["figures"]) == set(figures)
    assert all(caption and "\n" not in caption for caption in written["figures"].values())
    from analyses.scaling_laws import plots

    res = approach2.fit_isoflop(table, n_budgets=8, n_boot=50)
    fig = plots.isoflop_interactive(res.points, res.minima)
    markers = [t for t in fig.data if t.mode == "markers" and t.name != "fitted minimum"]
    assert len(markers) == res.points["budget"].nunique()
    star = [t for t in fig.data if t.name == "fitted minimum"][0]
    assert len(star.x) == int(res.minima["status"].eq("ok").sum()) and "N*" in star.hovertemplate
    html = (final / "isoflop_interactive.html").read_text()
    assert "fitted minimum" in html
