"""Benchmark: LocalTracker list_runs + read_history on a large wide history file and on run folders.

    python benchmarks/bench_local_read.py [--runs 2000] [--steps 1000] [--format parquet|csv] [--folders 200]

Generates, in a temporary folder, a wide file of runs x steps rows (run_name, step, lr, bs, seed, train_loss,
output_norm), then times list_runs and read_history (all runs, two keys) and prints seconds and peak memory
(tracemalloc on a second, untimed call: numpy/pandas buffers included; arrow buffers are not). With --folders N it also writes N runs
through LocalRunWriter (not timed) and times reading them back. With --wide-keys K it writes two runs whose
metrics.jsonl lines hold K keys each (the 1B scaling-factor family is 16,968) for --wide-steps steps and times
reading them against one pyarrow JSON parse of the same files (the naive way, which infers a type per column).
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.local import LocalTracker  # noqa: E402
from toolkit.runset import Selection  # noqa: E402


def make_wide(n_runs: int, n_steps: int, seed: int = 0) -> pd.DataFrame:
    """A synthetic lr x bs x seed sweep in wide layout (one row per run and step)."""
    rng = np.random.default_rng(seed)
    run = np.repeat(np.arange(n_runs), n_steps)
    step = np.tile(np.arange(1, n_steps + 1) * 100, n_runs)
    lr = np.repeat(10.0 ** rng.uniform(-4, -2, n_runs), n_steps)
    bs = np.repeat(rng.choice([32, 64, 128, 256], n_runs), n_steps)
    seeds = np.repeat(np.arange(n_runs) % 3, n_steps)
    loss = 2.0 + 3.0 / np.sqrt(step / 100.0) + rng.normal(0, 0.01, run.size)
    norm = np.log1p(step) + rng.normal(0, 0.1, run.size)
    names = np.array([f"run-{i:05d}" for i in range(n_runs)], dtype=object)[run]
    return pd.DataFrame({"run_name": names, "step": step, "lr": lr, "bs": bs, "seed": seeds,
                         "train_loss": loss, "output_norm": norm})


def timed(label: str, fn):
    """Run fn twice: once timed, once under tracemalloc for its peak memory; print both, return the result."""
    t = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  {label:<40s} {secs:7.2f} s   peak {peak / 2**20:8.1f} MiB (tracemalloc)")
    return out


def bench_wide_lines(n_keys: int, n_steps: int) -> None:
    """Two runs logged with n_keys metrics a line: the toolkit's read vs one pyarrow parse per file."""
    import pyarrow.json as pj

    keys = [f"family/{i}" for i in range(n_keys)]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench_local_wide_") as tmp:
        root = Path(tmp) / "runs"
        tracker = LocalTracker(str(root))
        for name in ("lowrank", "fullrank"):
            w = tracker.start_run(name)
            for s in range(n_steps):
                w.log_metrics(dict(zip(keys, rng.random(n_keys).tolist())), s)
            w.finish()
        size = sum(p.stat().st_size for p in root.rglob("metrics.jsonl"))
        print(f"wide lines: 2 runs x {n_steps} steps x {n_keys:,} keys, {size / 2**20:.0f} MiB of metrics.jsonl")
        reader = LocalTracker(str(root))
        runs = reader.list_runs(Selection())
        t = time.perf_counter()
        hist = reader.read_history(runs, keys)
        ours = time.perf_counter() - t
        t = time.perf_counter()
        naive = [pj.read_json(str(p)).to_pandas() for p in sorted(root.rglob("metrics.jsonl"))]
        base = time.perf_counter() - t
        assert len(hist) == sum(len(f) for f in naive) == 2 * n_steps
        print(f"  toolkit read_history   {ours:7.2f} s")
        print(f"  pyarrow.json per file  {base:7.2f} s   ratio {base / ours:5.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    ap.add_argument("--folders", type=int, default=0, help="also write and read this many run folders")
    ap.add_argument("--wide-keys", type=int, default=0, help="also time two runs with this many keys per logged line")
    ap.add_argument("--wide-steps", type=int, default=100)
    ns = ap.parse_args()
    if ns.wide_keys:
        bench_wide_lines(ns.wide_keys, ns.wide_steps)
        return
    with tempfile.TemporaryDirectory(prefix="bench_local_") as tmp:
        path = Path(tmp) / f"sweep.{ns.format}"
        frame = make_wide(ns.runs, ns.steps)
        if ns.format == "parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        del frame
        print(f"wide {ns.format}: {ns.runs:,} runs x {ns.steps:,} steps = {ns.runs * ns.steps:,} rows, "
              f"{path.stat().st_size / 2**20:.1f} MiB")
        tracker = LocalTracker(str(path))
        runs = timed("list_runs (first read of the file)", lambda: LocalTracker(str(path)).list_runs(Selection()))
        tracker.list_runs(Selection())  # loaded once more, untimed: read_history below reads what it holds
        hist = timed("read_history(train_loss, output_norm)", lambda: tracker.read_history(runs, ["train_loss", "output_norm"]))
        print(f"  -> {len(runs):,} runs, {len(hist):,} history rows; "
              f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        if ns.folders:
            root = Path(tmp) / "runs"
            writer_tracker = LocalTracker(str(root))
            t = time.perf_counter()
            for i in range(ns.folders):
                w = writer_tracker.start_run(f"run-{i}", {"lr": 1e-3 * (i + 1), "bs": 32})
                for s in range(ns.steps):
                    w.log_metrics({"train_loss": 3.0 - s * 1e-3, "output_norm": float(s)}, s)
                w.finish()
            print(f"run folders: wrote {ns.folders} runs x {ns.steps} steps in {time.perf_counter() - t:.1f} s (not timed below)")
            reader = LocalTracker(str(root))
            runs = timed("list_runs", lambda: reader.list_runs(Selection()))
            hist = timed("read_history(train_loss, output_norm)", lambda: reader.read_history(runs, ["train_loss", "output_norm"]))
            print(f"  -> {len(runs):,} runs, {len(hist):,} history rows")


if __name__ == "__main__":
    main()
