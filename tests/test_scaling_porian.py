"""Porian et al.'s approach 2 options (seed noise, SD floor on the Akima grid, bootstrap median as the observation,
their FLOP grid) and the porian loader's parameter counts and smoothing, each against a plain re-computation.

Their data files are not available here: every check runs on a synthetic frame shaped like their results pickle."""
from __future__ import annotations

import lzma
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import Akima1DInterpolator

import analyses.scaling_laws as scaling_laws
from analyses.scaling_laws import approach2
from analyses.scaling_laws.intervals import stream
from toolkit.errors import UserError
from toolkit.outputs import AnalysisOutput
from toolkit.scaling_data import load_porian, porian_counts, proportional_smoothing

FLOP_GRID = [float(1.25e16 * 2.0**k) for k in range(12)]
WIDTHS_DEPTHS = [(96, 3), (128, 4), (192, 6), (256, 8), (384, 10), (512, 12), (768, 16), (1024, 20)]


def plain_params(width, depth, vocab=50432):
    """OpenLM parameter count as their data.py writes it: d_ff rounded up to a multiple of 256."""
    d_ff = 256 * ((int(2 * 4 * width / 3) + 256 - 1) // 256)
    return (4 * width + 3 * d_ff) * width * depth + vocab * width


def porian_runs(seed=0, noise=0.004, dataset="rw", steps=400) -> pd.DataFrame:
    """Runs in the layout of their pickle: width, depth, bs, seq_len, dataset..., and a train/loss Series per run
    (a planted law in N = their standard count and D = step x bs x seq_len, with noise)."""
    rng = np.random.default_rng(seed)
    runs = []
    for width, depth in WIDTHS_DEPTHS:
        n = plain_params(width, depth)
        step = np.arange(10, 10 * steps + 1, 10)
        tokens = step * 256 * 2048.0
        loss = 1.69 + 406.4 / n**0.34 + 410.7 / tokens**0.28 + noise * rng.standard_normal(len(step))
        runs.append({"width": width, "depth": depth, "bs": 256, "seq_len": 2048, "vocab_size": 50432, "lr": 3e-3,
                     "dataset": dataset, "hparams": "base", "warmup": "short", "decay": "const", "seed": 0,
                     "train/loss": pd.Series(loss, index=step)})
    return pd.DataFrame(runs)


def write_pickle(frame, path):
    """The frame as an xz pickle, as they store it."""
    with lzma.open(path, "wb") as fh:
        pickle.dump(frame, fh)
    return path


# ---------------------------------------------------------------- the seed-noise model


def plain_noise_sd(loss, low, high, t_low, t_high):
    """get_noise_for_loss's SD of one loss, branch by branch as their code reads."""
    if np.log(loss) >= t_high:
        return high
    if np.log(loss) <= t_low:
        return low
    return np.exp(np.interp(np.log(loss), [np.log(t_low), np.log(t_high)], [np.log(low), np.log(high)]))


def test_porian_noise_sd_matches_their_branches():
    """Low below e^log_loss_low, high above e^log_loss_high, their interpolation between (which, with the thresholds
    compared to log(loss) but interpolated at log(threshold), gives high there)."""
    losses = np.array([2.5, 3.2, 7.0, 19.0, 21.0, 500.0, 1200.0])
    for levels in ((0.002, 0.05, 3.0, 7.0), (0.01, 0.1, 3.0, 6.0), (0.005, 0.1, 0.5, 2.0)):
        expected = [plain_noise_sd(v, *levels) for v in losses]
        np.testing.assert_allclose(approach2.porian_noise_sd(losses, *levels), expected, rtol=1e-12)
    assert approach2.porian_noise_sd(np.array([3.0]), 0.005, 0.1, 0.5, 2.0)[0] == pytest.approx(
        np.exp(np.interp(np.log(3.0), np.log([0.5, 2.0]), np.log([0.005, 0.1]))))  # a threshold where it interpolates


# ---------------------------------------------------------------- their approach 2, written out plainly


def plain_porian(table, budgets, n_boot, seed, levels, multiplier=25, factor=0.33, median_obs=True):
    """Their interp_flop + bs_median_weighted fit, step by step, from the toolkit's per-budget draws (each budget's
    stream, (models, replicates) standard normals, the same draws for N and D)."""
    log_c, log_n, sds = [], [], []
    for c in budgets:
        found = {}
        for _, run in table.groupby("run_id"):
            run = run.sort_values("C")
            lc, ll, ld = np.log(run["C"].to_numpy()), np.log(run["loss"].to_numpy()), np.log(run["D"].to_numpy())
            if np.min(np.abs(lc - np.log(c))) > np.log1p(0.1) + 1e-12:
                continue  # no checkpoint within 10%
            x = min(max(np.log(c), lc[0]), lc[-1])
            n, loss = run["N"].iloc[0], np.exp(np.interp(x, lc, ll))
            d = np.exp(np.interp(x, lc, ld)) * np.exp(np.log(c) - x)
            if n not in found or loss < found[n][1]:
                found[n] = (d, loss)
        if len(found) < 3:
            continue
        ns = np.array(sorted(found))
        ds = np.array([found[n][0] for n in ns])
        ls = np.array([found[n][1] for n in ns])
        k = len(ns)
        points = (k - 1) * multiplier
        grid_n = np.linspace(np.log(ns[0]), np.log(ns[-1]), points)
        best = int(np.argmin(Akima1DInterpolator(np.log(ns), np.log(ls))(grid_n)))
        if best in (0, points - 1):
            continue
        sd = np.array([plain_noise_sd(v, *levels) for v in ls])
        draws = stream(seed, "approach2", float(c)).standard_normal((k, n_boot))
        noisy = ls[:, None] + sd[:, None] * draws
        curves = Akima1DInterpolator(np.log(ns), np.log(noisy), axis=0)(grid_n)
        idx = np.argmin(curves, axis=0)
        valid = (idx != 0) & (idx != points - 1)
        order = np.argsort(np.log(ds))
        grid_d = np.linspace(np.log(ds).min(), np.log(ds).max(), points)
        idx_d = np.argmin(Akima1DInterpolator(np.log(ds)[order], np.log(noisy[order]), axis=0)(grid_d), axis=0)
        valid_d = (idx_d != 0) & (idx_d != points - 1)
        if valid.sum() < n_boot / 2 or valid_d.sum() < n_boot / 2:
            continue
        stars = grid_n[idx[valid]]
        floor = factor * multiplier * (grid_n[1] - grid_n[0])
        sds.append(max(np.std(stars), floor) * n_boot / valid.sum())
        log_c.append(np.log(c))
        log_n.append(np.log(np.median(np.exp(stars))) if median_obs else grid_n[best])
    slope, _ = np.polyfit(log_c, log_n, 1, w=1 / np.array(sds))
    return slope, len(log_c)


LEVELS = (0.01, 0.05, 3.0, 7.0)  # their OWT2 low level: a spread wide enough for the median to move


@pytest.fixture(scope="module")
def porian_table(tmp_path_factory):
    """The synthetic pickle through the porian loader (standard counts, raw train/loss)."""
    path = write_pickle(porian_runs(), tmp_path_factory.mktemp("porian") / "experiment_results.pickle.xz")
    return load_porian(path, allow_pickle=True)


@pytest.mark.parametrize("median_obs", [True, False], ids=["bs_median_as_obs", "point_estimate"])
def test_porian_options_equal_the_plain_procedure(porian_table, median_obs):
    """Seed noise by loss, SD floor 0.33 x 25 x the Akima grid spacing inflated by the valid share, budgets with half
    their replicates on the edge dropped, the observation the bootstrap median: the same exponent as written out."""
    budgets = [b for b in FLOP_GRID if b <= 1e18]
    expected, n_used = plain_porian(porian_table, budgets, 200, 7, LEVELS, median_obs=median_obs)
    res = approach2.fit_isoflop(
        porian_table, budgets=budgets, curve_by=["run_id"], tolerance=0.1, max_gap=0.1, n_boot=200, seed=7,
        noise_model="porian", seed_noise=dict(zip(("low", "high", "log_loss_low", "log_loss_high"), LEVELS)),
        min_std_spacing="grid", bs_median_as_obs=median_obs, max_edge_share=0.5, stream_key=("approach2",))
    assert int(res.minima["status"].eq("ok").sum()) == n_used >= 5
    assert res.fit_n.exponent == pytest.approx(expected, abs=1e-9)


def test_bs_median_and_grid_floor_change_the_fit_as_intended(porian_table):
    """Off by default: the observation is the point estimate (N_star = N_star_point), the floor uses the sizes'
    spacing; on: N_star is the bootstrap median (differs from the point estimate), and the floor is 25 x 0.33 x the
    grid spacing."""
    budgets = [b for b in FLOP_GRID if b <= 1e18]
    base = approach2.fit_isoflop(porian_table, budgets=budgets, curve_by=["run_id"], n_boot=100, seed=1, max_gap=0.1,
                                 tolerance=0.1, min_std_factor=10.0)
    ok = base.minima["status"].eq("ok")
    np.testing.assert_array_equal(base.minima.loc[ok, "N_star"], base.minima.loc[ok, "N_star_point"])
    grid = approach2.fit_isoflop(porian_table, budgets=budgets, curve_by=["run_id"], n_boot=100, seed=1, max_gap=0.1,
                                 tolerance=0.1, min_std_factor=10.0, min_std_spacing="grid", bs_median_as_obs=True)
    k = grid.minima.loc[ok, "n_models"].to_numpy()
    ratio = grid.minima.loc[ok, "log_N_sd"].to_numpy() / base.minima.loc[ok, "log_N_sd"].to_numpy()
    # both at the floor (factor 10): the ratio is 25 (k - 1) / ((k - 1) 25 - 1)
    np.testing.assert_allclose(ratio, 25 * (k - 1) / ((k - 1) * 25 - 1), rtol=1e-9)
    assert not np.allclose(grid.minima.loc[ok, "N_star"], grid.minima.loc[ok, "N_star_point"], rtol=1e-6)


def test_seed_noise_by_dataset_picks_each_groups_levels(tmp_path):
    """group_by dataset with seed_noise_by: each group's summary names its own levels; a fit spanning two datasets
    is one line saying so; the porian noise model refuses the resampling bootstrap."""
    frame = pd.concat([porian_runs(dataset="rw"), porian_runs(seed=1, dataset="owt2")], ignore_index=True)
    table = load_porian(write_pickle(frame, tmp_path / "r.pickle.xz"), allow_pickle=True)
    params = {"approaches": [2], "figures": False, "group_by": ["dataset"],
              "approach2": {"budgets": FLOP_GRID, "tolerance": 0.1, "max_gap": 0.1, "bootstrap": {
                  "n": 50, "noise_model": "porian", "seed_noise_by": "dataset",
                  "seed_noise_values": {"rw": {"low": 0.002, "high": 0.05, "log_loss_low": 3.0, "log_loss_high": 7.0}}}}}
    out = AnalysisOutput(tmp_path, "scaling_laws")
    groups = scaling_laws.run(table, params, out)["groups"]
    assert groups["rw"]["approach2"]["bootstrap"]["seed_noise"]["low"] == 0.002
    assert groups["owt2"]["approach2"]["bootstrap"]["seed_noise"]["low"] == 0.005  # no entry: seed_noise's default
    with pytest.raises(UserError, match="seed_noise_by=dataset takes 2 values"):
        scaling_laws.run(table, {**params, "group_by": []}, out)
    with pytest.raises(UserError, match="noise_model"):
        scaling_laws.run(table, {"approach2": {"bootstrap": {"mode": "resample", "noise_model": "porian"}}}, out)


# ---------------------------------------------------------------- the loader


@pytest.mark.parametrize("param_count", ["standard", "attention", "kaplan"])
def test_loader_param_counts_follow_their_data_py(tmp_path, param_count):
    """N and C per their process_big_df: params = flops_per_token / 6; attention adds 6 seq_len width depth FLOPs
    per token; kaplan drops the embeddings."""
    frame = porian_runs(steps=5)
    table = load_porian(write_pickle(frame, tmp_path / "r.pickle.xz"), allow_pickle=True, param_count=param_count)
    for width, depth in WIDTHS_DEPTHS[::3]:
        rows = table[(table["width"] == width) & (table["depth"] == depth)]
        fpt = {"standard": 6 * plain_params(width, depth),
               "attention": 6 * plain_params(width, depth) + 6 * 2048 * width * depth,
               "kaplan": 6 * plain_params(width, depth, vocab=0)}[param_count]
        assert rows["N"].iloc[0] == pytest.approx(fpt / 6, rel=1e-12)
        np.testing.assert_allclose(rows["C"], fpt * rows["step"] * 256 * 2048, rtol=1e-12)
    with pytest.raises(UserError, match="param_count"):
        porian_counts(np.array([96.0]), np.array([3.0]), param_count="chinchilla")


def plain_smoothing(series, p=0.05, compensate=True):
    """Their proportional sliding window, one point at a time."""
    values, index = series.to_numpy(float), series.index.to_numpy(float)
    out_v, out_i = [], []
    for i in range(len(values)):
        half = int(np.floor(p * i))
        lo, hi = max(0, i - half), min(len(values) - 1, i + half)
        out_v.append(values[lo:hi + 1].mean())
        out_i.append(np.interp((lo + hi) / 2, np.arange(len(values)), index))
    out_i = np.array(out_i)
    if compensate:
        out_i = out_i - np.diff(out_i, prepend=0) / 2
    return pd.Series(out_v, index=out_i)


def test_smoothing_filter_and_smoothed_loss_key(tmp_path):
    """proportional_smoothing equals the filter written point by point; loss_key train/loss_smoothed (not in the
    frame) is computed from train/loss with the logging-delay shift, as their process_big_df does."""
    series = porian_runs(steps=300)["train/loss"].iloc[2]
    for p, comp in ((0.05, True), (0.2, False)):
        got = proportional_smoothing(series, p, comp)
        want = plain_smoothing(series, p, comp)
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(got.index.to_numpy(), want.index.to_numpy(), rtol=1e-12)
    frame = porian_runs(steps=300)
    path = write_pickle(frame, tmp_path / "r.pickle.xz")
    table = load_porian(path, allow_pickle=True, loss_key="train/loss_smoothed")
    first = table[table["run_id"] == "porian-2"]
    want = plain_smoothing(frame["train/loss"].iloc[2])
    np.testing.assert_allclose(first["loss"].to_numpy(), want[want.index >= 1].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(first["step"].to_numpy(), want.index[want.index >= 1], rtol=1e-12)
    assert np.std(np.diff(first["loss"].to_numpy()[-50:])) < np.std(np.diff(frame["train/loss"].iloc[2].to_numpy()[-50:]))


def test_experiment_porian_composes_with_their_settings():
    """experiment=porian: their FLOP grid, seed-noise levels per dataset, grid floor, bootstrap median, half-edge rule."""
    from hydra import compose, initialize_config_dir

    from toolkit.settings import register_schemas, settings_of

    conf = os.path.join(os.path.dirname(__file__), "..", "conf")
    register_schemas(os.path.abspath(conf))
    with initialize_config_dir(config_dir=os.path.abspath(conf), version_base=None):
        cfg = compose(config_name="config", overrides=["experiment=porian", "recipe.path=results.pickle.xz"])
    s = settings_of(cfg.analysis.scaling_laws, scaling_laws.ScalingLawsSettings)
    a2 = s.approach2
    assert a2.budgets == pytest.approx(FLOP_GRID)
    assert a2.bs_median_as_obs and a2.min_std_spacing.value == "grid" and a2.max_edge_share == 0.5
    assert a2.bootstrap.noise_model.value == "porian" and a2.bootstrap.seed_noise_by == "dataset"
    assert a2.bootstrap.seed_noise_values["rw"].low == 0.002 and a2.bootstrap.seed_noise_values["owt2"].high == 0.1
    assert cfg.recipe.loader == "porian" and cfg.recipe.loader_options.loss_key == "train/loss_smoothed"
