"""Benchmark: read and correlate a Fira-sized scaling-factor family (LLaMA 1B: 168 matrices x 100 columns).

Two runs (fira-lowrank, fira-fullrank) x 16,968 series x 500 logged steps are written to each tracker first
(setup, not timed), then timed stage by stage: list + read (RunSet), recipe metric_family (long table), the
correlations analysis (reduce, align, Spearman/Kendall, 1,000-sample bootstrap), the per-step over-time curve and
the output files. Goal: read + recipe + analysis under 30 s.

    python benchmarks/bench_correlations.py                          # local and (if installed) MLflow/sqlite
    python benchmarks/bench_correlations.py --tracker local --steps 100
"""
from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from analyses import correlations
from toolkit.outputs import AnalysisOutput
from toolkit.pipeline import build_tracker
from toolkit.protocol import read_runset
from toolkit.recipes import metric_family
from toolkit.runset import Selection

FAMILY = dict(correlations.DEFAULT_FAMILY)


def make_values(n_matrices: int, n_columns: int, n_steps: int, seed: int = 0) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per run: the keys and a (steps x keys) array; full-rank factors = low-rank ones with noise."""
    rng = np.random.default_rng(seed)
    keys = metric_family.metric_keys({"family": FAMILY, "ranges": {"matrix": [1, n_matrices], "column": [1, n_columns]}})
    base = rng.lognormal(size=len(keys))
    drift = np.linspace(1.0, 0.5, n_steps)[:, None]
    out = {}
    for name, noise in (("fira-lowrank", 0.2), ("fira-fullrank", 0.2)):
        vals = base[None, :] * drift * rng.lognormal(sigma=noise, size=(1, len(keys)))
        out[name] = (keys, (vals * rng.lognormal(sigma=0.05, size=(n_steps, len(keys)))).astype(float))
    return out


def write_through_writer(tracker: Any, data: dict[str, tuple[list[str], np.ndarray]]) -> None:
    """Log every run step by step through the tracker's RunWriter."""
    for name, (keys, vals) in data.items():
        w = tracker.start_run(name, {"variant": name.split("-")[1]})
        for s in range(vals.shape[0]):
            w.log_metrics(dict(zip(keys, vals[s].tolist())), step=s + 1)
        w.finish("finished")


def write_wide_parquet(path: Path, data: dict[str, tuple[list[str], np.ndarray]]) -> None:
    """One wide history file (run_id, run_name, variant, step, one column per key): the local tracker's format (a)."""
    import pandas as pd

    parts = []
    for name, (keys, vals) in data.items():
        frame = pd.DataFrame(vals, columns=keys)
        frame.insert(0, "step", np.arange(1, vals.shape[0] + 1))
        frame.insert(0, "variant", name.split("-")[1])
        frame.insert(0, "run_name", name)
        frame.insert(0, "run_id", name)
        parts.append(frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(parts, ignore_index=True).to_parquet(path, index=False)


def write_mlflow_sqlite(tracker: Any, db: Path, data: dict[str, tuple[list[str], np.ndarray]]) -> None:
    """Create the runs through MLflow, then bulk-insert their points into the sqlite store's tables (fast setup)."""
    writers = {name: tracker.start_run(name, {"variant": name.split("-")[1]}) for name in data}
    for w in writers.values():
        w.log_metrics({"setup/dummy": 0.0}, step=0)
        w.finish("finished")
    con = sqlite3.connect(db)
    try:
        for name, (keys, vals) in data.items():
            rid = writers[name].run_id
            ts = int(time.time() * 1000)
            n_steps = vals.shape[0]
            rows = ((k, float(vals[s, j]), ts + s, rid, s + 1, 0) for s in range(n_steps) for j, k in enumerate(keys))
            con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)", rows)
            latest = ((k, float(vals[-1, j]), ts + n_steps - 1, n_steps, 0, rid) for j, k in enumerate(keys))
            con.executemany("INSERT OR REPLACE INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?,?,?,?,?,?)", latest)
        con.commit()
    finally:
        con.close()
    db.with_suffix(".done").write_text("ok")


