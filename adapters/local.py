"""Tracker ``local``: sweeps stored as files on disk, read into a RunSet; runs written as plain files.

``LocalTracker(path)`` reads, by what it finds at ``path`` (``None``: the example sweep bundled in
``toolkit/data/example_sweep.csv``; relative paths resolve against the current directory):

(a) **wide history file** (``.csv``/``.csv.gz``/``.parquet``/``.pq``): one row per (run, step); the run column is
    the first of ``run_columns`` present, the step column the first of ``step_columns``. Columns constant
    within every run are the run's config (``config.<col>``); the others are metrics (their last value per run
    is ``summary.<col>``). ``read_history`` serves any numeric column, constant or not. When a file has both
    an id column (``run_id``/``id``/``ID``) and a name column (``run_name``/``name``/``Name``), runs are keyed by
    the id and named by the name; otherwise ``run_id`` and ``name`` are both the run column's value.
    Repeated (run, step) rows (a run exported twice, overlapping exports in a folder): exact copies are dropped
    (counted in a warning), rows that fill different columns are merged; rows that give a column two values are a
    ``UserError`` naming both files, data rows and values, or, with ``on_conflict`` first/last/mean, merged (in file
    order) with a warning that counts them. A metric column holding numbers and some text reads the text as
    missing, with a warning naming file, data row, run and value.
(b) **folder of such files**, one per run or several runs per file, CSV and parquet mixed. In a folder, a file
    with a step column but no run column is one run named after the file's stem.
(c) **W&B web-UI export** (CSV, one row per run: ``Name`` plus meta columns ``Created``, ``State``, ``Tags``,
    ``ID``, ... and no step column): ``Name`` -> name, ``ID`` (else ``Name``) -> run_id, ``State`` -> state,
    ``Created`` -> created_at, ``Tags`` -> tags; every other column goes to ``config.<col>`` and, when numeric,
    also to ``summary.<col>`` and to the history as one row at step 0 (so a recipe can use them as metrics).
    The export has no per-step history: the tracker warns so (``warnings``).
(d) **its own run folders**, written by ``start_run`` (detected by ``<path>/<run_id>/meta.json``)::

        <path>/<run_id>/meta.json      {"format", "run_id", "name", "state", "created_at", "tags", ...} (atomic)
                        config.json    the config as logged, nested (atomic; flattened when read)
                        metrics.jsonl  append-only, one JSON object per log_metrics call: {"step": 7, "loss": 2.3}
                        summary.json   last value per metric key (atomic, written at finish)
                        artifacts/     copies of logged files

    ``metrics.jsonl`` is flushed on every call, so a killed run leaves a readable prefix: a truncated last line
    is skipped (with a warning), a run without ``summary.json`` gets its summary from the metrics, and the state
    stays what ``meta.json`` says (``running``: a dead process cannot be told apart from a live one). What is lost
    is said in a warning naming the file: a run folder without ``metrics.jsonl``, a line in the middle that is not
    a JSON object with a whole-number step (skipped, with its line number; the other lines are read), a value that
    is not a number (read as missing, with line, key and value). A step logged again (a run resumed from a
    checkpoint) keeps its newest value, with a warning.
(e) **flat table**: a file with neither a run nor a step column that is not a W&B export (e.g. a published
    scaling-law table ``loss, N, D, C, model, peak_lr, ...``). Each row is one run ``row-<i>`` (``<stem>:row-<i>``
    inside a folder), state ``finished``, every column in ``config.<col>`` and the numeric columns in the history
    at step 0. The ``scaling_table`` recipe relies on this shape.

Reading is vectorised (no Python loop over rows or runs for (a)-(c), (e)); a loaded file is kept until its size
or modification time changes. ``path`` must be a regular file or a folder (a FIFO or a device is a ``UserError``:
reading one could block forever); inside a folder such entries are skipped with a warning.
"""
from __future__ import annotations

import io
import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import pandas as pd

from adapters.folder_runs import _show, check_root, path_kind
from toolkit.errors import UserError
from toolkit.outputs import atomic_write_text, to_jsonable
from toolkit.protocol import RunWriterBase, TrackerBase
from toolkit.runset import (CONFIG_PREFIX, RUN_COLUMNS, STRING_DTYPE, SUMMARY_PREFIX, Selection, coerce_number,
                            flatten_config, take_strings)
from toolkit.settings import Choice, Settings

FORMAT = "sweepkit-local/1"
META, CONFIG, METRICS, SUMMARY, ARTIFACTS = "meta.json", "config.json", "metrics.jsonl", "summary.json", "artifacts"
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
ID_COLUMNS = ("run_id", "id", "ID")
NAME_COLUMNS = ("run_name", "name", "Name")
WANDB_META = ("Created", "Runtime", "Notes", "State", "Updated", "Tags", "Sweep", "User", "ID", "Group", "Job Type",
              "Hostname", "Commit", "GitHub", "Description")
_RUN, _STEP, _NAME = "\x00run", "\x00step", "\x00name"  # internal column names that cannot clash with a file's
_INTERNAL = (_RUN, _STEP, _NAME)


def bundled_example() -> Path:
    """The example sweep shipped with the package (``toolkit/data/example_sweep.csv``)."""
    import toolkit

    return Path(toolkit.__file__).parent / "data" / "example_sweep.csv"


