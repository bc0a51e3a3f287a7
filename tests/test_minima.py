"""Minima over the learning rate: planted-parabola recovery, one test per knob against an independent numpy answer."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from analyses import minima as mm
from toolkit.errors import UserError
from toolkit.outputs import AnalysisOutput

TOK = 2**14  # every run logs at k * TOK tokens, k = 1..64 (2^14 .. 2^20); seq_len = 1
LR_LOG2 = np.arange(-12.0, -5.4, 0.5)  # 14 lrs
NO_BOOT = {"n": 0}


def planted_vertex(log2_h, log2_bs):
    """The planted law of the small generator: log2 lr* = -0.25 log2 h + 0.5 log2 bs - 6.5."""
    return -0.25 * np.asarray(log2_h) + 0.5 * np.asarray(log2_bs) - 6.5


def make_table(lr_log2=LR_LOG2, bss=(32, 64), seeds=(0, 1), n_points=64, curvature=0.05, noise=0.0, rng_seed=0,
               vertex=planted_vertex, norm=True) -> pd.DataFrame:
    """Per-run table like recipe lr_bs_sweep's: parabolic loss in log2 lr around a known vertex."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    tokens = np.arange(1, n_points + 1) * TOK
    lh = np.log2(tokens)
    for x in lr_log2:
        for bs in bss:
            for seed in seeds:
                v = vertex(lh, np.log2(bs))
                loss = 2.0 + 4.0 / lh + curvature * (x - v) ** 2 + noise * rng.standard_normal(len(tokens))
                frame = pd.DataFrame({"run_id": f"r{x}-{bs}-{seed}", "name": f"lr-{2**x!r}-bs-{bs}-seed-{seed}",
                                      "lr": 2.0**x, "bs": bs, "seed": seed, "step": tokens // bs, "horizon": tokens,
                                      "train_loss": loss})
                if norm:
                    frame["output_norm"] = np.exp2(6.0 + (x - v))
                rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def expected_points(table, bs, lo, hi):
    """Hand-selected points: mean loss per lr over the rows of ``bs`` with log2 horizon in [lo, hi]."""
    lh = np.log2(table["horizon"].to_numpy(float))
    sel = table[(table["bs"] == bs) & (lh >= lo - 1e-9) & (lh <= hi + 1e-9)]
    pts = sel.groupby("lr")["train_loss"].agg(["mean", "std"]).reset_index()
    return np.log2(pts["lr"].to_numpy()), pts["mean"].to_numpy(), pts["std"].to_numpy()


def polyfit_vertex(x, y, w=None):
    a, b, _ = np.polyfit(x, y, 2, w=w)
    return -b / (2 * a)


def row(minima, horizon, bs):
    hit = minima[(minima["horizon"] == horizon) & (minima["bs"] == bs)]
    assert len(hit) == 1
    return hit.iloc[0]


@pytest.fixture(scope="module")
def noisy():
    return make_table(noise=0.02, rng_seed=1)


# ------------------------------------------------------------------------------------------------ recovery


@pytest.mark.parametrize("axis", ["lr", "output_norm"])
def test_recovers_planted_optimum_on_both_axes(noisy, axis):
    m = mm.find_minima(noisy, {"horizons": [2**16, "2^18", 2**20], "fit_axis": axis, "bootstrap": NO_BOOT})
    assert len(m) == 6 and set(m["method"]) == {"fit"}
    err = m["log2_lr"] - planted_vertex(np.log2(m["horizon"]), np.log2(m["bs"]))
    assert np.abs(err).max() < 0.15  # stated tolerance, log2 units
    assert np.allclose(np.log2(m["output_norm"]), 6.0, atol=0.15)  # norm at the optimum (planted constant 2^6)
    assert set(m["output_norm_at"]) == {"vertex_interp" if axis == "lr" else "vertex"}
    assert {"horizon", "bs", "lr", "loss", "on_edge", "lr_ci_low", "lr_ci_high", "n_points", "method", "log2_lr",
            "log2_horizon", "a", "b", "c", "output_norm"} <= set(m.columns)


