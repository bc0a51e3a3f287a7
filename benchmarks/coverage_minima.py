"""Coverage of the minima bootstrap CIs of the planted optimum over generated sweeps (toolkit.demo).

Each sweep is ``toolkit.demo``'s bundled-example grid (4 batch sizes x 12 lrs x 2 seeds, horizons 2^25..2^30) with
new noise (``seed`` 1..n), read through ``recipe=lr_bs_sweep``; every (horizon, bs) cell's CI is checked against the
planted ``log2 lr*``. Prints one row per CI method: coverage, mean and max width (log2), n sweeps and cells.

    python benchmarks/coverage_minima.py [--sweeps 60] [--n-boot 200] [--methods percentile,basic,bca,residuals]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyses import minima as mm  # noqa: E402
from toolkit import demo  # noqa: E402
from toolkit.recipes import lr_bs_sweep  # noqa: E402
from toolkit.runset import RunSet  # noqa: E402

METHODS: dict[str, dict[str, Any]] = {
    "percentile": {"mode": "points", "ci_method": "percentile"},
    "basic": {"mode": "points", "ci_method": "basic"},
    "bca": {"mode": "points", "ci_method": "bca"},
    "residuals": {"mode": "residuals", "ci_method": "percentile"},
}


def demo_table(seed: int) -> tuple[pd.DataFrame, demo.DemoSweep]:
    """The sweep Table (recipe lr_bs_sweep) of a small demo sweep with noise seed ``seed``, and the sweep."""
    sweep = demo.make_lr_bs_sweep(seed, lr_log2=demo.SMALL_LR_LOG2, log_every_tokens=2**25)
    hist = sweep.history
    names = hist["run_name"].drop_duplicates().reset_index(drop=True)
    ids = {n: f"id{i}" for i, n in enumerate(names)}
    runs = pd.DataFrame({"run_id": [ids[n] for n in names], "name": names, "state": "finished", "created_at": None,
                         "tags": ""})
    history = hist[["step", "train_loss", "output_norm"]].assign(run_id=hist["run_name"].map(ids))
    runset = RunSet(runs, history[["run_id", "step", "train_loss", "output_norm"]])
    return lr_bs_sweep.build(runset, {"seq_len": sweep.planted["seq_len"]}, lambda _: None), sweep


def coverage(methods: list[str], sweeps: int, n_boot: int = 200, level: float = 0.95) -> pd.DataFrame:
    """One row per method: coverage of the planted log2 lr*, mean/max CI width (log2), sweeps, cells, seconds."""
    rows: dict[str, list[pd.DataFrame]] = {m: [] for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for seed in range(1, sweeps + 1):
        table, sweep = demo_table(seed)
        for name in methods:
            t0 = time.perf_counter()
            m = mm.find_minima(table, {"bootstrap": {"n": n_boot, "level": level, **METHODS[name]}})
            seconds[name] += time.perf_counter() - t0
            m = m[m["method"] == "fit"]
            truth = sweep.optimal_log2_lr(m["horizon"].to_numpy(float), m["bs"].to_numpy(float))
            lo, hi = np.log2(m["lr_ci_low"].to_numpy(float)), np.log2(m["lr_ci_high"].to_numpy(float))
            rows[name].append(pd.DataFrame({"cover": (lo <= truth) & (truth <= hi), "width": hi - lo}))
    out = []
    for name in methods:
        d = pd.concat(rows[name], ignore_index=True)
        out.append({"method": name, "coverage": d["cover"].mean(), "mean_width_log2": d["width"].mean(),
                    "max_width_log2": d["width"].max(), "n_sweeps": sweeps, "n_cells": len(d),
                    "seconds": seconds[name]})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    """Command line: print the coverage table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweeps", type=int, default=60)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--level", type=float, default=0.95)
    ap.add_argument("--methods", default=",".join(METHODS))
    ns = ap.parse_args(argv)
    table = coverage([m.strip() for m in ns.methods.split(",") if m.strip()], ns.sweeps, ns.n_boot, ns.level)
    with pd.option_context("display.width", 120, "display.float_format", "{:.3f}".format):
        print(f"nominal level {ns.level:g}, {ns.n_boot} replicates")
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
