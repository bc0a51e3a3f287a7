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


def init_store(uri: str) -> None:
    """Create an empty store's tables (so a server can open it while the sweep is being written)."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


class _Server:
    """One `mlflow server --workers 1` process on 127.0.0.1 over a store; artifacts under ``root``."""

    def __init__(self, uri: str, root: Path):
        self.uri, self.root = uri, root
        self.log_path = root / "server.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.launch()

    def launch(self) -> None:
        port = free_port()
        cmd = [_mlflow_bin(), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", self.uri, "--default-artifact-root", str(self.root / "artifacts")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: starts faster
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env, cwd=self.root)
        self.url = f"http://127.0.0.1:{port}"

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-5:])
        except OSError:
            return "(no log)"

    def wait(self, timeout: float = 90.0) -> str:
        """Block until /health answers; relaunch once on another port if the process died at start."""
        deadline = time.monotonic() + timeout
        relaunched = False
        while True:
            if self.proc.poll() is not None:
                if relaunched:
                    pytest.fail(f"mlflow server exited at start (code {self.proc.returncode}): {self._log_tail()}")
                relaunched = True  # e.g. the free port was taken meanwhile
                self.launch()
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        return self.url
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mlflow server did not answer /health within {timeout:.0f} s: {self._log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server and its workers by process group (the group id is the server's pid)."""
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


def _wants_server(request) -> bool:
    return any("mlflow_server" in getattr(item, "fixturenames", ()) for item in request.session.items)


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory, request):
    """A sqlite store holding the small sweep: {uri, experiment, run_ids, root}.

    When a selected test needs the server, it is launched before the sweep is written, so its start-up (mostly
    imports) overlaps the writing.
    """
    root = tmp_path_factory.mktemp("mlflow_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    server = None
    if _wants_server(request):
        init_store(uri)
        server = _Server(uri, root)
    try:
        ids = write_sweep(uri)
        yield {"uri": uri, "experiment": EXPERIMENT, "run_ids": ids, "root": root, "server": server}
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_store) -> str:
    """The URL of `mlflow server --workers 1` on a free 127.0.0.1 port over the same store (stopped at the end)."""
    server = mlflow_store["server"] or _Server(mlflow_store["uri"], mlflow_store["root"])
    mlflow_store["server"] = server
    return server.wait()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its id is the server's pid), wait, then SIGKILL what is left of it."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