def test_noiseless_parabola_gives_the_exact_vertex():
    m = mm.find_minima(make_table(), {"horizons": [2**18], "bootstrap": NO_BOOT})
    assert np.allclose(m["log2_lr"], planted_vertex(18, np.log2(m["bs"])), atol=1e-8)
    assert np.allclose(m["a"], 0.05)


def test_every_horizon_when_none_requested():
    table = make_table(n_points=8)
    m = mm.find_minima(table, {"horizons": None, "bootstrap": NO_BOOT})
    assert sorted(m["horizon"].unique()) == sorted(table["horizon"].unique())
    assert len(m) == 8 * 2
    uneven = table[(table["bs"] == 32) | (table["horizon"] % (2 * TOK) == 0)]  # bs 64 logs every other horizon
    m = mm.find_minima(uneven, {"horizons": [], "bootstrap": NO_BOOT})
    assert len(m) == 8 + 4 and (m["method"] == "fit").all() and not m["snapped"].any()


def test_pow2_horizons_are_the_logged_powers_of_two():
    table = make_table(n_points=8)  # k * 2^14 tokens, k = 1..8: powers of two at k = 1, 2, 4, 8
    m = mm.find_minima(table, {"horizons": "pow2", "bootstrap": NO_BOOT})
    assert sorted(m["horizon"].unique()) == [2**14, 2**15, 2**16, 2**17]
    odd = table[table["horizon"] == 3 * TOK]  # no power of two logged: every logged horizon is used
    assert sorted(mm.find_minima(odd, {"horizons": "pow2", "bootstrap": NO_BOOT})["horizon"].unique()) == [3 * TOK]


def test_recovery_end_to_end_with_demo_and_recipe():
    demo = pytest.importorskip("toolkit.demo")
    recipe = pytest.importorskip("toolkit.recipes.lr_bs_sweep")
    from toolkit.runset import RunSet

    sweep = demo.make_lr_bs_sweep(0, log_every_tokens=2**25)
    hist = sweep.history
    first = hist.drop_duplicates("run_name").reset_index(drop=True)
    runs = pd.DataFrame({"run_id": [f"id{i}" for i in range(len(first))], "name": first["run_name"], "state": "finished",
                         "created_at": None, "tags": ""})
    ids = dict(zip(runs["name"], runs["run_id"]))
    runset = RunSet(runs, hist[["step", "train_loss", "output_norm"]].assign(run_id=hist["run_name"].map(ids))[
        ["run_id", "step", "train_loss", "output_norm"]])
    for aggregate in (False, True):
        table = recipe.build(runset, {"seq_len": sweep.planted["seq_len"], "aggregate_seeds": aggregate}, lambda _: None)
        for axis in ("lr", "output_norm"):
            m = mm.find_minima(table, {"horizons": sweep.planted["horizons"], "fit_axis": axis, "bootstrap": NO_BOOT})
            assert (m["method"] == "fit").all()
            err = m["log2_lr"] - sweep.optimal_log2_lr(m["horizon"].to_numpy(float), m["bs"].to_numpy(float))
            assert np.abs(err).max() < 0.15, (aggregate, axis, err.abs().max())


# ------------------------------------------------------------------------------------------------ knobs


def test_avg_rel_window(noisy):
    # offsets count logged rows (as in the norm-transfer toolkit): 2^18 = 16 TOK, rows -1..+1 are 15..17 TOK
    s = {"horizons": [2**18], "avg_rel_from": -1, "avg_rel_to": 1, "weighted": False, "bootstrap": NO_BOOT}
    m = mm.find_minima(noisy, s)
    for bs in (32, 64):
        x, y, _ = expected_points(noisy, bs, np.log2(15 * TOK), np.log2(17 * TOK))
        assert row(m, 2**18, bs)["log2_lr"] == pytest.approx(polyfit_vertex(x, y), abs=1e-9)
    exact = mm.find_minima(noisy, {**s, "avg_rel_from": 0, "avg_rel_to": 0})
    x, y, _ = expected_points(noisy, 32, 18, 18)
    assert row(exact, 2**18, 32)["log2_lr"] == pytest.approx(polyfit_vertex(x, y), abs=1e-9)
    assert row(m, 2**18, 32)["averaged"] and not row(exact, 2**18, 32)["averaged"]


