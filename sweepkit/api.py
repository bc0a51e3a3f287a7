"""The notebook API: the command line's stages as functions on pandas objects, with the command line's defaults.

Every stage composes its part's config file exactly as ``python run.py`` does (``conf/<group>/<name>.yaml`` with
its schema), then applies the keywords given, so a setting not given has the value the command line gives it and
a bad one is the same one-line ``UserError``.
"""
from __future__ import annotations

import html
import json
import logging
import math
import shutil
import tempfile
import warnings as pywarnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.cli import compose_config, config_error_line
from toolkit.errors import UserError
from toolkit.outputs import AnalysisOutput
from toolkit.runset import RunSet, Selection, empty_runset
from toolkit.settings import CONF_DIR, CacheSettings, as_settings, locate, settings_of

# the table a result shows first (else: its first table, and the summary's numbers with their CIs)
MAIN_TABLES = {"minima": "minima", "regressions": "coefficients", "spectral": "benchmark", "correlations": "aligned"}
MAX_ROWS = 30


class SweepWarning(UserWarning):
    """A warning of a stage (reader, recipe or analysis): the same text the run's status.json and summary.json hold."""


def _emit(where: str, messages: Iterable[str], stacklevel: int = 3) -> None:
    for message in messages:
        text = message if message.startswith(f"{where}:") else f"{where}: {message}"
        pywarnings.warn(text, SweepWarning, stacklevel=stacklevel)


# --------------------------------------------------------------------------------------------- composing


def compose(overrides: Sequence[str] = (), with_hydra: bool = False) -> Any:
    """The config ``python run.py <overrides>`` composes (the packaged conf/ plus any ``hydra.searchpath`` folder)."""
    return compose_config(overrides, with_hydra=with_hydra)


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def recipe_names() -> list[str]:
    """The recipes ``recipe=<name>`` accepts (conf/recipe/*.yaml)."""
    return _names("recipe")


def analysis_names() -> list[str]:
    """The analyses ``analysis=[<name>]`` accepts (conf/analysis/*.yaml)."""
    return _names("analysis")


def _configured(node: Any, where: str, given: Mapping[str, Any]) -> tuple[Any, Any]:
    """The part a composed node names and its settings: the node's (the command line's defaults), then ``given``."""
    if node is None or not node.get("_target_"):
        raise UserError(f"{where}: not a part config with a _target_")
    cls = locate(str(node["_target_"]), where)
    impl = cls() if isinstance(cls, type) else cls
    settings = settings_of(node, impl.settings_type, who=where)
    if given:
        settings = as_settings(impl.settings_type, settings, who=where, **dict(given))
    return impl, settings


# --------------------------------------------------------------------------------------------- stages


def read(tracker: str, *, select: Mapping[str, Any] | Selection | None = None, keys: Sequence[str] | None = None,
         cache: Mapping[str, Any] | CacheSettings | bool | None = None, progress: bool = True,
         **settings: Any) -> RunSet:
    """The runs of ``tracker=<name>`` with ``settings`` (``tracker.*``) and ``select``, as a RunSet (pandas frames)."""
    from toolkit.protocol import read_runset
    from toolkit.trackers import make_tracker

    reader = make_tracker(tracker, settings)
    base = settings_of(compose(["recipe=none", "analysis=[]"]).cache, CacheSettings, who="cache")
    if isinstance(cache, (bool, Mapping)):
        overrides = {"enabled": cache} if isinstance(cache, bool) else dict(cache)
        cache_settings = as_settings(CacheSettings, base, who="cache", **overrides)
    else:
        cache_settings = base if cache is None else as_settings(CacheSettings, cache, who="cache")
    selection = as_settings(Selection, select, who="select")
    reader.configure(cache=cache_settings, progress=progress)
    runset = read_runset(reader, selection, list(keys) if keys is not None else None)
    _emit(f"tracker {tracker}", runset.warnings)
    return runset


def build(recipe: str, runs: RunSet | None = None, **settings: Any) -> pd.DataFrame:
    """The Table ``recipe=<name>`` makes from ``runs`` (``sk.read(...)``) with ``settings`` (``recipe.*``)."""
    impl, s = _configured(compose([f"recipe={recipe}", "analysis=[]"]).recipe, "recipe", settings)
    if runs is None:
        if impl.needs_tracker(s):
            raise UserError(f"recipe {recipe}: reads tracker runs; pass the runs of sk.read(...)")
        runs = empty_runset()
    elif not isinstance(runs, RunSet):
        raise UserError(f"recipe {recipe}: runs should be a RunSet (from sk.read), got {type(runs).__name__}")
    built = impl.build(runs, s)
    built.table.attrs["warnings"] = list(built.warnings)
    _emit(f"recipe {recipe}", built.warnings, stacklevel=4)
    return built.table


