"""The minima analysis' key tables in the report: lr* per (horizon, bs) with its CI and method."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.report import ResultTable, Row, fmt, fmt_ci, fmt_horizon, read_csv, text_of, truthy


OK_MINIMA_METHODS = ("fit", "fit_closest", "empirical")


def minima_problem(row: Mapping[str, Any]) -> str:
    """Why a minima.csv row is a problem ('' when it is not): its reason, the edge, or a fallback method."""
    reason = text_of(row.get("reason"))
    reasons = [reason] if reason else []
    method = text_of(row.get("method"))
    if method and method not in OK_MINIMA_METHODS and method not in reason:
        reasons.append(f"method {method}")
    if truthy(row.get("on_edge")) and "edge" not in reason:
        reasons.append("the minimum is on the edge of the lr grid")
    if text_of(row.get("identifiable")).lower() == "false":
        reasons.append("not identifiable")
    return "; ".join(reasons)


def render_minima(summary: Mapping[str, Any], adir: Path) -> list[ResultTable]:
    """lr* per (horizon, bs) with its CI and method: a compact horizon x bs table, problem cells highlighted."""
    frame = read_csv(adir, "minima")
    if frame is None or not len(frame):
        return []
    settings = summary.get("settings") if isinstance(summary.get("settings"), Mapping) else {}
    by = [c for c in (settings.get("by") or []) if c in frame.columns]
    rows = frame.to_dict("records")
    methods = frame["method"].astype(str).value_counts() if "method" in frame.columns else pd.Series(dtype=int)
    level = settings["bootstrap"].get("level") if isinstance(settings.get("bootstrap"), Mapping) else None
    ci_name = f"{fmt(100 * float(level))}% CI" if isinstance(level, (int, float)) else "CI"
    method_note = ", ".join(f"{m}: {n}" for m, n in methods.items())
    note = f"lr* [{ci_name}] per horizon (rows) and batch size (columns); methods: {method_note}" if method_note else ""
    keys = [c for c in ("horizon", *by) if c in frame.columns]
    pivotable = "bs" in frame.columns and bool(keys) and not frame.duplicated(keys + ["bs"]).any()
    tables = []
    if pivotable:
        batch_sizes = sorted(frame["bs"].dropna().unique().tolist())
        cells: dict[tuple, dict[Any, Mapping[str, Any]]] = {}
        for r in rows:
            cells.setdefault(tuple(r[k] for k in keys), {})[r["bs"]] = r
        table = ResultTable("optimal learning rate", keys + [f"bs {fmt(b)}" for b in batch_sizes], note=note, css="pivot",
                            label_columns=len(keys))
        for key in sorted(cells, key=lambda t: tuple(str(v) if isinstance(v, str) else v for v in t)):
            line = [fmt_horizon(v) if k == "horizon" else fmt(v) for k, v in zip(keys, key)]
            reasons = []
            for b in batch_sizes:
                r = cells[key].get(b)
                if r is None:
                    line.append("")
                    continue
                text = f"{fmt(r.get('lr'))} {fmt_ci(r.get('lr_ci_low'), r.get('lr_ci_high'))}".strip()
                method = text_of(r.get("method"))
                problem = minima_problem(r)
                if method and method != "fit":
                    text += f" ({method})"
                if problem:
                    reasons.append(f"bs {fmt(b)}: {problem}")
                    text = "⚠ " + text
                line.append(text)
            table.rows.append(Row(line, bool(reasons), "; ".join(reasons)))
        tables.append(table)
    columns = [c for c in ("horizon", *by, "bs", "lr", "lr_ci_low", "lr_ci_high", "method", "n_points", "on_edge", "reason")
               if c in frame.columns]
    detail = ResultTable("all (horizon, bs) rows" if pivotable else "optimal learning rate",
                         [("lr*" if c == "lr" else c) for c in columns], note="" if pivotable else note,
                         css="detail" if pivotable else "")
    for r in rows:
        problem = minima_problem(r)
        detail.rows.append(Row([fmt_horizon(r[c]) if c == "horizon" else fmt(r[c]) for c in columns], bool(problem), problem))
    return tables + [detail]
