"""Benchmark: read W&B offline run folders (``run-<id>.wandb``) into a RunSet; prints history rows per second.

The files are synthesised with wandb's own protobuf classes and the same record layout wandb-core writes for an
offline run (run record, then per step a summary record, a history record and a runtime summary record, then an
exit record), framed by ``adapters.wandb_offline.encode_records`` (byte-identical to wandb's writer, see
tests/test_wandb_offline.py). wandb no longer ships a Python writer for this format.

    python benchmarks/bench_wandb_offline.py [--runs 20] [--steps 5000] [--keys 3] [--real 0]

``--real N`` also writes N real offline runs with wandb (slow: seconds per run) and reads them back.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.wandb import WandbTracker  # noqa: E402
from adapters.wandb_offline import encode_records  # noqa: E402
from toolkit.protocol import read_runset  # noqa: E402
from toolkit.runset import Selection  # noqa: E402


def add_items(field, values: dict) -> None:
    """Append {key: value} as (nested_key, value_json) items to a summary-update or history-item field."""
    for key, value in values.items():
        item = field.add()
        item.nested_key.append(key)
        item.value_json = json.dumps(value)


def synth_run(folder: Path, index: int, steps: int, n_keys: int) -> int:
    """Write one synthetic offline run folder; returns the number of history rows."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_id = f"bench{index:04d}"
    keys = ["train_loss", "output_norm", "grad_norm", "lr", "tokens", "eval_loss"][:n_keys]
    payloads = []
    num = 1
    header = pb.Record(num=num)
    header.header.SetInParent()
    payloads.append(header.SerializeToString())
    rec = pb.Record(num=num)
    rec.run.run_id, rec.run.project, rec.run.display_name = run_id, "bench", f"run-{index}"
    rec.run.start_time.seconds = 1_700_000_000 + index
    for key, value in {"lr": 1e-3 * (index % 5 + 1), "bs": 32 * (index % 4 + 1), "seed": index}.items():
        item = rec.run.config.update.add()
        item.key, item.value_json = key, json.dumps(value)
    payloads.append(rec.SerializeToString())
    t0 = 1.7e9
    for step in range(steps):
        values = {k: 1.0 / (step + 1) + j * 0.1 + index * 1e-3 for j, k in enumerate(keys)}
        if step % 10:  # every key but the first is logged at every 10th step only
            values = {keys[0]: values[keys[0]]}
        values.update({"_timestamp": t0 + step * 0.01, "_runtime": step * 0.01, "_step": step})
        num += 1
        summ = pb.Record(num=num)
        add_items(summ.summary.update, values)
        num += 1
        hist = pb.Record(num=num)
        add_items(hist.history.item, values)
        hist.history.step.num = step
        num += 1
        runtime = pb.Record(num=num)
        item = runtime.summary.update.add()
        item.nested_key.extend(["_wandb", "runtime"])
        item.value_json = str(int(step * 0.01))
        payloads += [summ.SerializeToString(), hist.SerializeToString(), runtime.SerializeToString()]
    end = pb.Record(num=num + 1)
    end.exit.exit_code = 0
    payloads.append(end.SerializeToString())
    run_dir = folder / f"offline-run-20240101_000000-{run_id}"
    run_dir.mkdir(parents=True)
    (run_dir / f"run-{run_id}.wandb").write_bytes(encode_records(payloads))
    return steps


def write_real(folder: Path, n_runs: int, steps: int) -> None:
    """Write real offline runs with wandb (for a sanity check of the reader's speed on genuine files)."""
    os.environ.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
                       "WANDB_DIR": str(folder.parent)})
    tracker = WandbTracker(project="bench", path=str(folder), offline=True)
    for i in range(n_runs):
        writer = tracker.start_run(f"real-{i}", {"lr": 1e-3 * (i + 1), "bs": 32})
        for step in range(steps):
            metrics = {"train_loss": 1.0 / (step + 1)}
            if step % 10 == 0:
                metrics.update(output_norm=math.sqrt(step), grad_norm=1.0 / (step + 2))
            writer.log_metrics(metrics, step=step)
        writer.finish()


def bench(folder: Path, keys: list[str] | None, repeat: int) -> tuple[float, int, int]:
    """Best-of-``repeat`` seconds to read the folder into a RunSet, with its row and run counts."""
    best = math.inf
    rows = runs = 0
    for _ in range(repeat):
        started = time.perf_counter()
        tracker = WandbTracker(path=str(folder), progress=False)
        rs = read_runset(tracker, Selection(), keys)
        best = min(best, time.perf_counter() - started)
        rows, runs = len(rs.history), len(rs.runs)
    return best, rows, runs


def main() -> None:
    """Synthesise, read back, print rows/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--real", type=int, default=0, help="also write and read N real offline runs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_wandb_"))
    try:
        folder = tmp / "wandb"
        started = time.perf_counter()
        total = sum(synth_run(folder, i, args.steps, args.keys) for i in range(args.runs))
        size = sum(p.stat().st_size for p in folder.rglob("*.wandb"))
        print(f"synthesised {args.runs} runs x {args.steps} steps x {args.keys} keys = {total:,} rows "
              f"({size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s")
        keys = ["train_loss", "output_norm", "grad_norm", "lr", "tokens", "eval_loss"][:args.keys]
        for label, wanted in (("named keys", keys), ("all keys", None)):
            seconds, rows, runs = bench(folder, wanted, args.repeat)
            assert rows == total and runs == args.runs, (rows, runs)
            print(f"read ({label}): {rows:,} rows of {runs} runs in {seconds:.2f} s = {rows / seconds:,.0f} rows/s "
                  f"(target >= 50,000)")
        if args.real:
            real = tmp / "real" / "wandb"
            started = time.perf_counter()
            write_real(real, args.real, args.steps)
            print(f"wrote {args.real} real offline runs x {args.steps} steps in {time.perf_counter() - started:.1f} s")
            seconds, rows, runs = bench(real, ["train_loss", "output_norm", "grad_norm"], args.repeat)
            print(f"read (real wandb files): {rows:,} rows of {runs} runs in {seconds:.2f} s = {rows / seconds:,.0f} rows/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
