"""Real MLflow fixtures: a sqlite store with a small sweep, and one `mlflow server` per test session."""
from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlflow")

from adapters.mlflow import MlflowTracker  # noqa: E402

EXPERIMENT = "sweep"
KEYS = ("loss", "acc")
N_RUNS = 6
N_STEPS = 300


def write_sweep(uri: str, experiment: str = EXPERIMENT, n_runs: int = N_RUNS, n_steps: int = N_STEPS,
                seed: int = 0) -> list[str]:
    """Log an lr x bs sweep through the adapter's writer; returns the run ids.

    Quirks on purpose: the last run never logs ``acc``, run 0 re-logs ``loss`` at step 10 (the newer value
    must win), run 1 logs a NaN, run 2 fails, run 3 is tagged ``best``.
    """
    rng = np.random.default_rng(seed)
    tracker = MlflowTracker(uri=uri, experiment=experiment, flush_every=100)
    ids = []
    for i in range(n_runs):
        lr = [1e-3, 3e-3, 1e-2][i % 3]
        bs = [32, 64][(i // 3) % 2]
        config = {"lr": lr, "bs": bs, "optim": {"name": "adamw", "warmup": True}, "seed": i}
        writer = tracker.start_run(f"lr{lr}-bs{bs}-{i}", config, tags=["best"] if i == 3 else ["sweep"])
        for step in range(n_steps):
            metrics = {"loss": float(3.0 * math.exp(-step * lr) + rng.normal(0, 0.01))}
            if i != n_runs - 1:
                metrics["acc"] = float(step / n_steps)
            if i == 1 and step == 7:
                metrics["loss"] = float("nan")
            writer.log_metrics(metrics, step)
            if i == 0 and step == 10:
                writer.log_metrics({"loss": -1.0}, step)
        writer.finish("failed" if i == 2 else "finished")
        ids.append(writer.run_id)
    return ids


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_bin() -> str:
    here = Path(sys.executable).parent / "mlflow"
    return str(here) if here.exists() else (shutil.which("mlflow") or "mlflow")


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> dict:
    """A sqlite store holding the small sweep: {uri, experiment, run_ids, root}."""
    root = tmp_path_factory.mktemp("mlflow_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ids = write_sweep(uri)
    return {"uri": uri, "experiment": EXPERIMENT, "run_ids": ids, "root": root}


@pytest.fixture(scope="session")
def mlflow_server(mlflow_store) -> str:
    """`mlflow server --workers 1` on a free port over the same store; stopped by process group at the end."""
    root = mlflow_store["root"]
    port = free_port()
    log_path = root / "server.log"
    cmd = [_mlflow_bin(), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", mlflow_store["uri"], "--default-artifact-root", str(root / "artifacts")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: starts faster
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.skip(f"mlflow server exited at start (code {proc.returncode}); see {log_path.name}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.skip("mlflow server did not answer /health within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers by process group, then by process id."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
