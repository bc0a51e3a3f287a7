"""The correlations analysis' key tables in the report: Spearman and Kendall per level."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.report import ResultTable, Row, ci_of, fmt, fmt_ci, missing, text_of


def render_correlations(summary: Mapping[str, Any], adir: Path) -> list[ResultTable]:
    """Spearman and Kendall (with p-values and CIs) per level."""
    levels = [k for k, v in summary.items() if isinstance(v, Mapping) and ("spearman" in v or "kendall" in v)]
    if not levels:
        return []
    table = ResultTable("rank correlations", ["level", "Spearman", "Spearman CI", "p", "Kendall tau-b", "Kendall CI", "p", "n"],
                        sweep_columns=("Spearman", "Spearman CI", "Kendall tau-b", "Kendall CI"))
    for level in levels:
        node = summary[level]
        reason = text_of(node.get("reason"))
        if not reason and (missing(node.get("spearman")) or missing(node.get("kendall"))):
            reason = "the correlation is undefined (constant ranks or too few pairs)"
        table.rows.append(Row([level, fmt(node.get("spearman")), fmt_ci(*ci_of(node, "spearman")), fmt(node.get("spearman_p")),
                               fmt(node.get("kendall")), fmt_ci(*ci_of(node, "kendall")), fmt(node.get("kendall_p")),
                               fmt(node.get("n"))], bool(reason), reason))
    tables = [table]
    over = summary.get("over_time")
    if isinstance(over, Mapping) and over:
        cols = ["n_steps", "spearman_first", "spearman_last", "spearman_min", "spearman_median"]
        tables.append(ResultTable("Spearman over training", ["level"] + cols,
                                  [Row([lvl] + [fmt(node.get(c)) for c in cols]) for lvl, node in over.items()
                                   if isinstance(node, Mapping)]))
    return tables
