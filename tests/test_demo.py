"""The synthetic sweep: deterministic, planted optimum where the loss is lowest, names that parse back, writers."""
from __future__ import annotations

import json
import re
import time

import numpy as np
import pandas as pd
import pytest

from toolkit import demo
from toolkit.demo import DemoSweep, make_example_sweep, make_lr_bs_sweep
from toolkit.errors import UserError

NAME = re.compile(r"^lr-(?P<lr>[^-]+(?:e-\d+)?)-bs-(?P<bs>\d+)-seed-(?P<seed>\d+)$")


@pytest.fixture(scope="module")
def sweep() -> DemoSweep:
    return make_lr_bs_sweep()


def test_deterministic_for_a_seed():
    a, b, c = make_lr_bs_sweep(3), make_lr_bs_sweep(3), make_lr_bs_sweep(4)
    pd.testing.assert_frame_equal(a.history, b.history)
    assert a.planted == b.planted
    assert not np.allclose(a.history["train_loss"].fillna(0), c.history["train_loss"].fillna(0))


def test_history_layout(sweep):
    h = sweep.history
    assert list(h.columns) == list(demo.HISTORY_COLUMNS)
    p = sweep.planted
    n_runs = len(p["lrs"]) * len(p["batch_sizes"]) * len(p["seeds"])
    assert h["run_name"].nunique() == n_runs
    assert not h.duplicated(["run_name", "step"]).any()
    assert (p["A"], p["B"], p["C"], p["seq_len"]) == (-0.25, 0.5, -4.75, 1024)
    assert p["horizons"] == [2**k for k in range(26, 31)]


def test_names_parse_back_exactly(sweep):
    runs = sweep.history.drop_duplicates("run_name")
    for name, lr, bs, seed in runs[["run_name", "lr", "bs", "seed"]].itertuples(index=False):
        m = NAME.match(name)
        assert m, name
        assert float(m["lr"]) == lr and int(m["bs"]) == bs and int(m["seed"]) == seed
    assert demo.run_name(2.0**-11, 64, 0) == "lr-0.00048828125-bs-64-seed-0"


def test_every_horizon_is_a_logged_step_of_every_run(sweep):
    h = sweep.history
    tokens = h["step"] * h["bs"] * sweep.planted["seq_len"]
    for horizon in sweep.planted["horizons"]:
        assert set(h.loc[tokens == horizon, "run_name"]) == set(h["run_name"])


@pytest.mark.parametrize("make", [make_lr_bs_sweep, make_example_sweep])
def test_lr_grid_brackets_the_optimum_with_margin(make):
    s = make()
    grid = np.array(s.planted["lr_log2"])
    for horizon in s.planted["horizons"]:
        for bs in s.planted["batch_sizes"]:
            opt = s.optimal_log2_lr(horizon, bs)
            assert grid.min() + 1.0 <= opt <= grid.max() - 1.0


def test_planted_optimum_is_the_minimum_of_the_noiseless_loss():
    s = make_lr_bs_sweep(lr_log2=np.arange(-12.0, -4.9, 0.25), noise=0.0, norm_noise=0.0, n_diverged=0)
    h = s.history
    h = h.assign(horizon=h["step"] * h["bs"] * s.planted["seq_len"])
    for horizon in s.planted["horizons"]:
        for bs in s.planted["batch_sizes"]:
            rows = h[(h["horizon"] == horizon) & (h["bs"] == bs) & (h["seed"] == 0)]
            best = rows.loc[rows["train_loss"].idxmin()]
            assert np.log2(best["lr"]) == pytest.approx(s.optimal_log2_lr(horizon, bs))
            # norm transfer: the norm at the optimum is the same everywhere
            assert best["output_norm"] == pytest.approx(s.planted["optimal_output_norm"])
    fine = 2.0 ** np.linspace(-12, -5, 2001)
    for horizon, bs in [(2**26, 32), (2**30, 256)]:
        lr_min = fine[np.argmin(s.noiseless_loss(fine, bs, horizon))]
        assert np.log2(lr_min) == pytest.approx(s.optimal_log2_lr(horizon, bs), abs=0.01)


def test_norm_is_monotone_in_lr(sweep):
    lrs = 2.0 ** np.arange(-12, -5, 0.5)
    assert np.all(np.diff(sweep.noiseless_log2_norm(lrs, 64, 2**28)) > 0)


def test_diverged_runs_blow_up_then_nan(sweep):
    diverged = sweep.planted["diverged_runs"]
    assert len(diverged) == 2
    h = sweep.history
    for name in diverged:
        loss = h.loc[h["run_name"] == name, "train_loss"].to_numpy()
        assert np.isinf(loss).sum() == 1 and np.isnan(loss).any() and np.nanmax(loss[np.isfinite(loss)]) > 100
        assert np.isnan(loss[-1])
    others = h[~h["run_name"].isin(diverged)]
    assert np.isfinite(others[["train_loss", "output_norm"]].to_numpy()).all()
    assert make_lr_bs_sweep(n_diverged=0).planted["diverged_runs"] == []


