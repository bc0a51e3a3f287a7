"""Tracker ``dvclive``: the folders DVCLive's ``Live`` writes, read into a RunSet (no dvc or git needed to read).

``Live(dir)`` writes, per run folder (``dvclive/`` by default):

    plots/metrics/<name>.tsv   one per metric logged with ``log_metric`` (``<name>`` may hold ``/``: train/loss.tsv),
                               tab-separated ``[timestamp,] step, <last part of name>``, one row per call
    metrics.json               the summary: the latest value of each metric (nested by ``/``) and ``step``
    params.yaml                the parameters given to ``log_params``

``tracker.path`` is such a folder or any folder above them (searched recursively; a run folder is one holding
``plots/metrics/`` or ``metrics.json``; the search stops there). ``run_id`` and ``name`` are the folder's path under
``tracker.path``, without a last ``dvclive`` part when something is left (``exp1/dvclive`` is run ``exp1``).
``state`` is ``finished`` (the files do not say whether the process still runs); ``created_at`` is the earliest
``timestamp`` logged (``log_metric(..., timestamp=True)``), else empty.

History: one column per metric file, named by its path under ``plots/metrics/`` without ``.tsv``; values logged
twice at one step keep the newest with a warning; 'nan'/'inf' (how DVCLive writes them) are the numbers, other text
is read as missing with a warning. A row written without a timestamp into a file whose header has one (or the other
way round) is read by DVCLive's column order (``timestamp, step, value``); rows that fit neither, and a last line
cut off mid-write, are skipped with a warning naming the file. Config: ``params.yaml`` flattened into
``config.<key>``; a run without it is kept with no config (warned). Summary: ``metrics.json`` flattened with ``/`` (the
metric names), and for metrics it lacks (a run killed before it was written) their last logged value.

Experiments that DVC keeps only as git refs (``dvc exp run`` without the files in the work tree) are not on disk:
``dvc exp apply`` or ``dvc exp branch`` one, or log with ``Live(dir=...)`` per run. Write side: ``start_run`` logs
through DVCLive's own ``Live`` (the ``dvclive`` extra) into ``<path>/<name>/`` with no dvc.yaml, no git experiment
and no report; the status is not kept (the layout has none).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from adapters.folder_runs import (FolderRunsTracker, RunRecord, float_columns, last_values,
                                  merge_steps, read_delimited, regular_file, relative_id, strip_generic, whole_steps)
from toolkit.errors import UserError, require_extra
from toolkit.protocol import RunWriterBase
from toolkit.runset import coerce_number
from toolkit.settings import Settings

PLOTS, SUMMARY_JSON, PARAMS = Path("plots") / "metrics", "metrics.json", "params.yaml"
LIVE_DIR = re.compile(r"^dvclive$")


@dataclass
class DvcLiveSettings(Settings):
    """tracker=dvclive: DVCLive run folders (conf/tracker/dvclive.yaml)."""

    path: Optional[str] = None


def _is_live_folder(folder: str, dirnames: list[str], filenames: list[str]) -> bool:
    return SUMMARY_JSON in filenames or ("plots" in dirnames and (Path(folder) / PLOTS).is_dir())


def _realign(header: list[str], row: list[str]) -> dict[str, str] | None:
    """A row of the other width than its header, by DVCLive's own column order (timestamp, step, value)."""
    value = next((c for c in header if c not in ("timestamp", "step")), None)
    if value is None:
        return None
    if len(row) == 3 and "timestamp" not in header:
        return {"timestamp": row[0], "step": row[1], value: row[2]}
    if len(row) == 2 and "timestamp" in header:
        return {"step": row[0], value: row[1]}
    return None


def _flat(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, name + "/"))
        else:
            out[name] = coerce_number(value) if isinstance(value, str) else value
    return out