def test_avg_rel_must_count_rows():
    with pytest.raises(UserError, match="avg_rel_from"):
        mm.find_minima(make_table(), {"horizons": [2**18], "avg_rel_from": -0.5})
    with pytest.raises(UserError, match="<= 0"):
        mm.find_minima(make_table(), {"horizons": [2**18], "avg_rel_from": 1, "avg_rel_to": 2})


def test_strict_avg_marks_an_uncovered_window_degenerate(noisy):
    s = {"horizons": [2**20], "avg_rel_from": -1, "avg_rel_to": 1, "weighted": False, "bootstrap": NO_BOOT}
    warnings: list[str] = []
    loose = mm.find_minima(noisy, s, warnings.append)
    # the window is cut at the last logged row: said in the rows and once in the warnings, not smoothed over
    assert loose["reason"].str.contains("averaging window cut to rows -1..+0").all()
    (cut,) = [w for w in warnings if "averaging window" in w]
    assert "2^20" in cut and "bs 32, 64" in cut
    x, y, _ = expected_points(noisy, 32, np.log2(63 * TOK), 20)  # clamped to what is logged (2^20 is the last row)
    assert row(loose, 2**20, 32)["log2_lr"] == pytest.approx(polyfit_vertex(x, y), abs=1e-9)
    strict = mm.find_minima(noisy, {**s, "strict_avg": True})
    assert (strict["method"] == "degenerate").all() and len(strict) == 2  # kept, not dropped
    assert strict["lr"].isna().all() and "not covered" in strict["reason"].iloc[0]


def test_average_h_restricts_the_window_to_listed_horizons(noisy):
    s = {"horizons": [2**17, 2**19], "avg_rel_from": -1, "avg_rel_to": 0, "average_h": ["2^19"], "weighted": False,
         "bootstrap": NO_BOOT}
    m = mm.find_minima(noisy, s)
    x, y, _ = expected_points(noisy, 64, np.log2(31 * TOK), 19)
    assert row(m, 2**19, 64)["log2_lr"] == pytest.approx(polyfit_vertex(x, y), abs=1e-9)
    x, y, _ = expected_points(noisy, 64, 17, 17)
    assert row(m, 2**17, 64)["log2_lr"] == pytest.approx(polyfit_vertex(x, y), abs=1e-9)
    none = mm.find_minima(noisy, {**s, "average_h": []})
    assert not none["averaged"].any()


def test_average_bs_restricts_the_window_to_listed_batch_sizes(noisy):
    s = {"horizons": [2**19], "avg_rel_from": -1, "avg_rel_to": 0, "average_bs": [32], "weighted": False,
         "bootstrap": NO_BOOT}
    m = mm.find_minima(noisy, s)
    x, y, _ = expected_points(noisy, 32, np.log2(31 * TOK), 19)
    assert row(m, 2**19, 32)["log2_lr"] == pytest.approx(polyfit_vertex(x, y), abs=1e-9)
    x, y, _ = expected_points(noisy, 64, 19, 19)
    assert row(m, 2**19, 64)["log2_lr"] == pytest.approx(polyfit_vertex(x, y), abs=1e-9)


def test_max_loss_drops_points_above(noisy):
    x, y, _ = expected_points(noisy, 32, 18, 18)
    cut = float(np.sort(y)[8])  # keep the 9 lowest
    m = mm.find_minima(noisy, {"horizons": [2**18], "max_loss": cut, "weighted": False, "bootstrap": NO_BOOT})
    keep = y <= cut
    assert row(m, 2**18, 32)["n_points"] == keep.sum() == 9
    assert row(m, 2**18, 32)["log2_lr"] == pytest.approx(polyfit_vertex(x[keep], y[keep]), abs=1e-9)


