"""Recipe scaling_table: tracker histories, flat tables and the public-data loaders give N, D, C, loss tables."""
from __future__ import annotations

import json
import lzma
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adapters.local import LocalTracker
from toolkit.errors import UserError
from toolkit.protocol import read_runset
from toolkit.recipes import scaling_table
from toolkit.runset import RunSet, Selection
from toolkit.scaling_data import load_misfitting, load_porian, load_warmstarting, open_lm_params

ROOT = Path(__file__).resolve().parents[1]
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28


def law(n, d):
    return E + A / np.asarray(n, float) ** ALPHA + B / np.asarray(d, float) ** BETA


def build(runset: RunSet, **params):
    """The recipe with a list collecting its warnings."""
    warnings: list[str] = []
    table = scaling_table.build(runset, params, warnings.append)
    return table, warnings


def history_runset(tmp_path: Path, sizes=(1e7, 4e7, 1.6e8), steps=range(0, 50, 10), tokens_per_step=4096,
                   log_tokens=False, log_flops=False) -> RunSet:
    """One run per model size logged through the local back end (N and tokens per step in the config)."""
    tracker = LocalTracker(tmp_path / "runs")
    for n in sizes:
        writer = tracker.start_run(f"n{int(n)}", {"model": {"n_params": int(n)}, "data": {"tokens_per_step": tokens_per_step},
                                                  "flops_per_token": 7 * int(n)})
        for step in steps:
            d = step * tokens_per_step
            metrics = {"train_loss": float(law(n, max(d, 1)))}
            if log_tokens:
                metrics["tokens_seen"] = float(d)
            if log_flops:
                metrics["flops"] = float(8 * n * d)
            writer.log_metrics(metrics, step)
        writer.finish()
    reader = LocalTracker(tmp_path / "runs")
    return read_runset(reader, Selection(), None)


# ---------------------------------------------------------------- tracker histories


def test_histories_every_logged_step_is_a_point_with_d_from_steps_and_c_6nd(tmp_path):
    """D = step * tokens_per_step (a config key), C = 6 N D; step 0 (D = 0) reported and dropped; run_id kept."""
    runset = history_runset(tmp_path)
    table, warnings = build(runset, columns={"N": "model.n_params", "loss": "train_loss"},
                            tokens_per_step="data.tokens_per_step")
    assert len(table) == 3 * 4  # steps 10..40 of three runs
    assert set(table.columns) >= {"N", "D", "C", "loss", "run_id", "step"}
    np.testing.assert_allclose(table["D"], table["step"] * 4096)
    np.testing.assert_allclose(table["C"], 6 * table["N"] * table["D"])
    np.testing.assert_allclose(table["loss"], law(table["N"], table["D"]))
    assert table.groupby("run_id")["N"].nunique().eq(1).all() and table["run_id"].nunique() == 3
    assert any("dropped 3 of 15 rows" in w and "D=0" in w for w in warnings), warnings


def test_a_diverged_run_is_dropped_from_its_blow_up_and_named(tmp_path):
    """A run whose loss rises to a finite 1e30 (or MLflow's stored inf) from step 30: its points from there on are
    dropped and the warning names it and the step (before, the 1e30 points were kept as losses)."""
    runset = history_runset(tmp_path, sizes=(1e7, 4e7, 1.6e8, 6.4e8))
    ids = dict(zip(runset.runs["name"], runset.runs["run_id"]))
    hist = runset.history
    for name, value in (("n160000000", 1e30), ("n640000000", 1.7976931348623157e308)):
        hist.loc[(hist["run_id"] == ids[name]) & (hist["step"] >= 30), "train_loss"] = value
    params = dict(columns={"N": "model.n_params", "loss": "train_loss"}, tokens_per_step="data.tokens_per_step")
    table, warnings = build(runset, **params)
    (warning,) = [w for w in warnings if "diverged" in w]
    assert "2 run(s) diverged" in warning and "n160000000 at step 30" in warning and "n640000000 at step 30" in warning
    assert (table["loss"] < 100).all() and len(table) == 4 * 4 - 2 * 2  # steps 10..40, less the blown-up 30 and 40
    off, warnings = build(runset, **params, divergence={"enabled": False})
    assert len(off) == 16 and not [w for w in warnings if "diverged" in w]