def _is_table(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(TABLE_SUFFIXES)


def _odd_entries(folder: Path) -> list[str]:
    """Warnings for the entries of a folder that are neither regular files nor folders (FIFOs, sockets, devices,
    broken links): they are skipped, as opening one for reading could block forever."""
    return [f"tracker.path: skipped {entry}: {path_kind(entry)}, not a regular file" for entry in sorted(folder.iterdir())
            if not (entry.name.startswith(".") or entry.is_dir() or entry.is_file())]


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------- file reading
def _read_table(path: Path) -> pd.DataFrame:
    """A CSV or parquet file as a frame; one-line UserError when it cannot be read or is empty."""
    if path.name.lower().endswith((".parquet", ".pq")):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise UserError(f"{path}: cannot read it as parquet ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    else:
        try:
            frame = pd.read_csv(path, low_memory=False)
        except pd.errors.EmptyDataError:
            raise UserError(f"{path}: the file is empty; expected a CSV with a header row") from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"{path}: cannot read it as CSV ({str(exc).splitlines()[0]})") from None
    if frame.shape[1] == 0:
        raise UserError(f"{path}: the file has no columns; expected a header row")
    if len(frame) == 0:
        raise UserError(f"{path}: the file has a header but no rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _first_present(columns: Sequence[str], names: Sequence[str]) -> str | None:
    present = set(columns)
    return next((n for n in names if n in present), None)


def _is_wandb_export(path: Path, frame: pd.DataFrame, step_col: str | None) -> bool:
    """A W&B web-UI export: a ``Name`` column, no step column, W&B meta columns (or quoted headers)."""
    if step_col is not None or "Name" not in frame.columns:
        return False
    if any(c in frame.columns for c in WANDB_META):
        return True
    if path.name.lower().endswith(".csv"):
        with open(path, "rb") as fh:
            return fh.read(6) == b'"Name"'
    return False


def _numeric(series: pd.Series) -> pd.Series | None:
    """The series as float when all its non-null values are numbers (bools are not), else None."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return None
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.astype(float)
    values = series.map(coerce_number)
    ok = values.map(lambda v: v is None or (isinstance(v, (int, float, np.integer, np.floating))
                                            and not isinstance(v, (bool, np.bool_))))
    if not ok.all() or values.isna().all():
        return None
    return pd.to_numeric(values, errors="coerce").astype(float)


def _config_values(series: pd.Series) -> pd.Series:
    """Config values with numeric strings cast back to numbers."""
    if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
        return series.map(coerce_number).astype(object)
    return series


def _runs_frame(run_ids: np.ndarray, names: np.ndarray, config: dict[str, pd.Series | np.ndarray],
                summary: dict[str, pd.Series | np.ndarray], **meta: Any) -> pd.DataFrame:
    """The runs table; ``meta`` (state, created_at, tags) where given, else finished, no time and no tags."""
    n = len(run_ids)
    cols: dict[str, Any] = {"run_id": run_ids, "name": names, "state": np.full(n, "finished", dtype=object),
                            "created_at": _nat(n), "tags": np.full(n, "", dtype=object), **meta}
    cols.update({CONFIG_PREFIX + k: _as_array(v) for k, v in config.items()})
    cols.update({SUMMARY_PREFIX + k: _as_array(v) for k, v in summary.items()})
    return pd.DataFrame(cols)


def _nat(n: int) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.NaT] * n, tz="UTC")


def _as_array(v: Any) -> Any:
    return v.to_numpy() if isinstance(v, pd.Series) else v


@dataclass
class _Static:
    """Runs whose history is small and already in final shape (W&B exports, flat tables)."""

    runs: pd.DataFrame
    history: pd.DataFrame  # run_id, step, numeric columns
    warnings: list[str] = field(default_factory=list)


def _wandb_export(path: Path, frame: pd.DataFrame) -> _Static:
    n = len(frame)
    names = frame["Name"].astype(str).to_numpy(dtype=object)
    run_ids = frame["ID"].astype(str).to_numpy(dtype=object) if "ID" in frame.columns else names
    repeat = pd.Series(run_ids).groupby(run_ids).cumcount().to_numpy()
    warnings = []
    if (repeat > 0).any():  # W&B names need not be unique; without an ID column, repeats get '#2', '#3', ...
        run_ids = np.where(repeat > 0, [f"{r}#{k + 1}" for r, k in zip(run_ids, repeat)], run_ids).astype(object)
        warnings.append(f"{path.name}: {int((repeat > 0).sum())} run name(s) repeat and there is no ID column; "
                        f"repeats are given run ids '<name>#2', '<name>#3', ...")
    state = (frame["State"].astype(str).str.lower().to_numpy(dtype=object) if "State" in frame.columns
             else np.full(n, "finished", dtype=object))
    created = (pd.DatetimeIndex(pd.to_datetime(frame["Created"], utc=True, errors="coerce"))
               if "Created" in frame.columns else _nat(n))
    tags = (frame["Tags"].fillna("").astype(str).map(lambda t: ",".join(x.strip() for x in t.split(",") if x.strip()))
            .to_numpy(dtype=object) if "Tags" in frame.columns else np.full(n, "", dtype=object))
    mapped = {"Name", "ID", "State", "Created", "Tags"}
    config, summary, hist = {}, {}, {"run_id": run_ids, "step": np.zeros(n, dtype=np.int64)}
    for col in frame.columns:
        if col in mapped:
            continue
        config[col] = _config_values(frame[col])
        if col in WANDB_META:
            continue
        num = _numeric(frame[col])
        if num is not None:
            summary[col] = num
            hist[col] = num.to_numpy()
    runs = _runs_frame(run_ids, names, config, summary, state=state, created_at=created, tags=tags)
    return _Static(runs, pd.DataFrame(hist), warnings)


def _flat_table(frame: pd.DataFrame, prefix: str = "") -> _Static:
    n = len(frame)
    ids = np.array([f"{prefix}row-{i}" for i in range(n)], dtype=object)
    config = {col: _config_values(frame[col]) for col in frame.columns}
    hist: dict[str, Any] = {"run_id": ids, "step": np.zeros(n, dtype=np.int64)}
    for col in frame.columns:
        num = _numeric(frame[col])
        if num is not None:
            hist[col] = num.to_numpy()
    return _Static(_runs_frame(ids, ids, config, {}), pd.DataFrame(hist))


@dataclass
class _Wide:
    """Runs of wide history files: the frame sorted by (run, step), runs in code order."""

    runs: pd.DataFrame
    codes: np.ndarray  # run code of each row (index into runs)
    steps: np.ndarray
    values: pd.DataFrame  # value columns, same row order
    numeric: list[str]  # value columns served when keys is None


def _wide_piece(path: Path, frame: pd.DataFrame, run_col: str | None, step_col: str) -> pd.DataFrame:
    """Rename a wide file's run and step columns to the internal names (run = file stem when absent)."""
    id_col, name_col = _first_present(frame.columns, ID_COLUMNS), _first_present(frame.columns, NAME_COLUMNS)
    out = frame.rename(columns={step_col: _STEP})
    if id_col and name_col:
        out = out.rename(columns={id_col: _RUN, name_col: _NAME})
    elif run_col is not None:
        out = out.rename(columns={run_col: _RUN})
    else:
        out[_RUN] = path.stem
    steps = pd.to_numeric(out[_STEP], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = np.isnan(steps) | (np.isfinite(steps) & (steps % 1 != 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{path}: step column '{step_col}' has {frame[step_col].iloc[i]!r} in data row {i + 1}; "
                        f"expected whole numbers")
    out[_STEP] = steps.astype(np.int64)
    return out


def _build_wide(frame: pd.DataFrame, sources: Sequence[Path], on_conflict: str, warnings: list[str],
                starts: Sequence[int]) -> _Wide:
    """Runs table and sorted history arrays of concatenated wide pieces (vectorised).

    Repeated (run, step) rows: exact copies are dropped (counted in a warning); rows that fill different columns
    (an eval row logged apart) are merged; rows that disagree on a value are an error, or merged by ``on_conflict``
    (first, last, mean) with a warning. A metric column holding numbers and text is read as numbers, the text as
    missing, with a warning naming where. ``frame`` is the files' frames concatenated (``sources``, the first rows at
    ``starts``): messages name a row's file and data row.
    """
    raw_codes, uniques = pd.factorize(frame[_RUN], use_na_sentinel=False)
    ids = pd.Index(uniques).astype(str)
    codes2, ids2 = pd.factorize(ids)  # 1 and "1" are one run
    codes = codes2[raw_codes].astype(np.int64)
    run_ids = np.asarray(ids2, dtype=object)
    steps = frame[_STEP].to_numpy(dtype=np.int64)
    value_cols = [c for c in frame.columns if c not in _INTERNAL]
    values = frame[value_cols].reset_index(drop=True)
    order = None
    if len(codes) > 1 and not _is_sorted(codes, steps):
        order = np.lexsort((steps, codes))  # stable: repeated rows keep file order, then row order
        codes, steps = codes[order], steps[order]
        values = values.take(order).reset_index(drop=True)
    where = _Where(run_ids, sources, np.asarray(starts, dtype=np.int64), order)
    values = _numbers_among_text(values, codes, steps, where, warnings)
    if len(codes) > 1 and ((codes[1:] == codes[:-1]) & (steps[1:] == steps[:-1])).any():
        codes, steps, values = _merge_repeats(values, codes, steps, where, on_conflict, warnings)
    names = run_ids
    if _NAME in frame.columns:
        names = frame[_NAME].groupby(raw_codes).first().astype(str).to_numpy(dtype=object)
        names = pd.Series(names).groupby(codes2).first().to_numpy(dtype=object)
        names = np.where(pd.isna(names) | (names == "nan"), run_ids, names)
    n = len(run_ids)
    same_run = codes[1:] == codes[:-1]
    config_cols = [c for c in value_cols if _constant_within_runs(values[c], same_run)]
    metric_cols = [c for c in value_cols if c not in config_cols]
    numeric = [c for c in value_cols if pd.api.types.is_numeric_dtype(values[c].dtype)
               and not pd.api.types.is_bool_dtype(values[c].dtype)]
    firsts = values[config_cols].groupby(codes, sort=True).first() if config_cols else pd.DataFrame(index=range(n))
    metric_num = [c for c in metric_cols if c in numeric]
    lasts = values[metric_num].groupby(codes, sort=True).last() if metric_num else pd.DataFrame(index=range(n))
    config = {c: _config_values(firsts[c]) for c in config_cols}
    summary = {c: lasts[c].astype(float) for c in metric_num}
    return _Wide(_runs_frame(run_ids, names, config, summary), codes, steps, values, numeric)


@dataclass
class _Where:
    """Names a row of the sorted wide rows in messages (run, step, file, data row), worked out only when needed."""

    run_ids: np.ndarray
    sources: Sequence[Path]
    starts: np.ndarray  # first row of each source in the concatenated frame
    order: np.ndarray | None  # sorted position -> concatenated position (None: not reordered)

    def source(self, i: Any) -> Any:
        """The source index of sorted row(s) ``i``."""
        pos = np.asarray(i) if self.order is None else self.order[i]
        return np.searchsorted(self.starts, pos, side="right") - 1

    def file(self, src: int) -> str:
        return self.sources[src].name if 0 <= src < len(self.sources) else "the file"

    def files(self, rows: np.ndarray) -> str:
        return ", ".join(sorted({self.file(int(s)) for s in np.atleast_1d(self.source(rows))}))

    def at(self, i: int) -> str:
        """'<file>, data row <n>' of sorted row ``i``."""
        pos = int(i if self.order is None else self.order[i])
        src = int(np.searchsorted(self.starts, pos, side="right") - 1)
        return f"{self.file(src)}, data row {pos - int(self.starts[src]) + 1}"

    def cell(self, code: int, step: int, i: int) -> str:
        return f"run '{self.run_ids[code]}' step {step} ({self.at(i)})"


def _numbers_among_text(values: pd.DataFrame, codes: np.ndarray, steps: np.ndarray, where: _Where,
                        warnings: list[str]) -> pd.DataFrame:
    """Text columns that vary within runs and hold numbers as well (a metric with a stray string): numbers, the
    rest missing, with one warning per column. Text constant within runs (config such as 'adam') is left alone."""
    same_run = codes[1:] == codes[:-1]
    for col in values.columns:
        series = values[col]
        if (pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
                or _constant_within_runs(series, same_run)):
            continue
        coerced = series.map(coerce_number)
        present = coerced.notna().to_numpy(dtype=bool)
        is_number = present & coerced.map(lambda v: isinstance(v, (int, float, np.integer, np.floating))
                                          and not isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
        bad = present & ~is_number
        if not is_number.any() or not bad.any():
            continue
        i = int(np.flatnonzero(bad)[0])
        warnings.append(f"{where.files(np.flatnonzero(bad))}: column '{col}' holds numbers and {int(bad.sum())} "
                        f"value(s) that are not, read as missing, e.g. {_show(series.iloc[i])} at "
                        f"{where.cell(int(codes[i]), int(steps[i]), i)}; expected numbers")
        values[col] = pd.to_numeric(coerced.where(is_number, None), errors="coerce").astype(float)
    return values


def _merge_repeats(values: pd.DataFrame, codes: np.ndarray, steps: np.ndarray, where: _Where, on_conflict: str,
                   warnings: list[str]) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """One row per (run, step) of rows sorted by (run, step) (see ``_build_wide``); only repeated rows are grouped."""
    repeat = (codes[1:] == codes[:-1]) & (steps[1:] == steps[:-1])
    in_group = np.zeros(len(codes), dtype=bool)
    in_group[1:] |= repeat
    in_group[:-1] |= repeat
    idx = np.flatnonzero(in_group)
    starts = np.ones(len(idx), dtype=bool)
    starts[1:] = ~((codes[idx][1:] == codes[idx][:-1]) & (steps[idx][1:] == steps[idx][:-1]))
    gid = np.cumsum(starts) - 1
    sub = values.iloc[idx].reset_index(drop=True)
    same = sub.assign(**{_RUN: gid}).duplicated(keep="first").to_numpy()  # a copy of an earlier row of its group
    if same.any():
        first = idx[int(np.flatnonzero(same)[0])]
        warnings.append(f"{where.files(idx[same])}: {int(same.sum())} identical duplicate row(s) dropped (the same "
                        f"run, step and values as an earlier row), e.g. {where.cell(int(codes[first]), int(steps[first]), first)}")
        idx, gid = idx[~same], gid[~same]
        sub = sub[~same].reset_index(drop=True)
    distinct = _distinct_values(sub, gid)
    clash = distinct.to_numpy() > 1
    if clash.any():
        g, c = (int(x[0]) for x in np.nonzero(clash))
        col = distinct.columns[c]
        rows = np.flatnonzero(gid == distinct.index[g])
        column = sub[col].iloc[rows]
        a = int(rows[np.flatnonzero(column.notna().to_numpy())[0]])
        b = int(rows[np.flatnonzero((column.notna() & (column != sub[col].iloc[a])).to_numpy())[0]])
        ia, ib = idx[a], idx[b]
        example = (f"run '{where.run_ids[codes[ia]]}' step {int(steps[ia])} '{col}': {_show(sub[col].iloc[a])} "
                   f"({where.at(ia)}) vs {_show(sub[col].iloc[b])} ({where.at(ib)})")
        n_rows, n_cells = int(clash.any(axis=1).sum()), int(clash.sum())
        if on_conflict == "error":
            raise UserError(f"tracker.path: {n_rows} (run, step) row(s) appear more than once with different values, "
                            f"e.g. {example}; expected one value per run, step and column (tracker.on_conflict="
                            f"first|last|mean merges them)")
        kept = {"first": "the first (in file order)", "last": "the last (in file order)",
                "mean": "their mean (numbers; other values: the last)"}[on_conflict]
        warnings.append(f"tracker.on_conflict={on_conflict}: {n_cells} value(s) in {n_rows} repeated (run, step) "
                        f"row(s) disagree; kept {kept}, e.g. {example}")
    grouped = sub.groupby(gid, sort=True)
    # error: no value disagrees, so the first and the last are the same; mean: of numbers, other values the last
    merged = grouped.first() if on_conflict == "first" else grouped.last()
    if on_conflict == "mean":
        numeric = [c for c in sub.columns if pd.api.types.is_numeric_dtype(sub[c].dtype)
                   and not pd.api.types.is_bool_dtype(sub[c].dtype)]
        if numeric:
            merged[numeric] = grouped[numeric].mean()
    heads = idx[np.r_[True, gid[1:] != gid[:-1]]] if len(idx) else idx
    keep = ~in_group
    codes = np.concatenate([codes[keep], codes[heads]])
    steps = np.concatenate([steps[keep], steps[heads]])
    values = pd.concat([values[keep], merged.reset_index(drop=True)], ignore_index=True)
    order = np.lexsort((steps, codes))
    return codes[order], steps[order], values.take(order).reset_index(drop=True)


def _distinct_values(frame: pd.DataFrame, groups: np.ndarray) -> pd.DataFrame:
    """Distinct non-null values per group (rows) and column, counted only where a column is filled more than once
    in a group (rows that fill different columns, the usual case, cost one count)."""
    filled = frame.notna().groupby(groups, sort=True).sum()
    twice = filled.to_numpy() > 1
    out = pd.DataFrame(np.minimum(filled.to_numpy(), 1), index=filled.index, columns=frame.columns)
    if twice.any():
        rows, cols = np.flatnonzero(twice.any(axis=1)), np.flatnonzero(twice.any(axis=0))
        pick = np.isin(groups, filled.index[rows])
        counted = frame.iloc[pick, cols].groupby(groups[pick], sort=True).nunique(dropna=True)
        out.iloc[rows, cols] = counted.to_numpy()
    return out


def _constant_within_runs(col: pd.Series, same_run: np.ndarray) -> bool:
    """Whether a column (rows sorted by run) holds one value, or only nulls, within every run."""
    if not same_run.any():
        return True
    if pd.api.types.is_float_dtype(col.dtype):
        v = col.to_numpy(dtype=float, na_value=np.nan)
        eq = (v[1:] == v[:-1]) | (np.isnan(v[1:]) & np.isnan(v[:-1]))
    else:
        v = pd.factorize(col, use_na_sentinel=True)[0]  # nulls share the sentinel -1
        eq = v[1:] == v[:-1]
    return bool(eq[same_run].all())


def _is_sorted(codes: np.ndarray, steps: np.ndarray) -> bool:
    dc = np.diff(codes)
    return bool(((dc > 0) | ((dc == 0) & (np.diff(steps) >= 0))).all())


# --------------------------------------------------------------------------------------------- own run folders
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read it as JSON ({str(exc).splitlines()[0]})") from None


def _metrics_bytes(path: Path) -> tuple[bytes, bool]:
    """The complete lines of a metrics.jsonl; True when a truncated last line was cut off. A missing file, or one
    that is not a regular file (a FIFO would block the read forever), reads as empty (the listing warns)."""
    try:
        data = path.read_bytes() if path.is_file() else b""
    except FileNotFoundError:
        data = b""
    cut = data.rfind(b"\n") + 1
    return data[:cut], cut < len(data) and bool(data[cut:].strip())


WIDE_LINE_KEYS = 256  # lines with more keys than this parse faster with json than with pyarrow's column inference
SHOWN = 3  # line numbers named in a warning


def _keys_in_first_line(data: bytes) -> int:
    end = data.find(b"\n")
    return data[: end if end >= 0 else len(data)].count(b'":')


def _is_step(value: Any) -> bool:
    """A whole number that is not a bool (inf and nan are not whole)."""
    return not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))


def _as_number(value: Any) -> tuple[float, bool]:
    """A metric value as a float and whether it was one (None is missing; numeric strings count, as in CSVs)."""
    if value is None:
        return math.nan, True
    if isinstance(value, (int, float)):  # bools too, as 1.0 / 0.0
        return float(value), True
    if isinstance(value, str):
        number = coerce_number(value)
        if number is None:
            return math.nan, True
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return float(number), True
    return math.nan, False


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:SHOWN]))
    return f"line {shown}" if len(numbers) == 1 else f"lines {shown}" + (", ..." if len(numbers) > SHOWN else "")


