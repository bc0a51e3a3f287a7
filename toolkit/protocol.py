"""The contracts of the three kinds of part (Tracker, Recipe, Analysis) and the read that every tracker shares.

A part is named in its config file by ``_target_`` (a class), declares its settings dataclass as ``settings_type``
(the schema of that file, see ``toolkit.settings``) and implements its protocol below. The bases give the optional
capabilities their defaults, so a part writes only what it needs. ``tests/test_conformance.py`` imports every target
under ``conf/`` and checks it against its protocol.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from toolkit.errors import UserError
from toolkit.outputs import copy_artifact
from toolkit.runset import RUN_COLUMNS, RunSet, Selection

if TYPE_CHECKING:
    from toolkit.report import ResultTable


@runtime_checkable
class RunWriter(Protocol):
    """One run being written: config once, metrics at steps, artifacts, then finish."""

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_artifact(self, path: str) -> None: ...

    def finish(self, status: str = "finished") -> None: ...


class RunWriterBase:
    """A RunWriter's checks (run open, whole step, numbers, artifact present, finish once) around its own writes.

    A writer defines ``log_config``, ``_write_metrics`` and ``_close`` (handed ``statuses[status]`` when it has
    ``statuses``); a ``_close`` that raises leaves the run open, so ``finish`` may be called again.
    """

    name: str
    dir: Path
    statuses: Mapping[str, Any] | None = None
    _step_reserved = ""  # where a metric named "step" would clash with the step (that text ends the error)
    _finished = False

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record (merge) the run's config."""
        raise NotImplementedError

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Write the metrics at a whole step once every value is checked (nothing is written when one is bad)."""
        if self._finished:
            raise UserError(f"run '{self.name}' ({self._where()}): log_metrics after finish")
        step = logged_step(self.name, step)
        self._write_metrics({str(k): self._value(str(k), v, step) for k, v in metrics.items()}, step)

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Store a file (or folder) with the run; a one-line error when there is none."""
        src = Path(path)
        if not src.exists():
            raise UserError(f"log_artifact: no file at {src}")
        self._store_artifact(src)

    def finish(self, status: str = "finished") -> None:
        """End the run once (later calls do nothing)."""
        if self._finished:
            return
        if self.statuses is not None and str(status).lower() not in self.statuses:
            raise UserError(f"finish: status '{status}' is not one of {', '.join(sorted(self.statuses))}")
        self._close(status if self.statuses is None else self.statuses[str(status).lower()])
        self._finished = True

    def __enter__(self) -> "RunWriterBase":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish("failed" if exc_type else "finished")

    @property
    def artifact_dir(self) -> Path:
        """The folder artifacts are copied into: the run's folder."""
        return Path(self.dir)

    def _where(self) -> Any:
        """Where the run is, as the after-finish error names it: its folder."""
        return self.dir

    def _value(self, key: str, value: Any, step: int) -> float:
        """A metric value as a float (nan and inf too), or a one-line error naming the run, key and step."""
        if key == "step" and self._step_reserved:
            raise UserError(f"run '{self.name}': metric key 'step' is reserved {self._step_reserved}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"run '{self.name}': metric '{key}' at step {step} is not a number: {value!r}") from None

    def _write_metrics(self, values: dict[str, float], step: int) -> None:
        """Write checked values at a step."""
        raise NotImplementedError

    def _store_artifact(self, src: Path) -> None:
        """Copy ``src`` into ``artifact_dir`` (via a temporary name, then rename)."""
        copy_artifact(src, self.artifact_dir)

    def _close(self, status: Any) -> None:
        """End the run with ``status`` (mapped through ``statuses`` when the writer has them)."""
        raise NotImplementedError


def logged_step(run_name: str, step: Any) -> int:
    """The integer step a RunWriter logs at, or a one-line error naming the run."""
    try:
        return int(step)
    except (TypeError, ValueError):
        raise UserError(f"run '{run_name}': step {step!r} is not an integer") from None


@runtime_checkable
class Tracker(Protocol):
    """A tracker adapter: list runs, read their histories, start runs for writing.

    ``list_runs`` may use the selection to ask the tracker for fewer runs; ``read_runset`` applies it exactly and
    orders the columns, so an adapter need not. What the reader noticed (a crashed run, a skipped file) is handed
    over by ``take_warnings``. The tracker's constructor takes the fields of its ``settings_type`` as keywords.
    """

    name: str
    settings_type: type

    def configure(self, cache: Any, progress: bool) -> None:
        """Receive the run's cache settings (``toolkit.settings.CacheSettings``) and the progress switch."""

    def list_runs(self, selection: Selection) -> pd.DataFrame:
        """Runs table (RunSet.runs layout) of at least the runs the selection admits."""

    def read_history(self, runs: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
        """Wide history (run_id, step, one column per key) of the given runs; all keys when None."""

    def take_warnings(self) -> list[str]:
        """The warnings gathered since the last call (and forget them)."""

    def start_run(self, name: str, config: Mapping[str, Any] | None = None) -> RunWriter:
        """Start a run for writing."""


@dataclass
class Built:
    """What a recipe returns: the Table and the warnings it raised on the way."""

    table: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


@runtime_checkable
class Recipe(Protocol):
    """Turns a RunSet into the Table the analyses read."""

    settings_type: type

    def metric_keys(self, settings: Any) -> list[str] | None:
        """History keys to read (None: every key)."""

    def needs_tracker(self, settings: Any) -> bool:
        """False when the recipe reads its data itself (the tracker is then not read at all)."""

    def build(self, runset: RunSet, settings: Any) -> Built:
        """The Table of ``runset`` (bad input raises ``UserError``; problems that let the rest go on are warnings)."""


@runtime_checkable
class Analysis(Protocol):
    """Reads a Table and writes its results into ``out`` (a ``toolkit.outputs.AnalysisOutput``)."""

    name: str
    settings_type: type

    def required_columns(self, settings: Any) -> Sequence[str]:
        """The Table columns this analysis needs with these settings (checked by the pipeline before it runs)."""

    def carried_columns(self, settings: Any) -> Sequence[str]:
        """Extra Table columns the recipe should carry for these settings (e.g. grouping columns)."""

    def run(self, table: pd.DataFrame, settings: Any, out: Any) -> Mapping[str, Any]:
        """The summary (written as summary.json); tables, figures and warnings go through ``out``."""


class TrackerBase:
    """A tracker's constructor (its settings, checked) and the defaults of its optional capabilities: cache
    settings and progress kept, warnings gathered."""

    name = "tracker"
    settings_type: type
    settings: Any
    warnings: list[str]
    _cache_settings: Any = None
    _progress: bool = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Settings from the fields of ``settings_type`` (positional in declaration order, or keywords), checked."""
        from toolkit.settings import as_settings

        names = [f.name for f in dataclasses.fields(self.settings_type) if f.name != "_target_"]
        who = f"{type(self).__name__}()"
        if len(args) > len(names):
            raise TypeError(f"{who} takes at most {len(names)} positional arguments but {len(args)} were given")
        given = dict(zip(names, args))
        twice = [k for k in kwargs if k in given]
        if twice:
            raise TypeError(f"{who} got multiple values for argument '{twice[0]}'")
        given.update(kwargs)
        self.settings = as_settings(self.settings_type, given, who="tracker")
        self.warnings = []
        self.setup(self.settings)

    def setup(self, settings: Any) -> None:
        """Derive what the tracker needs from its checked settings (normalised paths, handles, caches)."""

    def configure(self, cache: Any, progress: bool) -> None:
        """Keep the cache settings (as a dict: enabled, dir, refresh) and the progress switch for the reads."""
        self._cache_settings = dataclasses.asdict(cache) if dataclasses.is_dataclass(cache) else dict(cache or {})
        self._progress = bool(progress)

    def take_warnings(self) -> list[str]:
        """The warnings gathered since the last call (and forget them)."""
        out = list(getattr(self, "warnings", None) or [])
        self.warnings = []
        return out


class RecipeBase:
    """Defaults of a recipe's optional capabilities."""

    settings_type: type

    def metric_keys(self, settings: Any) -> list[str] | None:
        """Every history key."""
        return None

    def needs_tracker(self, settings: Any) -> bool:
        """Recipes read the tracker unless they say otherwise."""
        return True


class AnalysisBase:
    """Defaults of an analysis' optional capabilities."""

    name = "analysis"
    settings_type: type
    REQUIRED_COLUMNS: tuple[str, ...] = ()

    def required_columns(self, settings: Any) -> Sequence[str]:
        """The fixed REQUIRED_COLUMNS."""
        return self.REQUIRED_COLUMNS

    def carried_columns(self, settings: Any) -> Sequence[str]:
        """No extra columns."""
        return ()

    def report_tables(self, summary: Mapping[str, Any], adir: Path) -> list[ResultTable]:
        """The report's key tables of this analysis' folder ``adir``: the generic table of summary.json's scalars."""
        from toolkit.report import render_generic

        return render_generic(summary, adir)


def protocol_members(protocol: type) -> list[str]:
    """The attributes and methods a protocol asks for."""
    names = list(getattr(protocol, "__annotations__", {}))
    names += [k for k, v in vars(protocol).items() if callable(v) and not k.startswith("_")]
    return list(dict.fromkeys(names))


def protocol_problems(part: Any, protocol: type) -> list[str]:
    """What a part (its class or an instance) lacks of ``protocol``, and whether its settings_type is a schema."""
    from toolkit.settings import Settings

    problems = [f"no {m}" for m in protocol_members(protocol) if not hasattr(part, m)]
    settings = getattr(part, "settings_type", None)
    if not (isinstance(settings, type) and dataclasses.is_dataclass(settings) and issubclass(settings, Settings)):
        problems.append("settings_type is not a dataclass derived from toolkit.settings.Settings")
    return problems


def order_run_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table with the fixed RunSet columns first (added empty where missing), the rest after."""
    runs = runs.assign(**{col: ("" if col == "tags" else None) for col in RUN_COLUMNS if col not in runs.columns})
    fixed = list(RUN_COLUMNS)
    return runs[fixed + [c for c in runs.columns if c not in fixed]].reset_index(drop=True)


def read_runset(tracker: Tracker, selection: Selection, keys: Sequence[str] | None) -> RunSet:
    """Select runs and read their histories for the given metric keys into a RunSet."""
    runs = order_run_columns(selection.apply(tracker.list_runs(selection)))
    history = tracker.read_history(runs, keys)
    warnings: list[str] = []
    if keys:
        keys = list(dict.fromkeys(keys))
        absent = [k for k in keys if k not in history.columns]
        if absent:  # keys no run has: NaN columns, added at once
            history = pd.concat([history, pd.DataFrame(np.nan, index=history.index, columns=absent)], axis=1)
        missing = history[keys].isna()
        if len(runs):
            never = missing.all(axis=0).to_numpy()
            warnings.extend(f"no run logged metric '{k}'" for k, gone in zip(keys, never) if gone)
        if len(history):
            by_run = missing.groupby(history["run_id"].to_numpy()).all()
            lacking_counts = by_run.sum(axis=0).to_numpy()
            for i in np.flatnonzero((lacking_counts > 0) & (lacking_counts < len(runs))):
                lacking = by_run.index[by_run.iloc[:, i].to_numpy()].tolist()
                warnings.append(f"{len(lacking)} run(s) never logged '{keys[i]}' (kept with NaN), e.g. {', '.join(map(str, lacking[:3]))}")
    return RunSet(runs, history, warnings + tracker.take_warnings())
