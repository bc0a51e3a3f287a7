"""Swap trackers without code changes: one demo sweep, logged through every tracker, reads back the same.

The same small deterministic sweep (``python -m toolkit.demo`` with a shrunk grid: 6 learning rates x 2 batch sizes
x 1 seed, 4 logged points per run, one diverged run) is logged through the local writer, MLflow (a real sqlite store,
and a real ``mlflow server --workers 1`` on 127.0.0.1 over the session's store) and W&B in offline mode (the real
wandb package). Then ``run.py recipe=lr_bs_sweep analysis=[minima]`` is run with only the tracker overrides changed:

    tracker=local  tracker.path=RUNS
    tracker=mlflow tracker.uri=sqlite:///STORE.db   tracker.experiment=EXP
    tracker=mlflow tracker.uri=http://127.0.0.1:PORT tracker.experiment=EXP
    tracker=wandb  tracker.path=WANDB_DIR

and every tracker must give the same RunSet (runs table and history, compared by run name and step), the same
Table (``table.parquet``) and the same ``minima/minima.csv`` as the local writer, to float tolerance.

Columns that legitimately differ between trackers (left out of the comparison, see ``TRACKER_SPECIFIC``):
``run_id`` (each tracker makes its own ids: 12 hex digits locally, 32 for MLflow, 8 characters for W&B) and
``created_at`` (the wall-clock time each run was logged; W&B keeps nanoseconds, the others microseconds).
Every other column (name, state, tags, config.*, summary.*, every history metric) must match, and each tracker
must produce the same set of columns.

Everything any tracker writes (run folders, the sqlite store, MLflow artifacts, W&B files, Hydra's run folders,
the history cache) goes under pytest's tmp folders; the subprocesses run with ``cwd`` there.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit import demo
from toolkit.runset import RunSet

try:  # real MLflow: one sqlite store and one server per test session, shared with the MLflow tracker tests
    from mlflow_fixtures import mlflow_server, mlflow_store  # noqa: F401
except pytest.skip.Exception:  # mlflow is not installed: the MLflow variants skip, the others still run

    @pytest.fixture(scope="session")
    def mlflow_store():
        pytest.skip("mlflow is not installed")

    @pytest.fixture(scope="session")
    def mlflow_server():
        pytest.skip("mlflow is not installed")


ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-9
SEQ_LEN = 1024
LOG_EVERY = 2**25
# 6 lrs (2^-11 .. 2^-6) bracket the planted optima (2^-9 .. 2^-8 here) for both batch sizes; steps start at
# tokens = LOG_EVERY (step 1024 for bs 32, 512 for bs 64), so every run logs 4 points up to 2^27 tokens.
DEMO_GRID = ["--seed", "0", "--lr-log2", "-11,-10,-9,-8,-7,-6", "--batch-sizes", "32,64", "--seeds", "0",
             "--horizons-log2", "26,27", "--log-every-tokens", str(LOG_EVERY), "--n-diverged", "1", "--no-progress"]
N_RUNS = 12
# what stays the same for every tracker; the bootstrap is seeded, so its CIs must match too
# (max_loss drops the diverged run's blown-up points, so every (horizon, bs) group is a clean quadratic fit)
RUN_ARGS = ["recipe=lr_bs_sweep", f"recipe.seq_len={SEQ_LEN}", "analysis=[minima]", "analysis.minima.max_loss=10",
            "analysis.minima.bootstrap.n=50", "analysis.minima.plots=false"]
HORIZONS = [2**25, 2**26, 2**27]  # analysis.minima.horizons=pow2 (the default) picks every logged power of two
TRACKER_SPECIFIC = {
    "run_id": "each tracker makes its own ids (local: 12 hex digits, MLflow: 32, W&B: 8 characters)",
    "created_at": "the wall-clock time each run was logged (W&B keeps ns, local and MLflow us)",
}


@dataclass
class Outcome:
    """What one tracker gave: the RunSet read through its config, and run.py's outputs."""

    tracker: str
    overrides: list[str]
    run_dir: Path
    runset: RunSet
    table: pd.DataFrame
    minima: pd.DataFrame