class DvcLiveTracker(FolderRunsTracker):
    """DVCLive folders (plots/metrics/**/*.tsv, metrics.json, params.yaml) read as runs."""

    name = "dvclive"
    settings_type = DvcLiveSettings
    what = "a DVCLive folder (holding plots/metrics/*.tsv and metrics.json, params.yaml) or a folder above them"
    run_word = "DVCLive folders (plots/metrics/ or metrics.json)"

    _is_run_folder = staticmethod(_is_live_folder)

    def _no_config_warning(self, files: list[Any]) -> str:
        return (f"{len(files)} run(s) have no {PARAMS} (log_params was never called?) and are kept with no config, "
                f"e.g. {', '.join(files[:3])}")

    def _read_run(self, root: Path, folder: Path) -> RunRecord | None:
        run_id = relative_id(root, folder, LIVE_DIR)
        record = RunRecord(run_id, strip_generic(run_id, LIVE_DIR), folder)
        record.history, first_time = self._history(folder)
        if first_time is not None:
            record.created_at = pd.Timestamp(first_time, unit="ms", tz="UTC")
        summary: dict[str, Any] = {}
        summary_path = folder / SUMMARY_JSON
        if regular_file(summary_path):
            try:
                data = json.loads(summary_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                self.warnings.append(f"{summary_path}: not valid JSON ({str(exc).splitlines()[0]}); the summary is "
                                     f"taken from the logged values")
                data = {}
            if isinstance(data, Mapping):
                summary = _flat(data)
        record.summary = summary | {k: v for k, v in last_values(record.history).items() if k not in summary}
        record.config = self._yaml_config(folder / PARAMS)
        return record

    def _history(self, folder: Path) -> tuple[pd.DataFrame, float | None]:
        """The run's metrics as one wide history, and the earliest timestamp logged (ms since the epoch)."""
        plots = folder / PLOTS
        files = sorted(p for p in plots.rglob("*.tsv") if regular_file(p)) if plots.is_dir() else []
        parts, first = [], None
        for path in files:
            name = path.relative_to(plots).with_suffix("").as_posix()
            frame = read_delimited(path, "\t", self.warnings, _realign)
            if not len(frame):
                continue
            if "step" not in frame.columns:
                self.warnings.append(f"{path}: no 'step' column (columns: {', '.join(map(str, frame.columns))}); "
                                     f"metric '{name}' not read")
                continue
            values = [c for c in frame.columns if c not in ("timestamp", "step")]
            if len(values) != 1:
                self.warnings.append(f"{path}: expected the columns [timestamp,] step, {path.stem}; found "
                                     f"{', '.join(map(str, frame.columns))}; metric '{name}' not read")
                continue
            if "timestamp" in frame.columns:
                stamps = pd.to_numeric(frame["timestamp"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                if np.isfinite(stamps).any():
                    low = float(np.nanmin(stamps))
                    first = low if first is None else min(first, low)
            frame = whole_steps(frame[["step", values[0]]], str(path), self.warnings)
            frame = float_columns(frame.rename(columns={values[0]: name}), str(path), self.warnings)
            parts.append(merge_steps(frame, str(path), self.warnings))
        if not parts:
            return pd.DataFrame({"step": pd.Series(dtype="int64")}), first
        wide = parts[0]
        for part in parts[1:]:
            wide = wide.merge(part, on="step", how="outer", sort=True)
        return wide.sort_values("step").reset_index(drop=True), first

    # ----------------------------------------------------------------------------------------- write side
    def start_run(self, name: str, config: Mapping[str, Any] | None = None) -> "DvcLiveRunWriter":
        """Log a run through DVCLive's ``Live`` into ``<path>/<name>/``."""
        return DvcLiveRunWriter(self._write_root("runs/"), name, config)


class DvcLiveRunWriter(RunWriterBase):
    """One run written by DVCLive's own ``Live`` (no dvc.yaml, no git experiment, no report, no `dvc init`)."""

    def __init__(self, root: Path, name: str, config: Mapping[str, Any] | None = None) -> None:
        require_extra("dvclive", "dvclive")
        import dvclive.live

        self.name = str(name)
        self.dir = root / self.name
        if (self.dir / SUMMARY_JSON).exists() or (self.dir / PLOTS).exists():
            raise UserError(f"run '{self.name}': {self.dir} already holds a DVCLive run; choose another name or folder")
        # Live looks for a DVC repo and, inside a git repo, runs `dvc init` there (staging .dvc/ in the user's git
        # index): these runs are plain log folders, so it is told there is none
        found, dvclive.live.get_dvc_repo = dvclive.live.get_dvc_repo, lambda: None
        try:
            self.live = dvclive.live.Live(dir=str(self.dir), save_dvc_exp=False, dvcyaml=False, report=None)
        finally:
            dvclive.live.get_dvc_repo = found
        if config:
            self.log_config(config)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """``log_params``: written to params.yaml."""
        from toolkit.outputs import to_jsonable

        self.live.log_params(to_jsonable(dict(config)))

    @property
    def artifact_dir(self) -> Path:
        return self.dir / "artifacts"  # not a DVC cache

    def _write_metrics(self, values: dict[str, float], step: int) -> None:
        """``log_metric`` of each value at ``step`` (one row per metric file)."""
        self.live.step = step
        for key, number in values.items():
            self.live.log_metric(key, number)  # nan/inf: written as text by DVCLive

    def _close(self, status: str) -> None:
        """``Live.end``: metrics.json written."""
        self.live.end()