def test_weights_are_inverse_variance_from_the_std_column():
    rng = np.random.default_rng(3)
    x = np.arange(-11.0, -5.9, 0.5)
    std = rng.uniform(0.005, 0.1, len(x))
    y = 3.0 + 0.05 * (x + 8.3) ** 2 + std * rng.standard_normal(len(x))
    table = pd.DataFrame({"lr": 2.0**x, "bs": 64, "horizon": 2**20, "step": 16, "train_loss": y,
                          "train_loss_std": std, "train_loss_count": 3})
    m = mm.find_minima(table, {"bootstrap": NO_BOOT})
    a, b, c = np.polyfit(x, y, 2, w=1 / std)  # polyfit's w multiplies residuals: w = 1/std <=> weights 1/std^2
    r = m.iloc[0]
    assert (r["a"], r["b"], r["c"]) == pytest.approx((a, b, c), rel=1e-7)
    assert bool(r["weighted"])
    a0, b0, _ = np.polyfit(x, y, 2)
    unweighted = mm.find_minima(table, {"weighted": False, "bootstrap": NO_BOOT}).iloc[0]
    assert unweighted["log2_lr"] == pytest.approx(-b0 / (2 * a0), abs=1e-9)
    # per-run table: std across the seeds of each point
    runs = make_table(noise=0.03, seeds=(0, 1, 2), rng_seed=5)
    xs, ys, ss = expected_points(runs, 32, 18, 18)
    got = row(mm.find_minima(runs, {"horizons": [2**18], "bootstrap": NO_BOOT}), 2**18, 32)
    assert got["log2_lr"] == pytest.approx(polyfit_vertex(xs, ys, 1 / ss), abs=1e-9)


def test_fit_k_by_x_uses_the_k_nearest_in_x(noisy):
    x, y, _ = expected_points(noisy, 32, 18, 18)
    i = int(np.argmin(y))
    near = np.argsort(np.abs(x - x[i]), kind="stable")[:5]
    m = mm.find_minima(noisy, {"horizons": [2**18], "fit_k": 5, "weighted": False, "bootstrap": NO_BOOT})
    r = row(m, 2**18, 32)
    assert r["n_fit"] == 5
    assert r["log2_lr"] == pytest.approx(polyfit_vertex(x[near], y[near]), abs=1e-9)


def test_fit_k_by_xy_uses_normalised_distance(noisy):
    x, y, _ = expected_points(noisy, 64, 18, 18)
    i = int(np.argmin(y))
    d = ((x - x[i]) / np.ptp(x)) ** 2 + ((y - y[i]) / np.ptp(y)) ** 2
    near = np.argsort(d, kind="stable")[:4]
    assert (x[near] < x[i]).any() and (x[near] > x[i]).any()  # already bracketing: no swap expected
    m = mm.find_minima(noisy, {"horizons": [2**18], "fit_k": 4, "fit_k_by": "xy", "weighted": False, "bootstrap": NO_BOOT})
    assert row(m, 2**18, 64)["log2_lr"] == pytest.approx(polyfit_vertex(x[near], y[near]), abs=1e-9)


def test_fit_k_brackets_the_empirical_minimum():
    x = np.array([-10.0, -8.0, -7.9, -7.8, -7.7, -6.0])
    y = 3.0 + 0.05 * (x + 8.0) ** 2 + np.array([0, -0.001, 0, 0, 0, 0])  # minimum at -8, its 3 nearest all on the right
    table = pd.DataFrame({"lr": 2.0**x, "bs": 64, "horizon": 2**20, "step": 16, "train_loss": y})
    m = mm.find_minima(table, {"fit_k": 3, "bootstrap": NO_BOOT}).iloc[0]
    chosen = [0, 1, 2]  # -7.8 (the farthest of -8, -7.9, -7.8) swapped for -10
    assert m["log2_lr"] == pytest.approx(polyfit_vertex(x[chosen], y[chosen]), abs=1e-9)


