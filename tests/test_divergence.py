"""Divergence, one rule for every recipe: a finite blow-up (1e30, MLflow's stored inf, 50x the early loss) is caught,
the minima of a sweep with such a run match the clean sweep's, and healthy sweeps have no diverged run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyses import minima as mm
from toolkit import demo
from toolkit.errors import UserError
from toolkit.recipes import lr_bs_sweep as recipe
from toolkit.runset import RunSet
from toolkit.settings import as_settings

MLFLOW_INF = 1.7976931348623157e308  # what MLflow stores for +inf, and reads back
TOL = 0.15  # the planted tolerance of the minima tests (log2 lr)
NO_BOOT = {"n": 0}


def runset_of(history: pd.DataFrame) -> RunSet:
    first = history.drop_duplicates("run_name").reset_index(drop=True)
    runs = pd.DataFrame({"run_id": [f"id{i}" for i in range(len(first))], "name": first["run_name"],
                         "state": "finished", "created_at": None, "tags": ""})
    ids = dict(zip(runs["name"], runs["run_id"]))
    hist = history[["step", "train_loss", "output_norm"]].assign(run_id=history["run_name"].map(ids))
    return RunSet(runs, hist[["run_id", "step", "train_loss", "output_norm"]])


def table_of(history: pd.DataFrame, **params) -> tuple[pd.DataFrame, list[str]]:
    warnings: list[str] = []
    return recipe.build(runset_of(history), {"seq_len": 1024, **params}, warnings.append), warnings


def minima_of(table: pd.DataFrame, sweep: demo.DemoSweep) -> pd.DataFrame:
    return mm.find_minima(table, {"horizons": sweep.planted["horizons"], "bootstrap": NO_BOOT})


@pytest.fixture(scope="module")
def sweep() -> demo.DemoSweep:
    """One seed per configuration (a point's std is then unknown, so an outlier gets a full weight in the fit)."""
    return demo.make_lr_bs_sweep(0, seeds=(0,), log_every_tokens=2**25, n_diverged=0)


@pytest.fixture(scope="module")
def clean(sweep) -> pd.DataFrame:
    table, warnings = table_of(sweep.history)
    assert not [w for w in warnings if "diverged" in w]
    return minima_of(table, sweep)


def blown_up(sweep: demo.DemoSweep, value: float, bs: int = 32) -> tuple[pd.DataFrame, str, int]:
    """The sweep with the largest-lr run of ``bs`` at ``value`` from halfway (its name and first blown-up step)."""
    h = sweep.history.copy()
    name = h.loc[(h["lr"] == h["lr"].max()) & (h["bs"] == bs), "run_name"].iloc[0]
    mine = h["run_name"] == name
    steps = h.loc[mine, "step"]
    later = mine & (h["step"] >= steps.max() / 2)
    h.loc[later, "train_loss"] = value
    return h, name, int(h.loc[later, "step"].min())


def planted_error(minima: pd.DataFrame, sweep: demo.DemoSweep) -> float:
    truth = sweep.optimal_log2_lr(minima["horizon"].to_numpy(float), minima["bs"].to_numpy(float))
    return float(np.abs(minima["log2_lr"] - truth).max())


@pytest.mark.parametrize("value", [1e30, MLFLOW_INF], ids=["1e30", "mlflow_inf"])
def test_one_blown_up_run_leaves_the_minima_of_the_clean_sweep(sweep, clean, value):
    """Before: 1e30 shifted lr* by 0.44 log2 (loss at the optimum -9e28, method still fit, no warning);
    MLflow's inf made the fit overflow (empirical_fallback, lr* 0.29 log2 off)."""
    history, name, step = blown_up(sweep, value)
    table, warnings = table_of(history)
    m = minima_of(table, sweep)
    assert (m["method"] == "fit").all(), m[["horizon", "bs", "method"]]
    assert planted_error(m, sweep) < TOL and planted_error(clean, sweep) < TOL
    assert np.abs(m["log2_lr"].to_numpy() - clean["log2_lr"].to_numpy()).max() < 0.05
    assert (m["loss"] > 2.0).all() and (m["loss"] < 4.0).all()  # a loss, not -1e28
    (warning,) = [w for w in warnings if "diverged" in w]
    assert "1 run(s) diverged" in warning and f"{name} at step {step}" in warning
    got = table.loc[table["name"] == name].set_index("step")["train_loss"]
    assert got[got.index < step].notna().all() and got[got.index >= step].isna().all()


def test_mlflow_inf_is_an_overflow_and_enabled_false_keeps_the_old_rule(sweep):
    history, name, step = blown_up(sweep, MLFLOW_INF, bs=64)
    _, warnings = table_of(history)
    (warning,) = [w for w in warnings if "diverged" in w]
    assert name in warning and "overflow" in warning
    table, warnings = table_of(history, divergence={"enabled": False})  # only inf/NaN: the stored inf stays
    assert not [w for w in warnings if "diverged" in w]
    assert (table.loc[table["name"] == name, "train_loss"] == MLFLOW_INF).any()
    history.loc[history["train_loss"] == MLFLOW_INF, "train_loss"] = np.inf
    table, warnings = table_of(history, divergence={"enabled": False})
    assert any("1 run(s) diverged" in w and name in w for w in warnings)
    assert table["train_loss"].isna().sum() == (history["train_loss"] == np.inf).sum()


def test_a_finite_blow_up_to_fifty_times_the_early_loss_is_flagged(sweep):
    h = sweep.history.copy()
    name = h.loc[(h["lr"] == h["lr"].max()) & (h["bs"] == 128), "run_name"].iloc[0]
    mine = np.flatnonzero(h["run_name"].to_numpy() == name)
    early = float(np.median(h["train_loss"].to_numpy()[mine[:3]]))
    at = mine[len(mine) // 3]
    h.loc[h.index[at:mine[-1] + 1], "train_loss"] = 50 * early  # finite, and below 1e300
    table, warnings = table_of(h)
    (warning,) = [w for w in warnings if "diverged" in w]
    assert f"{name} at step {h['step'].iloc[at]}" in warning and "early train_loss" in warning
    assert table.loc[table["name"] == name, "train_loss"].isna().sum() == len(mine) - len(mine) // 3
    assert table["train_loss"].notna().sum() == len(h) - (len(mine) - len(mine) // 3)


def test_healthy_sweeps_have_no_diverged_run_and_the_example_only_its_planted_ones():
    from toolkit.divergence import find_diverged

    for sweep in (demo.make_lr_bs_sweep(0, n_diverged=0),
                  demo.make_lr_bs_sweep(1, n_diverged=0, lr_log2=np.arange(-16.0, -2.0, 0.5), noise=0.1)):
        h = sweep.history
        found = find_diverged(h["train_loss"], h["run_name"], h["step"], h["bs"] * h["step"])
        assert found.n_runs == 0 and not found.diverged.any()
        _, warnings = table_of(h)
        assert not [w for w in warnings if "diverged" in w]
    example = pd.read_csv(demo.EXAMPLE_SWEEP)
    planted = demo.load_planted()["diverged_runs"]
    table, warnings = table_of(example)
    (warning,) = [w for w in warnings if "diverged" in w]
    assert warning.count(" at step ") == len(planted) and all(name in warning for name in planted)
    assert table.loc[~table["name"].isin(planted), "train_loss"].notna().all()


def test_find_diverged_rules_one_by_one():
    from toolkit.divergence import DivergenceSettings, find_diverged

    steps = np.tile(np.arange(8.0), 4)
    run = np.repeat(["a", "b", "c", "d"], 8)
    loss = np.tile(np.linspace(6.0, 3.0, 8), 4)
    loss[8 + 5] = 40.0  # b: 40 > 5 x its early loss 5.57, and 40 / the median 3.86 at step 5 is > 10
    loss[16 + 6] = 1e300  # c: an overflow
    loss[24 + 2] = -np.inf  # d: non-finite; then a value that looks healthy: d stays diverged
    shuffled = np.random.default_rng(0).permutation(len(loss))  # points may come in any order
    found = find_diverged(loss[shuffled], run[shuffled], steps[shuffled], steps[shuffled])
    assert dict(zip(found.runs["run"], found.runs["step"])) == {"b": 5.0, "c": 6.0, "d": 2.0}
    reasons = dict(zip(found.runs["run"], found.runs["reason"]))
    assert "early loss" in reasons["b"] and "overflow" in reasons["c"] and "-inf" in reasons["d"]
    diverged = np.zeros(len(loss), bool)
    diverged[shuffled] = found.diverged
    expected = (run == "b") & (steps >= 5) | (run == "c") & (steps >= 6) | (run == "d") & (steps >= 2)
    assert (diverged == expected).all()
    # the median rule alone: early_factor off
    only_median = find_diverged(loss, run, steps, steps, DivergenceSettings(early_factor=None))
    assert "median 3.857 at its horizon" in dict(zip(only_median.runs["run"], only_median.runs["reason"]))["b"]
    # the first points are the early reference: a steep first drop is not a blow-up
    drop = find_diverged([400.0, 20.0, 17.0, 15.0, 14.0], ["r"] * 5, [0, 1, 2, 3, 4])
    assert drop.n_runs == 0
    # NaN is a point not logged; off: only +-inf, point by point
    off = find_diverged(loss, run, steps, steps, DivergenceSettings(enabled=False))
    assert off.diverged.sum() == 1 and off.runs["run"].tolist() == ["d"]
    assert find_diverged([np.nan, 3.0, np.nan], ["r"] * 3, [0, 1, 2]).n_runs == 0


def test_divergence_settings_are_checked():
    with pytest.raises(UserError, match=r"divergence.early_factor=0.5; expected a factor > 1"):
        recipe.build(runset_of(demo.make_lr_bs_sweep(0, n_diverged=0, seeds=(0,), batch_sizes=(32,)).history),
                     {"seq_len": 1024, "divergence": {"early_factor": 0.5}}, [].append)
    with pytest.raises(UserError, match=r"Key 'max_loss' not in 'DivergenceSettings'"):
        as_settings(recipe.LrBsSweepSettings, {"divergence": {"max_loss": 3}}, who="recipe lr_bs_sweep")
    s = as_settings(recipe.LrBsSweepSettings, {"divergence": {"median_factor": None, "early_points": 5}})
    assert s.divergence.median_factor is None and s.divergence.early_points == 5
