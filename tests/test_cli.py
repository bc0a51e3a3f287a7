"""The command line is a contract: run.py end to end on a generated sweep, bad input, multirun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from toolkit.demo import make_lr_bs_sweep

ROOT = Path(__file__).resolve().parents[1]
MINIMA_COLUMNS = {"horizon", "bs", "lr", "loss", "on_edge", "lr_ci_low", "lr_ci_high", "n_points", "method", "output_norm"}


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "MPLBACKEND": "Agg"})


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    sweep = make_lr_bs_sweep(seed=0, log_every_tokens=2**25)
    path = tmp_path_factory.mktemp("sweep") / "sweep.csv"
    sweep.write(path)
    return path, sweep


def test_contract_command_leaves_minima_csv(sweep_file, tmp_path):
    path, sweep = sweep_file
    out = tmp_path / "OUT"
    proc = run_cli("tracker=local", f"tracker.path={path}", "recipe=lr_bs_sweep", "recipe.seq_len=1024", "analysis=[minima,regressions]",
                   "analysis.minima.horizons=[67108864,268435456,1073741824]", "analysis.regressions.bootstrap.n=20",
                   f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    minima = pd.read_csv(out / "minima" / "minima.csv")
    assert MINIMA_COLUMNS <= set(minima.columns)
    assert sorted(minima["horizon"].unique()) == [2**26, 2**28, 2**30]
    err = minima["log2_lr"] - sweep.optimal_log2_lr(minima["horizon"].to_numpy(float), minima["bs"].to_numpy(float))
    assert err.abs().max() < 0.15
    summary = json.loads((out / "regressions" / "summary.json").read_text())
    fit = summary["lr_vs_bs_horizon"]
    assert set(fit) >= {"alpha", "beta", "gamma", "alpha_se", "beta_se", "gamma_se", "alpha_ci", "beta_ci", "gamma_ci", "r2", "n"}
    # the planted law (B on bs, A on horizon) lies inside the reported 95% CIs
    assert fit["alpha_ci"][0] <= sweep.planted["B"] <= fit["alpha_ci"][1]
    assert fit["beta_ci"][0] <= sweep.planted["A"] <= fit["beta_ci"][1]
    assert (out / "regressions" / "coefficients.csv").exists()
    report = (out / "report.html").read_text()
    assert "minima" in report and "regressions" in report and "data:image/png;base64" in report
    config = json.loads((out / "config.json").read_text())
    assert config["tracker"]["path"] == str(path)


@pytest.mark.parametrize("args, expected", [
    (["tracker.path=does/not/exist.csv"], "does/not/exist.csv"),
    (["analysis.minima.horizons=[1099511627776]"], "beyond every run"),
    (["recipe.metrics.train_loss=no_such_metric"], "no_such_metric"),
])
def test_bad_input_is_one_line_and_leaves_nothing_half_written(sweep_file, tmp_path, args, expected):
    path, _ = sweep_file
    out = tmp_path / "OUT"
    base = [f"tracker.path={path}", f"hydra.run.dir={out}"]
    proc = run_cli(*base[:1], *args, *base[1:]) if "tracker.path" in args[0] else run_cli(*base, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    if out.exists():
        assert not any(p.name.endswith(".partial") or p.name.endswith(".tmp") for p in out.rglob("*"))
        assert not (out / "minima").exists()


def test_empty_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    proc = run_cli(f"tracker.path={empty}", f"hydra.run.dir={tmp_path / 'OUT'}")
    assert proc.returncode == 2 and "empty.csv" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.needs_launchers
def test_multirun_over_horizons_with_joblib_gathers_a_sweep_summary(sweep_file, tmp_path):
    path, _ = sweep_file
    sweep_dir = tmp_path / "multi"
    proc = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"tracker.path={path}", "analysis=[minima]",
                   "analysis.minima.horizons=[67108864],[268435456],[1073741824]", "analysis.minima.plots=false",
                   f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1", "2"]
    for job in jobs:
        assert (sweep_dir / job / "minima" / "minima.csv").exists()
    summary = pd.read_csv(sweep_dir / "sweep_summary.csv")
    assert list(summary["status"]) == ["ok", "ok", "ok"]
    gathered = pd.read_csv(sweep_dir / "sweep_minima_minima.csv")
    assert sorted(gathered["horizon"].unique()) == [2**26, 2**28, 2**30]
    assert (sweep_dir / "report.html").exists()


def test_a_failed_job_is_reported_and_the_others_kept(sweep_file, tmp_path):
    path, _ = sweep_file
    sweep_dir = tmp_path / "multi"
    proc = run_cli("-m", f"tracker.path={path}", "analysis=[minima]", "analysis.minima.plots=false",
                   "analysis.minima.horizons=[67108864],[1099511627776]", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 2, proc.stderr[-2000:]  # bad input in one job, as in a single run
    summary = pd.read_csv(sweep_dir / "sweep_summary.csv")
    assert list(summary["status"]) == ["ok", "failed"]
    assert "beyond every run" in summary.loc[1, "error"]
    assert (sweep_dir / "0" / "minima" / "minima.csv").exists()
    assert "1 failed" in (sweep_dir / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.needs_launchers
def test_submitit_local_launcher(sweep_file, tmp_path):
    path, _ = sweep_file
    sweep_dir = tmp_path / "multi"
    proc = run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", f"tracker.path={path}", "analysis=[minima]",
                   "analysis.minima.plots=false", "analysis.minima.horizons=[67108864],[268435456]", f"hydra.sweep.dir={sweep_dir}",
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(pd.read_csv(sweep_dir / "sweep_summary.csv")["status"]) == ["ok", "ok"]


# ------------------------------------------------------------------------------------- contract: errors and exit codes
def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("args, expected", [
    (["analysis.minima.fitk=3"], "fitk"),
    (["analysis.minima.weighted=maybe"], "weighted"),
    (["analysis.minima.bootstrap.n=lots"], "bootstrap.n"),
    (["tracker.nope=1"], "nope"),
    (["analysis=[no_such_analysis]"], "no_such_analysis"),
    (["analysis.minima.fit_k=2"], "fit_k"),
    (["select.name_regex=^lr-"], "quote"),
    (["analysis=[regressions]", "analysis.regressions.minima.horizons=[3]"], "is null here"),
])
def test_config_errors_exit_2_with_one_line(tmp_path, args, expected):
    proc = run_cli(*args, f"hydra.run.dir={tmp_path / 'OUT'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert expected in _one_error_line(proc)
    if (tmp_path / "OUT").exists():
        assert not any(p.name.endswith(".partial") for p in (tmp_path / "OUT").rglob("*"))


def test_selection_with_regex_characters_and_unlisted_config_keys(sweep_file, tmp_path):
    path, sweep = sweep_file
    common = [f"tracker.path={path}", "analysis.minima.plots=false", "analysis.minima.bootstrap.n=0",
              'analysis.minima.horizons=["2^26"]']
    out = tmp_path / "a"
    proc = run_cli(*common, "select.name_regex='-bs-(32|64)-seed-0$'", "select.config.bs=[32,64]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    minima = pd.read_csv(out / "minima" / "minima.csv")
    assert sorted(minima["bs"].unique()) == [32, 64]
    table = pd.read_parquet(out / "table.parquet")
    assert set(table["seed"].unique()) == {0}


STUB_ANALYSIS = '''
from dataclasses import dataclass
from toolkit.protocol import AnalysisBase
from toolkit.settings import Settings


@dataclass
class BrokenSettings(Settings):
    pass


class Broken(AnalysisBase):
    name = "broken"
    settings_type = BrokenSettings

    def run(self, table, settings, out):
        out.table("half", table.head())
        raise ValueError("a bug in this analysis")
'''


def test_a_buggy_analysis_next_to_a_good_one(sweep_file, tmp_path):
    path, _ = sweep_file
    extra = tmp_path / "extra_conf" / "analysis"
    extra.mkdir(parents=True)
    (extra / "broken.yaml").write_text("# @package analysis.broken\n_target_: cli_stub_analysis.Broken\n")
    (tmp_path / "cli_stub_analysis.py").write_text(STUB_ANALYSIS)
    out = tmp_path / "OUT"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), f"tracker.path={path}", "analysis=[broken,minima]",
                           f"hydra.searchpath=[file://{tmp_path / 'extra_conf'}]", "analysis.minima.bootstrap.n=0",
                           f"hydra.run.dir={out}"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert status["analyses"]["broken"]["kind"] == "bug" and "a bug in this analysis" in status["analyses"]["broken"]["message"]
    assert status["analyses"]["minima"]["status"] == "ok"
    assert (out / "minima" / "minima.csv").exists() and not (out / "broken").exists()
    assert not any(p.name.endswith(".partial") for p in out.iterdir())
    assert "a bug in this analysis" in (out / "report.html").read_text()
    assert "Traceback" in (out / "run.log").read_text()  # the traceback goes to the log
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_interrupted_run_cleans_up_and_says_so(sweep_file, tmp_path, signum):
    import signal
    import time

    path, _ = sweep_file
    out = tmp_path / "OUT"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), f"tracker.path={path}", "analysis=[minima,regressions]",
                             "analysis.regressions.bootstrap.n=100000", "analysis.minima.plots=false", f"hydra.run.dir={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    deadline = time.time() + 120
    while time.time() < deadline and not (out / ".regressions.partial").exists():
        time.sleep(0.2)
    assert (out / ".regressions.partial").exists(), "the regressions never started"
    proc.send_signal(getattr(signal, signum))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert not any(p.name.endswith(".partial") for p in out.iterdir())
    status = json.loads((out / "status.json").read_text())
    assert status["error"]["kind"] == "interrupted" and status["analyses"]["minima"]["status"] == "ok"
    assert (out / "report.html").exists()
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1


def test_help_shows_the_examples_and_the_groups(tmp_path):
    own = tmp_path / "own" / "tracker"
    own.mkdir(parents=True)
    (own / "my_store.yaml").write_text("_target_: adapters.local.LocalTracker\n")
    for argv in ([sys.executable, str(ROOT / "run.py"), "--help"],  # run.py and the sweepkit command's entry point
                 [sys.executable, "-c", "from toolkit.cli import console; console()", "--config-dir", str(tmp_path / "own"),
                  "--help"]):
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = proc.stdout
        assert "== Examples ==" in out and "sweepkit tracker=mlflow tracker.uri=" in out
        groups = {line.split(":", 1)[0].strip(): line.split(":", 1)[1] for line in out.split("== Config groups")[1]
                  .split("==")[1].splitlines() if ":" in line}
        assert {"tracker", "recipe", "analysis", "experiment", "publish", "hydra/launcher"} <= set(groups)
        assert "minima" in groups["analysis"] and "lr_bs_sweep" in groups["recipe"] and "mlflow" in groups["tracker"]
        assert "schema" not in out and "run_schema" not in out  # the ConfigStore's schema groups stay out
        assert ("my_store" in groups["tracker"]) == ("--config-dir" in argv)
    assert not (tmp_path / "outputs").exists()


def test_searchpath_dirs_reads_both_ways_of_adding_a_config_folder(tmp_path):
    from toolkit.cli import searchpath_dirs

    got = searchpath_dirs(["--config-dir", "a", f"--config-dir={tmp_path}", "-cd", "/x/y", "tracker=local",
                           "hydra.searchpath=[file:///p/q,pkg://mod,file:///r]"])
    assert got == [os.path.abspath("a"), str(tmp_path), "/x/y", "/p/q", "/r"]