def _parse_lines(data: bytes, keys: Sequence[str] | None, path: Path | str, warn: list[str] | None) -> pd.DataFrame:
    """JSON lines parsed one by one, one 2-D array per key set; only ``keys`` kept when given.

    Blank lines are skipped. A line that is not a JSON object with a whole-number ``step`` is skipped and, like a
    value that is not a number (read as missing), named in a warning (``warn``) with its line number.
    """
    by_schema: dict[tuple[str, ...], tuple[list[int], list[list[Any]]]] = {}
    bad: list[int] = []
    first_bad = b""
    objects = 0
    for i, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            objects += 1
        if not isinstance(obj, dict) or not _is_step(obj.get("step")):
            if not bad:
                first_bad = line
            bad.append(i + 1)
            continue
        lines, values = by_schema.setdefault(tuple(obj), ([], []))
        lines.append(i)
        values.append(list(obj.values()))
    if objects and not by_schema:
        raise UserError(f"{path}: lines have no 'step' field; expected {{\"step\": <int>, <metric>: <number>, ...}}")
    if bad and warn is not None:
        text = first_bad.decode("utf-8", "replace").strip()
        text = text if len(text) <= 60 else text[:57] + "..."
        warn.append(f"{path}: {_lines(bad)} {'is' if len(bad) == 1 else 'are'} not a JSON object with a whole-number "
                    f"'step' (e.g. {text!r}); skipped, the other lines are read")
    if not by_schema:
        return pd.DataFrame({"step": np.zeros(0, dtype=np.int64)})
    wanted = None if keys is None else {"step", *keys}
    frames = []
    not_numbers: list[tuple[int, str, Any]] = []
    for schema, (lines, values) in by_schema.items():
        columns = [c for c in schema if wanted is None or c in wanted]
        try:
            frame = pd.DataFrame(np.array(values, dtype=float), columns=list(schema), index=lines)[columns]
        except (TypeError, ValueError):  # strings, nulls or objects among the values: value by value
            picks = [j for j, c in enumerate(schema) if c in columns]
            table = np.empty((len(values), len(picks)), dtype=float)
            for r, row in enumerate(values):
                for out, j in enumerate(picks):  # steps are whole numbers (_is_step): read as they are
                    table[r, out], ok = _as_number(row[j])
                    if not ok:
                        not_numbers.append((lines[r] + 1, schema[j], row[j]))
            frame = pd.DataFrame(table, columns=[schema[j] for j in picks], index=lines)
        frames.append(frame)
    if not_numbers and warn is not None:
        line, key, value = min(not_numbers, key=lambda t: t[0])
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:37] + "..."
        warn.append(f"{path}: {len(not_numbers)} value(s) are not numbers, read as missing, e.g. line {line} "
                    f"'{key}' = {shown!r}; expected numbers")
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, sort=False).sort_index(kind="stable")
    return frame.reset_index(drop=True)