class _KeepingOutput(AnalysisOutput):
    """An analysis' output folder that also keeps the tables it writes, as DataFrames."""

    def __init__(self, run_dir: Path, name: str, progress: bool = True):
        super().__init__(run_dir, name, progress=progress)
        self.kept: dict[str, pd.DataFrame] = {}

    def table(self, name: str, df: pd.DataFrame) -> Path:
        """Save ``<name>.csv`` and keep the frame."""
        self.kept[name] = df
        return super().table(name, df)


def analyse(name: str, table: pd.DataFrame, *, out: str | Path | None = None, progress: bool = True,
            **settings: Any) -> "Result":
    """Run ``analysis=[<name>]`` on ``table`` with ``settings`` (``analysis.<name>.*``) into ``out`` (default: a new
    temporary folder) as the command line does; the result holds its summary, tables, warnings and folder."""
    from toolkit.columns import require_columns

    impl, s = _configured(compose([f"analysis=[{name}]"]).analysis.get(name), f"analysis.{name}", settings)
    table = getattr(table, "table", table)  # a Built is accepted too
    if not isinstance(table, pd.DataFrame):
        raise UserError(f"{name}: table should be a pandas DataFrame (from sk.recipes.<name>), got {type(table).__name__}")
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"sweepkit-{name}-"))
    folder.mkdir(parents=True, exist_ok=True)
    output = _KeepingOutput(folder, name, progress=progress)
    try:
        require_columns(table, impl.required_columns(s), name)
        summary = dict(impl.run(table, s, output) or {})
        summary.setdefault("settings", s.to_dict() if hasattr(s, "to_dict") else s)
        final = output.commit(summary)
    finally:
        output.discard()  # after a commit there is nothing left to remove
    return Result.load(final, tables=output.kept)  # its warnings were logged as they came (out.warn)


def _analysis(name: str):
    def run_analysis(table: pd.DataFrame, *, out: str | Path | None = None, progress: bool = True,
                     **settings: Any) -> Result:
        return analyse(name, table, out=out, progress=progress, **settings)

    run_analysis.__name__ = run_analysis.__qualname__ = name
    run_analysis.__doc__ = (f"Run the {name} analysis on ``table`` with the command line's defaults "
                            f"(conf/analysis/{name}.yaml; keywords are ``analysis.{name}.*`` settings) into ``out`` "
                            f"(default: a temporary folder); see ``sweepkit.analyse``.")
    return run_analysis


minima = _analysis("minima")
regressions = _analysis("regressions")
scaling_laws = _analysis("scaling_laws")
correlations = _analysis("correlations")
spectral = _analysis("spectral")


# --------------------------------------------------------------------------------------------- results


