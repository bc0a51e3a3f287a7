"""Minima CIs: per-cell random streams, CI methods, the closest-run procedure, the progress bar, the figures."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analyses import minima as mm
from toolkit.outputs import AnalysisOutput
from tests.test_minima import make_table, planted_vertex


@pytest.fixture(scope="module")
def noisy():
    return make_table(noise=0.02, rng_seed=3)


CI = ["lr_ci_low", "lr_ci_high", "n_boot_ok"]


@pytest.mark.parametrize("method", ["percentile", "basic", "bca"])
def test_a_cells_ci_does_not_depend_on_the_other_cells(noisy, method):
    boot = {"n": 100, "seed": 0, "ci_method": method}
    one = mm.find_minima(noisy, {"horizons": [2**18], "bootstrap": boot})
    many = mm.find_minima(noisy, {"horizons": [2**16, 2**18, 2**20], "bootstrap": boot})
    reordered = mm.find_minima(noisy, {"horizons": [2**20, 2**18], "bootstrap": boot})
    sub = noisy[noisy["bs"] == 32]  # the other batch size removed too
    alone = mm.find_minima(sub, {"horizons": [2**18], "bootstrap": boot})
    for other in (many, reordered, alone):
        for bs in alone["bs"]:
            a = one[(one["horizon"] == 2**18) & (one["bs"] == bs)][CI].to_numpy(float)
            b = other[(other["horizon"] == 2**18) & (other["bs"] == bs)][CI].to_numpy(float)
            assert np.isfinite(a).all() and np.array_equal(a, b), (method, bs, a, b)
    # the seed still matters, and the stream is a function of (seed, cell key) only
    two = mm.find_minima(noisy, {"horizons": [2**18], "bootstrap": {**boot, "seed": 1}})
    assert not np.array_equal(one[CI].to_numpy(float), two[CI].to_numpy(float))
    assert mm.cell_key_text((2**18, 64.0)) == mm.cell_key_text((2**18, 64))


def test_ci_methods_basic_reflects_the_percentile_interval(noisy):
    boot = {"n": 200, "seed": 0}
    p = mm.find_minima(noisy, {"horizons": [2**18], "bootstrap": {**boot, "ci_method": "percentile"}})
    b = mm.find_minima(noisy, {"horizons": [2**18], "bootstrap": {**boot, "ci_method": "basic"}})
    est = p["log2_lr"].to_numpy()
    lo_p, hi_p = np.log2(p["lr_ci_low"]).to_numpy(), np.log2(p["lr_ci_high"]).to_numpy()
    lo_b, hi_b = np.log2(b["lr_ci_low"]).to_numpy(), np.log2(b["lr_ci_high"]).to_numpy()
    ok = ~b["ci_widened"].to_numpy(bool)
    assert ok.any()
    assert np.allclose((2 * est - hi_p)[ok], lo_b[ok]) and np.allclose((2 * est - lo_p)[ok], hi_b[ok])
    assert set(p["ci_method"]) == {"percentile"} and set(b["ci_method"]) == {"basic"}


def test_bca_matches_scipy_on_one_cell(noisy):
    from scipy import stats

    s = mm.as_settings(mm.MinimaSettings, {"horizons": [2**18], "weighted": False,
                                           "bootstrap": {"n": 300, "seed": 4, "ci_method": "bca"}})
    m = mm.compute_minima(noisy, s)
    r = m.minima[m.minima["bs"] == 32].iloc[0]
    pts = m.points[(m.points["bs"] == 32)]
    x, y = pts["x"].to_numpy(), pts["loss"].to_numpy()

    def vertex(x, y, axis=-1):  # independent: numpy polyfit per resample
        x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
        flat_x, flat_y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        out = [(lambda c: -c[1] / (2 * c[0]))(np.polyfit(a, b, 2)) for a, b in zip(flat_x, flat_y)]
        return np.asarray(out).reshape(x.shape[:-1])

    rng = mm.cell_rng(4, (2**18, 32))
    ref = stats.bootstrap((x, y), vertex, paired=True, vectorized=True, n_resamples=300, method="BCa", rng=rng)
    assert r["ci_method"] == "bca"
    # same interval up to the resampling draws (scipy's resamples differ in the number of arrays passed)
    assert abs(np.log2(r["lr_ci_low"]) - ref.confidence_interval.low) < 0.05
    assert abs(np.log2(r["lr_ci_high"]) - ref.confidence_interval.high) < 0.05
    with pytest.raises(mm.UserError, match="ci_method"):
        mm.find_minima(noisy, {"bootstrap": {"ci_method": "bca", "mode": "residuals"}})


@pytest.mark.parametrize("closest", [False, True])
def test_every_reported_lr_lies_in_its_ci(noisy, closest):
    m = mm.find_minima(noisy, {"horizons": [2**15, 2**16, 2**18, 2**20], "optimum_from_closest": closest,
                               "bootstrap": {"n": 100}})
    has = np.isfinite(m["lr_ci_low"].to_numpy(float))
    assert has.all()
    assert ((m["lr_ci_low"] <= m["lr"]) & (m["lr"] <= m["lr_ci_high"])).all()
    if closest:  # a CI of grid lrs: the closest-run procedure bootstrapped, so its ends are grid lrs
        grid = np.log2(noisy["lr"].unique())
        for v in np.log2(np.r_[m["lr_ci_low"], m["lr_ci_high"]]):
            assert np.isclose(grid, v).any()
        assert set(m["method"]) == {"fit_closest"} and set(m["output_norm_at"]) == {"closest_point"}


def test_closest_mode_reports_the_closest_run_its_loss_and_norm(noisy):
    r = mm.compute_minima(noisy, {"horizons": [2**18], "optimum_from_closest": True, "weighted": False,
                                  "bootstrap": {"n": 0}})
    row = r.minima[r.minima["bs"] == 64].iloc[0]
    pts = r.points[r.points["bs"] == 64]
    a, b, c = np.polyfit(pts["x"], pts["loss"], 2)
    x0, y0 = -b / (2 * a), c - b**2 / (4 * a)
    j = np.argmin((pts["x"] - x0) ** 2 + (pts["loss"] - y0) ** 2)  # nearest in (x, loss), as the reference picks it
    assert row["log2_lr"] == pytest.approx(pts["log2_lr"].iloc[j]) and row["loss"] == pytest.approx(pts["loss"].iloc[j])
    assert np.log2(row["output_norm"]) == pytest.approx(pts["log2_norm"].iloc[j])
    assert row["x_vertex"] == pytest.approx(x0)


def test_progress_bar_has_the_cells_as_total(noisy, monkeypatch):
    made = []

    class Bar:
        def __init__(self, total, desc, enabled=True, unit="it"):
            self.total, self.enabled, self.n = total, enabled, 0
            made.append(self)

        def update(self, k=1):
            self.n += k

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(mm, "progress_bar", Bar)
    mm.compute_minima(noisy, {"horizons": [2**16, 2**18, 2**20], "bootstrap": {"n": 20}}, progress=True)
    (bar,) = made
    assert bar.total == 6 and bar.n == 6 and bar.enabled
    made.clear()
    table = pd.concat([noisy.assign(momentum=0.9), noisy.assign(momentum=1.0)])
    mm.compute_minima(table, {"horizons": [2**18], "by": ["momentum"], "bootstrap": {"n": 0}}, progress=False)
    (bar,) = made
    assert bar.total == 4 and bar.n == 4 and not bar.enabled


def test_run_writes_interactive_figures_with_captions_and_role_labels(noisy, tmp_path):
    out = AnalysisOutput(tmp_path, "minima")
    summary = mm.run(noisy, {"horizons": ["2^16", "2^18"], "bootstrap": {"n": 30}, "bs_label": "model size N"}, out)
    final = out.commit(summary)
    for name in ("minima_vs_horizon.png", "parabolas.png", "minima_vs_horizon_interactive.html",
                 "parabolas_interactive.html"):
        assert (final / name).stat().st_size > 1000, name
    saved = json.loads((final / "summary.json").read_text())
    assert len(saved["figures"]) == 4 and all(saved["figures"].values())
    html = (final / "parabolas_interactive.html").read_text()
    assert "model size N" in html and "batch size" not in html and "updatemenus" in html
    assert "2^16 tokens" in html and "2^18 tokens" in html
    hover = (final / "minima_vs_horizon_interactive.html").read_text()
    assert "method fit" in hover and "n_points" in hover and "CI [" in hover
    assert saved["ci_method"] == "percentile" and saved["n_with_ci"] == 4 and saved["median_ci_width_log2"] > 0
    pd.testing.assert_index_equal(pd.read_csv(final / "minima.csv").columns[:3], pd.Index(["horizon", "bs", "lr"]))


def test_parabola_png_has_one_panel_per_horizon(noisy):
    from analyses import minima_plots

    r = mm.compute_minima(noisy, {"horizons": [2**16, 2**17, 2**18, 2**20], "bootstrap": {"n": 0}})
    fig = minima_plots.plot_parabola_grid(r.minima, r.points, max_panels=12)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4 and [ax.get_title() for ax in visible][0] == "2^16 tokens"
    assert all(len(ax.get_legend().get_texts()) == 2 for ax in visible)  # one entry per batch size
    assert minima_plots.parabola_panels(r.minima) == [(2**16,), (2**17,), (2**18,), (2**20,)]


def test_planted_optimum_inside_the_ci_on_a_clean_grid(noisy):
    m = mm.find_minima(noisy, {"horizons": [2**16, 2**18, 2**20], "bootstrap": {"n": 200}})
    truth = planted_vertex(np.log2(m["horizon"]), np.log2(m["bs"]))
    assert ((np.log2(m["lr_ci_low"]) <= truth) & (truth <= np.log2(m["lr_ci_high"]))).mean() >= 5 / 6


@pytest.mark.slow
def test_default_ci_covers_the_planted_optimum_at_its_level():
    bench = pytest.importorskip("benchmarks.coverage_minima")
    table = bench.coverage(["percentile"], sweeps=50)
    cov = float(table["coverage"].iloc[0])
    assert int(table["n_cells"].iloc[0]) >= 50 * 20
    assert 0.90 <= cov <= 0.97, table