def bench(tracker_cfg: dict[str, Any], keys_from_params: bool, out_dir: Path, over_time: bool, n_boot: int) -> dict[str, float]:
    """Time read, recipe, analysis and outputs for one tracker."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    tracker = build_tracker(dict(tracker_cfg))
    if hasattr(tracker, "configure"):
        tracker.configure(cache={"enabled": False}, progress=False)
    recipe_params = {"family": FAMILY, "ranges": {"matrix": [1, ARGS.matrices], "column": [1, ARGS.columns]} if keys_from_params else None}
    runset = read_runset(tracker, Selection(name_regex="^fira-"), metric_family.metric_keys(recipe_params))
    times["read (list + history)"] = time.perf_counter() - t0
    t = time.perf_counter()
    table = metric_family.build(runset, recipe_params, lambda m: None)
    times["recipe metric_family"] = time.perf_counter() - t
    params = {"a": "lowrank", "b": "fullrank", "family": FAMILY, "bootstrap": {"n": n_boot, "seed": 0}, "over_time": False}
    t = time.perf_counter()
    result = correlations.correlate(table, params)
    times["analysis (reduce, align, stats, bootstrap)"] = time.perf_counter() - t
    if over_time:
        t = time.perf_counter()
        frame, members = correlations.family_frame(table, correlations.parse_family(FAMILY), list(runset.runs["run_id"].astype(str)))
        correlations.correlations_over_time(frame, members, [r for r, n in zip(runset.runs["run_id"], runset.runs["name"]) if "lowrank" in n],
                                            [r for r, n in zip(runset.runs["run_id"], runset.runs["name"]) if "fullrank" in n], ["matrix", "column"])
        times["over_time (every step)"] = time.perf_counter() - t
    t = time.perf_counter()
    out = AnalysisOutput(out_dir, "correlations")
    out.commit(correlations.run(table, {**params, "bootstrap": {"n": 0}}, out))
    times["outputs (csv, png; no bootstrap)"] = time.perf_counter() - t
    times["TOTAL read + recipe + analysis"] = sum(v for k, v in times.items() if k.startswith(("read", "recipe", "analysis")))
    s = result["summary"]
    print(f"  rows in long table: {len(table):,}; matrix n={s['matrix']['n']} spearman={s['matrix']['spearman']:.4f}; "
          f"column n={s['column']['n']} spearman={s['column']['spearman']:.4f} kendall={s['column']['kendall']:.4f}")
    return times


def main() -> None:
    """Set up each tracker, then print the seconds per stage."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matrices", type=int, default=168)
    ap.add_argument("--columns", type=int, default=100)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--tracker", nargs="+", default=["local", "mlflow"], choices=["local", "local-folders", "mlflow"],
                    help="local: one wide parquet file; local-folders: run folders written by LocalTracker.start_run")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--no-over-time", action="store_true")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    global ARGS
    ARGS = ap.parse_args()
    work = Path(ARGS.dir or tempfile.mkdtemp(prefix="bench_corr_"))
    n_series = ARGS.matrices * (ARGS.columns + 1)
    print(f"family: {ARGS.matrices} matrices x {ARGS.columns} columns = {n_series:,} series x {ARGS.steps} steps x 2 runs "
          f"({2 * n_series * ARGS.steps:,} points); work folder {work}")
    t = time.perf_counter()
    data = make_values(ARGS.matrices, ARGS.columns, ARGS.steps)
    print(f"generated in {time.perf_counter() - t:.1f} s")
    for name in ARGS.tracker:
        if name == "local":
            cfg = {"_target_": "adapters.local.LocalTracker", "path": str(work / "wide.parquet")}
            write_wide_parquet(work / "wide.parquet", data)  # the tracker needs the file to exist
            setup = lambda tr: None  # noqa: E731
        elif name == "local-folders":
            cfg = {"_target_": "adapters.local.LocalTracker", "path": str(work / "local")}
            setup = lambda tr: write_through_writer(tr, data)  # noqa: E731
        else:
            try:
                import adapters.mlflow  # noqa: F401
                import mlflow  # noqa: F401
            except ImportError as exc:
                print(f"[mlflow] skipped: {exc}")
                continue
            db = work / f"mlflow_{ARGS.matrices}x{ARGS.columns}x{ARGS.steps}.db"
            cfg = {"_target_": "adapters.mlflow.MlflowTracker", "uri": f"sqlite:///{db}", "experiment": "bench-correlations"}
            if db.exists() and db.with_suffix(".done").exists():  # a store written by an earlier run (--dir)
                setup = lambda tr: None  # noqa: E731
            else:
                db.unlink(missing_ok=True)
                setup = lambda tr, db=db: write_mlflow_sqlite(tr, db, data)  # noqa: E731
        tracker = build_tracker(dict(cfg))
        t = time.perf_counter()
        setup(tracker)
        print(f"[{name}] setup (logging, not timed) {time.perf_counter() - t:.1f} s")
        for from_params in (True, False):
            label = "keys built from params" if from_params else "all keys read"
            print(f"[{name}] {label}:")
            times = bench(cfg, from_params, work / f"out_{name}_{int(from_params)}", not ARGS.no_over_time, ARGS.bootstrap)
            for stage, secs in times.items():
                print(f"  {stage:<45s} {secs:7.2f} s")
        if name == "mlflow":
            cached_read(cfg, work / "cache")


def cached_read(tracker_cfg: dict[str, Any], cache_dir: Path) -> None:
    """MLflow: the same read through the history cache, first filling it, then from it (what a re-run costs)."""
    import shutil

    shutil.rmtree(cache_dir, ignore_errors=True)
    keys = metric_family.metric_keys({"family": FAMILY, "ranges": {"matrix": [1, ARGS.matrices], "column": [1, ARGS.columns]}})
    for label in ("read + fill the cache", "read from the cache (re-run)"):
        t = time.perf_counter()
        tracker = build_tracker(dict(tracker_cfg))
        tracker.configure(cache={"enabled": True, "dir": str(cache_dir)}, progress=False)
        runset = read_runset(tracker, Selection(name_regex="^fira-"), keys)
        print(f"[mlflow] {label:<38s} {time.perf_counter() - t:7.2f} s  ({len(runset.history):,} rows, "
              f"cached runs {tracker.stats['cached_runs']})")


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
