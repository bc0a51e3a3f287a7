"""Runs that are folders on disk, and the readers of their files, shared by the folder-layout trackers.

A reader derives from ``FolderRunsTracker`` and says which folders are runs (``_is_run_folder``; ``run_file``: the
one file it also takes as ``tracker.path``) and how one is read (``_read_run``, a ``RunRecord``); the runs and
history tables, the search for run folders, run ids from folder paths and the file readers (delimited logs read
exactly whatever header changes or cut-off lines they hold, YAML read safely, rows merged by step) are here. Used
by the ``lightning_csv``, ``hf_trainer`` and ``dvclive`` trackers.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from toolkit.errors import UserError
from toolkit.progress import progress_bar
from toolkit.protocol import TrackerBase
from toolkit.runset import CONFIG_PREFIX, RUN_COLUMNS, SUMMARY_PREFIX, Selection, flatten_config

# pandas 3 parses floats exactly by default (and deprecates the option); pandas 2 needs it asked for
_EXACT_FLOATS: dict[str, Any] = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


# --------------------------------------------------------------------------------------------- shared helpers
@dataclass
class RunRecord:
    """One run read from its folder: what goes into the runs table, and its history (one row per step)."""

    run_id: str
    name: str
    folder: Path
    state: str = "finished"
    created_at: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"step": pd.Series(dtype="int64")}))


def regular_file(path: Path) -> bool:
    """A regular file (following links): FIFOs and devices are never opened (reading one could block forever)."""
    return path.is_file()


def path_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is (for messages)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if path.is_symlink() else "missing"
    except OSError as exc:
        return f"unreadable ({type(exc).__name__})"
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def check_root(path: str | os.PathLike | None, what: str) -> Path:
    """``tracker.path`` as an absolute path, or a one-line error saying what it should be."""
    if path in (None, ""):
        raise UserError(f"tracker.path is not set; expected {what}")
    root = Path(os.path.expanduser(str(path))).absolute()
    if not root.exists():
        if root.is_symlink():
            raise UserError(f"tracker.path: {root} is a broken symbolic link; expected {what}")
        raise UserError(f"tracker.path: {root} does not exist; expected {what}")
    if not root.is_dir() and not root.is_file():
        raise UserError(f"tracker.path: {root} is {path_kind(root)}; expected {what}")
    return root


def find_run_folders(root: Path, is_run: Callable[[str, list[str], list[str]], bool]) -> list[Path]:
    """Folders under ``root`` (``root`` included) for which ``is_run(folder, dirnames, filenames)`` holds, sorted;
    the search does not go below a run folder, nor into hidden folders or symbolic links to folders."""
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(root):
        run = is_run(folder, dirnames, filenames)
        if run:
            found.append(Path(folder))
        dirnames[:] = [] if run else sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def relative_id(root: Path, folder: Path, generic: re.Pattern[str] | None = None) -> str:
    """The run folder's path under ``root`` (posix). A name that says nothing by itself (``version_3``,
    ``checkpoint-500``, ``dvclive``) gets the name of the folder above it in front: ``<root>/version_3`` is
    ``<root name>/version_3``, and ``root`` itself (a run folder given directly) ``<parent name>/version_3``."""
    rel = folder.relative_to(root).as_posix() if folder != root else ""
    if rel:
        if "/" not in rel and generic is not None and generic.match(rel) and root.name:
            return f"{root.name}/{rel}"  # <root>/version_0: the root names the experiment
        return rel
    if generic is not None and generic.match(folder.name) and folder.parent.name:
        return f"{folder.parent.name}/{folder.name}"
    return folder.name or str(folder)


def strip_generic(run_id: str, generic: re.Pattern[str]) -> str:
    """``run_id`` without a last part such as ``version_<n>`` (when something is left)."""
    head, _, last = run_id.rpartition("/")
    return head if head and generic.match(last) else run_id


def _show(value: Any) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _lines(numbers: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f", ... ({len(numbers)} in all)" if len(numbers) > limit else "")


def float_columns(frame: pd.DataFrame, where: str, warnings: list[str], skip: Iterable[str] = ("step",)) -> pd.DataFrame:
    """Every column but ``skip`` as float. Cells that are not numbers (text, booleans, lists) are read as missing,
    with one warning per column naming ``where``, the count and an example; empty cells and nulls are missing
    without a word; 'nan'/'inf' text is the number."""
    skip = set(skip)
    out: dict[str, Any] = {}
    for col in frame.columns:
        series = frame[col]
        if col in skip:
            out[col] = series
            continue
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
            out[col] = series.to_numpy(dtype=float, na_value=np.nan)
            continue
        values = series.to_numpy(dtype=object)
        is_bool = np.fromiter((isinstance(v, (bool, np.bool_)) for v in values), dtype=bool, count=len(values))
        blank = series.isna().to_numpy() | np.fromiter(
            (isinstance(v, str) and not v.strip() for v in values), dtype=bool, count=len(values))
        numbers = pd.to_numeric(pd.Series(np.where(is_bool, None, values), dtype=object), errors="coerce")
        numbers = numbers.to_numpy(dtype=float, na_value=np.nan)
        said_nan = np.fromiter((isinstance(v, str) and v.strip().lower() in ("nan", "+nan", "-nan") for v in values),
                               dtype=bool, count=len(values))
        bad = ~blank & np.isnan(numbers) & ~said_nan
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            warnings.append(f"{where}: metric '{col}' has {int(bad.sum())} value(s) that are not numbers, read as "
                            f"missing, e.g. {_show(values[i])}")
        out[col] = numbers
    return pd.DataFrame(out, index=frame.index)


def whole_steps(frame: pd.DataFrame, where: str, warnings: list[str], column: str = "step") -> pd.DataFrame:
    """The rows whose ``column`` is a whole number (as int64 ``step``); the others dropped with a warning."""
    raw = frame[column]
    steps = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ok = np.isfinite(steps) & (np.mod(steps, 1) == 0)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        warnings.append(f"{where}: {int((~ok).sum())} row(s) without a whole-number '{column}' skipped, e.g. "
                        f"{_show(raw.iloc[i])} in data row {i + 1}")
        frame, steps = frame.loc[ok], steps[ok]
    frame = frame.drop(columns=[column])
    frame.insert(0, "step", steps.astype(np.int64))
    return frame.reset_index(drop=True)


def merge_steps(frame: pd.DataFrame, where: str, warnings: list[str]) -> pd.DataFrame:
    """One row per step of rows in log order (``step`` + float columns): rows at one step filling different keys
    are merged; a key given two different values at one step keeps the newest (the later row), with a warning that
    counts them and shows one. The same value logged again (Trainer repeats ``epoch`` in each row) says nothing."""
    if len(frame) < 2:
        return frame.reset_index(drop=True)
    frame = frame.sort_values("step", kind="stable").reset_index(drop=True)
    steps = frame["step"].to_numpy()
    if (steps[1:] != steps[:-1]).all():
        return frame
    cols = [c for c in frame.columns if c != "step"]
    repeated = frame[frame["step"].duplicated(keep=False).to_numpy()]
    if cols:
        distinct = repeated.groupby("step", sort=True)[cols].nunique(dropna=True)
        clash = distinct.to_numpy() > 1
        if clash.any():
            g, c = (int(x[0]) for x in np.nonzero(clash))
            step, key = distinct.index[g], cols[c]
            values = repeated.loc[repeated["step"] == step, key].dropna()
            warnings.append(f"{where}: {int(clash.sum())} value(s) at {int(clash.any(axis=1).sum())} step(s) were "
                            f"logged twice with different values; the newest is kept, e.g. step {int(step)} "
                            f"'{key}': {_show(values.iloc[0])} then {_show(values.iloc[-1])}")
        merged = frame.groupby("step", sort=True, as_index=False)[cols].last()
    else:
        merged = frame.drop_duplicates("step").reset_index(drop=True)
    return merged.reset_index(drop=True)


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _is_header(row: Sequence[str]) -> bool:
    """A header line: it names ``step`` and no cell is empty or a number."""
    cells = [c.strip() for c in row]
    return "step" in cells and all(c and not _is_float(c) for c in cells)


def _fast_table(data: bytes, sep: str) -> pd.DataFrame | None:
    """The file read by pandas when every line has the header's field count, no cell is quoted and no second header
    line sits in the data; None otherwise (the careful reader then reads it)."""
    if b'"' in data:
        return None
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    if not len(ends):
        return None
    seps = np.cumsum(arr == ord(sep))[ends]
    counts = np.diff(np.r_[0, seps])
    lengths = np.diff(np.r_[-1, ends]) - 1
    blank = (lengths == 0) | ((lengths == 1) & (arr[np.maximum(ends - 1, 0)] == 13))
    if blank[0] or not (counts[~blank] == counts[0]).all():
        return None
    names = [c.strip() for c in data[:ends[0]].decode("utf-8", errors="replace").rstrip("\r").split(sep)]
    if len(set(names)) != len(names) or not all(names):
        return None  # repeated or empty header names: read carefully
    try:
        frame = pd.read_csv(io.BytesIO(data), sep=sep, low_memory=False, **_EXACT_FLOATS)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError):
        return None
    frame.columns = [str(c) for c in frame.columns]
    if "step" in frame.columns and len(frame) and not pd.api.types.is_numeric_dtype(frame["step"].dtype):
        return None  # text in the step column: a header line in the data, perhaps
    return frame


Realign = Callable[[list[str], list[str]], Optional[dict[str, str]]]


def _careful_table(data: bytes, sep: str, path: Path, warnings: list[str], realign: Realign | None) -> pd.DataFrame:
    """Every row read by the header line above it (a file may hold several); rows that fit no header are skipped
    with a warning naming the file and the lines (``realign`` may map such a row when the writer's order is known)."""
    text = data.decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    misfit: list[int] = []
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        if header is None or _is_header(row):
            header = [c.strip() for c in row]
            continue
        if len(row) == len(header):
            rows.append(dict(zip(header, row)))
            continue
        fixed = realign(header, row) if realign is not None else None
        if fixed is None:
            misfit.append(reader.line_num)
        else:
            rows.append(fixed)
    if misfit:
        warnings.append(f"{path}: {len(misfit)} line(s) whose field count matches no header line were skipped "
                        f"(line(s) {_lines(misfit)}; the header above them has {len(header or [])} fields); their "
                        f"values cannot be put in the right columns")
    if header is None:
        return pd.DataFrame()
    columns = list(dict.fromkeys(k for r in rows for k in r)) if rows else list(header)
    return pd.DataFrame.from_records(rows, columns=columns) if rows else pd.DataFrame(columns=header)


def read_delimited(path: Path, sep: str, warnings: list[str], realign: Realign | None = None) -> pd.DataFrame:
    """A CSV/TSV log file as a frame (text or numbers; see ``float_columns``), read exactly: a changed header, a
    row that fits no header and a last line cut off mid-write are handled or warned about, never misaligned."""
    data = path.read_bytes()
    if not data.strip():
        warnings.append(f"{path}: the file is empty; read as no rows")
        return pd.DataFrame()
    if not data.endswith(b"\n"):
        cut = data.rfind(b"\n")
        last_line = data.count(b"\n") + 1
        warnings.append(f"{path}: line {last_line} has no line end (the writer was stopped mid-line?); skipped it")
        if cut < 0:
            return pd.DataFrame()
        data = data[:cut + 1]
    frame = _fast_table(data, sep)
    return frame if frame is not None else _careful_table(data, sep, path, warnings, realign)


def load_yaml_plain(path: Path, warnings: list[str]) -> Any:
    """A YAML file read safely: values with Python or custom tags (``!!python/object:...``) become plain mappings,
    lists and text (nothing is constructed or executed), with a warning; an unreadable file is a warning and None."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    tags: list[str] = []

    def plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        tags.append(node.tag)
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("", plain)
    try:
        data = yaml.load(path.read_text(encoding="utf-8", errors="replace"), Loader=Loader)  # noqa: S506 - safe loader
    except (yaml.YAMLError, TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warnings.append(f"{path}: not readable as YAML ({first}); the run is kept with no config from it")
        return None
    if tags:
        warnings.append(f"{path}: {len(tags)} value(s) with Python or custom YAML tags (e.g. {tags[0]}) read as plain "
                        f"data, not as objects")
    return data


def config_of(data: Any, path: Path, warnings: list[str]) -> dict[str, Any]:
    """A parsed config file as flattened config keys (a file that is not a mapping is a warning and no config)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        warnings.append(f"{path}: expected a mapping of settings, found {type(data).__name__}; no config read from it")
        return {}
    return flatten_config({str(k): v for k, v in data.items()})


def runs_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """The RunSet runs table of the records."""
    rows = [{"run_id": r.run_id, "name": r.name, "state": r.state, "created_at": r.created_at, "tags": "",
             **{CONFIG_PREFIX + k: v for k, v in r.config.items()},
             **{SUMMARY_PREFIX + k: v for k, v in r.summary.items()}} for r in records]
    runs = pd.DataFrame(rows, columns=None if rows else list(RUN_COLUMNS))
    runs["created_at"] = pd.to_datetime(runs["created_at"], utc=True, errors="coerce")
    return runs


def history_table(records: Mapping[str, RunRecord], run_ids: Sequence[str], keys: Sequence[str] | None) -> pd.DataFrame:
    """Wide history (run_id, step, one float column per key) of the given runs; every key when ``keys`` is None."""
    keys = None if keys is None else list(dict.fromkeys(str(k) for k in keys))
    frames = []
    for run_id in dict.fromkeys(run_ids):
        record = records.get(run_id)
        if record is None or not len(record.history):
            continue
        hist = record.history
        cols = [c for c in hist.columns if c != "step"] if keys is None else [k for k in keys if k in hist.columns]
        if keys is not None and not cols:
            continue
        part = hist[["step", *cols]]
        if keys is not None:
            part = part[part[cols].notna().any(axis=1).to_numpy()]
        part = part.copy()
        part.insert(0, "run_id", run_id)
        frames.append(part)
    if not frames:
        return pd.DataFrame({"run_id": pd.Series(dtype=str), "step": pd.Series(dtype="int64"),
                             **{k: pd.Series(dtype=float) for k in keys or []}})
    out = pd.concat(frames, ignore_index=True, sort=False)
    out["step"] = out["step"].astype(np.int64)
    return out


def last_values(history: pd.DataFrame) -> dict[str, float]:
    """The last logged (non-missing) value of each metric of a one-run history."""
    cols = [c for c in history.columns if c != "step"]
    if not cols or not len(history):
        return {}
    last = history[cols].ffill().iloc[-1]
    return {c: float(v) for c, v in last.items() if not (isinstance(v, float) and math.isnan(v))}


class FolderRunsTracker(TrackerBase):
    """Runs that are folders under ``tracker.path``, each read whole by ``_read_run`` (list_runs reads them all and
    keeps them; read_history serves from what it read)."""

    name = "folders"
    what = "a run folder or a folder of them"
    run_word = "run folders"
    run_file: str | None = None  # the one file a reader also takes as ``tracker.path`` (its folder is the run)

    def setup(self, settings: Any) -> None:
        """The folder to read (checked when read); no runs read yet."""
        self.path = settings.path
        self._records: dict[str, RunRecord] | None = None

    def _write_root(self, example: str) -> Path:
        """``tracker.path`` as the folder runs are written into, or a one-line error (``example``: a path to set)."""
        if not self.path:
            raise UserError(f"tracker.path is not set; writing runs needs a folder (tracker.path={example})")
        root = Path(os.path.expanduser(self.path)).absolute()
        if root.exists() and not root.is_dir():
            raise UserError(f"tracker.path: {root} is a file; writing runs needs a folder")
        return root

    def _is_run_folder(self, folder: str, dirnames: list[str], filenames: list[str]) -> bool:  # pragma: no cover
        raise NotImplementedError

    def _folders(self, root: Path) -> list[Path]:
        """The run folders under ``root``, or the folder of ``root`` when it is the reader's ``run_file``."""
        if root.is_file():
            if self.run_file is None:
                raise UserError(f"tracker.path: {root} is a file; expected {self.what}")
            if root.name != self.run_file:
                raise UserError(f"tracker.path: {root} is a file but not {self.run_file}; expected {self.what}")
            return [root.parent]
        return find_run_folders(root, self._is_run_folder)

    def _read_run(self, root: Path, folder: Path) -> RunRecord | None:  # pragma: no cover
        raise NotImplementedError

    def _no_config_warning(self, files: list[Any]) -> str:  # pragma: no cover - readers that note such files
        raise NotImplementedError

    def _yaml_config(self, path: Path) -> dict[str, Any]:
        """A run's YAML config file as config keys, read safely; a missing one is noted for one warning."""
        if regular_file(path):
            return config_of(load_yaml_plain(path, self.warnings), path, self.warnings)
        self._no_config.append(str(path))
        return {}

    def _load(self) -> dict[str, RunRecord]:
        self.warnings = []  # each read says again what it found
        self._no_config: list[Any] = []  # config files runs lack (see _no_config_warning)
        root = check_root(self.path, self.what)
        folders = self._folders(root)
        if not folders:
            raise UserError(f"tracker.path: {root} holds no {self.run_word}; expected {self.what}")
        records: dict[str, RunRecord] = {}
        with progress_bar(len(folders), f"reading {self.name} runs", self._progress) as bar:
            for folder in folders:
                record = self._read_run(root, folder)
                bar.update(1)
                if record is not None:
                    records[record.run_id] = record
        self._warn_shared_names(records.values())
        if self._no_config:
            self.warnings.append(self._no_config_warning(self._no_config))
        self._records = records
        return records

    def _warn_shared_names(self, records: Iterable[RunRecord]) -> None:
        by_name: dict[str, list[str]] = {}
        for r in records:
            by_name.setdefault(r.name, []).append(r.run_id)
        shared = {n: ids for n, ids in by_name.items() if len(ids) > 1}
        if shared:
            name, ids = next(iter(shared.items()))
            self.warnings.append(f"{len(shared)} run name(s) are shared by several folders (all read, as separate "
                                 f"runs; select.run_ids picks some), e.g. '{name}': {', '.join(ids[:4])}")

    def list_runs(self, selection: Selection | None = None) -> pd.DataFrame:
        """Runs table (RunSet.runs layout) of every run found under ``tracker.path``."""
        return runs_table(list(self._load().values()))

    def read_history(self, runs: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
        """Wide history (run_id, step, one float column per key) of the given runs; all keys when None."""
        records = self._records if self._records is not None else self._load()
        wanted = runs["run_id"].astype(str).tolist() if "run_id" in runs.columns else []
        return history_table(records, wanted, keys)
