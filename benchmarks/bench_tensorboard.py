"""Benchmark: read TensorBoard event files into a RunSet; this reader vs EventAccumulator vs tbparse, and the cache.

    python benchmarks/bench_tensorboard.py [--runs 200] [--tags 5] [--steps 20000] [--baseline-runs 20]

The log dir holds ``--runs`` run folders, each one event file of ``--tags`` scalar tags logged at every one of
``--steps`` steps, laid out as ``SummaryWriter.add_scalar`` writes them (one ``simple_value`` event per point, steps
interleaved). Writing 20 million points through the real SummaryWriter would take ~15 minutes (its framing computes
CRCs in pure Python), so the payloads are encoded here with numpy, checked first to be byte-identical to
``event_pb2.Event(...).SerializeToString()`` (what SummaryWriter writes), and framed with the vectorised CRC32C.

Measured, in one run:

- this reader (``tracker=tensorboard``, cache off) on every run: with the default workers and with ``workers=1``;
- on the first ``--baseline-runs`` runs: this reader (both ways), ``EventAccumulator`` with ``size_guidance`` keeping
  everything (``{"scalars": 0, "tensors": 0, ...}``; its default keeps a 10,000-point sample per tag), and
  ``tbparse.SummaryReader(...).scalars`` (``pip install tbparse==0.0.9``; skipped when missing). Both baselines are
  far slower, so they read a subset by default (``--baseline-runs 0``: every run); points/s are compared on the same
  runs, and our points are checked against EventAccumulator's (same steps and values for every run and tag);
- the history cache: a first read with the cache on (which writes it), then a fresh tracker reading the unchanged
  runs again.

Targets: >= 5x the faster baseline, >= 200,000 points/s, cached re-read >= 50x faster than the first read.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters import tensorboard as tb  # noqa: E402
from toolkit.protocol import read_runset  # noqa: E402
from toolkit.runset import Selection  # noqa: E402

WALL0 = 1.7e9


def _varint(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of non-negative ints: (bytes matrix (n, 10), byte count per value)."""
    values = values.astype(np.uint64)
    out = np.zeros((len(values), 10), dtype=np.uint8)
    count = np.ones(len(values), dtype=np.int64)
    rest = values.copy()
    for i in range(10):
        byte = (rest & np.uint64(0x7F)).astype(np.uint8)
        rest = rest >> np.uint64(7)
        more = rest > 0
        out[:, i] = byte | (more.astype(np.uint8) << 7)
        count += more
        if not more.any():
            break
    return out, count


def encode_scalar_events(tags: list[str], steps: np.ndarray, walls: np.ndarray, values: np.ndarray) -> list[bytes]:
    """Serialized ``Event(wall_time, step, summary=Summary(value=[Value(tag, simple_value)]))`` for each point:
    fields in number order, step 0 left out (proto3), lengths below 128 (one-byte varints)."""
    n = len(steps)
    vint, vlen = _varint(steps)
    payloads: list[bytes | None] = [None] * n
    for code, tag in enumerate(tags):
        tag_b = tag.encode()
        value_len = 2 + len(tag_b) + 5
        summary_len = 2 + value_len
        assert summary_len < 128
        for nbytes in np.unique(vlen[(np.arange(n) % len(tags)) == code]):
            sel = np.flatnonzero(((np.arange(n) % len(tags)) == code) & (vlen == nbytes))
            zero = steps[sel] == 0
            for is_zero in (False, True):
                rows = sel[zero == is_zero]
                if not len(rows):
                    continue
                step_part = 0 if is_zero else 1 + int(nbytes)
                width = 9 + step_part + 2 + summary_len
                m = np.zeros((len(rows), width), dtype=np.uint8)
                m[:, 0] = 0x09
                m[:, 1:9] = walls[rows].astype("<f8").view(np.uint8).reshape(-1, 8)
                c = 9
                if not is_zero:
                    m[:, c] = 0x10
                    m[:, c + 1:c + 1 + int(nbytes)] = vint[rows, :int(nbytes)]
                    c += step_part
                m[:, c:c + 4] = [0x2A, summary_len, 0x0A, value_len]
                m[:, c + 4:c + 6] = [0x0A, len(tag_b)]
                m[:, c + 6:c + 6 + len(tag_b)] = np.frombuffer(tag_b, np.uint8)
                c += 6 + len(tag_b)
                m[:, c] = 0x15
                m[:, c + 1:c + 5] = values[rows].astype("<f4").view(np.uint8).reshape(-1, 4)
                for r, row in zip(rows, m):
                    payloads[r] = row.tobytes()
    return payloads  # type: ignore[return-value]


