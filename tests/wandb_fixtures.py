"""Real W&B offline run folders, written once per test session by the wandb package itself (no network)."""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("wandb")

from adapters.wandb import WandbTracker  # noqa: E402
from adapters.wandb_offline import find_run_files, read_run_file  # noqa: E402

PROJECT = "sweep"
N_STEPS = 120
KILLED_STEPS = 40  # the killed run has logged at least this many steps before kill -9
SPECS = [  # name, lr, bs, seed, step stride, finish status
    ("lr1e-3_bs32", 1e-3, 32, 0, 1, "finished"),
    ("lr3e-3_bs32", 3e-3, 32, 1, 1, "finished"),
    ("lr1e-2_bs64", 1e-2, 64, 2, 3, "failed"),
]
ROOT = Path(__file__).resolve().parents[1]


def wandb_env(tmp: Path) -> dict[str, str]:
    """Environment for writing offline runs quietly into ``tmp`` (never the network, git or the home folder)."""
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
            "WANDB_DIR": str(tmp), "WANDB_CONFIG_DIR": str(tmp / ".config"), "WANDB_CACHE_DIR": str(tmp / ".cache"),
            "WANDB_DATA_DIR": str(tmp / ".data"), "WANDB_CONSOLE": "off", "WANDB_DISABLE_CODE": "true"}


def metric_values(seed: int, step: int) -> dict[str, float]:
    """What run ``seed`` logs at ``step``: train_loss always, output_norm every 7th step, grad_norm every 10th."""
    out = {"train_loss": 3.0 / (1.0 + 0.05 * step) + 0.01 * seed + 1e-7 * math.sin(step)}
    if step % 7 == 0:
        out["output_norm"] = 10.0 + 0.25 * step + seed
    if step % 10 == 3 and seed != 1:
        out["grad_norm"] = 1.0 / (step + 1)
    return out


def expected_history(seed: int, steps: range) -> list[dict[str, Any]]:
    """The rows a run logged, as dicts with step and metrics."""
    return [{"step": s, **metric_values(seed, s)} for s in steps]


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from adapters.wandb import WandbTracker
from wandb_fixtures import metric_values
tracker = WandbTracker(project={project!r}, path={path!r}, offline=True)
writer = tracker.start_run("killed", {{"lr": 0.03, "bs": 16, "seed": 9}})
for step in range(100000):
    writer.log_metrics(metric_values(9, step), step=step)
    if step == {steps}:
        print("logged", flush=True)
    time.sleep(0.002 if step < {steps} else 0.05)
"""


def _kill_mid_run(folder: Path, env: dict[str, str]) -> None:
    """Start a run in a subprocess and kill -9 it once its file holds KILLED_STEPS steps."""
    script = KILL_SCRIPT.format(root=str(ROOT), project=PROJECT, path=str(folder), steps=KILLED_STEPS)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, **env,
                            "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "logged" in line, "the run to be killed never started logging"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the run file really holds the steps
            mine = [r for r in map(read_run_file, folder.glob("offline-run-*/run-*.wandb")) if r.name == "killed"]
            if mine and len(mine[0].history_payloads) >= KILLED_STEPS:
                break
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def write_offline_sweep(tmp: Path) -> dict[str, Any]:
    """Write the sweep's offline runs into ``tmp/wandb`` and return what was logged.

    3 runs through WandbTracker's writer (one with steps 0, 3, 6, ..., one finished as failed), one run killed
    with SIGKILL mid-run (in a subprocess), plus damaged copies: a truncated file and a file with a bad header.
    """
    env = wandb_env(tmp)
    folder = tmp / "wandb"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("WANDB_API_KEY", raising=False)
        tracker = WandbTracker(project=PROJECT, path=str(folder), offline=True)
        logged: dict[str, Any] = {}
        for name, lr, bs, seed, stride, status in SPECS:
            writer = tracker.start_run(name, {"lr": lr, "bs": bs, "seed": seed, "optim": {"name": "adamw", "beta2": 0.95}})
            steps = range(0, N_STEPS * stride, stride)
            for step in steps:
                writer.log_metrics(metric_values(seed, step), step=step)
            writer.finish(status)
            logged[name] = {"run_id": writer.run_id, "lr": lr, "bs": bs, "seed": seed, "status": status,
                            "rows": expected_history(seed, steps)}
        _kill_mid_run(folder, env)
    killed = [r for r in map(read_run_file, find_run_files(folder)) if r.name == "killed"]
    assert killed, "the killed run left no file"
    logged["killed"] = {"run_id": killed[0].run_id, "seed": 9}

    # damaged files: a bad header inside the sweep folder; a truncated copy of a finished run in its own folder
    bad_dir = folder / "offline-run-20200101_000001-badhdr1"
    bad_dir.mkdir()
    source = next(r for r in map(read_run_file, find_run_files(folder)) if r.name == SPECS[0][0])
    data = source.path.read_bytes()
    (bad_dir / "run-badhdr1.wandb").write_bytes(b"NOTWANDB" + data[8:200])
    trunc_dir = tmp / "damaged" / "offline-run-20200101_000000-trunc01"
    trunc_dir.mkdir(parents=True)
    (trunc_dir / "run-trunc01.wandb").write_bytes(data[: len(data) * 2 // 3 + 5])
    logged["truncated"] = {"run_id": source.run_id, "folder": trunc_dir, "size": len(data)}
    return logged


@pytest.fixture(scope="session")
def wandb_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(wandb folder, what was logged): real offline runs written once per session."""
    tmp = tmp_path_factory.mktemp("wandb_sweep")
    logged = write_offline_sweep(tmp)
    yield tmp / "wandb", logged
    shutil.rmtree(tmp, ignore_errors=True)