def _clean_frame(frame: pd.DataFrame, keys: Sequence[str] | None) -> bool:
    """Whether a frame pyarrow parsed needs no second look: whole-number steps on every line, numbers (or bools)
    in every column read. Anything else is parsed again line by line, to name the lines."""
    step = frame.get("step")
    if step is None or step.isna().any():
        return False
    if not pd.api.types.is_integer_dtype(step.dtype):
        if not pd.api.types.is_float_dtype(step.dtype) or (step % 1 != 0).any():
            return False
    cols = [c for c in frame.columns if c != "step" and (keys is None or c in keys)]
    return all(pd.api.types.is_numeric_dtype(frame[c].dtype) or pd.api.types.is_bool_dtype(frame[c].dtype)
               for c in cols)


def _parse_metrics(data: bytes, path: Path | str, keys: Sequence[str] | None = None,
                   warn: list[str] | None = None) -> pd.DataFrame:
    """JSON lines as a frame (pyarrow for narrow lines, json for wide or odd ones); lines that are not JSON objects
    with a step, and values that are not numbers, are named in ``warn``."""
    if not data.strip():
        return pd.DataFrame({"step": np.zeros(0, dtype=np.int64)})
    frame = None
    if _keys_in_first_line(data) <= WIDE_LINE_KEYS:
        try:
            import pyarrow.json as pj

            frame = pj.read_json(io.BytesIO(data)).to_pandas()
        except Exception:  # NaN/Infinity tokens, a torn line in the middle, mixed types: parse line by line
            frame = None
    if frame is not None and "step" not in frame.columns:
        raise UserError(f"{path}: lines have no 'step' field; expected {{\"step\": <int>, <metric>: <number>, ...}}")
    if frame is None or not _clean_frame(frame, keys):
        frame = _parse_lines(data, keys, path, warn)
    frame = frame.copy()
    frame["step"] = frame["step"].astype(np.int64)
    return frame


