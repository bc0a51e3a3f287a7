"""Tracker ``local``: sweeps stored as files on disk, read into a RunSet; runs written as plain files.

``LocalTracker(path)`` reads, by what it finds at ``path`` (``None``: the example sweep bundled in
``toolkit/data/example_sweep.csv``; relative paths resolve against the current directory):

(a) **wide history file** (``.csv``/``.csv.gz``/``.parquet``/``.pq``): one row per (run, step); the run column is
    the first of ``run_columns`` present, the step column the first of ``step_columns``. Columns constant
    within every run are the run's config (``config.<col>``); the others are metrics (their last value per run
    is ``summary.<col>``). ``read_history`` serves any numeric column, constant or not. When a file has both
    an id column (``run_id``/``id``/``ID``) and a name column (``run_name``/``name``/``Name``), runs are keyed by
    the id and named by the name; otherwise ``run_id`` and ``name`` are both the run column's value.
    Repeated (run, step) rows are merged (last non-null value per column).
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
    is skipped, a run without ``summary.json`` gets its summary from the metrics, and the state stays what
    ``meta.json`` says (``running``: a dead process cannot be told apart from a live one).
(e) **flat table**: a file with neither a run nor a step column that is not a W&B export (e.g. a published
    scaling-law table ``loss, N, D, C, model, peak_lr, ...``). Each row is one run ``row-<i>`` (``<stem>:row-<i>``
    inside a folder), state ``finished``, every column in ``config.<col>`` and the numeric columns in the history
    at step 0. The ``scaling_table`` recipe relies on this shape.

Reading is vectorised (no Python loop over rows or runs for (a)-(c), (e)); a loaded file is kept until its size
or modification time changes.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import pandas as pd

from toolkit.errors import UserError
from toolkit.outputs import atomic_write_text, to_jsonable
from toolkit.protocol import TrackerBase
from toolkit.runset import CONFIG_PREFIX, RUN_COLUMNS, SUMMARY_PREFIX, Selection, coerce_number, flatten_config
from toolkit.settings import Settings

FORMAT = "sweepkit-local/1"
META, CONFIG, METRICS, SUMMARY, ARTIFACTS = "meta.json", "config.json", "metrics.jsonl", "summary.json", "artifacts"
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
ID_COLUMNS = ("run_id", "id", "ID")
NAME_COLUMNS = ("run_name", "name", "Name")
WANDB_META = ("Created", "Runtime", "Notes", "State", "Updated", "Tags", "Sweep", "User", "ID", "Group", "Job Type",
              "Hostname", "Commit", "GitHub", "Description")
_RUN, _STEP = "\x00run", "\x00step"  # internal column names that cannot clash with a file's


def bundled_example() -> Path:
    """The example sweep shipped with the package (``toolkit/data/example_sweep.csv``)."""
    import toolkit

    return Path(toolkit.__file__).parent / "data" / "example_sweep.csv"


def _is_table(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(TABLE_SUFFIXES)


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


def _runs_frame(base: dict[str, Any], config: dict[str, pd.Series | np.ndarray],
                summary: dict[str, pd.Series | np.ndarray]) -> pd.DataFrame:
    cols: dict[str, Any] = dict(base)
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
    base = {"run_id": run_ids, "name": names, "state": state, "created_at": created, "tags": tags}
    return _Static(_runs_frame(base, config, summary), pd.DataFrame(hist), warnings)


def _flat_table(frame: pd.DataFrame, prefix: str = "") -> _Static:
    n = len(frame)
    ids = np.array([f"{prefix}row-{i}" for i in range(n)], dtype=object)
    config = {col: _config_values(frame[col]) for col in frame.columns}
    hist: dict[str, Any] = {"run_id": ids, "step": np.zeros(n, dtype=np.int64)}
    for col in frame.columns:
        num = _numeric(frame[col])
        if num is not None:
            hist[col] = num.to_numpy()
    base = {"run_id": ids, "name": ids, "state": np.full(n, "finished", dtype=object),
            "created_at": _nat(n), "tags": np.full(n, "", dtype=object)}
    return _Static(_runs_frame(base, config, {}), pd.DataFrame(hist))


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
        out = out.rename(columns={id_col: _RUN, name_col: "\x00name"})
    elif run_col is not None:
        out = out.rename(columns={run_col: _RUN})
    else:
        out[_RUN] = path.stem
    steps = pd.to_numeric(out[_STEP], errors="coerce")
    bad = steps.isna().to_numpy() | (np.isfinite(steps.to_numpy(dtype=float, na_value=np.nan)) &
                                     (steps.to_numpy(dtype=float, na_value=np.nan) % 1 != 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{path}: step column '{step_col}' has {frame[step_col].iloc[i]!r} in data row {i + 1}; "
                        f"expected whole numbers")
    out[_STEP] = steps.to_numpy(dtype=float).astype(np.int64)
    return out


def _build_wide(frame: pd.DataFrame) -> _Wide:
    """Runs table and sorted history arrays of concatenated wide pieces (vectorised)."""
    raw_codes, uniques = pd.factorize(frame[_RUN], use_na_sentinel=False)
    ids = pd.Index(uniques).astype(str)
    codes2, ids2 = pd.factorize(ids)  # 1 and "1" are one run
    codes = codes2[raw_codes].astype(np.int64)
    run_ids = np.asarray(ids2, dtype=object)
    steps = frame[_STEP].to_numpy(dtype=np.int64)
    value_cols = [c for c in frame.columns if c not in (_RUN, _STEP, "\x00name")]
    values = frame[value_cols].reset_index(drop=True)
    if len(codes) > 1 and not _is_sorted(codes, steps):
        order = np.lexsort((steps, codes))
        codes, steps = codes[order], steps[order]
        values = values.take(order).reset_index(drop=True)
    if len(codes) > 1 and ((codes[1:] == codes[:-1]) & (steps[1:] == steps[:-1])).any():
        grouped = values.groupby([codes, steps], sort=True).last()  # merge repeated (run, step) rows
        codes = grouped.index.get_level_values(0).to_numpy(dtype=np.int64)
        steps = grouped.index.get_level_values(1).to_numpy(dtype=np.int64)
        values = grouped.reset_index(drop=True)
    names = run_ids
    if "\x00name" in frame.columns:
        names = frame["\x00name"].groupby(raw_codes).first().astype(str).to_numpy(dtype=object)
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
    base = {"run_id": run_ids, "name": names, "state": np.full(n, "finished", dtype=object),
            "created_at": _nat(n), "tags": np.full(n, "", dtype=object)}
    return _Wide(_runs_frame(base, config, summary), codes, steps, values, numeric)


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
    """The complete lines of a metrics.jsonl; True when a truncated last line was cut off."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b"", False
    cut = data.rfind(b"\n") + 1
    return data[:cut], cut < len(data) and bool(data[cut:].strip())


