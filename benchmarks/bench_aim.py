"""Benchmark: tracker=aim's read (cold, then a cached re-read) vs the naive Aim SDK loop, on one real repository.

    python benchmarks/bench_aim.py [--runs 6] [--keys 4] [--steps 20000] [--repeat 3] [--workers 2] [--dir FOLDER]

Writes a repository with aim.Run (runs x keys metrics of `steps` points each, every run finished), then times, for
the same runs and keys:

- naive: Aim's documented SDK loop, ``repo.query_metrics(...).iter_runs()`` then ``metric.dataframe()`` per metric.
  It reads through the repository index, which only ``aim up`` (or ``aim storage reindex``) fills: on a repository
  that was only written to it finds no metrics at all, so the index is built first (timed apart, as "reindex");
- toolkit cold: ``read_runset`` by a fresh tracker with the cache ignored and rewritten (``cache.refresh``): every
  point read from the runs' own storage;
- toolkit cached: the same read by a fresh tracker over the filled cache (finished, unchanged runs: no sequence is
  opened), the re-read; its ratio to the cold read is the number to watch (target >= 50x).

Toolkit times are medians of ``--repeat`` reads, after one read that warms imports and the OS file cache. Checks
that the three give the same points, then prints seconds and ratios. Sized for a 2-core machine (writing
the repository takes most of the time: Aim tracks ~10,000 points/s).

What bounds the re-read: per run, the stat of its files (the fingerprint that proves it unchanged), its cached
listing and one parquet file of its history (HistoryCache: ~2 ms), plus ~10-15 ms per read for the repository and
run_metadata.sqlite. The cold read costs ~5-10 us per point, so the ratio grows with the points per run: measured on
the 2-core machine, ~10-30x at 10,000 points per run, ~55-70x at 80,000 (the default: 4 metrics of 20,000 steps, a
short LM run); longer runs with more metrics gain more.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.aim import AimTracker  # noqa: E402
from toolkit.protocol import read_runset  # noqa: E402
from toolkit.runset import Selection  # noqa: E402


def build_repo(path: Path, n_runs: int, n_keys: int, n_steps: int, workers: int = 2) -> list[str]:
    """Finished runs with hparams, ``n_keys`` metrics (one of them in a context) of ``n_steps`` points each, written
    by ``workers`` processes at once (as parallel sweep jobs write one repository)."""
    import aim

    aim.Repo.from_path(str(path), init=True)
    jobs = [(str(path), i, n_keys, n_steps) for i in range(n_runs)]
    with multiprocessing.get_context("spawn").Pool(max(1, min(workers, n_runs))) as pool:
        pool.starmap(_write_run, jobs)
    return ["m0/subset=train", *[f"m{k}" for k in range(1, n_keys)]]


def _write_run(path: str, i: int, n_keys: int, n_steps: int) -> None:
    """One finished run (a worker process of build_repo)."""
    import aim

    rng = np.random.default_rng(i)
    steps = np.arange(n_steps)
    run = aim.Run(repo=path, experiment="bench", system_tracking_interval=None, log_system_params=False,
                  capture_terminal_logs=False)
    run.name = f"run-{i:03d}"
    run["hparams"] = {"lr": float(10 ** rng.uniform(-4, -2)), "bs": int(2 ** (5 + i % 4))}
    values = 3.0 * np.exp(-steps / n_steps)[None, :] + rng.normal(0, 0.01, (n_keys, n_steps))
    for s in steps:
        run.track(float(values[0, s]), name="m0", step=int(s), context={"subset": "train"})
        if n_keys > 1:
            run.track({f"m{k}": float(values[k, s]) for k in range(1, n_keys)}, step=int(s))
    run.report_successful_finish()
    run.close()


def reindex(path: Path) -> None:
    """What `aim storage reindex` does: copy every run's metadata into the repository index."""
    import aim
    from aim.sdk.index_manager import RepoIndexManager

    repo = aim.Repo.from_path(str(path))
    manager = RepoIndexManager.get_index_manager(repo)
    for run_hash in repo.list_all_runs():
        manager.index(run_hash)