def test_c_fixed(noisy):
    x, y, _ = expected_points(noisy, 32, 18, 18)
    c = 5.0
    (a, b), *_ = np.linalg.lstsq(np.column_stack([x**2, x]), y - c, rcond=None)
    m = mm.find_minima(noisy, {"horizons": [2**18], "c_fixed": c, "weighted": False, "bootstrap": NO_BOOT})
    r = row(m, 2**18, 32)
    assert (r["a"], r["b"], r["c"]) == pytest.approx((a, b, c), rel=1e-9)
    assert r["log2_lr"] == pytest.approx(-b / (2 * a), abs=1e-9)


def test_skip_fit_all_and_pairs(noisy):
    x, y, _ = expected_points(noisy, 32, 18, 18)
    m = mm.find_minima(noisy, {"horizons": [2**18], "skip_fit": True, "bootstrap": NO_BOOT})
    r = row(m, 2**18, 32)
    assert r["method"] == "empirical" and r["log2_lr"] == x[np.argmin(y)] and r["loss"] == pytest.approx(y.min())
    pairs = mm.find_minima(noisy, {"horizons": [2**18], "skip_fit": [["2^18", 64]], "bootstrap": NO_BOOT})
    assert row(pairs, 2**18, 64)["method"] == "empirical" and row(pairs, 2**18, 32)["method"] == "fit"


def test_optimum_from_closest(noisy):
    x, y, _ = expected_points(noisy, 32, 18, 18)
    v = polyfit_vertex(x, y)
    m = mm.find_minima(noisy, {"horizons": [2**18], "optimum_from_closest": True, "weighted": False, "bootstrap": NO_BOOT})
    r = row(m, 2**18, 32)
    assert r["method"] == "fit_closest" and r["log2_lr"] == x[np.argmin(np.abs(x - v))]
    assert r["output_norm_at"] == "closest_point"


def test_fit_axis_output_norm(noisy):
    lh = np.log2(noisy["horizon"].to_numpy(float))
    sel = noisy[(noisy["bs"] == 32) & (lh == 18)].assign(ln=lambda d: np.log2(d["output_norm"]))
    pts = sel.groupby("lr").agg(loss=("train_loss", "mean"), ln=("ln", "mean")).reset_index()
    v = polyfit_vertex(pts["ln"], pts["loss"])
    slope, icept = np.polyfit(pts["ln"], np.log2(pts["lr"]), 1)
    m = mm.find_minima(noisy, {"horizons": [2**18], "fit_axis": "output_norm", "weighted": False, "bootstrap": NO_BOOT})
    r = row(m, 2**18, 32)
    assert r["x_opt"] == pytest.approx(v, abs=1e-9) and r["output_norm"] == pytest.approx(2**v)
    assert r["log2_lr"] == pytest.approx(icept + slope * v, abs=1e-9)
    with pytest.raises(UserError, match="output_norm"):
        mm.find_minima(noisy.drop(columns="output_norm"), {"fit_axis": "output_norm"})


def test_horizon_snapping_warns_and_beyond_tolerance_is_unreachable(noisy):
    target = int(2**18 * 2**0.02)
    warnings: list[str] = []
    m = mm.find_minima(noisy, {"horizons": [target], "bootstrap": NO_BOOT}, warnings.append)
    assert m["snapped"].all() and (m["horizon_used"] == 2**18).all() and (m["horizon"] == target).all()
    assert any("not logged exactly" in w and "2^18" in w for w in warnings)
    # one batch size stops early: that (horizon, bs) is unreachable, kept with its reason
    short = noisy[~((noisy["bs"] == 64) & (noisy["horizon"] > 2**18))]
    m = mm.find_minima(short, {"horizons": [2**20], "bootstrap": NO_BOOT})
    assert row(m, 2**20, 64)["method"] == "unreachable" and "horizon_tolerance" in row(m, 2**20, 64)["reason"]
    assert row(m, 2**20, 32)["method"] == "fit"
    with pytest.raises(UserError, match=r"not within horizon_tolerance"):
        mm.find_minima(noisy, {"horizons": [int(2**18 * 2**0.02)], "horizon_tolerance": 0.01})