_RUN_KEY = "__sweepkit_run__"


def _read_many_metrics(paths: list[Path], warn: list[str], run_ids: list[str],
                       keys: Sequence[str] | None) -> pd.DataFrame:
    """Metrics of many runs: narrow lines in one pyarrow parse (each line tagged with its run), else file by file."""
    datas = []
    for i, path in enumerate(paths):
        data, truncated = _metrics_bytes(path)
        if truncated:
            warn.append(f"run '{run_ids[i]}': the last line of {path} was cut short (a killed run?); skipped, "
                        f"the lines before it are read")
        datas.append(data)
    present = [d for d in datas if d.strip()]
    if present and all(d.startswith(b"{") and b"\n{}" not in d and _keys_in_first_line(d) <= WIDE_LINE_KEYS for d in present):
        tagged = [b'{"%s":%d,' % (_RUN_KEY.encode(), i) + d[1:].replace(b"\n{", b'\n{"%s":%d,' % (_RUN_KEY.encode(), i))
                  for i, d in enumerate(datas) if d.strip()]
        try:
            import pyarrow.json as pj

            frame = pj.read_json(io.BytesIO(b"".join(tagged))).to_pandas()
            if _RUN_KEY in frame.columns and not frame[_RUN_KEY].isna().any() and _clean_frame(frame.drop(columns=_RUN_KEY), keys):
                frame["step"] = frame["step"].astype(np.int64)
                codes = frame.pop(_RUN_KEY).to_numpy(dtype=np.int64)
                frame.insert(0, "run_id", take_strings(np.asarray(run_ids, dtype=object), codes))
                return frame
        except Exception:  # NaN/Infinity tokens or odd lines somewhere: parse run by run
            pass
    pieces = []
    for i, (path, data) in enumerate(zip(paths, datas)):
        frame = _parse_metrics(data, path, keys, warn)
        frame.insert(0, "run_id", run_ids[i])
        pieces.append(frame)
    return pd.concat(pieces, ignore_index=True, sort=False) if pieces else pd.DataFrame(columns=["run_id", "step"])


