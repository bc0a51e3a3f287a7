"""The spectral benchmark's key tables in the report: each estimator's time and error, the pick per shape."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.report import ResultTable, Row, fmt, read_csv, text_of


def render_spectral(summary: Mapping[str, Any], adir: Path) -> list[ResultTable]:
    """Per estimator (method, dtype): its time and error over the shapes; the recommended estimator per shape."""
    tables = []
    bench = read_csv(adir, "benchmark")
    if bench is not None and len(bench) and "method" in bench.columns:
        keys = [c for c in ("method", "dtype") if c in bench.columns]
        table = ResultTable("estimators", keys + ["shapes", "median ms", "max ms", "worst rel. error", "median speedup"],
                            label_columns=len(keys), sweep_columns=("median ms", "worst rel. error"),
                            note="time per call and error against the exact norm over the benchmarked shapes"
                                 + (f" ({text_of(summary.get('device'))})" if summary.get("device") else ""))
        for key, group in bench.groupby(keys, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            skipped = group["skipped"].dropna().astype(str) if "skipped" in group.columns else pd.Series(dtype=str)
            skipped = skipped[skipped.str.strip() != ""]
            timed = group.loc[~group.index.isin(skipped.index)]

            def stat(col: str, how: str, frame: pd.DataFrame = timed) -> str:
                if col not in frame.columns:
                    return ""
                values = pd.to_numeric(frame[col], errors="coerce").dropna()
                return fmt(getattr(values.abs() if col == "rel_error" else values, how)()) if len(values) else ""

            reason = f"{len(skipped)} cell(s) skipped: {skipped.iloc[0]}" if len(skipped) else ""
            table.rows.append(Row([text_of(k) for k in key] + [f"{len(timed)}/{len(group)}", stat("ms", "median"), stat("ms", "max"),
                                   stat("rel_error", "max"), stat("speedup_vs_matrix_norm", "median")], bool(reason), reason))
        tables.append(table)
    rec = summary.get("recommended")
    per_shape = rec.get("per_shape") if isinstance(rec, Mapping) else None
    if isinstance(per_shape, Mapping) and per_shape:
        budgets = sorted({b for v in per_shape.values() if isinstance(v, Mapping) for b in v})
        table = ResultTable("recommended estimator per shape", ["shape"] + [b.replace("within_", "within ").replace("pct", "%") for b in budgets],
                            note="the fastest estimator within each error budget (speed-up against torch.linalg.matrix_norm)")
        for shape, choice in per_shape.items():
            line = [str(shape)]
            for b in budgets:
                c = choice.get(b) if isinstance(choice, Mapping) else None
                line.append("" if not isinstance(c, Mapping) else
                            f"{text_of(c.get('method'))} {text_of(c.get('dtype'))}, {fmt(c.get('ms'))} ms, ×{fmt(c.get('speedup_vs_matrix_norm'), 3)}")
            table.rows.append(Row(line))
        tables.append(table)
    return tables