def naive(path: Path) -> pd.DataFrame:
    """Aim's documented way: query the metrics, then one DataFrame per metric (every point)."""
    import aim
    from aim.sdk.types import QueryReportMode

    repo = aim.Repo.from_path(str(path))
    frames = []
    for collection in repo.query_metrics("", report_mode=QueryReportMode.DISABLED).iter_runs():
        for metric in collection:
            ctx = metric.context.to_dict()
            key = metric.name + ("/" + ",".join(f"{k}={v}" for k, v in sorted(ctx.items())) if ctx else "")
            df = metric.dataframe()
            frames.append(pd.DataFrame({"run_id": metric.run.hash, "key": key, "step": df["step"],
                                        "value": df["value"]}))
    long = pd.concat(frames, ignore_index=True)
    return long.pivot_table(index=["run_id", "step"], columns="key", values="value").reset_index()


def toolkit_read(path: Path, cache: Path, refresh: bool = False) -> tuple[float, pd.DataFrame, AimTracker]:
    """One read_runset by a fresh tracker (refresh: the cache is ignored and rewritten, i.e. a cold read)."""
    t0 = time.perf_counter()
    tracker = AimTracker(path=str(path))
    tracker.configure({"enabled": True, "dir": str(cache), "refresh": refresh}, progress=False)
    runset = read_runset(tracker, Selection(), None)
    return time.perf_counter() - t0, runset.history, tracker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3, help="reads timed per variant (their median is shown)")
    parser.add_argument("--workers", type=int, default=2, help="processes writing the repository")
    parser.add_argument("--dir", help="work folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.dir or tmp)
        repo, cache = work / "repo", work / "cache"
        t = time.perf_counter()
        build_repo(repo, args.runs, args.keys, args.steps, args.workers)
        points = args.runs * args.keys * args.steps
        print(f"built repo: {args.runs} runs x {args.keys} keys x {args.steps} steps ({points} points) "
              f"in {time.perf_counter() - t:.1f} s")

        # medians of --repeat reads each, after one read that warms imports and the OS file cache for both
        toolkit_read(repo, cache, refresh=True)
        colds = [toolkit_read(repo, cache, refresh=True) for _ in range(args.repeat)]
        hots = [toolkit_read(repo, cache) for _ in range(args.repeat)]
        assert all(t.stats["fetched_runs"] == args.runs for _, _, t in colds)
        assert all(t.stats["cached_runs"] == args.runs and t.stats["fetched_runs"] == 0 for _, _, t in hots)
        cold, hot = colds[0][1], hots[0][1]
        pd.testing.assert_frame_equal(cold, hot)
        cold_s = statistics.median(s for s, _, _ in colds)
        hot_s = statistics.median(s for s, _, _ in hots)
        t = time.perf_counter()
        reindex(repo)
        reindex_s = time.perf_counter() - t
        t = time.perf_counter()
        reference = naive(repo)
        naive_s = time.perf_counter() - t
        ours = cold.sort_values(["run_id", "step"]).reset_index(drop=True)
        reference = reference.sort_values(["run_id", "step"]).reset_index(drop=True)[list(ours.columns)]
        pd.testing.assert_frame_equal(ours, reference, check_dtype=False, check_names=False)

        print(f"{'naive SDK loop':22s} {naive_s:8.3f} s  (after `aim storage reindex`: {reindex_s:.2f} s; "
              f"without it the loop finds no metrics)")
        print(f"{'toolkit cold':22s} {cold_s:8.3f} s  {points / cold_s:,.0f} points/s, "
              f"{1e3 * cold_s / args.runs:.1f} ms per run")
        print(f"{'toolkit cached':22s} {hot_s:8.3f} s  {1e3 * hot_s / args.runs:.1f} ms per run "
              f"(per run: its files' fingerprint, its cached listing, one parquet file)")
        print(f"cold read: {naive_s / cold_s:.1f}x faster than the naive loop (without counting its reindex)")
        print(f"re-read from the cache: {cold_s / hot_s:.0f}x faster than the cold read (target >= 50x), "
              f"{naive_s / hot_s:.0f}x faster than the naive loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