def _jsonable_config(config: dict[str, Any]) -> dict[str, Any]:
    return {key: coerce_number(json.dumps(value, sort_keys=True) if isinstance(value, (list, tuple, dict)) else value)
            for key, value in config.items()}


@dataclass
class _Folders:
    """Run folders of the local format."""

    runs: pd.DataFrame
    dirs: dict[str, Path] = field(default_factory=dict)


def _scan_run_folders(root: Path, warnings: list[str]) -> _Folders:
    metas = sorted(root.glob(f"*/{META}"))
    if (root / META).is_file():
        metas.insert(0, root / META)
    rows, dirs = [], {}
    for meta_path in metas:
        run_dir = meta_path.parent
        if not meta_path.is_file():  # a FIFO would block the read forever
            warnings.append(f"tracker.path: skipped the run folder {run_dir}: its {META} is {path_kind(meta_path)}, "
                            f"not a regular file")
            continue
        meta = _read_json(meta_path)
        if not isinstance(meta, dict):
            raise UserError(f"{meta_path}: expected a JSON object with run_id, name, state")
        run_id = str(meta.get("run_id") or run_dir.name)
        if run_id in dirs:
            raise UserError(f"{meta_path}: run id '{run_id}' is also used by {dirs[run_id]}; expected unique run ids")
        dirs[run_id] = run_dir
        metrics = run_dir / METRICS
        if not metrics.is_file():
            what = "there is none" if not (metrics.exists() or metrics.is_symlink()) else f"it is {path_kind(metrics)}"
            warnings.append(f"run '{run_id}' ({run_dir}): no readable {METRICS} ({what}); the run is kept without "
                            f"a history")
        for name in (CONFIG, SUMMARY):
            odd = run_dir / name
            if (odd.exists() or odd.is_symlink()) and not odd.is_file():
                warnings.append(f"run '{run_id}' ({run_dir}): skipped its {name}: {path_kind(odd)}, not a regular file")
        config = _read_json(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else {}
        if (run_dir / SUMMARY).is_file():
            summary = _read_json(run_dir / SUMMARY)
        else:
            frame = _parse_metrics(_metrics_bytes(run_dir / METRICS)[0], run_dir / METRICS)
            summary = {c: frame[c].dropna().iloc[-1] for c in frame.columns if c != "step" and frame[c].notna().any()}
        tags = meta.get("tags") or []
        rows.append({
            "run_id": run_id, "name": str(meta.get("name") or run_id), "state": str(meta.get("state") or "running"),
            "created_at": pd.Timestamp(meta["created_at"]) if meta.get("created_at") else pd.NaT,
            "tags": ",".join(sorted(str(t) for t in tags)) if isinstance(tags, list) else str(tags),
            **{CONFIG_PREFIX + k: v for k, v in _jsonable_config(flatten_config(dict(config or {}))).items()},
            **{SUMMARY_PREFIX + k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
               for k, v in dict(summary or {}).items()}})
    runs = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(RUN_COLUMNS))
    return _Folders(runs, dirs)


# --------------------------------------------------------------------------------------------- the tracker
class OnConflict(Choice):
    """What repeated (run, step) rows of wide files that disagree on a value give: an error, or one value."""

    error = "error"
    first = "first"
    last = "last"
    mean = "mean"


@dataclass
class LocalSettings(Settings):
    """tracker=local: what to read and which columns name the run and the step (conf/tracker/local.yaml)."""

    path: Optional[str] = None
    run_columns: List[str] = field(default_factory=lambda: ["run_name", "run_id", "name", "Name"])
    step_columns: List[str] = field(default_factory=lambda: ["step", "_step", "Step"])
    on_conflict: OnConflict = OnConflict.error