def _env(tmp: Path) -> dict[str, str]:
    """The test's environment for run.py: no tracker defaults from the environment, cache and plots off-repo."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    env.update(MPLBACKEND="Agg", SWEEPKIT_CACHE_DIR=str(tmp / "cache"), PYTHONPATH=str(ROOT))
    return env


def log_demo(tracker: str, *tracker_args: str) -> None:
    """``python -m toolkit.demo --tracker NAME --tracker-arg k=v ...`` (its main(), in this process)."""
    argv = [*DEMO_GRID, "--tracker", tracker]
    for arg in tracker_args:
        argv += ["--tracker-arg", arg]
    assert demo.main(argv) == 0


def read_back(overrides: list[str]) -> RunSet:
    """The RunSet the pipeline reads for these overrides (every logged key; cache off, so nothing stale)."""
    from hydra import compose, initialize_config_dir

    from toolkit.pipeline import load_runset, resolve
    from toolkit.settings import register_schemas

    register_schemas(ROOT / "conf")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *RUN_ARGS, "cache.enabled=false", "progress=false"])
    return load_runset(resolve(cfg), None)


def run_pipeline(tracker: str, overrides: list[str], tmp: Path) -> Outcome:
    """``run.py <overrides> <RUN_ARGS>`` in a subprocess (cwd under tmp), then read its outputs."""
    out = tmp / f"out-{tracker}"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides, *RUN_ARGS, f"hydra.run.dir={out}"],
                          cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{tracker}: {proc.stderr[-3000:]}"
    assert f"results: {out}" in proc.stdout
    return Outcome(tracker, overrides, out, read_back(overrides), pd.read_parquet(out / "table.parquet"),
                   pd.read_csv(out / "minima" / "minima.csv"))


def comparable(runset: RunSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs table and history keyed by run name (not id), sorted by name and step, tracker-specific columns out."""
    rs = runset.normalized()
    names = dict(zip(rs.runs["run_id"].astype(str), rs.runs["name"].astype(str)))
    runs = rs.runs.drop(columns=list(TRACKER_SPECIFIC))
    runs = runs.astype({"name": str, "state": str, "tags": str}).sort_values("name").reset_index(drop=True)
    hist = rs.history.assign(name=rs.history["run_id"].astype(str).map(names))
    metrics = [c for c in hist.columns if c not in ("run_id", "step", "name")]
    hist = hist[["name", "step", *metrics]].sort_values(["name", "step"]).reset_index(drop=True)
    return runs, hist