WIDE_LINE_KEYS = 256  # lines with more keys than this parse faster with json than with pyarrow's column inference


def _keys_in_first_line(data: bytes) -> int:
    end = data.find(b"\n")
    return data[: end if end >= 0 else len(data)].count(b'":')


def _parse_lines(data: bytes, keys: Sequence[str] | None) -> pd.DataFrame:
    """JSON lines parsed one by one (torn lines skipped), one 2-D array per key set; only ``keys`` kept when given."""
    by_schema: dict[tuple[str, ...], tuple[list[int], list[list[Any]]]] = {}
    for i, line in enumerate(data.splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "step" in obj:
            lines, values = by_schema.setdefault(tuple(obj), ([], []))
            lines.append(i)
            values.append(list(obj.values()))
    if not by_schema:
        return pd.DataFrame({"step": np.zeros(0, dtype=np.int64)})
    wanted = None if keys is None else {"step", *keys}
    frames = []
    for schema, (lines, values) in by_schema.items():
        try:
            frame = pd.DataFrame(np.array(values, dtype=float), columns=list(schema), index=lines)
        except (TypeError, ValueError):  # strings or nulls among the values
            frame = pd.DataFrame(values, columns=list(schema), index=lines)
        frames.append(frame if wanted is None else frame[[c for c in schema if c in wanted]])
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, sort=False).sort_index(kind="stable")
    return frame.reset_index(drop=True)