def test_histories_tokens_per_step_number_flops_per_token_and_logged_columns(tmp_path):
    """tokens_per_step as a number, flops_per_token as a config key, and D / C from logged columns."""
    runset = history_runset(tmp_path, log_tokens=True, log_flops=True)
    by_number, _ = build(runset, columns={"N": "model.n_params", "loss": "train_loss"}, tokens_per_step=100,
                         flops_per_token="flops_per_token")
    np.testing.assert_allclose(by_number["D"], by_number["step"] * 100)
    np.testing.assert_allclose(by_number["C"], 7 * by_number["N"] * by_number["D"])
    logged, _ = build(runset, columns={"N": "model.n_params", "D": "tokens_seen", "C": "flops", "loss": "train_loss"})
    np.testing.assert_allclose(logged["D"], logged["step"] * 4096)
    np.testing.assert_allclose(logged["C"], 8 * logged["N"] * logged["D"])
    assert scaling_table.metric_keys({"columns": {"D": "tokens_seen", "C": "flops", "loss": "train_loss"}}) == \
        ["train_loss", "tokens_seen", "flops"]


def test_histories_missing_columns_are_one_line_errors(tmp_path):
    """A missing N, D or C source names itself and what is there."""
    runset = history_runset(tmp_path, sizes=(1e7,))
    with pytest.raises(UserError, match=r"no column 'params' for N .*config\.model\.n_params"):
        build(runset, columns={"N": "params", "loss": "train_loss"}, tokens_per_step=1)
    with pytest.raises(UserError, match="no column 'D' for D"):
        build(runset, columns={"N": "model.n_params", "loss": "train_loss"})
    with pytest.raises(UserError, match="no column 'flops' for C"):
        build(runset, columns={"N": "model.n_params", "C": "flops", "loss": "train_loss"}, tokens_per_step=1)
    with pytest.raises(UserError, match=r"recipe scaling_table: Key 'X' not in 'ScalingColumns'"):
        build(runset, columns={"X": "y"})
    with pytest.raises(UserError, match="recipe.tokens_per_step='nope'"):
        build(runset, columns={"N": "model.n_params", "loss": "train_loss"}, tokens_per_step="nope")


# ---------------------------------------------------------------- flat tables through tracker=local


