"""Benchmark: the toolkit's MLflow history fetch vs the naive get_metric_history loop.

    python benchmarks/bench_mlflow.py [--runs 200] [--keys 3] [--steps 2000] [--workers 4] [--dir FOLDER]

Builds a sqlite store (runs and params through MlflowClient; metric rows inserted in bulk so setup takes seconds),
serves it with a local `mlflow server` (--workers: MLflow's default 4; with 1 worker the server's own per-point cost
bounds both sides and the ratio drops to about 2.5x), then times, for the same runs and keys:
naive loop (MlflowClient.get_metric_history per run and key) vs the toolkit (SQL fast path on the store, bulk
endpoint on the server), and a cached re-run. Prints seconds and ratios.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.mlflow import MlflowTracker  # noqa: E402
from toolkit.runset import Selection  # noqa: E402

EXPERIMENT = "bench"


def build_store(db: Path, n_runs: int, keys: list[str], n_steps: int) -> None:
    """Create runs through MlflowClient, then bulk-insert their metric rows (and latest metrics)."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp_id = client.create_experiment(EXPERIMENT)
    rng = np.random.default_rng(0)
    run_ids = []
    for i in range(n_runs):
        run = client.create_run(exp_id, run_name=f"run-{i:04d}")
        client.log_batch(run.info.run_id, params=[Param("lr", str(10 ** rng.uniform(-4, -2))), Param("bs", str(2 ** (5 + i % 4)))])
        run_ids.append(run.info.run_id)
    now = int(time.time() * 1000)
    steps = np.arange(n_steps)
    con = sqlite3.connect(db)
    for run_id in run_ids:
        rows, latest = [], []
        for key in keys:
            values = 3.0 * np.exp(-steps / n_steps) + rng.normal(0, 0.01, n_steps)
            rows.extend((key, float(v), now + int(s), run_id, int(s), 0) for s, v in zip(steps, values))
            latest.append((key, float(values[-1]), now + n_steps - 1, n_steps - 1, 0, run_id))
        con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)", rows)
        con.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?,?,?,?,?,?)", latest)
    con.commit()
    con.close()
    for run_id in run_ids:
        client.set_terminated(run_id, "FINISHED")


def start_server(db: Path, root: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    """`mlflow server --workers N` on a free port; returns (process, url)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen([str(mlflow_bin), "server", "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{db}", "--default-artifact-root", str(root / "artifacts")],
                            stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    stop_server(proc)
    raise SystemExit("mlflow server did not start; see server.log")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server's process group."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def naive(uri: str, run_ids: list[str], keys: list[str]) -> tuple[float, int]:
    """The loop users write: get_metric_history per run and key."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    started = time.perf_counter()
    points = sum(len(client.get_metric_history(r, k)) for r in run_ids for k in keys)
    return time.perf_counter() - started, points


def toolkit(uri: str, keys: list[str], cache_dir: Path | None = None) -> tuple[float, float, int]:
    """(history seconds, list+history seconds, points) for the toolkit's read."""
    tracker = MlflowTracker(uri=uri, experiment=EXPERIMENT)
    tracker.configure(cache={"enabled": cache_dir is not None, "dir": str(cache_dir or "")}, progress=False)
    started = time.perf_counter()
    runs = tracker.list_runs(Selection())
    listed = time.perf_counter()
    hist = tracker.read_history(runs, keys)
    done = time.perf_counter()
    return done - listed, done - started, int(hist[keys].notna().sum().sum())


def main() -> None:
    """Run the benchmark and print seconds and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="work folder (kept; the store is reused when present)")
    parser.add_argument("--workers", type=int, default=4, help="server worker processes (mlflow server's default: 4)")
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench_mlflow_"))
    root.mkdir(parents=True, exist_ok=True)
    keys = [f"metric_{i}" for i in range(args.keys)]
    db = root / f"mlflow_{args.runs}x{args.keys}x{args.steps}.db"
    if not db.exists():
        t = time.perf_counter()
        build_store(db, args.runs, keys, args.steps)
        print(f"built store: {args.runs} runs x {args.keys} keys x {args.steps} steps in {time.perf_counter() - t:.1f} s")
    store_uri = f"sqlite:///{db}"
    run_ids = list(MlflowTracker(uri=store_uri, experiment=EXPERIMENT).list_runs(Selection())["run_id"])
    proc, server_uri = start_server(db, root, args.workers)
    try:
        results = {}
        results["naive store"] = naive(store_uri, run_ids, keys)
        results["naive server"] = naive(server_uri, run_ids, keys)
        results["toolkit store"] = toolkit(store_uri, keys)
        results["toolkit server"] = toolkit(server_uri, keys)
        cache_dir = root / "cache"
        toolkit(server_uri, keys, cache_dir)  # fills the cache
        results["cached server"] = toolkit(server_uri, keys, cache_dir)
        results["cached store"] = toolkit(store_uri, keys, root / "cache_store") and toolkit(store_uri, keys, root / "cache_store")
    finally:
        stop_server(proc)
    expected = args.runs * args.keys * args.steps
    for name, res in results.items():
        points = res[-1]
        extra = f"  (with listing {res[1]:.2f} s)" if len(res) == 3 else ""
        print(f"{name:15s} {res[0]:8.2f} s  {points:>9d} points{extra}")
        assert points == expected, f"{name}: {points} points, expected {expected}"
    ns, nv = results["naive store"][0], results["naive server"][0]
    print(f"store:  toolkit {ns / results['toolkit store'][0]:.1f}x faster than the naive loop (target >= 10x)")
    print(f"server ({args.workers} worker(s)): toolkit {nv / results['toolkit server'][0]:.1f}x faster than the naive loop "
          f"(target >= 3x)")
    for where, naive_s in (("server", nv), ("store", ns)):
        hist_s, total_s, _ = results[f"cached {where}"]
        print(f"cached re-run ({where}): {naive_s / hist_s:.0f}x faster than the naive loop on the {where} "
              f"(history only; {naive_s / total_s:.0f}x with listing) (target >= 50x)")


if __name__ == "__main__":
    main()
