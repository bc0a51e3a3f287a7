"""Norm-transfer tables and the regression figures, on a synthetic sweep with known structure."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyses.regressions import norm_transfer, plots
from analyses.regressions.fits import fit_lr_vs_bs_horizon, fit_norm_band, norm_band_points
from toolkit.outputs import AnalysisOutput


def sweep_table(lr_step=1.0):
    """lr x bs x horizon with per-layer lrs; the (lr_in=lr_out=2 lr_hidden) configs are 0.05 better than equal-lr."""
    rows = []
    for bs in (32, 64):
        for log_lr in np.arange(-12, -5, lr_step):
            for layered in (False, True):
                for log_h in (24, 25, 26):
                    opt = -0.25 * log_h + 0.5 * np.log2(bs) - 0.5
                    loss = 3 + 0.1 * (log_lr - opt) ** 2 - (0.05 if layered else 0.0)
                    lr = 2.0**log_lr
                    rows.append({"run_id": f"{bs}-{log_lr}-{layered}", "bs": bs, "lr": lr, "horizon": 2.0**log_h, "train_loss": loss,
                                 "output_norm": 2.0 ** (3 + (log_lr - opt)), "lr_in": 2 * lr if layered else lr, "lr_hidden": lr,
                                 "lr_out": 2 * lr if layered else lr})
    return pd.DataFrame(rows)


def test_optimum_norm_spread_is_zero_when_the_norm_at_the_optimum_is_constant():
    minima = pd.DataFrame({"horizon": [1, 2, 1, 2], "bs": [1, 1, 2, 2], "lr": [1, 1, 1, 1], "output_norm": [8.0, 8.0, 8.0, 8.0]})
    rows, spread = norm_transfer.optimum_norm_spread(minima)
    assert spread["log2_mean"] == pytest.approx(3.0) and spread["log2_std"] == pytest.approx(0.0) and spread["n"] == 4
    minima["output_norm"] = [4.0, 16.0, 8.0, 8.0]
    _, spread = norm_transfer.optimum_norm_spread(minima)
    assert spread["log2_range"] == pytest.approx(2.0)
    assert spread["log2_std"] == pytest.approx(np.std([2, 4, 3, 3], ddof=1))


def test_top1_beats_the_equal_lr_baseline_by_the_planted_margin():
    table = sweep_table()
    top1 = norm_transfer.top1_vs_baseline(table, [2**24, 2**26], bs=64)
    assert len(top1) == 2
    np.testing.assert_allclose(top1["baseline_loss"] - top1["best_loss"], 0.05, atol=1e-9)
    assert (top1["best_lr_in"] == 2 * top1["best_lr_hidden"]).all()


def test_norm_vs_horizon_picks_the_nearest_grid_pairs():
    curves = norm_transfer.norm_vs_horizon(sweep_table(), [[2.0**-9.1, 60]])
    assert set(zip(curves.lr, curves.bs)) == {(2.0**-9, 64)}
    assert len(curves) == 3


def test_figures_have_their_axes_and_traces(tmp_path):
    table = sweep_table()
    minima = table.groupby(["horizon", "bs"]).apply(lambda g: g.loc[g.train_loss.idxmin()], include_groups=False).reset_index()
    minima["lr_ci_low"], minima["lr_ci_high"] = minima.lr / 1.2, minima.lr * 1.2
    fit = fit_lr_vs_bs_horizon(minima.assign(lr=minima.lr * (1 + 0.01 * np.arange(len(minima)))))
    out = AnalysisOutput(tmp_path, "regressions")
    fig = plots.plot_lr_bs_fit(minima, fit)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) >= 3  # one fitted line per horizon
    out.figure("lr_bs_fit", fig)
    points = norm_band_points(sweep_table(lr_step=0.25), c=0.0, eps=0.3)
    band = fit_norm_band(points)
    fig = plots.plot_norm_band_fit(points, band, table, 0.0, 0.3)
    assert len(fig.axes) == 2
    out.figure("norm_band_fit", fig)
    top1 = norm_transfer.top1_vs_baseline(table, [2**24, 2**25, 2**26], bs=32)
    fig = plots.plot_top1_across_horizons(top1)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    out.figure("top1", fig)
    fig = plots.plot_norm_vs_horizon(norm_transfer.norm_vs_horizon(table, [[2.0**-9, 64], [2.0**-8, 32]]))
    assert len(fig.axes[0].lines) == 2
    out.figure("norm_vs_horizon", fig)
    fig3d = plots.plotly_loss_norm_lr_3d(table, 2.0**26)
    assert len(fig3d.data) == 2  # one trace per batch size
    out.figure("loss_norm_lr_3d", fig3d)
    triples = table[table.horizon == 2.0**26].groupby(["lr_in", "lr_hidden", "lr_out"], as_index=False)["train_loss"].mean()
    par = plots.plotly_lr_triples(triples)
    assert len(par.data) == 1 and len(par.data[0].dimensions) == 4
    out.figure("lr_triples", par)
    final = out.commit({})
    for name in ("lr_bs_fit", "norm_band_fit", "top1", "norm_vs_horizon"):
        assert (final / f"{name}.png").stat().st_size > 5000
    html = (final / "loss_norm_lr_3d.html").read_text()
    assert '<script src="../plotly.min.js"' in html or "../plotly.min.js" in html
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000


def test_regressions_without_a_minima_node_use_the_minima_analysis_defaults(tmp_path):
    """analysis=[regressions] (minima: null) and analysis=[minima,regressions] (the shared node) find the same minima."""
    from omegaconf import OmegaConf

    from analyses import regressions
    from analyses.minima import MinimaSettings, find_minima
    from analyses.regressions.fits import usable_minima
    from toolkit.settings import as_settings

    rng = np.random.default_rng(0)
    table = pd.DataFrame([{"run_id": f"{bs}-{log_lr}-{seed}", "bs": bs, "lr": 2.0**log_lr, "horizon": 2.0**log_h,
                           "train_loss": 3 + 0.1 * (log_lr - (-0.25 * log_h + 0.5 * np.log2(bs) - 3)) ** 2 + rng.normal(0, 0.01)}
                          for bs in (32, 64, 128) for log_lr in np.arange(-10, -2, 0.5) for seed in (0, 1) for log_h in (24, 25, 26)])
    alone = as_settings(regressions.RegressionsSettings, {"bootstrap": {"n": 0}})
    assert alone.minima is None and alone.minima_settings == MinimaSettings()
    root = OmegaConf.create({"analysis": {
        "minima": OmegaConf.structured(MinimaSettings),
        "regressions": OmegaConf.merge(OmegaConf.structured(regressions.RegressionsSettings),
                                       {"minima": "${oc.select:analysis.minima,null}", "bootstrap": {"n": 0}})}})
    shared = OmegaConf.to_object(root.analysis.regressions)
    assert shared.minima == MinimaSettings()
    expected = find_minima(table, MinimaSettings())
    pd.testing.assert_frame_equal(find_minima(table, alone.minima_settings), expected)
    for settings in (alone, shared):
        out = AnalysisOutput(tmp_path, "regressions", progress=False)
        summary = regressions.Regressions().run(table, settings, out)
        used = pd.read_csv(out.commit(summary) / "minima_used.csv")
        np.testing.assert_allclose(used["lr"], usable_minima(expected)["lr"], rtol=1e-12)
        assert summary["n_minima"] == len(expected)
