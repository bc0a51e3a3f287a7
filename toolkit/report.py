"""report.md and a self-contained report.html organised around the answers: provenance first, then per analysis its
key numbers (with CIs, problem rows highlighted with their reason), its figures with captions, and links to its
tables and raw JSON. Rendered with jinja2 templates (``toolkit/templates/``).

Each analysis has one small renderer (``RENDERERS``, keyed by the analysis folder's name) that turns its
summary.json and CSVs into ``ResultTable``s; an analysis without one gets the generic table of summary.json's
scalars. Renderers read columns and keys defensively: a missing column or key shows as empty, never raises, and a
renderer that fails anyway falls back to the generic table with a note.
"""
from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.outputs import atomic_write_text

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
MAX_GENERIC_ROWS = 80
MAX_WARNINGS = 50


# ----------------------------------------------------------------------------------------------- model


@dataclass
class Row:
    """One table row: its cells (already formatted text), and whether it is a problem row and why."""

    cells: list[str]
    problem: bool = False
    reason: str = ""


@dataclass
class ResultTable:
    """A key-number table of one analysis."""

    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    note: str = ""
    css: str = ""  # extra CSS class ("pivot"; "detail": shown folded, left out of report.md and the sweep table)
    label_columns: int = 1  # the leading columns that name a row (the rest are numbers)
    sweep_columns: tuple[str, ...] | None = None  # the columns the multirun root table carries (None: all numbers)

    def key_numbers(self) -> list[tuple[str, str, str]]:
        """``(label, text, problem reason)`` per carried cell: a CI column is joined to the number before it."""
        labels = self.columns[:self.label_columns]
        carried = [c for c in (self.sweep_columns or self.columns[self.label_columns:]) if c in self.columns]
        numbers = [c for c in carried if not c.endswith("CI")]
        out = []
        for row in self.rows:
            name = " ".join(c for c in row.cells[:len(labels)] if c)
            for i, col in enumerate(carried):
                if col.endswith("CI") and i > 0 and not carried[i - 1].endswith("CI"):
                    continue
                text = row.cells[self.columns.index(col)]
                nxt = carried[i + 1] if i + 1 < len(carried) else None
                if nxt and nxt.endswith("CI"):
                    text = f"{text} {row.cells[self.columns.index(nxt)]}".strip()
                label = name if len(numbers) == 1 and name else f"{name} {col}".strip()
                problem = row.problem and (self.css != "pivot" or text.startswith("⚠"))
                out.append((label, text, row.reason if problem else ""))
        return out

    @property
    def problems(self) -> list[Row]:
        """The rows flagged as problems."""
        return [r for r in self.rows if r.problem]


@dataclass
class Figure:
    """One figure of an analysis: its file, caption and kind (png inline, html embedded)."""

    file: str
    caption: str
    kind: str
    data: str = ""  # base64 PNG


@dataclass
class AnalysisView:
    """What the report shows of one analysis folder."""

    name: str
    tables: list[ResultTable]
    figures: list[Figure]
    csvs: list[str]
    jsons: list[str]
    warnings: list[str]
    n_more_warnings: int
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- formatting


def fmt(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (integers as they are), '' for missing, text as it is."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "" if math.isnan(number) else str(number)
    if number == int(number) and abs(number) < 1e15 and not isinstance(value, float):
        return str(int(number))
    return f"{number:.{digits}g}"


def fmt_ci(low: Any, high: Any) -> str:
    """'[low, high]', or '' when either end is missing."""
    if _missing(low) or _missing(high):
        return ""
    return f"[{fmt(low)}, {fmt(high)}]"


def fmt_horizon(value: Any) -> str:
    """A token count as 2^k when it is a power of two."""
    try:
        h = float(value)
        k = math.log2(h)
    except (TypeError, ValueError):
        return fmt(value)
    return f"2^{int(round(k))}" if abs(k - round(k)) < 1e-9 else fmt(h)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _truthy(value: Any) -> bool:
    if _missing(value):
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value).strip()


def _ci(mapping: Mapping[str, Any], key: str) -> tuple[Any, Any]:
    """The CI of ``key`` in a summary dict: ``key_ci: [lo, hi]`` or ``key_ci_low`` / ``key_ci_high``."""
    ci = mapping.get(f"{key}_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return ci[0], ci[1]
    return mapping.get(f"{key}_ci_low"), mapping.get(f"{key}_ci_high")


def read_csv(adir: Path, name: str) -> pd.DataFrame | None:
    """``<adir>/<name>.csv`` as a frame, or None when it is missing or unreadable."""
    path = adir / f"{name}.csv"
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, UnicodeDecodeError):
        return None