def test_on_edge_flag():
    table = make_table(vertex=lambda lh, lb: np.full_like(lh, -4.0))  # optimum above the largest lr (2^-5.5)
    m = mm.find_minima(table, {"horizons": [2**18], "bootstrap": NO_BOOT})
    # the vertex lies beyond the grid: an extrapolation, so the empirical minimum (the largest lr) is reported
    assert m["on_edge"].all() and (m["method"] == "empirical_extrapolated").all()
    assert np.allclose(m["log2_lr"], LR_LOG2.max()) and np.allclose(m["x_vertex"], -4.0)
    assert m["reason"].str.contains("outside the fitted points' range").all()
    # a vertex on the last grid point is inside the range: a fit, on the edge
    table = make_table(vertex=lambda lh, lb: np.full_like(lh, LR_LOG2.max()))
    m = mm.find_minima(table, {"horizons": [2**18], "bootstrap": NO_BOOT})
    assert m["on_edge"].all() and (m["method"] == "fit").all()
    inside = mm.find_minima(make_table(), {"horizons": [2**18], "bootstrap": NO_BOOT})
    assert not inside["on_edge"].any()
    emp = mm.find_minima(table, {"horizons": [2**18], "skip_fit": True, "bootstrap": NO_BOOT})
    assert emp["on_edge"].all()  # the empirical minimum is the largest lr


def test_non_convex_falls_back_to_the_empirical_minimum():
    table = make_table(curvature=-0.05, noise=0.001)
    warnings: list[str] = []
    m = mm.find_minima(table, {"horizons": [2**18], "bootstrap": NO_BOOT}, warnings.append)
    assert (m["method"] == "empirical_nonconvex").all() and (m["a"] <= 0).all()
    x, y, _ = expected_points(table, 32, 18, 18)
    assert row(m, 2**18, 32)["log2_lr"] == x[np.argmin(y)]
    assert any("not convex" in w for w in warnings)


def test_a_vertex_outside_the_fitted_range_is_not_a_fit():
    """Points falling almost linearly with a slight bend: the convex parabola's vertex lies far outside the grid
    (before, this came out as method fit with lr* = 2^42): the empirical minimum is reported, and the row says why."""
    x = np.arange(-10.0, -5.0)  # log2 lr: -10 .. -6, one run each, one horizon
    loss = 3.0 - 0.1 * (x + 8) + 0.001 * (x + 8) ** 2  # vertex at x = 42, loss 0.5; points 2.80 .. 3.20
    table = pd.DataFrame({"run_id": [f"r{v}" for v in x], "lr": np.exp2(x), "bs": 32, "step": 10, "horizon": 2**18,
                          "train_loss": loss})
    warnings: list[str] = []
    m = mm.find_minima(table, {"horizons": [2**18], "bootstrap": {"n": 20}}, warnings.append)
    (r,) = m.itertuples()
    assert r.method == "empirical_extrapolated" and r.a > 0 and r.x_vertex == pytest.approx(42.0)
    assert r.log2_lr == -6.0 and r.loss == pytest.approx(loss.min())  # the empirical minimum (on the edge)
    assert r.on_edge and np.isnan(r.lr_ci_low) and "outside the fitted points' range [-10, -6]" in r.reason
    assert any("empirical_extrapolated" in w and "(2^18, bs 32)" in w for w in warnings)
    assert mm.summarize(m, mm.as_settings(mm.MinimaSettings, {}))["n_extrapolated"] == 1
    # a good parabola on the same grid stays a fit
    table["train_loss"] = 3.0 + 0.05 * (x + 8) ** 2
    assert mm.find_minima(table, {"horizons": [2**18], "bootstrap": NO_BOOT})["method"].tolist() == ["fit"]


