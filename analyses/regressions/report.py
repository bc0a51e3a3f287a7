"""The regressions analysis' key tables in the report: every fitted coefficient with its SE and CI."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.report import ResultTable, Row, ci_of, fmt, fmt_ci, missing, read_csv, text_of, truthy


def _coefficient_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Coefficients found in a summary dict: every key ``k`` with ``k_se`` or ``k_ci`` beside it, per sub-dict."""
    found = []

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            if key in ("settings", "warnings", "figures"):
                continue
            if isinstance(value, Mapping):
                walk(f"{prefix}.{key}" if prefix else key, value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    f"{key}_se" in node or f"{key}_ci" in node):
                low, high = ci_of(node, key)
                found.append({"fit": prefix, "coefficient": key, "value": value, "se": node.get(f"{key}_se"),
                              "ci_low": low, "ci_high": high, "r2": node.get("r2"), "n": node.get("n"),
                              "identifiable": node.get("identifiable")})

    walk("", summary)
    return found


def render_regressions(summary: Mapping[str, Any], adir: Path) -> list[ResultTable]:
    """Every fitted coefficient with its SE and CI (coefficients.csv, else found in summary.json)."""
    frame = read_csv(adir, "coefficients")
    rows = frame.to_dict("records") if frame is not None and len(frame) else _coefficient_rows(summary)
    if not rows:
        return []
    table = ResultTable("coefficients", ["fit", "coefficient", "value", "SE", "CI", "R²", "n"], label_columns=2,
                        sweep_columns=("value", "CI"),
                        note="log2 lr* = alpha log2 bs + beta log2 horizon + gamma (and the other fits), SE and 95% CI")
    for r in rows:
        fit = text_of(r.get("fit"))
        node = summary.get(fit) if isinstance(summary.get(fit), Mapping) else {}
        reasons = [text_of(r.get("reason"))] if text_of(r.get("reason")) else []
        if text_of(r.get("identifiable")).lower() == "false" or node.get("identifiable") is False:
            reasons.append(text_of(node.get("reason")) or "not identifiable")
        fixed = truthy(r.get("fixed"))
        if not fixed and missing(r.get("se")):
            reasons.append("no standard error")
        value = fmt(r.get("value")) + (" (fixed)" if fixed else "")
        table.rows.append(Row([fit, text_of(r.get("coefficient")), value, fmt(r.get("se")),
                               fmt_ci(r.get("ci_low"), r.get("ci_high")), fmt(r.get("r2")), fmt(r.get("n"))],
                              bool(reasons), "; ".join(reasons)))
    tables = [table]
    boot = summary.get("bootstrap")
    if isinstance(boot, Mapping) and (frame is None or not len(frame)):  # coefficients.csv has the bootstrap rows
        brows = [Row([key[:-3], fmt(boot[key]), fmt_ci(*ci_of(boot, key[:-3]))]) for key in boot
                 if key.endswith("_se") and isinstance(boot.get(key), (int, float))]
        if brows:
            tables.append(ResultTable("run bootstrap", ["coefficient", "SE", "CI"], brows,
                                      note=f"{fmt(boot.get('n_ok'))} of {fmt(boot.get('n'))} resamples of the runs"))
    return tables