def _get(row: Mapping[str, Any], key: str) -> Any:
    return row.get(key) if key in row else None


# ----------------------------------------------------------------------------------------------- renderers

OK_MINIMA_METHODS = ("fit", "fit_closest", "empirical")


def minima_problem(row: Mapping[str, Any]) -> str:
    """Why a minima.csv row is a problem ('' when it is not): its reason, the edge, or a fallback method."""
    reasons = []
    reason = _text(_get(row, "reason"))
    if reason:
        reasons.append(reason)
    method = _text(_get(row, "method"))
    if method and method not in OK_MINIMA_METHODS and method not in reason:
        reasons.append(f"method {method}")
    if _truthy(_get(row, "on_edge")) and "edge" not in reason:
        reasons.append("the minimum is on the edge of the lr grid")
    if _text(_get(row, "identifiable")).lower() == "false":
        reasons.append("not identifiable")
    return "; ".join(reasons)


def render_minima(summary: Mapping[str, Any], adir: Path) -> list[ResultTable]:
    """lr* per (horizon, bs) with its CI and method: a compact horizon x bs table, problem cells highlighted."""
    frame = read_csv(adir, "minima")
    if frame is None or not len(frame):
        return []
    settings = summary.get("settings") if isinstance(summary.get("settings"), Mapping) else {}
    by = [c for c in (settings.get("by") or []) if c in frame.columns] if isinstance(settings, Mapping) else []
    rows = frame.to_dict("records")
    methods = frame["method"].astype(str).value_counts() if "method" in frame.columns else pd.Series(dtype=int)
    level = (settings.get("bootstrap") or {}).get("level") if isinstance(settings, Mapping) and isinstance(settings.get("bootstrap"), Mapping) else None
    ci_name = f"{fmt(100 * float(level))}% CI" if isinstance(level, (int, float)) else "CI"
    method_note = ", ".join(f"{m}: {n}" for m, n in methods.items())
    note = f"lr* [{ci_name}] per horizon (rows) and batch size (columns); methods: {method_note}" if method_note else ""
    keys = [c for c in ("horizon", *by) if c in frame.columns]
    pivotable = "bs" in frame.columns and bool(keys) and not frame.duplicated(keys + ["bs"]).any()
    if pivotable:
        batch_sizes = sorted(frame["bs"].dropna().unique().tolist())
        cells: dict[tuple, dict[Any, Mapping[str, Any]]] = {}
        for r in rows:
            cells.setdefault(tuple(r[k] for k in keys), {})[r["bs"]] = r
        table = ResultTable("optimal learning rate", [("horizon" if k == "horizon" else k) for k in keys]
                            + [f"bs {fmt(b)}" for b in batch_sizes], note=note, css="pivot", label_columns=len(keys))
        for key in sorted(cells, key=lambda t: tuple(str(v) if isinstance(v, str) else v for v in t)):
            line = [fmt_horizon(v) if k == "horizon" else fmt(v) for k, v in zip(keys, key)]
            reasons = []
            for b in batch_sizes:
                r = cells[key].get(b)
                if r is None:
                    line.append("")
                    continue
                text = f"{fmt(_get(r, 'lr'))} {fmt_ci(_get(r, 'lr_ci_low'), _get(r, 'lr_ci_high'))}".strip()
                method = _text(_get(r, "method"))
                problem = minima_problem(r)
                if method and method != "fit":
                    text += f" ({method})"
                if problem:
                    reasons.append(f"bs {fmt(b)}: {problem}")
                    text = "⚠ " + text
                line.append(text)
            table.rows.append(Row(line, bool(reasons), "; ".join(reasons)))
        tables = [table]
    else:
        tables = []
    columns = [c for c in ("horizon", *by, "bs", "lr", "lr_ci_low", "lr_ci_high", "method", "n_points", "on_edge", "reason")
               if c in frame.columns]
    detail = ResultTable("all (horizon, bs) rows" if pivotable else "optimal learning rate",
                         [("lr*" if c == "lr" else c) for c in columns], note="" if pivotable else note)
    for r in rows:
        problem = minima_problem(r)
        detail.rows.append(Row([fmt_horizon(r[c]) if c == "horizon" else fmt(r[c]) for c in columns], bool(problem), problem))
    detail.css = "detail" if pivotable else ""
    return tables + [detail]


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
                low, high = _ci(node, key)
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
        fit = _text(_get(r, "fit"))
        node = summary.get(fit) if isinstance(summary.get(fit), Mapping) else {}
        reasons = []
        if _text(_get(r, "reason")):
            reasons.append(_text(r["reason"]))
        if _text(_get(r, "identifiable")).lower() == "false" or node.get("identifiable") is False:
            reasons.append(_text(node.get("reason")) or "not identifiable")
        fixed = _truthy(_get(r, "fixed"))
        if not fixed and _missing(_get(r, "se")):
            reasons.append("no standard error")
        value = fmt(_get(r, "value")) + (" (fixed)" if fixed else "")
        table.rows.append(Row([fit, _text(_get(r, "coefficient")), value, fmt(_get(r, "se")),
                               fmt_ci(_get(r, "ci_low"), _get(r, "ci_high")), fmt(_get(r, "r2")), fmt(_get(r, "n"))],
                              bool(reasons), "; ".join(reasons)))
    tables = [table]
    boot = summary.get("bootstrap")
    if isinstance(boot, Mapping) and (frame is None or not len(frame)):  # coefficients.csv has the bootstrap rows
        brows = []
        for key in boot:
            if key.endswith("_se") and isinstance(boot.get(key), (int, float)):
                coef = key[:-3]
                brows.append(Row([coef, fmt(boot[key]), fmt_ci(*_ci(boot, coef))]))
        if brows:
            tables.append(ResultTable("run bootstrap", ["coefficient", "SE", "CI"], brows,
                                      note=f"{fmt(boot.get('n_ok'))} of {fmt(boot.get('n'))} resamples of the runs"))
    return tables


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
        reasons = []
        if node.get("identifiable") is False:
            reasons.append(_text(node.get("reason")) or "not identifiable")
        elif _text(node.get("reason")):
            reasons.append(_text(node["reason"]))
        rejected = node.get("rejected")
        if isinstance(rejected, list) and rejected:
            reasons.append(f"{len(rejected)} budget(s) rejected"
                           + (f" ({_text(rejected[0].get('reason'))})" if isinstance(rejected[0], Mapping) else ""))
        points = node.get("n_budgets", node.get("n_points", node.get("n")))
        table.rows.append(Row([key.replace("approach", "approach "), fmt(node.get("a")), fmt_ci(*_ci(node, "a")),
                               fmt(node.get("b")), fmt_ci(*_ci(node, "b")), fmt(points), _text(node.get("method"))],
                              bool(reasons), "; ".join(reasons)))
    tables = [table]
    three = summary.get("approach3")
    if isinstance(three, Mapping) and any(k in three for k in ("E", "alpha", "beta")):
        law = ResultTable("approach 3: L(N, D) = E + A/N^alpha + B/D^beta", ["parameter", "value", "CI"])
        for p in ("E", "A", "B", "alpha", "beta"):
            if p in three:
                law.rows.append(Row([p, fmt(three.get(p)), fmt_ci(*_ci(three, p))]))
        tables.append(law)
    return tables