def test_a_vertex_far_below_every_point_is_a_bad_fit_not_a_fit():
    """A cliff at the smallest lr drags a steep parabola whose vertex, inside the grid, lies 0.3 below the lowest point
    (the misfitting survey's 17m model at 2^27 tokens: fitted 3.53, lowest observed 3.85). An exact parabola can dip
    below its lowest point by at most a gap^2 / 4 between two fitted points: 0.14 here."""
    x = np.array([-10.0, -9.0, -8.0, -7.0])
    loss = np.array([6.06, 3.847, 3.856, 3.921])
    table = pd.DataFrame({"run_id": [f"r{v}" for v in x], "lr": np.exp2(x), "bs": 32, "step": 10, "horizon": 2**27,
                          "train_loss": loss})
    a, b, c = np.polyfit(x, loss, 2)  # independent answer: the unweighted fit (no std: single runs)
    v, yv = -b / (2 * a), c - b**2 / (4 * a)
    assert x.min() < v < x.max() and loss.min() - yv > a / 4  # inside the grid, below what a parabola can dip
    warnings: list[str] = []
    m = mm.find_minima(table, {"horizons": [2**27], "bootstrap": {"n": 20}}, warnings.append)
    (r,) = m.itertuples()
    assert r.method == "empirical_badfit" and r.loss_vertex == pytest.approx(yv) and r.x_vertex == pytest.approx(v)
    assert r.log2_lr == -9.0 and r.loss == pytest.approx(3.847) and "below the lowest point" in r.reason
    assert any("empirical_badfit" in w and "(2^27, bs 32)" in w for w in warnings)
    assert mm.summarize(m, mm.as_settings(mm.MinimaSettings, {}))["n_badfit"] == 1
    # points that do lie on a parabola: its vertex may dip below the lowest point, by less than a gap^2 / 4
    table["train_loss"] = 3.0 + 0.5 * (x + 8.5) ** 2  # vertex midway between -9 and -8: 0.125 below both
    (r,) = mm.find_minima(table, {"horizons": [2**27], "bootstrap": NO_BOOT}).itertuples()
    assert r.method == "fit" and r.loss == pytest.approx(3.0) and r.log2_lr == pytest.approx(-8.5)


def test_too_few_points():
    table = make_table(lr_log2=[-9.0, -8.0])
    m = mm.find_minima(table, {"horizons": [2**18], "bootstrap": NO_BOOT})
    assert (m["method"] == "too_few_points").all() and (m["n_points"] == 2).all() and len(m) == 2


def test_diverged_points_are_ignored(noisy):
    table = noisy.copy()
    top = table["lr"] == table["lr"].max()
    table.loc[top, "train_loss"] = np.nan
    m = mm.find_minima(table, {"horizons": [2**18], "bootstrap": NO_BOOT})
    assert (m["n_points"] == len(LR_LOG2) - 1).all() and (m["method"] == "fit").all()


def test_bootstrap_ci_contains_the_truth_and_is_seeded(noisy):
    s = {"horizons": [2**16, 2**18, 2**20], "bootstrap": {"n": 200, "seed": 1}}
    a, b = mm.find_minima(noisy, s), mm.find_minima(noisy, s)
    pd.testing.assert_frame_equal(a, b)
    c = mm.find_minima(noisy, {**s, "bootstrap": {"n": 200, "seed": 2}})
    assert not np.allclose(a["lr_ci_low"], c["lr_ci_low"])
    truth = np.exp2(planted_vertex(np.log2(a["horizon"]), np.log2(a["bs"])))
    assert ((a["lr_ci_low"] <= truth) & (truth <= a["lr_ci_high"])).mean() >= 5 / 6
    assert (a["lr_ci_low"] < a["lr"]).all() and (a["lr"] < a["lr_ci_high"]).all()
    r = mm.find_minima(noisy, {**s, "bootstrap": {"n": 200, "seed": 1, "mode": "residuals"}})
    assert ((r["lr_ci_low"] <= truth) & (truth <= r["lr_ci_high"])).mean() >= 5 / 6


def test_accepts_a_seed_aggregated_table(noisy):
    recipe = pytest.importorskip("toolkit.recipes.lr_bs_sweep")
    table = noisy.assign(momentum=np.nan, decayed=False, lr_in=np.nan, lr_hidden=np.nan, lr_out=np.nan)
    agg = recipe.aggregate_seeds(table)
    m = mm.find_minima(agg, {"horizons": [2**18], "bootstrap": NO_BOOT})
    x, y, s = expected_points(noisy, 32, 18, 18)
    assert row(m, 2**18, 32)["log2_lr"] == pytest.approx(polyfit_vertex(x, y, 1 / s), abs=1e-9)