@dataclass(repr=False)
class Result:
    """One analysis' results: ``summary`` (summary.json), ``tables`` (name -> DataFrame), ``warnings``, ``folder``."""

    name: str
    folder: Path
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    @classmethod
    def load(cls, folder: str | Path, tables: Mapping[str, pd.DataFrame] | None = None) -> "Result":
        """The result written in an analysis folder (``<run_dir>/<name>/``); ``tables`` replace its CSVs."""
        folder = Path(folder)
        path = folder / "summary.json"
        if not path.is_file():
            raise UserError(f"{folder}: no summary.json; expected an analysis folder of a run")
        summary = json.loads(path.read_text())
        found = {p.stem: None for p in sorted(folder.glob("*.csv"))}
        kept = dict(tables or {})
        frames = {k: kept[k] if k in kept else pd.read_csv(folder / f"{k}.csv") for k in [*kept, *found] if k}
        figures = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".html"))
        return cls(folder.name, folder, summary, frames, list(summary.get("warnings") or []), figures)

    def _main(self) -> str | None:
        """The main table's name: its MAIN_TABLES entry when present, else the first table's (None: no tables)."""
        name = MAIN_TABLES.get(self.name)
        return name if name in self.tables else next(iter(self.tables), None)

    @property
    def table(self) -> pd.DataFrame | None:
        """The main table (minima: ``minima``, regressions: ``coefficients``, ...; else the first one)."""
        return self.tables.get(self._main())

    def key_numbers(self) -> pd.DataFrame:
        """The summary's numbers, one row each, a value and its CI side by side where the summary has one."""
        flat = _flat(self.summary)
        cis = dict(flat)
        rows = [{"key": key, "value": _fmt(value, cis.get(f"{key}_ci"))} for key, value in flat if not key.endswith("_ci")]
        return pd.DataFrame(rows, columns=["key", "value"])

    def key_table(self) -> pd.DataFrame:
        """The main table as shown: each value with its CI in one column (``lr [CI]``), horizons as powers of two."""
        table = self.table
        return ci_view(table) if table is not None else self.key_numbers()

    def _header(self) -> str:
        main = self._main()
        rows = f"{len(self.tables[main])} rows in {main}" if main else "no tables"
        others = [k for k in self.tables if k != main]
        more = f" (+ {', '.join(others)})" if others else ""
        return f"{self.name}: {rows}{more}; {len(self.warnings)} warning(s); folder {self.folder}"

    def __repr__(self) -> str:
        table = self.key_table()
        text = table.iloc[:10, :8].to_string(index=False, max_colwidth=40)
        if table.shape[1] > 8:
            text += f"\n... {table.shape[1] - 8} more columns ({len(table)} rows; .table has them all)"
        return f"<sweepkit result {self._header()}>\n{text}"

    def _repr_html_(self) -> str:
        parts = [f"<p><b>{html.escape(self.name)}</b>: {html.escape(self._header().split(': ', 1)[1])}</p>"]
        table = self.key_table()
        parts.append(table.head(MAX_ROWS).to_html(index=False, na_rep="", escape=True))
        if len(table) > MAX_ROWS:
            parts.append(f"<p>... {len(table) - MAX_ROWS} more rows (.table)</p>")
        if self.table is not None:
            numbers = self.key_numbers()
            if len(numbers):
                parts.append("<details><summary>summary</summary>"
                             + numbers.head(60).to_html(index=False, na_rep="", escape=True) + "</details>")
        if self.warnings:
            parts.append("<details><summary>warnings</summary><ul>"
                         + "".join(f"<li>{html.escape(str(w))}</li>" for w in self.warnings[:50]) + "</ul></details>")
        return "\n".join(parts)


def _flat(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalars (and 2-number CIs) of a nested summary as (dotted key, value); settings, warnings, figures left out."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not prefix and k in ("settings", "warnings", "figures"):
                continue
            out += _flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else [(f"{prefix}{k}", v)] \
                if _shown(v) else []
    return out


def _shown(value: Any) -> bool:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return True
    return isinstance(value, (list, tuple)) and len(value) <= 8 and all(isinstance(v, (int, float, str)) for v in value)


def _num(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _fmt(value: Any, ci: Any = None) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return f"{_num(value)} [{_num(ci[0])}, {_num(ci[1])}]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_num(v) for v in value) + "]"
    return _num(value)


def _ci_pairs(columns: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{value column: (low, high)}``: ``x`` with ``x_ci_low``/``x_ci_high``, ``value`` with ``ci_low``/``ci_high``."""
    pairs = {}
    for col in columns:
        for low, high in (("_ci_low", "_ci_high"), ("_ci_lo", "_ci_hi"), ("_lo", "_hi")):
            if col.endswith(low):
                base = col[: -len(low)]
                if base in columns and f"{base}{high}" in columns:
                    pairs[base] = (col, f"{base}{high}")
    if "ci_low" in columns and "ci_high" in columns and "value" in columns:
        pairs["value"] = ("ci_low", "ci_high")
    return pairs


def ci_view(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` for display: each value and its CI in one text column ``<x> [CI]``; horizons as powers of two."""
    pairs = _ci_pairs(list(map(str, table.columns)))
    hidden = {c for pair in pairs.values() for c in pair}
    view = {}
    for col in table.columns:
        if col in hidden:
            continue
        if col in pairs:
            lo, hi = pairs[col]
            view[f"{col} [CI]"] = [_fmt(v, (a, b)) for v, a, b in zip(table[col], table[lo], table[hi])]
        elif col == "horizon":
            view[col] = [_horizon(v) for v in table[col]]
        else:
            view[col] = table[col].to_numpy()
    return pd.DataFrame(view)


def _horizon(value: Any) -> Any:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return value
    k = math.log2(v) if v > 0 else float("nan")
    return f"2^{int(round(k))}" if math.isfinite(k) and abs(k - round(k)) < 1e-9 else value


# --------------------------------------------------------------------------------------------- report, run


@dataclass(repr=False)
class RunResult:
    """A whole configured run (``sk.run``): its folder, status.json, exit status, error line and analyses' results."""

    folder: Path
    status: dict[str, Any]
    exit_code: int
    error: str | None
    results: dict[str, Result] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Result:
        return self.results[name]

    @property
    def report(self) -> Path:
        """The run's report.html."""
        return self.folder / "report.html"

    def __repr__(self) -> str:
        ran = ", ".join(self.results) or "no analysis"
        return f"<sweepkit run {self.folder}: exit {self.exit_code}; results: {ran}" + \
            (f"; error: {self.error}>" if self.error else ">")

    def _repr_html_(self) -> str:
        rows = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v.get('status', ''))}"
                       f"{(' - ' + html.escape(v['message'])) if v.get('message') else ''}</li>"
                       for k, v in self.status.get("analyses", {}).items())
        err = f"<p>error: {html.escape(self.error)}</p>" if self.error else ""
        return f"<p>run <code>{html.escape(str(self.folder))}</code> (exit {self.exit_code})</p>{err}<ul>{rows}</ul>"