def render_correlations(summary: Mapping[str, Any], adir: Path) -> list[ResultTable]:
    """Spearman and Kendall (with p-values and CIs) per level."""
    levels = [k for k, v in summary.items() if isinstance(v, Mapping) and ("spearman" in v or "kendall" in v)]
    if not levels:
        return []
    table = ResultTable("rank correlations", ["level", "Spearman", "Spearman CI", "p", "Kendall tau-b", "Kendall CI", "p", "n"],
                        sweep_columns=("Spearman", "Spearman CI", "Kendall tau-b", "Kendall CI"))
    for level in levels:
        node = summary[level]
        reasons = [_text(node.get("reason"))] if _text(node.get("reason")) else []
        if _missing(node.get("spearman")) or _missing(node.get("kendall")):
            reasons.append(reasons.pop() if reasons else "the correlation is undefined (constant ranks or too few pairs)")
        table.rows.append(Row([level, fmt(node.get("spearman")), fmt_ci(*_ci(node, "spearman")), fmt(node.get("spearman_p")),
                               fmt(node.get("kendall")), fmt_ci(*_ci(node, "kendall")), fmt(node.get("kendall_p")),
                               fmt(node.get("n"))], bool(reasons), "; ".join(reasons)))
    tables = [table]
    over = summary.get("over_time")
    if isinstance(over, Mapping) and over:
        cols = ["n_steps", "spearman_first", "spearman_last", "spearman_min", "spearman_median"]
        tables.append(ResultTable("Spearman over training", ["level"] + cols,
                                  [Row([lvl] + [fmt(node.get(c)) for c in cols]) for lvl, node in over.items()
                                   if isinstance(node, Mapping)]))
    return tables