# ------------------------------------------------------------------------------------------------ errors & output


def test_user_errors(noisy):
    with pytest.raises(UserError, match="missing column.*train_loss"):
        mm.find_minima(noisy.drop(columns="train_loss"), {})
    with pytest.raises(UserError, match=r"horizon 2\^31 is beyond every run: the largest logged horizon is 2\^20 \(run lr-"):
        mm.find_minima(noisy, {"horizons": ["2^31"]})
    with pytest.raises(UserError, match="horizons: could not read 'abc'"):
        mm.find_minima(noisy, {"horizons": ["abc"]})
    with pytest.raises(UserError, match="'fitk' not in 'MinimaSettings'"):
        mm.find_minima(noisy, {"fitk": 3})
    with pytest.raises(UserError, match="fit_k=2; expected an integer >= 3"):
        mm.find_minima(noisy, {"fit_k": 2})
    bad = noisy.copy()
    bad.loc[0, "lr"] = -1.0
    with pytest.raises(UserError, match="column 'lr'"):
        mm.find_minima(bad, {})


@pytest.mark.parametrize("value, expected", [(268435456, 2**28), ("2^28", 2**28), ("2**28", 2**28), ("268435456", 2**28),
                                             (2.68435456e8, 2**28)])
def test_parse_horizon(value, expected):
    assert mm.parse_horizon(value) == expected


def test_run_writes_table_summary_and_figures(noisy, tmp_path):
    out = AnalysisOutput(tmp_path, "minima")
    summary = mm.run(noisy, {"horizons": ["2^16", "2^18", "2^20"], "bootstrap": {"n": 50}}, out)
    final = out.commit(summary)
    table = pd.read_csv(final / "minima.csv")
    assert {"horizon", "bs", "lr", "loss", "on_edge", "lr_ci_low", "lr_ci_high", "n_points", "method", "output_norm",
            "log2_lr", "log2_horizon", "a", "b", "c"} <= set(table.columns) and len(table) == 6
    for name in ("minima_vs_horizon.png", "parabolas.png"):
        assert (final / name).stat().st_size > 1000
    saved = json.loads((final / "summary.json").read_text())
    assert saved["n_groups"] == 6 and saved["n_fitted"] == 6 and saved["n_degenerate"] == 0 and saved["n_on_edge"] == 0
    assert saved["settings"]["horizons"] == [2**16, 2**18, 2**20]


def test_by_splits_minima_and_mixed_columns_warn(noisy):
    table = pd.concat([noisy.assign(momentum=0.9), noisy.assign(momentum=1.0, train_loss=noisy["train_loss"] + 0.1)])
    warnings: list[str] = []
    mixed = mm.find_minima(table, {"horizons": [2**18], "bootstrap": NO_BOOT}, warnings.append)
    assert len(mixed) == 2 and any("momentum" in w and "by: [momentum]" in w for w in warnings)
    split = mm.find_minima(table, {"horizons": [2**18], "by": ["momentum"], "bootstrap": NO_BOOT})
    assert len(split) == 4 and sorted(split["momentum"].unique()) == [0.9, 1.0]
    one = mm.find_minima(noisy, {"horizons": [2**18], "bootstrap": NO_BOOT})
    r9 = split[split["momentum"] == 0.9].reset_index(drop=True)
    assert np.allclose(r9["log2_lr"], one["log2_lr"])


def test_row_percentiles_match_numpy():
    v = np.random.default_rng(0).normal(size=(4, 30))
    v[1, :7] = np.nan
    v[2] = np.nan
    lo, hi = mm.row_percentiles(v, [2.5, 97.5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.allclose(lo, np.nanpercentile(v, 2.5, axis=1), equal_nan=True)
        assert np.allclose(hi, np.nanpercentile(v, 97.5, axis=1), equal_nan=True)