def report(results: Any, *, title: str = "Sweep analysis", out: str | Path | None = None,
           status: Mapping[str, Any] | None = None) -> Path:
    """Write report.md and report.html (``toolkit.report.write_report``) for a run folder, a ``RunResult``, or one
    or more ``Result``s (copied into ``out`` when they are not in one folder); return the HTML path."""
    from toolkit.report import write_report

    if isinstance(results, RunResult):
        return write_report(results.folder, title=title, status=dict(status or results.status))
    if isinstance(results, (str, Path)):
        folder = Path(results)
        if (folder / "summary.json").is_file():  # an analysis folder: its run's folder
            folder = folder.parent
        if not folder.is_dir():
            raise UserError(f"report: {folder} is not a folder; expected a run folder or sk results")
        return write_report(folder, title=title, status=dict(status or _status_of(folder)))
    items = [results] if isinstance(results, Result) else list(results)
    if not items or not all(isinstance(r, Result) for r in items):
        raise UserError("report: expected a run folder, a sk.run result, or sk analysis results")
    parents = {r.folder.parent.resolve() for r in items}
    if out is None and len(parents) == 1:
        folder = parents.pop()
    else:
        folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="sweepkit-report-"))
        folder.mkdir(parents=True, exist_ok=True)
        for r in items:
            if r.folder.resolve() != (folder / r.name).resolve():
                shutil.copytree(r.folder, folder / r.name, dirs_exist_ok=True)
        for js in {p / "plotly.min.js" for p in (r.folder.parent for r in items)}:  # the figures' shared script
            if js.is_file() and not (folder / js.name).exists():
                shutil.copy2(js, folder / js.name)
    given = {"analyses": {r.name: {"status": "ok"} for r in items}, "warnings": [], "failed": {}}
    return write_report(folder, title=title, status=dict(status or given))


def _status_of(folder: Path) -> dict[str, Any]:
    path = folder / "status.json"
    if path.is_file():
        return json.loads(path.read_text())
    names = [p.name for p in folder.iterdir() if (p / "summary.json").is_file()]
    return {"analyses": {n: {"status": "ok"} for n in names}, "warnings": [], "failed": {}}


def run(overrides: Sequence[str] = (), *, out: str | Path | None = None) -> RunResult:
    """Run the whole configured pipeline as ``python run.py <overrides>`` does (one run; ``-m`` sweeps are for the
    command line) into ``out`` (default: the config's ``hydra.run.dir``, under the current folder)."""
    from omegaconf import OmegaConf, open_dict

    from toolkit import pipeline
    from toolkit.secrets import config_secrets, remember, scrub

    cfg = compose(overrides, with_hydra=True)
    try:
        folder = Path(out) if out is not None else Path(str(cfg.hydra.run.dir))
    except Exception as exc:
        raise UserError(f"config: hydra.run.dir: {config_error_line(exc)}") from None
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        remember(config_secrets(OmegaConf.to_container(cfg, resolve=True)))
    except Exception:  # an interpolation that does not resolve: the pipeline reports it
        remember(config_secrets(OmegaConf.to_container(cfg, resolve=False)))
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / "run.log", mode="w")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        status = pipeline.run(cfg, folder)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
    error = pipeline.error_line(status, folder)
    results = {name: Result.load(folder / name) for name, v in status.get("analyses", {}).items()
               if v.get("status") == "ok" and (folder / name / "summary.json").is_file()}
    _emit("run", status.get("warnings") or [])
    if error:
        _emit("run", [scrub(error)])
    return RunResult(folder, status, pipeline.exit_code(status), scrub(error) if error else None, results)