def assert_same(outcome: Outcome, reference: Outcome) -> None:
    """Equal RunSets (on shared columns, which must be all but TRACKER_SPECIFIC), Tables and minima."""
    runs, hist = comparable(outcome.runset)
    ref_runs, ref_hist = comparable(reference.runset)
    assert list(runs.columns) == list(ref_runs.columns), f"{outcome.tracker}: runs columns differ from local"
    pd.testing.assert_frame_equal(runs, ref_runs, check_dtype=False, rtol=RTOL, obj=f"{outcome.tracker} runs")
    assert list(hist.columns) == list(ref_hist.columns), f"{outcome.tracker}: history columns differ from local"
    pd.testing.assert_frame_equal(hist, ref_hist, check_dtype=False, rtol=RTOL, obj=f"{outcome.tracker} history")
    for col in TRACKER_SPECIFIC:  # present and filled, just different
        assert outcome.runset.runs[col].notna().all(), f"{outcome.tracker}: {col} has gaps"
    assert outcome.runset.runs["run_id"].is_unique

    def table(o: Outcome) -> pd.DataFrame:
        return o.table.drop(columns="run_id").sort_values(["name", "step"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(table(outcome), table(reference), check_dtype=False, rtol=RTOL,
                                  obj=f"{outcome.tracker} table.parquet")
    pd.testing.assert_frame_equal(outcome.minima, reference.minima, check_dtype=False, rtol=RTOL,
                                  obj=f"{outcome.tracker} minima.csv")


LITTER = ("mlruns", "mlartifacts", "mlruns.db", "mlflow.db", "wandb", ".cache")


def repo_litter() -> set[str]:
    """Default tracker folders present in the checkout (MLflow's ./mlruns, W&B's ./wandb, the history cache)."""
    return {name for name in LITTER if (ROOT / name).exists()}


@pytest.fixture(scope="module", autouse=True)
def repo_before() -> set[str]:
    """What was there before this module ran (other sessions may share the checkout)."""
    return repo_litter()


@pytest.fixture(scope="module")
def sweep() -> demo.DemoSweep:
    """The sweep DEMO_GRID logs (for the planted constants and the expected rows)."""
    return demo.make_lr_bs_sweep(0, lr_log2=[-11, -10, -9, -8, -7, -6], batch_sizes=(32, 64), seeds=(0,),
                                 horizons_log2=(26, 27), log_every_tokens=LOG_EVERY, n_diverged=1)


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Outcome:
    """The reference: the sweep logged by the local writer, through the demo CLI as a user would run it."""
    tmp = tmp_path_factory.mktemp("swap_local")
    runs = tmp / "runs"
    proc = subprocess.run([sys.executable, "-m", "toolkit.demo", *DEMO_GRID, "--tracker", "local",
                           "--tracker-arg", f"path={runs}"], cwd=tmp, env=_env(tmp), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"logged {N_RUNS} runs through local" in proc.stdout
    return run_pipeline("local", ["tracker=local", f"tracker.path={runs}"], tmp)


def test_local_reference_is_sane(local, sweep):
    """The reference itself: every run and row logged, the planted optimum found at positive horizons."""
    runs, hist = comparable(local.runset)
    assert len(runs) == N_RUNS
    assert sorted(runs["name"]) == sorted(sweep.history["run_name"].unique())
    diverged = sweep.planted["diverged_runs"]
    expected_state = {n: "failed" if n in diverged else "finished" for n in runs["name"]}
    assert runs.set_index("name")["state"].to_dict() == expected_state
    assert {"config.lr", "config.bs", "config.seed", "config.seq_len", "summary.train_loss",
            "summary.output_norm"} <= set(runs.columns)
    finite = sweep.history.dropna(subset=["train_loss"])
    finite = finite[np.isfinite(finite["train_loss"])]
    assert len(hist) == len(finite)  # the diverged run's inf/NaN points are not logged (log_sweep skips them)
    # runs log from their first token checkpoint, never step 0, so every horizon is positive for every tracker
    assert hist["step"].min() > 0 and (local.table["horizon"] > 0).all()
    minima = local.minima
    assert sorted(minima["horizon"].unique()) == HORIZONS
    assert sorted(minima["bs"].unique()) == [32, 64]
    assert (minima["method"] == "fit").all(), minima[["horizon", "bs", "method", "reason"]]
    planted = sweep.optimal_log2_lr(minima["horizon"].to_numpy(float), minima["bs"].to_numpy(float))
    assert np.abs(minima["log2_lr"] - planted).max() < 0.2


def test_mlflow_sqlite_store_matches_local(local, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow resolves a default artifact root against the working directory
    uri, experiment = mlflow_store["uri"], "swap-sqlite"
    log_demo("mlflow", f"uri={uri}", f"experiment={experiment}")
    outcome = run_pipeline("mlflow-sqlite",
                           ["tracker=mlflow", f"tracker.uri={uri}", f"tracker.experiment={experiment}"], tmp_path)
    assert_same(outcome, local)


@pytest.mark.server
def test_mlflow_server_matches_local(local, mlflow_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment = "swap-server"
    log_demo("mlflow", f"uri={mlflow_server}", f"experiment={experiment}")
    outcome = run_pipeline("mlflow-server", ["tracker=mlflow", f"tracker.uri={mlflow_server}",
                                             f"tracker.experiment={experiment}"], tmp_path)
    assert_same(outcome, local)


def test_wandb_offline_matches_local(local, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from wandb_fixtures import wandb_env

    for key, value in wandb_env(tmp_path).items():  # offline, silent, no git, nothing under the home folder
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "wandb"
    log_demo("wandb", f"path={folder}", "offline=true")
    assert len(list(folder.glob("offline-run-*/run-*.wandb"))) == N_RUNS
    outcome = run_pipeline("wandb", ["tracker=wandb", f"tracker.path={folder}"], tmp_path)
    assert_same(outcome, local)


def test_nothing_written_into_the_repository(repo_before):
    """No tracker left its default folders in the checkout (they all went under tmp)."""
    assert repo_litter() <= repo_before, f"written into the repository: {sorted(repo_litter() - repo_before)}"


def test_tracker_args_keep_their_types(tmp_path):
    """--tracker-arg values are cast by the tracker's schema: names stay text, flags become bools."""
    pytest.importorskip("mlflow")
    tracker = demo.build_tracker("mlflow", [f"uri=sqlite:///{tmp_path / 'x.db'}", "experiment=1e3", "retries=2",
                                            "timeout=5"])
    assert tracker.experiment == "1e3" and tracker.retries == 2 and tracker.timeout == 5.0
    local = demo.build_tracker("local", [f"path={tmp_path}", "run_columns=run,name"])
    assert local.run_columns == ("run", "name")
    with pytest.raises(demo.UserError, match="nope"):
        demo.build_tracker("local", ["nope=1"])
    # W&B's flag: offline=false is the bool False, not the (truthy) string "false"
    assert demo.build_tracker("wandb", ["path=x", "offline=false"]).offline is False
    assert demo.build_tracker("wandb", ["path=x", "offline=true"]).offline is True


def test_runs_logged_from_step_0_still_give_minima(sweep, tmp_path):
    """W&B runs usually log from step 0; that row has no token horizon and should not stop the analysis.

    The demo sweep above logs from its first token checkpoint (step >= 512), so it is not affected; this is the
    same sweep with a step-0 row added to every run, read by the local tracker from a wide history file.
    """
    from hydra import compose, initialize_config_dir

    from toolkit.pipeline import run

    hist = sweep.history
    first = hist.groupby("run_name", as_index=False, sort=False).first().assign(step=0)
    with_zero = pd.concat([first, hist], ignore_index=True).sort_values(["run_name", "step"], kind="stable")
    path = tmp_path / "from_step_0.csv"
    with_zero.to_csv(path, index=False)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["tracker=local", f"tracker.path={path}", *RUN_ARGS, "cache.enabled=false",
                                           "progress=false"])
    run(cfg, tmp_path / "out")
    minima = pd.read_csv(tmp_path / "out" / "minima" / "minima.csv")
    assert sorted(minima["horizon"].unique()) == HORIZONS


# ------------------------------------------------------------------------------ the other back ends LM training uses
# what each layout cannot carry (left out of its comparison); every other column and every history value must match
LAYOUT_GAPS = {
    "tensorboard": {"tags": "event files have no tags"},
    "aim": {},
    "hf_trainer": {"state": "trainer_state.json records no failure", "created_at": "no start time in the layout",
                   "tags": "no tags in the layout"},
    "lightning_csv": {"state": "CSVLogger records no run status", "created_at": "no start time in the layout",
                      "tags": "no tags in the layout"},
    "dvclive": {"state": "DVCLive records no run status", "tags": "no tags in the layout",
                "created_at": "only from logged timestamps, which the writer leaves off by default"},
}
NEEDS = {"tensorboard": "tensorboard", "aim": "aim", "hf_trainer": None, "lightning_csv": "lightning", "dvclive": "dvclive"}


def assert_same_but(outcome: Outcome, reference: Outcome, gaps: dict[str, str]) -> None:
    """``assert_same`` on the columns the layout can carry (``gaps`` names the others, with the reason)."""
    keep = [c for c in gaps if c not in TRACKER_SPECIFIC]

    def strip(o: Outcome) -> Outcome:
        runs = o.runset.runs.copy()
        for col in keep:
            runs[col] = "" if col == "tags" else "finished" if col == "state" else runs[col]
        for col in [c for c in gaps if c == "created_at"]:
            runs[col] = pd.Timestamp("2020-01-01", tz="UTC")
        summary = [c for c in runs.columns if c.startswith("summary.")]
        return Outcome(o.tracker, o.overrides, o.run_dir, RunSet(runs.drop(columns=summary), o.runset.history,
                                                                  o.runset.warnings), o.table, o.minima)

    assert_same(strip(outcome), strip(reference))


@pytest.mark.parametrize("tracker", sorted(LAYOUT_GAPS))
def test_every_other_back_end_matches_local(local, tracker, tmp_path, monkeypatch):
    """TensorBoard, Aim, HF Trainer states, Lightning CSV and DVCLive: logged by the real writers, read back equal."""
    from conftest import installed

    if NEEDS[tracker] and not installed(NEEDS[tracker]):
        pytest.skip(f"needs the {NEEDS[tracker]} extra")
    if not (ROOT / "conf" / "tracker" / f"{tracker}.yaml").exists():
        pytest.skip(f"no tracker={tracker}")
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / f"{tracker}_runs"
    log_demo(tracker, f"path={folder}")
    outcome = run_pipeline(tracker, [f"tracker={tracker}", f"tracker.path={folder}"], tmp_path)
    assert_same_but(outcome, local, LAYOUT_GAPS[tracker])