def survey_frame(seed: int = 0) -> pd.DataFrame:
    """A small table in the misfitting survey's layout: every (model, peak_lr, horizon) run's checkpoints."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (2e7, 6e7, 2e8, 6e8, 2e9):
        for lr, penalty in ((1e-3, 1.02), (2e-3, 1.0), (4e-3, 1.05)):
            for horizon in (2e9, 8e9, 3.2e10):
                for d in np.geomspace(horizon / 8, horizon, 4):
                    loss = law(n, d) * penalty * (1 + 0.05 * (1 - d / horizon)) * np.exp(rng.normal(0, 0.002))
                    rows.append({"loss": loss, "N": int(n), "D": int(d), "C": str(int(6 * int(n) * int(d))),
                                 "model": f"m{int(n / 1e6)}", "peak_lr": lr, "total_steps": int(horizon / 1e6)})
    return pd.DataFrame(rows)


def test_flat_table_rows_are_points_best_lr_per_nd_and_bad_rows_reported(tmp_path):
    """A flat CSV read by tracker=local: each row a point (no run_id/step), C from the file (integers past int64),
    the lowest loss per (N, D) over peak_lr (and horizons), non-positive and non-finite rows reported and dropped."""
    frame = survey_frame()
    frame.loc[0, "loss"] = np.nan
    frame.loc[1, "N"] = 0
    frame.loc[2, "C"] = "-5"
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    runset = read_runset(LocalTracker(path), Selection(), None)
    table, warnings = build(runset, columns={"C": "C"}, best_over=["peak_lr"], keep_columns=["model"])
    assert "run_id" not in table.columns and "step" not in table.columns
    assert any("dropped 3 of" in w for w in warnings), warnings
    good = frame.drop(index=[0, 1, 2])
    expected = good.loc[good.groupby(["N", "D"])["loss"].idxmin()]
    assert len(table) == len(expected) == good.groupby(["N", "D"]).ngroups
    merged = table.merge(expected.astype({"N": float, "D": float}), on=["N", "D"], suffixes=("", "_x"))
    np.testing.assert_allclose(merged["loss"], merged["loss_x"])
    assert (merged["peak_lr"] == merged["peak_lr_x"]).all() and (merged["model"] == merged["model_x"]).all()
    assert table["C"].max() > 2**63  # read as floats, not lost to int64 overflow
    np.testing.assert_allclose(table["C"], 6 * table["N"] * table["D"], rtol=1e-12)


def test_flat_table_c_derived_when_not_named(tmp_path):
    """columns.C null: C = 6 N D, or flops_per_token * D when that is given."""
    frame = survey_frame().assign(C="0")  # a useless C column is ignored unless named
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    runset = read_runset(LocalTracker(path), Selection(), None)
    table, warnings = build(runset)
    np.testing.assert_allclose(table["C"], 6 * table["N"] * table["D"])
    assert len(table) == len(frame) and not warnings
    table, _ = build(runset, flops_per_token=1e9)
    np.testing.assert_allclose(table["C"], 1e9 * table["D"])


# ---------------------------------------------------------------- loaders


def test_misfitting_loader_and_recipe_loader_option(tmp_path):
    """load_misfitting reads the survey's CSV (huge C integers as floats); recipe.loader=misfitting uses it."""
    path = tmp_path / "scaling_results.csv"
    survey_frame().to_csv(path, index=False)
    frame = load_misfitting(path)
    assert list(frame.columns[:4]) == ["N", "D", "C", "loss"] and frame["C"].dtype == float
    table, _ = build(RunSet(pd.DataFrame({"run_id": []}), pd.DataFrame({"run_id": [], "step": []})),
                     loader="misfitting", path=str(path), best_over=["peak_lr"])
    assert len(table) == frame.groupby(["N", "D"]).ngroups
    assert "run_id" not in table.columns
    assert scaling_table.metric_keys({"loader": "misfitting", "path": str(path)}) == []
    with pytest.raises(UserError, match="no such file"):
        load_misfitting(tmp_path / "nope.csv")
    with pytest.raises(UserError, match="path=None; expected the file that loader=misfitting reads"):
        scaling_table.metric_keys({"loader": "misfitting"})
    with pytest.raises(UserError, match=r"Invalid value 'chinchilla', expected one of \[misfitting, warmstarting, porian\]"):
        scaling_table.metric_keys({"loader": "chinchilla", "path": "x"})
    with pytest.raises(UserError, match=r"tokens_per_step=\[1, 2\]; expected a number or the config key"):
        scaling_table.metric_keys({"tokens_per_step": [1, 2]})


def test_pipeline_does_not_read_the_tracker_when_a_loader_reads_the_data(tmp_path):
    """With recipe.loader set the tracker is never built: a tracker path that does not exist is not an error."""
    from hydra import compose, initialize_config_dir

    from toolkit.pipeline import build_table, resolve
    from toolkit.settings import register_schemas

    path = tmp_path / "scaling_results.csv"
    survey_frame().to_csv(path, index=False)
    conf = Path(__file__).resolve().parents[1] / "conf"
    register_schemas(conf)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["recipe=scaling_table", "recipe.loader=misfitting", f"recipe.path={path}",
                                           f"tracker.path={tmp_path / 'missing.csv'}", "analysis=[]"])
    job = resolve(cfg)
    assert isinstance(job.recipe.impl, scaling_table.ScalingTable) and job.recipe.settings.loader == "misfitting"
    warnings: list[str] = []
    table = build_table(job, warnings)
    assert len(table) == len(load_misfitting(path)) and {"N", "D", "C", "loss"} <= set(table.columns)
    assert scaling_table.needs_tracker({"loader": "misfitting", "path": str(path)}) is False
    assert scaling_table.needs_tracker({}) is True
    assert job.recipe.impl.needs_tracker(job.recipe.settings) is False and job.recipe.impl.metric_keys(job.recipe.settings) == []