def render_spectral(summary: Mapping[str, Any], adir: Path) -> list[ResultTable]:
    """Per estimator (method, dtype): its time and error over the shapes; the recommended estimator per shape."""
    tables = []
    bench = read_csv(adir, "benchmark")
    if bench is not None and len(bench) and "method" in bench.columns:
        keys = [c for c in ("method", "dtype") if c in bench.columns]
        table = ResultTable("estimators", keys + ["shapes", "median ms", "max ms", "worst rel. error", "median speedup"],
                            label_columns=len(keys), sweep_columns=("median ms", "worst rel. error"),
                            note="time per call and error against the exact norm over the benchmarked shapes"
                                 + (f" ({_text(summary.get('device'))})" if summary.get("device") else ""))
        for key, group in bench.groupby(keys, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            skipped = group["skipped"].dropna().astype(str) if "skipped" in group.columns else pd.Series(dtype=str)
            skipped = skipped[skipped.str.strip() != ""]
            timed = group.loc[~group.index.isin(skipped.index)]

            def stat(col: str, how: str, frame: pd.DataFrame = timed) -> str:
                if col not in frame.columns:
                    return ""
                values = pd.to_numeric(frame[col], errors="coerce").abs() if col == "rel_error" else pd.to_numeric(frame[col], errors="coerce")
                values = values.dropna()
                return fmt(getattr(values, how)()) if len(values) else ""

            reason = f"{len(skipped)} cell(s) skipped: {skipped.iloc[0]}" if len(skipped) else ""
            table.rows.append(Row([_text(k) for k in key] + [f"{len(timed)}/{len(group)}", stat("ms", "median"), stat("ms", "max"),
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
                            f"{_text(c.get('method'))} {_text(c.get('dtype'))}, {fmt(c.get('ms'))} ms, ×{fmt(c.get('speedup_vs_matrix_norm'), 3)}")
            table.rows.append(Row(line))
        tables.append(table)
    return tables


def flat_scalars(summary: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` for every scalar of a summary (CIs as pairs), settings, warnings and figures left out."""
    items: list[tuple[str, Any]] = []
    for key, value in summary.items():
        if not prefix and key in ("settings", "warnings", "figures"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(flat_scalars(value, f"{name}."))
        elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value):
            items.append((name, fmt_ci(value[0], value[1])))
        elif value is None or isinstance(value, (int, float, str, bool)):
            items.append((name, value))
    return items


def render_generic(summary: Mapping[str, Any], adir: Path) -> list[ResultTable]:
    """The fallback: a key/value table of summary.json's scalar entries."""
    items = flat_scalars(summary)
    table = ResultTable("summary", ["key", "value"], sweep_columns=("value",))
    for key, value in items[:MAX_GENERIC_ROWS]:
        problem = key.endswith("identifiable") and value is False
        table.rows.append(Row([key, fmt(value)], problem, "not identifiable" if problem else ""))
    if len(items) > MAX_GENERIC_ROWS:
        table.note = f"the first {MAX_GENERIC_ROWS} of {len(items)} entries (see summary.json)"
    return [table] if table.rows else []


Renderer = Callable[[Mapping[str, Any], Path], list[ResultTable]]
RENDERERS: dict[str, Renderer] = {
    "minima": render_minima,
    "regressions": render_regressions,
    "scaling_laws": render_scaling_laws,
    "correlations": render_correlations,
    "spectral": render_spectral,
}


def render_tables(name: str, summary: Mapping[str, Any], adir: Path) -> tuple[list[ResultTable], list[str]]:
    """The key-number tables of one analysis (its renderer, else the generic one) and notes about them."""
    renderer = RENDERERS.get(name, render_generic)
    try:
        tables = renderer(summary, adir)
        if tables:
            return tables, []
        if renderer is render_generic:
            return [], []
        return render_generic(summary, adir), []
    except Exception as exc:  # a summary of a shape this renderer does not know: show its scalars instead
        log.warning("report: the %s tables could not be rendered (%s: %s); showing summary.json's numbers", name,
                    type(exc).__name__, exc)
        return render_generic(summary, adir), [f"the {name} tables could not be rendered ({type(exc).__name__}: {exc})"]


# ----------------------------------------------------------------------------------------------- gathering


def key_numbers(view: AnalysisView) -> list[tuple[str, str, str]]:
    """The key numbers of one analysis for the multirun root table: its first (non-detail) table's cells."""
    tables = [t for t in view.tables if t.css != "detail"]
    return tables[0].key_numbers() if tables else []


def _analysis_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "summary.json").exists() and not p.name.startswith("."))


def _figures(adir: Path, summary: Mapping[str, Any], inline: bool = True) -> list[Figure]:
    captions = summary.get("figures") if isinstance(summary.get("figures"), Mapping) else {}
    files = sorted(adir.glob("*.png")) + sorted(adir.glob("*.html"))
    order = {name: i for i, name in enumerate(captions)}  # the order the analysis made them, then the others
    files.sort(key=lambda p: (order.get(p.name, len(order)), p.suffix != ".png", p.name))
    figures = []
    for path in files:
        caption = _text(captions.get(path.name)) or path.name
        if path.suffix == ".png":
            data = base64.b64encode(path.read_bytes()).decode("ascii") if inline else ""
            figures.append(Figure(path.name, caption, "png", data))
        else:
            figures.append(Figure(path.name, caption, "html"))
    return figures


def analysis_view(adir: Path, inline: bool = True) -> AnalysisView:
    """Read one analysis folder into what the report shows."""
    from toolkit.secrets import scrub

    try:
        summary = json.loads((adir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        summary = {}
        notes = [f"summary.json could not be read ({type(exc).__name__})"]
    else:
        notes = []
    if not isinstance(summary, dict):
        summary, notes = {}, notes + ["summary.json is not an object"]
    tables, more = render_tables(adir.name, summary, adir)
    warnings = [scrub(str(w)) for w in (summary.get("warnings") or [])] if isinstance(summary.get("warnings"), list) else []
    return AnalysisView(name=adir.name, tables=tables, figures=_figures(adir, summary, inline),
                        csvs=sorted(p.name for p in adir.glob("*.csv")), jsons=sorted(p.name for p in adir.glob("*.json")),
                        warnings=warnings[:MAX_WARNINGS], n_more_warnings=max(0, len(warnings) - MAX_WARNINGS),
                        notes=notes + more)


def provenance_items(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The provenance header's (label, text) pairs, secrets scrubbed."""
    from toolkit.secrets import mask_config, scrub

    prov = status.get("provenance") if isinstance(status.get("provenance"), Mapping) else {}
    items: list[tuple[str, str]] = []
    if not prov:
        return items

    def add(label: str, value: Any) -> None:
        if not _missing(value) and value != "":
            items.append((label, scrub(str(mask_config(value) if isinstance(value, str) else value))))

    add("command", prov.get("command"))
    tracker = _text(prov.get("tracker"))
    source = prov.get("source") if isinstance(prov.get("source"), Mapping) else {}
    where = ", ".join(f"{k} {v}" for k, v in source.items())
    add("tracker", f"{tracker}{': ' + where if where else ''}" if tracker else (where or None))
    read, kept, rows = prov.get("n_runs_read"), prov.get("n_runs_kept"), prov.get("n_table_rows")
    if read is not None or kept is not None:
        kept_text = f"{fmt(kept)} kept" if kept is not None else (f"{fmt(rows)} rows in the table" if rows is not None else "")
        add("runs", ", ".join(t for t in (f"{fmt(read)} read" if read is not None else "", kept_text) if t))
    add("time", prov.get("time"))
    version = prov.get("version")
    add("sweepkit", f"{version or 'unknown version'}" + (f", git {prov['git_commit']}" if prov.get("git_commit") else ""))
    return items


def build_context(run_dir: Path, title: str, status: Mapping[str, Any], inline: bool = True) -> dict[str, Any]:
    """Everything the report templates show."""
    from toolkit.secrets import scrub

    failed = status.get("failed") or {}
    error = status.get("error") if isinstance(status.get("error"), Mapping) else None
    return {
        "title": scrub(title),
        "provenance": provenance_items(status),
        "publish": scrub(str((status.get("publish") or {}).get("line") or "")) if isinstance(status.get("publish"), Mapping) else "",
        "failed": {str(k): scrub(str(v)) for k, v in failed.items()},
        "error": {"kind": _text(error.get("kind")), "message": scrub(_text(error.get("message")))} if error else None,
        "warnings": [scrub(str(w)) for w in (status.get("warnings") or [])],
        "analyses": [analysis_view(a, inline) for a in _analysis_dirs(run_dir)],
    }


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=lambda name: bool(name and name.endswith(".html.j2")),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["md_cell"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    return env


def render(template: str, **context: Any) -> str:
    """Render one of toolkit/templates/ with ``context``."""
    return _environment().get_template(template).render(**context)


def write_report(run_dir: str | Path, title: str = "Sweep analysis", status: dict[str, Any] | None = None) -> Path:
    """Write report.md and report.html for a run folder and return the HTML path."""
    run_dir = Path(run_dir)
    status = status or {}
    context = build_context(run_dir, title, status)
    atomic_write_text(run_dir / "report.md", render("report.md.j2", **context))
    return atomic_write_text(run_dir / "report.html", render("report.html.j2", **context))