def test_bad_logging_grid_is_a_user_error():
    with pytest.raises(UserError, match="log_every_tokens"):
        make_lr_bs_sweep(log_every_tokens=3 * 2**20)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_and_sidecar(tmp_path, suffix):
    s = make_lr_bs_sweep(lr_log2=[-10, -9], batch_sizes=(32, 64), log_every_tokens=2**26)
    path = s.write(tmp_path / f"sweep{suffix}")
    back = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(back.columns) == list(demo.HISTORY_COLUMNS)
    assert back["lr"].tolist() == s.history["lr"].tolist()
    np.testing.assert_allclose(back["train_loss"], s.history["train_loss"], rtol=1e-6)
    assert json.loads((tmp_path / "sweep.planted.json").read_text()) == json.loads(json.dumps(s.planted))
    assert demo.load_planted(path)["A"] == -0.25
    with pytest.raises(UserError, match="csv or .parquet"):
        s.write(tmp_path / "sweep.txt")


def test_bundled_example_matches_its_generator():
    shipped = pd.read_csv(demo.EXAMPLE_SWEEP)
    s = make_example_sweep()
    assert demo.EXAMPLE_SWEEP.stat().st_size < 400_000
    assert shipped["run_name"].tolist() == s.history["run_name"].tolist()
    assert shipped["lr"].tolist() == s.history["lr"].tolist()
    np.testing.assert_allclose(shipped["train_loss"], s.history["train_loss"], rtol=1e-6)
    planted = demo.load_planted()
    assert planted["horizons"] == [2**k for k in range(26, 31)] and planted["seq_len"] == 1024
    assert planted == json.loads(json.dumps(s.planted))


def test_cli_writes_the_small_sweep(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path / "s.csv"), "--small", "--seed", "1"]) == 0
    assert (tmp_path / "s.planted.json").is_file()
    assert pd.read_csv(tmp_path / "s.csv")["run_name"].nunique() == 96
    with pytest.raises(SystemExit):
        demo.main([])


class RecordingTracker:
    name = "recording"

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.runs: dict[str, dict] = {}

    def start_run(self, name, config=None):
        run = self.runs[name] = {"config": dict(config or {}), "metrics": [], "status": None}

        class Writer:
            def log_config(self, config):
                run["config"].update(config)

            def log_metrics(self, metrics, step):
                run["metrics"].append((step, dict(metrics)))

            def log_artifact(self, path):
                pass

            def finish(self, status="finished"):
                run["status"] = status

        return Writer()


def test_log_sweep_through_a_tracker():
    s = make_lr_bs_sweep(lr_log2=[-11, -10, -9], batch_sizes=(32, 64), log_every_tokens=2**26, n_diverged=1)
    tracker = RecordingTracker()
    assert demo.log_sweep(s, tracker, progress=False) == 12
    name = "lr-0.0009765625-bs-64-seed-1"
    run = tracker.runs[name]
    assert run["config"] == {"lr": 2.0**-10, "bs": 64, "seed": 1, "seq_len": 1024}
    expected = s.history[s.history["run_name"] == name]
    assert [st for st, _ in run["metrics"]] == expected["step"].tolist()
    assert run["metrics"][0][1]["train_loss"] == expected["train_loss"].iloc[0]
    bad = tracker.runs[s.planted["diverged_runs"][0]]
    assert bad["status"] == "failed"
    assert all(np.isfinite(v) for _, m in bad["metrics"] for v in m.values())