class LocalTracker(TrackerBase):
    """Files on disk: a wide history file, a folder of them, a W&B export, a flat table, or run folders."""

    name = "local"
    settings_type = LocalSettings

    def setup(self, settings: LocalSettings) -> None:
        """The path to read (the bundled example when unset) and the column names as tuples."""
        self.path = bundled_example() if not settings.path else Path(os.path.expanduser(settings.path)).absolute()
        self.run_columns = tuple(settings.run_columns)
        self.step_columns = tuple(settings.step_columns)
        self.on_conflict = settings.on_conflict.value
        self._load_warnings: list[str] = []
        self._signature: tuple | None = None
        self._wide: _Wide | None = None
        self._static: _Static | None = None
        self._folders: _Folders | None = None

    # ----------------------------------------------------------------------------------------- loading
    def _load(self) -> None:
        """(Re)read what is at ``path`` (files are kept while their size and mtime are unchanged); the warnings of
        the load are given again by every call (``self.warnings``)."""
        path = self.path
        check_root(path, "a CSV/parquet file or a folder")  # missing, a broken link, a FIFO (reading one could block)
        odd = _odd_entries(path) if path.is_dir() else []
        if path.is_dir() and (any(path.glob(f"*/{META}")) or (path / META).is_file()):
            warnings: list[str] = list(odd)
            self._folders = _scan_run_folders(path, warnings)
            self._wide, self._static, self._signature = None, None, None
            self.warnings = warnings
            return
        files = sorted(p for p in path.iterdir() if _is_table(p)) if path.is_dir() else [path]
        if not files:
            raise UserError(f"tracker.path: {path} has no run folders (<run>/{META}) and no "
                            f"{', '.join('*' + s for s in TABLE_SUFFIXES)} files")
        signature = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        if signature != self._signature:
            self._folders = None
            self._signature = None
            self._load_warnings = self._load_files(files, in_folder=path.is_dir())
            self._signature = signature
        self.warnings = odd + list(self._load_warnings)

    def _load_files(self, files: list[Path], in_folder: bool) -> list[str]:
        """Read the files into ``_wide`` and ``_static``; the warnings of reading them."""
        warnings: list[str] = []
        wide_pieces, statics, sources = [], [], []
        for file in files:
            frame = _read_table(file)
            run_col = _first_present(frame.columns, self.run_columns)
            step_col = _first_present(frame.columns, self.step_columns)
            if _is_wandb_export(file, frame, step_col):
                statics.append(_wandb_export(file, frame))
                warnings.extend(statics[-1].warnings)
                warnings.append(f"{file.name}: a W&B export has one row per run (summary values) and no per-step "
                                f"history; its numeric columns are read as metrics at step 0")
            elif step_col is not None and (run_col is not None or in_folder):
                wide_pieces.append(_wide_piece(file, frame, run_col, step_col))
                sources.append(file)
            elif run_col is not None or step_col is not None:
                found = f"run column '{run_col}'" if run_col else f"step column '{step_col}'"
                looked = (f"step columns ({', '.join(self.step_columns)})" if run_col
                          else f"run columns ({', '.join(self.run_columns)})")
                raise UserError(f"{file}: has a {found} but none of the {looked}; expected both (a wide history "
                                f"file) or neither (a flat table, one run per row)")
            else:
                statics.append(_flat_table(frame, prefix=f"{file.stem}:" if in_folder else ""))
        self._wide = None
        if wide_pieces:
            wide = pd.concat(wide_pieces, ignore_index=True, sort=False) if len(wide_pieces) > 1 else wide_pieces[0]
            starts = np.cumsum([0] + [len(p) for p in wide_pieces[:-1]])
            self._wide = _build_wide(wide, sources, self.on_conflict, warnings, starts)
        self._static = None
        if statics:
            self._static = _Static(pd.concat([s.runs for s in statics], ignore_index=True, sort=False),
                                   pd.concat([s.history for s in statics], ignore_index=True, sort=False))
        all_ids = pd.concat([f.runs["run_id"] for f in (self._wide, self._static) if f is not None], ignore_index=True)
        dup = all_ids[all_ids.duplicated()]
        if len(dup):
            raise UserError(f"tracker.path: {self.path}: run id '{dup.iloc[0]}' appears in more than one kind of file "
                            f"(W&B export, flat table, history); expected each run once")
        return warnings

    # ----------------------------------------------------------------------------------------- protocol
    def list_runs(self, selection: Selection | None = None) -> pd.DataFrame:
        """Runs table (RunSet.runs layout) of the runs the selection admits."""
        self._load()
        if self._folders is not None:
            return self._folders.runs
        parts = [f.runs for f in (self._wide, self._static) if f is not None]
        return pd.concat(parts, ignore_index=True, sort=False) if len(parts) > 1 else parts[0].copy()

    def read_history(self, runs: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
        """Wide history (run_id, step, one float column per key) of the given runs; all numeric columns when None."""
        if self._folders is None and self._wide is None and self._static is None:
            self._load()
        wanted = runs["run_id"].astype(str).tolist() if "run_id" in runs.columns else []
        keys = None if keys is None else [str(k) for k in keys]
        if self._folders is not None:
            parts = [self._folder_history(wanted, keys)]
        else:
            sources = ((self._wide, self._wide_history), (self._static, self._static_history))
            parts = [read(wanted, keys) for source, read in sources if source is not None]
        parts = [p for p in parts if len(p)] or parts[:1]
        out = pd.concat(parts, ignore_index=True, sort=False) if len(parts) > 1 else parts[0]
        return _finish_history(out, keys)

    def _wide_history(self, wanted: list[str], keys: list[str] | None) -> pd.DataFrame:
        wide = self._wide
        assert wide is not None
        run_ids = wide.runs["run_id"].to_numpy(dtype=object)
        idx = pd.Index(run_ids).get_indexer(wanted)
        keep_run = np.zeros(len(run_ids), dtype=bool)
        keep_run[idx[idx >= 0]] = True
        mask = keep_run[wide.codes]
        cols = wide.numeric if keys is None else [k for k in keys if k in wide.values.columns]
        out = {"run_id": take_strings(run_ids, wide.codes[mask]), "step": wide.steps[mask]}
        for c in cols:
            col = wide.values[c]
            numbers = col if c in wide.numeric else pd.to_numeric(col, errors="coerce")
            out[c] = numbers.to_numpy(dtype=float, na_value=np.nan)[mask]
        return pd.DataFrame(out)

    def _static_history(self, wanted: list[str], keys: list[str] | None) -> pd.DataFrame:
        hist = self._static.history  # type: ignore[union-attr]
        cols = [c for c in hist.columns if c not in ("run_id", "step")]
        cols = cols if keys is None else [k for k in keys if k in cols]
        return hist.loc[hist["run_id"].isin(wanted), ["run_id", "step", *cols]].reset_index(drop=True)

    def _folder_history(self, wanted: list[str], keys: list[str] | None) -> pd.DataFrame:
        dirs = self._folders.dirs  # type: ignore[union-attr]
        ids = [r for r in dict.fromkeys(wanted) if r in dirs]
        out = _read_many_metrics([dirs[r] / METRICS for r in ids], self.warnings, ids, keys)
        cols = [c for c in out.columns if c not in ("run_id", "step")]
        present = set(cols)
        cols = cols if keys is None else [k for k in keys if k in present]
        out = out[["run_id", "step", *cols]]
        if len(out) and out[["run_id", "step"]].duplicated().any():  # several log_metrics calls at one step
            _warn_relogged(out, cols, dirs, self.warnings)
            out = out.groupby(["run_id", "step"], sort=True, as_index=False)[cols].last()
        return out

    # ----------------------------------------------------------------------------------------- write side
    def start_run(self, name: str, config: Mapping[str, Any] | None = None,
                  tags: Sequence[str] | Mapping[str, str] | None = None) -> "LocalRunWriter":
        """Start a run in ``<path>/<run_id>/`` (path must be a folder; it is created)."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"tracker.path: {self.path} is a file; writing runs needs a folder")
        if self.path == bundled_example():
            raise UserError("tracker.path is not set; writing runs needs a folder (tracker.path=runs/)")
        return LocalRunWriter(self.path, name, config, tags)


def _warn_relogged(out: pd.DataFrame, cols: list[str], dirs: Mapping[str, Path], warn: list[str]) -> None:
    """A warning when lines of one run give a key two different values at one step (a run resumed from a
    checkpoint logs those steps again): metrics.jsonl is append-only, so the newest line wins, as in MLflow and
    W&B. Several lines at a step with different keys (an eval logged apart) are the normal case and say nothing."""
    repeated = out[out.duplicated(["run_id", "step"], keep=False)]
    if not cols or not len(repeated):
        return
    grouped = repeated.groupby(["run_id", "step"], sort=True)
    distinct = _distinct_values(repeated[cols], grouped.ngroup().to_numpy())
    distinct.index = grouped.size().index[distinct.index]  # group numbers -> (run_id, step)
    clash = distinct.to_numpy() > 1
    if not clash.any():
        return
    g, c = (int(x[0]) for x in np.nonzero(clash))
    run_id, step = distinct.index[g]
    key = cols[c]
    values = repeated.loc[(repeated["run_id"] == run_id) & (repeated["step"] == step), key].dropna()
    runs = distinct.index.get_level_values(0)[clash.any(axis=1)].unique()
    warn.append(f"{len(runs)} run(s) logged {int(clash.sum())} value(s) again at a step they had already logged "
                f"(resumed from a checkpoint?); the newest line wins, e.g. run '{run_id}' ({dirs[run_id] / METRICS}) "
                f"step {int(step)} '{key}': {_show(values.iloc[0])} then {_show(values.iloc[-1])}")


def _finish_history(out: pd.DataFrame, keys: list[str] | None) -> pd.DataFrame:
    """Types (run_id str, step int64, metrics float), rows where no metric was logged dropped, sorted."""
    metric_cols = [c for c in out.columns if c not in ("run_id", "step")]
    if keys is not None:
        present = set(metric_cols)
        metric_cols = [k for k in dict.fromkeys(keys) if k in present]
    run_id = out["run_id"]
    ids = run_id.reset_index(drop=True) if run_id.dtype == STRING_DTYPE else pd.Series(run_id.astype(str).to_numpy())
    if metric_cols:
        block = out[metric_cols]
        numeric = [c for c, t in zip(metric_cols, block.dtypes) if pd.api.types.is_numeric_dtype(t) and t != bool]
        is_numeric = set(numeric)
        other = [c for c in metric_cols if c not in is_numeric]
        values = pd.DataFrame(block[numeric].to_numpy(dtype=float, na_value=np.nan), columns=numeric)
        for c in other:  # strings, bools, objects: coerced one by one (few in practice)
            values[c] = pd.to_numeric(block[c], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        values = values[metric_cols]
    else:
        values = pd.DataFrame(index=range(len(out)))
    hist = pd.concat([pd.DataFrame({"run_id": ids, "step": out["step"].to_numpy(dtype=np.int64)}), values], axis=1)
    if metric_cols:
        hist = hist[~values.isna().all(axis=1).to_numpy()].reset_index(drop=True)
    return hist


# --------------------------------------------------------------------------------------------- the writer
def _tag_list(tags: Sequence[str] | Mapping[str, str] | None) -> list[str]:
    if isinstance(tags, Mapping):
        return sorted(str(k) if v in ("", None) else f"{k}={v}" for k, v in tags.items())
    if isinstance(tags, str):
        return [t.strip() for t in tags.split(",") if t.strip()]
    return sorted(str(t) for t in (tags or []))


class LocalRunWriter(RunWriterBase):
    """One run written as ``<root>/<run_id>/``: meta.json, config.json, metrics.jsonl, summary.json, artifacts/."""

    _step_reserved = "in the local format; pass the step as the step argument or rename the metric"

    def __init__(self, root: str | os.PathLike, name: str, config: Mapping[str, Any] | None = None,
                 tags: Sequence[str] | Mapping[str, str] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            self.run_id = uuid.uuid4().hex[:12]
            self.dir = self.root / self.run_id
            try:
                self.dir.mkdir()
                break
            except FileExistsError:  # pragma: no cover - 48-bit collision
                continue
        (self.dir / ARTIFACTS).mkdir()
        self.name = str(name)
        self.meta: dict[str, Any] = {"format": FORMAT, "run_id": self.run_id, "name": self.name, "state": "running",
                                     "created_at": _utc_now(), "tags": _tag_list(tags)}
        self._config: dict[str, Any] = {}
        self._summary: dict[str, float] = {}
        self._fh = open(self.dir / METRICS, "a", encoding="utf-8")
        atomic_write_text(self.dir / META, json.dumps(self.meta, indent=2) + "\n")
        if config:
            self.log_config(config)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Merge ``config`` into the run's config.json (written atomically)."""
        self._config.update(to_jsonable(dict(config)))
        atomic_write_text(self.dir / CONFIG, json.dumps(self._config, indent=2) + "\n")

    @property
    def artifact_dir(self) -> Path:
        return self.dir / ARTIFACTS

    def _write_metrics(self, values: dict[str, float], step: int) -> None:
        """Append one line ``{"step": step, key: value, ...}`` to metrics.jsonl and flush it."""
        self._fh.write(json.dumps({"step": step, **values}) + "\n")
        self._fh.flush()
        self._summary.update(values)

    def _close(self, status: str) -> None:
        """Write summary.json and the final state to meta.json."""
        self._fh.close()
        atomic_write_text(self.dir / SUMMARY, json.dumps(self._summary, indent=2) + "\n")
        self.meta.update(state=str(status).lower(), finished_at=_utc_now())
        atomic_write_text(self.dir / META, json.dumps(self.meta, indent=2) + "\n")