def _parse_metrics(data: bytes, path: Path | str, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """JSON lines as a frame (pyarrow for narrow lines, json for wide or odd ones), rows without a step dropped."""
    if not data.strip():
        return pd.DataFrame({"step": np.zeros(0, dtype=np.int64)})
    frame = None
    if _keys_in_first_line(data) <= WIDE_LINE_KEYS:
        try:
            import pyarrow.json as pj

            frame = pj.read_json(io.BytesIO(data)).to_pandas()
        except Exception:  # NaN/Infinity tokens, a torn line in the middle, mixed types: parse line by line
            frame = None
    if frame is None:
        frame = _parse_lines(data, keys)
    if "step" not in frame.columns:
        raise UserError(f"{path}: lines have no 'step' field; expected {{\"step\": <int>, <metric>: <number>, ...}}")
    frame = frame[frame["step"].notna()].copy()
    frame["step"] = frame["step"].astype(np.int64)
    return frame


def read_metrics_file(path: Path) -> tuple[pd.DataFrame, bool]:
    """A run's metrics.jsonl as a frame (step + one column per key); True when a truncated last line was skipped."""
    data, truncated = _metrics_bytes(path)
    return _parse_metrics(data, path), truncated


_RUN_KEY = "__sweepkit_run__"


def _read_many_metrics(paths: list[Path], warn: list[str], run_ids: list[str],
                       keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Metrics of many runs: narrow lines in one pyarrow parse (each line tagged with its run), else file by file."""
    datas = []
    for i, path in enumerate(paths):
        data, truncated = _metrics_bytes(path)
        if truncated:
            warn.append(f"run '{run_ids[i]}': the last line of {METRICS} was cut short (a killed run?); skipped")
        datas.append(data)
    present = [d for d in datas if d.strip()]
    if present and all(d.startswith(b"{") and b"\n{}" not in d and _keys_in_first_line(d) <= WIDE_LINE_KEYS for d in present):
        tagged = [b'{"%s":%d,' % (_RUN_KEY.encode(), i) + d[1:].replace(b"\n{", b'\n{"%s":%d,' % (_RUN_KEY.encode(), i))
                  for i, d in enumerate(datas) if d.strip()]
        try:
            import pyarrow.json as pj

            frame = pj.read_json(io.BytesIO(b"".join(tagged))).to_pandas()
            if "step" in frame.columns and not frame["step"].isna().any():
                frame["step"] = frame["step"].astype(np.int64)
                codes = frame.pop(_RUN_KEY).to_numpy(dtype=np.int64)
                frame.insert(0, "run_id", _take_strings(np.asarray(run_ids, dtype=object), codes))
                return frame
        except Exception:  # NaN/Infinity tokens or odd lines somewhere: parse run by run
            pass
    pieces = []
    for i, (path, data) in enumerate(zip(paths, datas)):
        frame = _parse_metrics(data, path, keys)
        frame.insert(0, "run_id", run_ids[i])
        pieces.append(frame)
    return pd.concat(pieces, ignore_index=True, sort=False) if pieces else pd.DataFrame(columns=["run_id", "step"])


def _jsonable_config(config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, (list, tuple, dict)):
            value = json.dumps(value, sort_keys=True)
        out[key] = coerce_number(value)
    return out


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
        meta = _read_json(meta_path)
        if not isinstance(meta, dict):
            raise UserError(f"{meta_path}: expected a JSON object with run_id, name, state")
        run_id = str(meta.get("run_id") or run_dir.name)
        if run_id in dirs:
            raise UserError(f"{meta_path}: run id '{run_id}' is also used by {dirs[run_id]}; expected unique run ids")
        dirs[run_id] = run_dir
        config = _read_json(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else {}
        if (run_dir / SUMMARY).is_file():
            summary = _read_json(run_dir / SUMMARY)
        else:
            frame, _ = read_metrics_file(run_dir / METRICS)
            summary = {c: frame[c].dropna().iloc[-1] for c in frame.columns if c != "step" and frame[c].notna().any()}
        tags = meta.get("tags") or []
        row: dict[str, Any] = {
            "run_id": run_id,
            "name": str(meta.get("name") or run_id),
            "state": str(meta.get("state") or "running"),
            "created_at": pd.Timestamp(meta["created_at"]) if meta.get("created_at") else pd.NaT,
            "tags": ",".join(sorted(str(t) for t in tags)) if isinstance(tags, list) else str(tags),
        }
        row.update({CONFIG_PREFIX + k: v for k, v in _jsonable_config(flatten_config(dict(config or {}))).items()})
        row.update({SUMMARY_PREFIX + k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                    for k, v in dict(summary or {}).items()})
        rows.append(row)
    runs = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(RUN_COLUMNS))
    return _Folders(runs, dirs)


# --------------------------------------------------------------------------------------------- the tracker
@dataclass
class LocalSettings(Settings):
    """tracker=local: what to read and which columns name the run and the step (conf/tracker/local.yaml)."""

    path: Optional[str] = None
    run_columns: List[str] = field(default_factory=lambda: ["run_name", "run_id", "name", "Name"])
    step_columns: List[str] = field(default_factory=lambda: ["step", "_step", "Step"])


class LocalTracker(TrackerBase):
    """Files on disk: a wide history file, a folder of them, a W&B export, a flat table, or run folders."""

    name = "local"
    settings_type = LocalSettings

    def __init__(self, path: str | os.PathLike | None = None,
                 run_columns: Sequence[str] = ("run_name", "run_id", "name", "Name"),
                 step_columns: Sequence[str] = ("step", "_step", "Step")):
        self.path = bundled_example() if path in (None, "") else Path(os.path.expanduser(str(path))).absolute()
        self.run_columns = tuple(str(c) for c in run_columns)
        self.step_columns = tuple(str(c) for c in step_columns)
        self.warnings: list[str] = []
        self._signature: tuple | None = None
        self._wide: _Wide | None = None
        self._static: _Static | None = None
        self._folders: _Folders | None = None

    # ----------------------------------------------------------------------------------------- loading
    def _load(self) -> None:
        """(Re)read what is at ``path`` (files are kept while their size and mtime are unchanged)."""
        path = self.path
        if not path.exists():
            raise UserError(f"tracker.path: {path} does not exist; expected a CSV/parquet file or a folder")
        if path.is_dir() and (any(path.glob(f"*/{META}")) or (path / META).is_file()):
            warnings: list[str] = []
            self._folders = _scan_run_folders(path, warnings)
            self._wide, self._static, self._signature = None, None, None
            self.warnings = warnings
            return
        files = sorted(p for p in path.iterdir() if _is_table(p)) if path.is_dir() else [path]
        if not files:
            raise UserError(f"tracker.path: {path} has no run folders (<run>/{META}) and no "
                            f"{', '.join('*' + s for s in TABLE_SUFFIXES)} files")
        signature = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        if signature == self._signature:
            return
        self._folders = None
        self._load_files(files, in_folder=path.is_dir())
        self._signature = signature

    def _load_files(self, files: list[Path], in_folder: bool) -> None:
        warnings: list[str] = []
        wide_pieces, statics = [], []
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
            elif run_col is not None or step_col is not None:
                found = f"run column '{run_col}'" if run_col else f"step column '{step_col}'"
                looked = (f"step columns ({', '.join(self.step_columns)})" if run_col
                          else f"run columns ({', '.join(self.run_columns)})")
                raise UserError(f"{file}: has a {found} but none of the {looked}; expected both (a wide history "
                                f"file) or neither (a flat table, one run per row)")
            else:
                statics.append(_flat_table(frame, prefix=f"{file.stem}:" if in_folder else ""))
        self._wide = _build_wide(pd.concat(wide_pieces, ignore_index=True, sort=False)
                                 if len(wide_pieces) > 1 else wide_pieces[0]) if wide_pieces else None
        self._static = None
        if statics:
            self._static = _Static(pd.concat([s.runs for s in statics], ignore_index=True, sort=False),
                                   pd.concat([s.history for s in statics], ignore_index=True, sort=False))
        all_ids = pd.concat([f.runs["run_id"] for f in (self._wide, self._static) if f is not None], ignore_index=True)
        dup = all_ids[all_ids.duplicated()]
        if len(dup):
            raise UserError(f"tracker.path: {self.path}: run id '{dup.iloc[0]}' appears in more than one kind of file "
                            f"(W&B export, flat table, history); expected each run once")
        self.warnings = warnings

    # ----------------------------------------------------------------------------------------- protocol
    def list_runs(self, selection: Selection | None = None) -> pd.DataFrame:
        """Runs table (RunSet.runs layout) of the runs the selection admits."""
        self._load()
        if self._folders is not None:
            runs = self._folders.runs
        else:
            parts = [f.runs for f in (self._wide, self._static) if f is not None]
            runs = pd.concat(parts, ignore_index=True, sort=False) if len(parts) > 1 else parts[0].copy()
        return runs

    def read_history(self, runs: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
        """Wide history (run_id, step, one float column per key) of the given runs; all numeric columns when None."""
        if self._folders is None and self._wide is None and self._static is None:
            self._load()
        wanted = runs["run_id"].astype(str).tolist() if "run_id" in runs.columns else []
        keys = None if keys is None else [str(k) for k in keys]
        if self._folders is not None:
            parts = [self._folder_history(wanted, keys)]
        else:
            parts = []
            if self._wide is not None:
                parts.append(self._wide_history(wanted, keys))
            if self._static is not None:
                parts.append(self._static_history(wanted, keys))
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
        out = {"run_id": _take_strings(run_ids, wide.codes[mask]), "step": wide.steps[mask]}
        for c in cols:
            col = wide.values[c]
            values = col.to_numpy(dtype=float, na_value=np.nan) if c in wide.numeric else \
                pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            out[c] = values[mask]
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


_STR_DTYPE = pd.Series(["x"]).dtype  # pandas' default string dtype (arrow-backed in pandas 3)


def _take_strings(values: np.ndarray, codes: np.ndarray) -> Any:
    """``values[codes]`` as a string column, built in arrow when that is pandas' string storage (no Python objects)."""
    if getattr(_STR_DTYPE, "storage", None) == "pyarrow":
        import pyarrow as pa

        taken = pa.array([str(v) for v in values], type=pa.large_string()).take(pa.array(codes))
        return taken.to_pandas(types_mapper=lambda _t: _STR_DTYPE)
    return values[codes].astype(str)


def _finish_history(out: pd.DataFrame, keys: list[str] | None) -> pd.DataFrame:
    """Types (run_id str, step int64, metrics float), rows where no metric was logged dropped, sorted."""
    metric_cols = [c for c in out.columns if c not in ("run_id", "step")]
    if keys is not None:
        present = set(metric_cols)
        metric_cols = [k for k in dict.fromkeys(keys) if k in present]
    run_id = out["run_id"]
    ids = run_id.reset_index(drop=True) if run_id.dtype == _STR_DTYPE else pd.Series(run_id.astype(str).to_numpy())
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


class LocalRunWriter:
    """One run written as ``<root>/<run_id>/``: meta.json, config.json, metrics.jsonl, summary.json, artifacts/."""

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
        self._finished = False
        self._fh = open(self.dir / METRICS, "a", encoding="utf-8")
        atomic_write_text(self.dir / META, json.dumps(self.meta, indent=2) + "\n")
        if config:
            self.log_config(config)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Merge ``config`` into the run's config.json (written atomically)."""
        self._config.update(to_jsonable(dict(config)))
        atomic_write_text(self.dir / CONFIG, json.dumps(self._config, indent=2) + "\n")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Append one line ``{"step": step, key: value, ...}`` to metrics.jsonl and flush it."""
        if self._finished:
            raise UserError(f"run '{self.name}' ({self.dir}): log_metrics after finish")
        try:
            step_int = int(step)
        except (TypeError, ValueError):
            raise UserError(f"run '{self.name}': step {step!r} is not an integer") from None
        line: dict[str, Any] = {"step": step_int}
        for key, value in metrics.items():
            key = str(key)
            if key == "step":
                raise UserError(f"run '{self.name}': metric key 'step' is reserved in the local format; "
                                f"pass the step as the step argument or rename the metric")
            try:
                line[key] = float(value)
            except (TypeError, ValueError):
                raise UserError(f"run '{self.name}': metric '{key}' at step {step_int} is not a number: {value!r}") from None
        self._fh.write(json.dumps(line) + "\n")
        self._fh.flush()
        self._summary.update({k: v for k, v in line.items() if k != "step"})

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Copy a file (or folder) into the run's artifacts/ folder (via a temporary name, then rename)."""
        src = Path(path)
        if not src.exists():
            raise UserError(f"log_artifact: no file at {src}")
        dest = self.dir / ARTIFACTS / src.name
        tmp = Path(tempfile.mkdtemp(prefix=f".{src.name}.", dir=self.dir / ARTIFACTS)) / src.name
        try:
            if src.is_dir():
                shutil.copytree(src, tmp)
                if dest.exists():
                    shutil.rmtree(dest)
            else:
                shutil.copy2(src, tmp)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp.parent, ignore_errors=True)

    def finish(self, status: str = "finished") -> None:
        """Write summary.json and the final state to meta.json (once)."""
        if self._finished:
            return
        self._finished = True
        self._fh.close()
        atomic_write_text(self.dir / SUMMARY, json.dumps(self._summary, indent=2) + "\n")
        self.meta.update(state=str(status).lower(), finished_at=_utc_now())
        atomic_write_text(self.dir / META, json.dumps(self.meta, indent=2) + "\n")

    def __enter__(self) -> "LocalRunWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish("failed" if exc_type else "finished")
