"""report.md and a self-contained report.html organised around the answers: provenance first, then per analysis its
key numbers (with CIs, problem rows highlighted with their reason), its figures with captions, and links to its
tables and raw JSON. Rendered with jinja2 templates (``toolkit/templates/``).

Each analysis turns its summary.json and CSVs into ``ResultTable``s itself (``report_tables``, found through the
``_target_`` its run's saved config or its conf/analysis/<name>.yaml names); an analysis without one gets the generic
table of summary.json's scalars. Renderers read columns and keys defensively (the helpers below): a missing column or
key shows as empty, never raises, and a renderer that fails anyway falls back to the generic table with a note.
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
from toolkit.secrets import mask_config, scrub

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
    if isinstance(value, int):
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
    return "" if missing(low) or missing(high) else f"[{fmt(low)}, {fmt(high)}]"


def fmt_horizon(value: Any) -> str:
    """A token count as 2^k when it is a power of two."""
    try:
        h = float(value)
        k = math.log2(h)
    except (TypeError, ValueError):
        return fmt(value)
    return f"2^{int(round(k))}" if abs(k - round(k)) < 1e-9 else fmt(h)


def missing(value: Any) -> bool:
    """Whether a cell or key is empty (None or NaN)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def truthy(value: Any) -> bool:
    """Whether a cell says yes (True, 1, 'true', 'yes'); empty is no."""
    if missing(value):
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def text_of(value: Any) -> str:
    """A cell as stripped text, '' when empty."""
    return "" if missing(value) else str(value).strip()


def ci_of(mapping: Mapping[str, Any], key: str) -> tuple[Any, Any]:
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


# ----------------------------------------------------------------------------------------------- renderers


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


def renderer_of(adir: Path) -> Renderer:
    """The ``report_tables`` of the analysis in an analysis folder: of the ``_target_`` its run's saved config
    (config.json) names, else the one conf/analysis/<name>.yaml names; the generic table when neither imports."""
    from toolkit.settings import CONF_DIR, locate, part_targets

    saved = adir.parent / "config.json"
    for target_of in (lambda: json.loads(saved.read_text(encoding="utf-8"))["analysis"][adir.name]["_target_"],
                      lambda: part_targets(CONF_DIR)[("analysis", adir.name)]):
        try:
            part = locate(str(target_of()), f"analysis {adir.name}")
            return getattr(part() if isinstance(part, type) else part, "report_tables", render_generic)
        except Exception:  # no config.json, the analysis not named there, or a part that does not import here
            continue
    return render_generic


def render_tables(name: str, summary: Mapping[str, Any], adir: Path) -> tuple[list[ResultTable], list[str]]:
    """The key-number tables of one analysis (its ``report_tables``, else the generic one) and notes about them."""
    renderer = renderer_of(adir)
    try:
        return renderer(summary, adir) or render_generic(summary, adir), []
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

    def figure(path: Path) -> Figure:  # a PNG inline as base64 (unless not inline), an HTML figure as it is
        caption = text_of(captions.get(path.name)) or path.name
        if path.suffix != ".png":
            return Figure(path.name, caption, "html")
        return Figure(path.name, caption, "png", base64.b64encode(path.read_bytes()).decode("ascii") if inline else "")

    return [figure(p) for p in files]


def analysis_view(adir: Path, inline: bool = True) -> AnalysisView:
    """Read one analysis folder into what the report shows."""
    notes: list[str] = []
    try:
        summary = json.loads((adir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        summary, notes = {}, [f"summary.json could not be read ({type(exc).__name__})"]
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
    prov = status.get("provenance") if isinstance(status.get("provenance"), Mapping) else {}
    items: list[tuple[str, str]] = []
    if not prov:
        return items

    def add(label: str, value: Any) -> None:
        if not missing(value) and value != "":
            items.append((label, scrub(str(mask_config(value) if isinstance(value, str) else value))))

    add("command", prov.get("command"))
    tracker = text_of(prov.get("tracker"))
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
    failed = status.get("failed") or {}
    error = status.get("error") if isinstance(status.get("error"), Mapping) else None
    return {
        "title": scrub(title),
        "provenance": provenance_items(status),
        "publish": scrub(str((status.get("publish") or {}).get("line") or "")) if isinstance(status.get("publish"), Mapping) else "",
        "failed": {str(k): scrub(str(v)) for k, v in failed.items()},
        "error": {"kind": text_of(error.get("kind")), "message": scrub(text_of(error.get("message")))} if error else None,
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
    context = build_context(run_dir, title, status or {})
    atomic_write_text(run_dir / "report.md", render("report.md.j2", **context))
    return atomic_write_text(run_dir / "report.html", render("report.html.j2", **context))