def check_encoding() -> None:
    """The numpy encoding is byte-identical to the Event protos SummaryWriter serializes."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    tags = ["train/loss", "lr"]
    steps = np.repeat(np.array([0, 1, 127, 128, 20_000, 3_000_000]), 2)
    walls = WALL0 + np.arange(len(steps)) * 0.37
    values = np.linspace(-3, 7, len(steps)).astype(np.float32)
    ours = encode_scalar_events(tags, steps, walls, values)
    for i, payload in enumerate(ours):
        ev = event_pb2.Event(wall_time=float(walls[i]), step=int(steps[i]), summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tags[i % 2], simple_value=float(values[i]))]))
        assert payload == ev.SerializeToString(), i


def write_run(folder: Path, index: int, n_tags: int, n_steps: int) -> int:
    """One run folder with one event file; returns the number of points."""
    from tensorboard.compat.proto import event_pb2

    tags = [f"train/loss_{j}" if j else "train/loss" for j in range(n_tags)]
    steps = np.repeat(np.arange(n_steps, dtype=np.int64), n_tags)
    walls = WALL0 + index + np.repeat(np.arange(n_steps) * 0.05, n_tags)
    rng = np.random.default_rng(index)
    values = (3.0 + np.tile(np.arange(n_tags), n_steps) + 1.0 / (1.0 + steps / 100.0)
              + 0.01 * rng.standard_normal(len(steps))).astype(np.float32)
    head = event_pb2.Event(wall_time=WALL0 + index, file_version="brain.Event:2").SerializeToString()
    payloads = [head, *encode_scalar_events(tags, steps, walls, values)]
    folder.mkdir(parents=True, exist_ok=True)
    tb.write_records(folder / f"events.out.tfevents.{int(WALL0) + index}.bench.{os.getpid()}.0", payloads)
    return len(steps)


def ours(logdir: Path, run_ids: list[str] | None, workers: int | None, cache: Path | None = None) -> tuple:
    tracker = tb.TensorBoardTracker(path=str(logdir), workers=workers)
    tracker.configure({"enabled": cache is not None, "dir": str(cache) if cache else None, "refresh": False}, False)
    started = time.perf_counter()
    rs = read_runset(tracker, Selection(run_ids=run_ids or []), None)
    seconds = time.perf_counter() - started
    points = int(rs.history[rs.metric_keys].notna().to_numpy().sum())
    return seconds, points, rs


def event_accumulator(folders: list[Path]) -> tuple[float, int, dict]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    keep_all = {"scalars": 0, "tensors": 0, "histograms": 0, "images": 0, "audio": 0, "compressedHistograms": 0}
    started = time.perf_counter()
    points, got = 0, {}
    for folder in folders:
        ea = EventAccumulator(str(folder), size_guidance=keep_all)
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            events = ea.Scalars(tag)
            got[(folder.name, tag)] = (np.array([e.step for e in events]), np.array([e.value for e in events]))
            points += len(events)
    return time.perf_counter() - started, points, got


def tbparse_reader(folders: list[Path]) -> tuple[float, int] | None:
    try:
        from tbparse import SummaryReader
    except ImportError:
        return None
    started = time.perf_counter()
    points = 0
    for folder in folders:
        points += len(SummaryReader(str(folder)).scalars)
    return time.perf_counter() - started, points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--tags", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--baseline-runs", type=int, default=20, help="runs the baselines read (0: all)")
    parser.add_argument("--workers", type=int, default=None, help="tracker.workers for the default read")
    parser.add_argument("--dir", help="where to write the log dir (default: a temporary folder, removed after)")
    args = parser.parse_args()
    check_encoding()
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_tb_"))
    logdir = tmp / "logs"
    if logdir.exists():
        shutil.rmtree(logdir)
    try:
        started = time.perf_counter()
        total = sum(write_run(logdir / f"run-{i:04d}", i, args.tags, args.steps) for i in range(args.runs))
        size = sum(p.stat().st_size for p in logdir.rglob("events.out.tfevents.*"))
        print(f"wrote {args.runs} runs x {args.tags} tags x {args.steps:,} steps = {total:,} points "
              f"({size / 2**20:,.0f} MiB) in {time.perf_counter() - started:.1f} s")

        cpus = os.cpu_count()
        t_all, n_all, _ = ours(logdir, None, args.workers)
        assert n_all == total, (n_all, total)
        print(f"this reader, every run (workers={args.workers or 'auto'}, {cpus} CPUs): {n_all:,} points in "
              f"{t_all:.2f} s = {n_all / t_all:,.0f} points/s")
        t_one, n_one, _ = ours(logdir, None, 1)
        print(f"this reader, every run (workers=1): {n_one:,} points in {t_one:.2f} s = {n_one / t_one:,.0f} points/s")

        base = args.runs if args.baseline_runs <= 0 else min(args.baseline_runs, args.runs)
        ids = [f"run-{i:04d}" for i in range(base)]
        folders = [logdir / r for r in ids]
        print(f"--- the first {base} runs ({base * args.tags * args.steps:,} points), every reader:")
        t_sub, n_sub, rs = ours(logdir, ids, args.workers)
        t_sub1, n_sub1, _ = ours(logdir, ids, 1)
        t_ea, n_ea, ea_points = event_accumulator(folders)
        for (run, tag), (steps, values) in ea_points.items():  # the same points, every run and tag
            mine = rs.history[rs.history["run_id"] == run]
            mine = mine[mine[tag].notna()]
            assert np.array_equal(mine["step"].to_numpy(), steps) and np.array_equal(mine[tag].to_numpy(), values)
        assert n_ea == n_sub == n_sub1, (n_ea, n_sub, n_sub1)
        rows = [("this reader (workers=%s)" % (args.workers or "auto"), t_sub, n_sub),
                ("this reader (workers=1)", t_sub1, n_sub1),
                ("EventAccumulator (size_guidance: keep all)", t_ea, n_ea)]
        parsed = tbparse_reader(folders)
        if parsed is not None:
            assert parsed[1] == n_ea, (parsed[1], n_ea)
            rows.append(("tbparse 0.0.9 SummaryReader(...).scalars", *parsed))
        for label, seconds, points in rows:
            print(f"  {label:<44} {seconds:8.2f} s {points / seconds:>12,.0f} points/s")
        fastest_baseline = min(seconds for label, seconds, _ in rows[2:])
        print(f"  speed-up over the faster baseline: {fastest_baseline / t_sub:.1f}x (workers={args.workers or 'auto'}),"
              f" {fastest_baseline / t_sub1:.1f}x (workers=1); over EventAccumulator {t_ea / t_sub1:.1f}x (workers=1)"
              + (f", over tbparse {parsed[0] / t_sub1:.1f}x (workers=1)" if parsed else " (tbparse not installed)"))
        print("  (same steps and values as EventAccumulator for every run and tag)")

        del rs, ea_points
        cache = tmp / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        t_cold, n_cold, _ = ours(logdir, None, args.workers, cache)
        del _
        t_warm, n_warm, _ = ours(logdir, None, args.workers, cache)
        del _
        assert n_cold == n_warm == total
        code = ("import sys, time; sys.path.insert(0, sys.argv[3]); from bench_tensorboard import ours; "
                "from pathlib import Path; t, n, _ = ours(Path(sys.argv[1]), None, None, Path(sys.argv[2])); "
                "print(t, n)")
        fresh = subprocess.run([sys.executable, "-c", code, str(logdir), str(cache), str(Path(__file__).parent)],
                               capture_output=True, text=True, check=True)
        t_fresh, n_fresh = fresh.stdout.split()
        t_fresh = float(t_fresh)
        assert int(n_fresh) == total
        print(f"cache: first read (workers={args.workers or 'auto'}, writes it) {t_cold:.2f} s; re-read of the "
              f"unchanged runs {t_warm:.3f} s in this process = {t_cold / t_warm:.0f}x faster "
              f"({n_warm / t_warm:,.0f} points/s), {t_fresh:.3f} s in a new process (a second run.py; its "
              f"memory all new) = {t_cold / t_fresh:.0f}x faster; vs the workers=1 read: "
              f"{t_one / t_warm:.0f}x and {t_one / t_fresh:.0f}x")
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