def test_warmstarting_loader_maps_its_columns(tmp_path):
    """target_N, tokens, flops, "Validation Loss" -> N, D, C, loss; the file's flops are the loader's C."""
    n = np.repeat([1e8, 4e8], 3)
    d = np.tile([1e9, 4e9, 1.6e10], 2)
    pd.DataFrame({"target_N": n, "tokens": d, "flops": 6.5 * n * d, "Validation Loss": law(n, d),
                  "warmstart": ["none", "x", "y"] * 2}).to_parquet(tmp_path / "w.parquet")
    frame = load_warmstarting(tmp_path / "w.parquet")
    np.testing.assert_allclose(frame["C"], 6.5 * n * d)
    empty = RunSet(pd.DataFrame({"run_id": []}), pd.DataFrame({"run_id": [], "step": []}))
    table, _ = build(empty, loader="warmstarting", path=str(tmp_path / "w.parquet"), keep_columns=["warmstart"])
    np.testing.assert_allclose(table["C"], 6.5 * table["N"] * table["D"])
    assert list(table["warmstart"]) == ["none", "x", "y"] * 2
    pd.DataFrame({"N": [1.0]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="missing column.*target_N"):
        load_warmstarting(tmp_path / "bad.parquet")


def porian_pickle(path: Path) -> None:
    """Three runs in the layout of Porian et al.'s results: loss curves as Series indexed by step."""
    runs = []
    for width, depth, lr in ((96, 3, 1e-3), (96, 3, 3e-3), (128, 4, 1e-3)):
        steps = np.arange(0, 50, 10)
        runs.append({"width": width, "depth": depth, "bs": 8, "seq_len": 2048, "vocab_size": 50432, "lr": lr,
                     "dataset": "rw", "train/loss": pd.Series(6.0 - 0.01 * steps - lr, index=steps)})
    with lzma.open(path, "wb") as fh:
        pickle.dump(pd.DataFrame(runs), fh)


def test_porian_loader_refuses_pickles_unless_allowed(tmp_path):
    """Without allow_pickle: a clear refusal (from the loader and the recipe); with it: per-run curves."""
    path = tmp_path / "experiment_results.pickle.xz"
    porian_pickle(path)
    empty = RunSet(pd.DataFrame({"run_id": []}), pd.DataFrame({"run_id": [], "step": []}))
    with pytest.raises(UserError, match="refusing to unpickle.*allow_pickle=True"):
        load_porian(path)
    with pytest.raises(UserError, match="refusing to unpickle"):
        build(empty, loader="porian", path=str(path))
    table, _ = build(empty, loader="porian", path=str(path), allow_pickle=True, keep_columns=["lr"])
    assert len(table) == 3 * 4  # step 0 (no tokens yet) is not a point
    assert table["run_id"].nunique() == 3 and set(table["step"]) == {10, 20, 30, 40}
    np.testing.assert_allclose(table["D"], table["step"] * 8 * 2048)
    np.testing.assert_allclose(table["C"], 6 * table["N"] * table["D"])
    assert set(table["N"]) == set(open_lm_params(np.array([96, 128]), np.array([3, 4])))
    with pytest.raises(UserError, match="loader_options"):
        build(empty, loader="porian", path=str(path), allow_pickle=True, loader_options={"nope": 1})


def test_open_lm_param_count():
    """(4w + 3 d_ff) w depth + vocab w with d_ff = 8w/3 rounded up to a multiple of 256 (Porian et al.)."""
    assert open_lm_params(np.array([96]), np.array([3]))[0] == (4 * 96 + 3 * 256) * 96 * 3 + 50432 * 96
    assert open_lm_params(np.array([1024]), np.array([1]))[0] == (4 * 1024 + 3 * 2816) * 1024 + 50432 * 1024


# ---------------------------------------------------------------- one command, as a user runs it


def test_misfitting_experiment_runs_all_three_approaches_in_one_command(tmp_path):
    """python run.py experiment=misfitting tracker.path=<survey CSV>: one command, approaches 1, 2 and 3."""
    path = tmp_path / "scaling_results.csv"
    survey_frame().to_csv(path, index=False)
    out = tmp_path / "OUT"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "experiment=misfitting", f"tracker.path={path}",
         "analysis.scaling_laws.approach1.bootstrap.n=50", "analysis.scaling_laws.approach2.bootstrap.n=50",
         "analysis.scaling_laws.approach3.bootstrap.n=20",
         f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "scaling_laws" / "summary.json").read_text())
    assert {"approach1", "approach2", "approach3"} <= set(summary)
    assert np.isfinite(summary["approach2"]["a"]) and len(summary["approach2"]["a_ci"]) == 2
    assert 0.3 < summary["approach3"]["a"] < 0.7  # the planted law's a = 0.45, blurred by the lr and schedule effects
    assert summary["n_points"] == survey_frame().groupby(["N", "D"]).ngroups
    table = pd.read_parquet(out / "table.parquet")
    assert {"N", "D", "C", "loss", "peak_lr"} <= set(table.columns)
    assert (out / "report.html").exists()
