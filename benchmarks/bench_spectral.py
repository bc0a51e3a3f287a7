"""Benchmark: milliseconds per parameter and relative error of each spectral-norm estimator (toolkit.spectral).

Shapes 768x768, 768x3072, 2048x2048, 4096x4096 and 4096x11008 in fp32 and bf16, on CUDA when available (CUDA events,
median of repeats after warm-up), with a known spectrum (s1/s2 = --gap, power-law tail), then the question: is some
estimator within 1% of exact at least 5x faster than torch.linalg.matrix_norm(ord=2) on 4096x4096?

    python benchmarks/bench_spectral.py                   # the full table (a GPU machine: about a minute)
    python benchmarks/bench_spectral.py --small           # CPU-sized shapes (/32), well under a minute
    python benchmarks/bench_spectral.py --device cpu --csv spectral.csv
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from analyses import spectral as analysis  # noqa: E402
from toolkit.outputs import write_csv  # noqa: E402

SPEEDUP_GOAL = 5.0
ERROR_GOAL = 0.01


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table and the verdict."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="shapes divided by 32 (CPU-sized)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    ap.add_argument("--methods", nargs="+", default=analysis.DEFAULT_METHODS)
    ap.add_argument("--dtypes", nargs="+", default=analysis.DEFAULT_DTYPES)
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per cell (default 10 on GPU, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 3 on GPU, 1 on CPU)")
    ap.add_argument("--gap", type=float, default=1.1, help="s1/s2 of the test matrices")
    ap.add_argument("--decay", type=float, default=0.5, help="power-law exponent of the tail")
    ap.add_argument("--csv", default=None, help="also write the table here")
    args = ap.parse_args(argv)

    import torch

    device, note = analysis.resolve_device(args.device)
    cuda = device.startswith("cuda")
    repeats = args.repeats if args.repeats is not None else (10 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    shapes = analysis.SMALL_SHAPES if args.small else analysis.BENCH_SHAPES
    print(f"{note}; torch {torch.__version__}; spectrum s1/s2={args.gap}, tail exponent {args.decay}; "
          f"median of {repeats} after {warmup} warm-up")
    started = time.perf_counter()
    cases = {s: analysis.synthetic_case(s, 1, args.gap, args.decay, 0, device) for s in shapes}
    df = analysis.benchmark(cases, args.methods, args.dtypes, device, repeats, warmup, progress=None)
    elapsed = time.perf_counter() - started

    print(f"\n{'shape':>10} {'dtype':>9} {'method':>14} {'ms/param':>10} {'rel_error':>10} {'vs matrix_norm':>15}")
    for _, r in df.iterrows():
        print(f"{r['shape']:>10} {r['dtype']:>9} {r['method']:>14} {r['ms']:10.3f} {r['rel_error']:10.2e} "
              f"{r['speedup_vs_matrix_norm']:14.1f}x")

    big = f"{shapes[3][0]}x{shapes[3][1]}"
    base = df[(df["shape"] == big) & (df["estimator"] == "matrix_norm") & (df["dtype"] == "float32")]
    if base.empty:
        print(f"\n(no fp32 matrix_norm row for {big}: add matrix_norm and float32 to answer the 5x question)")
    else:
        base_ms = float(base["ms"].iloc[0])
        cand = df[(df["shape"] == big) & (df["rel_error"] <= ERROR_GOAL) & ~df["estimator"].isin(["exact", "matrix_norm"])]
        cand = cand.assign(speedup=base_ms / cand["ms"]).sort_values("ms")
        winners = cand[cand["speedup"] >= SPEEDUP_GOAL]
        print(f"\n{big}: torch.linalg.matrix_norm(ord=2) fp32 takes {base_ms:.3f} ms")
        if winners.empty:
            best = cand.iloc[0] if len(cand) else None
            tail = (f"; the fastest within 1% is {best['method']} {best['dtype']} at {best['ms']:.3f} ms "
                    f"({best['speedup']:.1f}x)") if best is not None else "; no iterative estimator is within 1%"
            print(f"NO estimator within {ERROR_GOAL:.0%} of exact is >= {SPEEDUP_GOAL:.0f}x faster{tail}")
        else:
            w = winners.iloc[0]
            print(f"YES: {w['method']} {w['dtype']} is within {ERROR_GOAL:.0%} (rel_error {w['rel_error']:.1e}) and "
                  f"{w['speedup']:.1f}x faster ({w['ms']:.3f} ms); {len(winners)} estimator/dtype pair(s) qualify")
    rec = analysis.recommend(df)["overall"]
    for budget, pick in rec.items():
        what = f"{pick['method']} {pick['dtype']} (worst error {pick['worst_rel_error']:.1e})" if pick else "none"
        print(f"overall fastest {budget.replace('_', ' ').replace('pct', '%')}: {what}")
    print(f"benchmark took {elapsed:.1f} s")
    if args.csv:
        write_csv(args.csv, df)
        print(f"table: {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