def test_cli_tracker_settings_are_cast_and_checked_by_the_trackers_schema(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert demo.main(["--small", "--tracker", "local", "--tracker-arg", f"path={runs}", "--no-progress"]) == 0
    assert len(list(runs.glob("*/metrics.jsonl"))) == 96
    tracker = demo.build_tracker("local", [f"path={runs}", "run_columns=run,name"])
    assert tracker.run_columns == ("run", "name")
    with pytest.raises(UserError, match="key=value"):
        demo.build_tracker("local", ["oops"])
    with pytest.raises(UserError, match="unknown tracker 'neptune'"):
        demo.build_tracker("neptune", [])
    with pytest.raises(UserError, match="nope"):
        demo.build_tracker("local", ["nope=1"])


@pytest.mark.slow
def test_two_thousand_runs_by_a_thousand_steps_is_fast():
    t0 = time.perf_counter()
    s = make_lr_bs_sweep(lr_log2=np.linspace(-12, -5, 250), log_every_tokens=2**20)
    assert len(s.history) == 2000 * 1024
    assert time.perf_counter() - t0 < 10


def test_cli_scaling_table(tmp_path, capsys):
    from toolkit.scaling_data import load_misfitting

    path = tmp_path / "misfitting_scaling_results.csv"
    assert demo.main(["--scaling-table", str(path), "--seed", "3"]) == 0
    table = pd.read_csv(path)
    assert {"loss", "N", "D", "C", "model", "peak_lr"} <= set(table.columns)
    assert 100 <= len(table) <= 1000 and not table.duplicated(["model", "D", "peak_lr"]).any()
    assert table.groupby("model")["D"].nunique().min() >= 5 and table["model"].nunique() >= 3
    assert 3 <= table.groupby(["model", "D"])["peak_lr"].nunique().min() <= 5
    np.testing.assert_allclose(table["C"], 6.0 * table["N"] * table["D"])
    planted = json.loads((tmp_path / "misfitting_scaling_results.planted.json").read_text())
    assert planted["a"] == pytest.approx(planted["beta"] / (planted["alpha"] + planted["beta"]))
    survey = demo.make_scaling_table(3)
    pd.testing.assert_frame_equal(table, survey.table, check_dtype=False)
    assert not np.allclose(survey.table["loss"], demo.make_scaling_table(4).table["loss"])
    # the planted optimum lies inside the sampled peak_lr range of every (model, D), not on its edge
    for (n_params, tokens), group in table.groupby(["N", "D"]):
        opt = survey.optimal_log2_lr(n_params, tokens)
        lrs = np.log2(group["peak_lr"].to_numpy())
        assert lrs.min() + 0.5 <= opt <= lrs.max() - 0.5
    # and the lowest loss of each (model, D) is mostly at the sampled lr nearest to it, never far off (small noise)
    best = table.loc[table.groupby(["N", "D"])["loss"].idxmin()]
    gap = np.abs(np.log2(best["peak_lr"]) - survey.optimal_log2_lr(best["N"], best["D"]))
    assert (gap <= 0.5 + 1e-9).mean() > 0.75 and gap.max() < 1.5
    frame = load_misfitting(path)
    assert list(frame.columns[:4]) == ["N", "D", "C", "loss"] and len(frame) == len(table)


TINY_GRID = ["--lr-log2", "-11,-10,-9,-8", "--batch-sizes", "32,64", "--seeds", "0", "--horizons-log2", "26,27",
             "--log-every-tokens", "33554432"]


def _quiet_env(tmp_path):
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}  # no WANDB_SILENT here
    env.update({"PYTHONPATH": str(repo), "HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / ".wandb-config")})
    return env


def _lines(proc):
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize("tracker, args", [("local", ["path=runs"]), ("wandb", ["path=wandb/", "offline=true"])])
def test_the_demo_logs_quietly(tmp_path, tracker, args):
    import subprocess
    import sys

    if tracker == "wandb":
        pytest.importorskip("wandb")
    args = [a.replace("path=", f"path={tmp_path}/") for a in args]
    argv = [sys.executable, "-m", "toolkit.demo", *TINY_GRID, "--tracker", tracker]
    argv += [x for a in args for x in ("--tracker-arg", a)]
    proc = subprocess.run(argv, cwd=tmp_path, env=_quiet_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc) == [f"logged 8 runs through {tracker}"]  # without the demo W&B printed ~16 lines per run
    back = demo.build_tracker(tracker, [a for a in args if not a.startswith("offline")])
    from toolkit.runset import Selection

    assert len(back.list_runs(Selection())) == 8  # quiet, and every run was logged


def test_the_fira_toy_is_quiet(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("torch")
    argv = [sys.executable, "-m", "toolkit.examples.fira_toy", "--out", "fira", "--steps", "3"]
    proc = subprocess.run(argv, cwd=tmp_path, env=_quiet_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc)
    assert len(lines) == 3 and lines[0].startswith("fira-lowrank: final loss"), lines


def test_log_sweep_shows_a_bar_with_the_run_count(monkeypatch):
    seen = []

    class Bar:
        def __init__(self, total, desc, enabled=True, unit="run"):
            seen.append({"total": total, "enabled": enabled, "unit": unit, "updates": 0})

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n=1):
            seen[-1]["updates"] += n

    monkeypatch.setattr(demo, "progress_bar", Bar)
    s = make_lr_bs_sweep(lr_log2=[-11, -10, -9], batch_sizes=(32, 64), log_every_tokens=2**26, n_diverged=1)
    assert demo.log_sweep(s, RecordingTracker(), progress=True) == 12
    assert seen == [{"total": 12, "enabled": True, "unit": "run", "updates": 12}]


def test_quiet_trackers_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "false")
    monkeypatch.delenv("WANDB_CONSOLE", raising=False)
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    demo.quiet_trackers()
    import os

    assert os.environ["WANDB_SILENT"] == "false"
    assert os.environ["WANDB_CONSOLE"] == "off" and os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"


def test_cli_long_reaches_2_33_tokens(tmp_path, capsys):
    out = tmp_path / "long.csv"
    assert demo.main(["--out", str(out), "--long"]) == 0
    planted = demo.load_planted(out)
    assert planted["horizons"] == [2**28, 2**30, 2**32, 2**33]
    h = pd.read_csv(out)
    assert int((h["step"] * h["bs"] * planted["seq_len"]).max()) == 2**33
    assert "wrote 120 runs (30720 rows)" in capsys.readouterr().out
