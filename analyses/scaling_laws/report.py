"""The scaling-laws analysis' key tables in the report: the compute-optimal exponents and approach 3's law."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.report import ResultTable, Row, ci_of, fmt, fmt_ci, text_of


def render_scaling_laws(summary: Mapping[str, Any], adir: Path) -> list[ResultTable]:
    """The compute-optimal exponents a (N ∝ C^a) and b (D ∝ C^b) with CIs for each approach, and approach 3's law."""
    approaches = [k for k in summary if k.startswith("approach") and isinstance(summary[k], Mapping)]
    if not approaches:
        return []
    table = ResultTable("compute-optimal exponents", ["approach", "a", "a CI", "b", "b CI", "points", "method"],
                        sweep_columns=("a", "a CI", "b", "b CI"),
                        note="N_opt ∝ C^a, D_opt ∝ C^b")
    for key in approaches:
        node = summary[key]
        reason = text_of(node.get("reason"))
        reasons = [reason or "not identifiable"] if node.get("identifiable") is False else [reason] if reason else []
        rejected = node.get("rejected")
        if isinstance(rejected, list) and rejected:
            reasons.append(f"{len(rejected)} budget(s) rejected"
                           + (f" ({text_of(rejected[0].get('reason'))})" if isinstance(rejected[0], Mapping) else ""))
        points = node.get("n_budgets", node.get("n_points", node.get("n")))
        table.rows.append(Row([key.replace("approach", "approach "), fmt(node.get("a")), fmt_ci(*ci_of(node, "a")),
                               fmt(node.get("b")), fmt_ci(*ci_of(node, "b")), fmt(points), text_of(node.get("method"))],
                              bool(reasons), "; ".join(reasons)))
    tables = [table]
    three = summary.get("approach3")
    if isinstance(three, Mapping) and any(k in three for k in ("E", "alpha", "beta")):
        law = ResultTable("approach 3: L(N, D) = E + A/N^alpha + B/D^beta", ["parameter", "value", "CI"])
        for p in ("E", "A", "B", "alpha", "beta"):
            if p in three:
                law.rows.append(Row([p, fmt(three.get(p)), fmt_ci(*ci_of(three, p))]))
        tables.append(law)
    return tables
