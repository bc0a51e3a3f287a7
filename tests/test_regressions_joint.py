"""The joint (lr, bs) optimum per horizon and its scaling recover a planted (B*, eta*) power law; each fit's bootstrap
stream depends only on the seed and the fit's identity."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyses import regressions
from analyses.regressions.bootstrap import bootstrap_ci, fit_stream
from analyses.regressions.joint import joint_optimum_at
from toolkit.demo import make_lr_bs_sweep
from toolkit.outputs import AnalysisOutput

BS = (16, 32, 64, 128, 256, 512)


@pytest.fixture(scope="module")
def planted():
    sweep = make_lr_bs_sweep(seed=1, batch_sizes=BS, log_every_tokens=2**25, n_diverged=0)
    return sweep.lr_bs_table(), sweep.planted


def run(table, tmp_path, horizons, n_boot=20):
    params = {"minima": {"horizons": horizons, "plots": False, "bootstrap": {"n": 50}}, "bootstrap": {"n": n_boot, "seed": 4},
              "norm_band": {"enabled": False}}
    out = AnalysisOutput(tmp_path, "regressions", progress=False)
    summary = regressions.run(table, params, out)
    out.discard()
    return summary


def test_joint_optimum_of_an_exact_parabola_is_its_vertex():
    x = np.arange(4.0, 10.0)
    g = pd.DataFrame({"bs": 2.0**x, "loss": 3 + 0.02 * (x - 6.3) ** 2, "lr": 2.0 ** (-9 + 0.5 * x), "output_norm": 64.0})
    r = joint_optimum_at(g)
    assert r["status"] == "ok" and not r["on_edge"]
    assert r["log2_bs_star"] == pytest.approx(6.3) and r["loss_star"] == pytest.approx(3.0)
    assert r["log2_lr_star"] == pytest.approx(-9 + 0.5 * 6.3) and r["log2_norm_star"] == pytest.approx(6.0)
    assert joint_optimum_at(g.head(2))["status"] == "too_few_bs"
    assert joint_optimum_at(g.assign(loss=-g["loss"]))["status"] == "nonconvex"


def test_planted_bs_star_and_eta_star_laws_are_recovered(planted, tmp_path):
    table, p = planted
    horizons = [2**k for k in p["horizons_log2"]]
    joint = run(table, tmp_path, horizons, n_boot=10)["joint_optimum"]
    per_h = pd.DataFrame(joint["per_horizon"])
    truth_bs = p["bs_A"] * per_h["log2_horizon"] + p["bs_C"]
    truth_lr = p["A"] * per_h["log2_horizon"] + p["B"] * truth_bs + p["C"]
    assert (per_h["status"] == "ok").all() and not per_h["on_edge"].any()
    np.testing.assert_allclose(per_h["log2_bs_star"], truth_bs, atol=0.3)
    np.testing.assert_allclose(per_h["log2_lr_star"], truth_lr, atol=0.15)
    inside = (per_h["log2_bs_star_ci_low"] <= truth_bs) & (truth_bs <= per_h["log2_bs_star_ci_high"])
    assert inside.sum() >= 4
    bs_law, lr_law = joint["bs_star"], joint["lr_star"]
    assert bs_law["slope_ci"][0] <= p["bs_A"] <= bs_law["slope_ci"][1] and bs_law["slope"] == pytest.approx(p["bs_A"], abs=0.1)
    planted_eta_slope = p["A"] + p["B"] * p["bs_A"]
    assert lr_law["slope_ci"][0] <= planted_eta_slope <= lr_law["slope_ci"][1]
    # the output norm at the joint optimum is the planted optimal norm
    assert joint["log2_norm_at_joint_optimum"]["mean"] == pytest.approx(p["norm_log2_opt"], abs=0.05)


def test_a_horizons_ci_does_not_depend_on_the_other_horizons_requested(planted, tmp_path):
    table, _ = planted
    a = pd.DataFrame(run(table, tmp_path, [2**26, 2**28], n_boot=3)["joint_optimum"]["per_horizon"]).set_index("horizon")
    b = pd.DataFrame(run(table, tmp_path, [2**28, 2**30], n_boot=3)["joint_optimum"]["per_horizon"]).set_index("horizon")
    cols = ["log2_bs_star", "log2_bs_star_ci_low", "log2_bs_star_ci_high", "log2_lr_star_ci_low", "log2_lr_star_ci_high"]
    pd.testing.assert_series_equal(a.loc[2**28, cols], b.loc[2**28, cols])


def test_fit_streams_are_reproducible_and_independent():
    x = fit_stream(0, "joint_optimum", 2**28).random(5)
    np.testing.assert_array_equal(x, fit_stream(0, "joint_optimum", 2**28).random(5))
    assert not np.allclose(x, fit_stream(0, "joint_optimum", 2**30).random(5))
    assert not np.allclose(x, fit_stream(1, "joint_optimum", 2**28).random(5))


def test_ci_methods():
    rng = np.random.default_rng(0)
    samples = 1.0 + rng.gamma(2.0, 0.1, 4000)  # skewed replicates around an estimate of 1.2
    se, normal = bootstrap_ci(1.2, samples, "normal")
    assert se == pytest.approx(np.std(samples, ddof=1)) and normal == pytest.approx([1.2 - 1.96 * se, 1.2 + 1.96 * se], rel=1e-3)
    _, pct = bootstrap_ci(1.2, samples, "percentile")
    assert pct == pytest.approx(list(np.quantile(samples, [0.025, 0.975])))
    _, basic = bootstrap_ci(1.2, samples, "basic")
    assert basic == pytest.approx([2.4 - pct[1], 2.4 - pct[0]])
    _, wide = bootstrap_ci(1.2, samples, "percentile", inflation=2.0)
    assert wide == pytest.approx([1.2 + 2 * (pct[0] - 1.2), 1.2 + 2 * (pct[1] - 1.2)])
    assert np.isnan(bootstrap_ci(1.0, np.array([np.nan, 1.0]))[0])


def test_figures_name_the_bs_column_by_its_role(planted, tmp_path):
    """Under experiment=misfitting_lr the bs column holds model size N: no figure may call it a batch size."""
    table, truth = planted
    params = {"minima": {"horizons": truth["horizons"][:3], "plots": False, "bootstrap": {"n": 0},
                         "bs_label": "model size N"},
              "bootstrap": {"n": 0}, "norm_band": {"enabled": False}}
    out = AnalysisOutput(tmp_path, "regressions", progress=False)
    import matplotlib.pyplot as plt

    made = []
    real_figure = out.figure

    def keep(name, fig, caption=None):
        made.append((name, fig))
        return real_figure(name, fig, caption=caption)

    out.figure = keep
    regressions.run(table, params, out)
    texts = {}
    for name, fig in made:
        if hasattr(fig, "axes") and isinstance(fig, plt.Figure):
            texts[name] = " ".join(t.get_text() for ax in fig.axes for t in [ax.xaxis.label, ax.yaxis.label]
                                   + (ax.get_legend().get_texts() if ax.get_legend() else []))
        else:
            texts[name] = fig.to_json()
    out.discard()
    assert "model size N" in texts["lr_bs_fit"] and "batch size" not in texts["lr_bs_fit"]
    assert "model size N" in texts["lr_star_vs_horizon"] and '"bs ' not in texts["lr_star_vs_horizon"]
