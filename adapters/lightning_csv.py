"""Tracker ``lightning_csv``: the folders Lightning's ``CSVLogger`` writes, read into a RunSet.

``CSVLogger(save_dir, name, version)`` writes ``<save_dir>/<name>/version_<n>/`` (or ``<save_dir>/<name>/<version>``
for a text version, ``<save_dir>/<version>`` when ``name`` is empty) holding

    metrics.csv   one row per ``log_metrics`` call: the sorted union of the keys logged so far (``step`` among them),
                  empty cells for keys that call did not log
    hparams.yaml  the hyperparameters given to ``log_hyperparams`` (PyYAML, possibly with ``!!python/...`` tags)

``tracker.path`` is such a run folder, a ``metrics.csv`` file, or any folder above them (searched recursively; the
search stops at a run folder, so its ``checkpoints/`` are not looked into). A run is one folder holding
``metrics.csv`` (or only ``hparams.yaml``: kept with no history, with a warning). Its ``run_id`` is the folder's path
under ``tracker.path`` (``<name>/version_<n>``), its ``name`` that path without a last ``version_<n>`` part (the
logger's ``name``; several versions of one name are named in a warning: ``select.run_ids`` picks one). The state is
``finished`` (the files do not say whether the process still runs) and ``created_at`` is empty (they hold no time).

History: every column but ``step`` is a metric; rows at one step (a training and a validation row) are merged, a key
given two different values at one step keeps the newest with a warning. ``metrics.csv`` is read exactly whatever its
history: Lightning rewrites it with a wider header when a new key appears (read as written); a file with several
header lines (older writers appended one when the keys changed) is read segment by segment, each row by the header
above it; a row whose field count matches no header, a last line without its line end (the process was killed
mid-write) and cells that are not numbers are skipped or read as missing with a warning naming the file and lines,
never read into the wrong columns. Config: ``hparams.yaml`` flattened into ``config.<key>`` (read safely: Python tags
such as ``!!python/object:argparse.Namespace`` become plain values, with a warning; nothing is executed); a run
without it is kept with no config (warned). Summary: the last logged value of each metric.

Write side: ``start_run`` logs through Lightning's own ``CSVLogger`` (the ``lightning`` extra) into
``<path>/<name>/version_<n>/``; the status given to ``finish`` goes to ``finalize`` (the layout does not keep it).
The readers of folder runs and delimited files are shared with ``hf_trainer`` and ``dvclive`` (``adapters.folder_runs``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from adapters.folder_runs import (FolderRunsTracker, RunRecord, float_columns, last_values,
                                  merge_steps, read_delimited, regular_file, relative_id, strip_generic, whole_steps)
from toolkit.errors import require_extra
from toolkit.protocol import RunWriterBase
from toolkit.settings import Settings

METRICS_CSV, HPARAMS = "metrics.csv", "hparams.yaml"
VERSION = re.compile(r"^version_\d+$")


# --------------------------------------------------------------------------------------------- the tracker
@dataclass
class LightningCsvSettings(Settings):
    """tracker=lightning_csv: the folders of Lightning's CSVLogger (conf/tracker/lightning_csv.yaml)."""

    path: Optional[str] = None


class LightningCsvTracker(FolderRunsTracker):
    """Lightning ``CSVLogger`` folders (``<name>/version_<n>/metrics.csv`` + ``hparams.yaml``) read as runs."""

    name = "lightning_csv"
    settings_type = LightningCsvSettings
    what = ("a CSVLogger folder (<save_dir>/<name>/version_<n>/ holding metrics.csv and hparams.yaml), a metrics.csv "
            "file, or a folder above them")
    run_word = f"{METRICS_CSV} or {HPARAMS} files"

    run_file = METRICS_CSV

    def _is_run_folder(self, folder: str, dirnames: list[str], filenames: list[str]) -> bool:
        return METRICS_CSV in filenames or HPARAMS in filenames

    def _read_run(self, root: Path, folder: Path) -> RunRecord | None:
        base = root.parent if root.is_file() else root
        run_id = relative_id(base, folder, VERSION)
        record = RunRecord(run_id, strip_generic(run_id, VERSION), folder)
        metrics, hparams = folder / METRICS_CSV, folder / HPARAMS
        if regular_file(metrics):
            record.history = read_lightning_metrics(metrics, self.warnings)
            record.summary = last_values(record.history)
        else:
            what = "is not a regular file" if metrics.exists() else "is missing"
            self.warnings.append(f"run '{run_id}': {metrics} {what} (nothing logged yet?); kept with no history")
        record.config = self._yaml_config(hparams)
        return record

    def _no_config_warning(self, files: list[Any]) -> str:
        return (f"{len(files)} run(s) have no {HPARAMS} (log_hyperparams was never called?) and are kept with no "
                f"config, e.g. {', '.join(files[:3])}")

    def start_run(self, name: str, config: Mapping[str, Any] | None = None) -> "LightningCsvRunWriter":
        """Log a run through Lightning's CSVLogger into ``<path>/<name>/version_<n>/``."""
        return LightningCsvRunWriter(self._write_root("lightning_logs/"), name, config)


def read_lightning_metrics(path: Path, warnings: list[str]) -> pd.DataFrame:
    """One run's ``metrics.csv`` as a history (step + float metric columns, one row per step)."""
    frame = read_delimited(path, ",", warnings)
    if not len(frame.columns) or not len(frame):
        if len(frame.columns):
            warnings.append(f"{path}: a header but no rows; the run is kept with no history")
        return pd.DataFrame({"step": pd.Series(dtype="int64")})
    if "step" not in frame.columns:
        warnings.append(f"{path}: no 'step' column (columns: {', '.join(map(str, frame.columns[:8]))}); the run is "
                        f"kept with no history")
        return pd.DataFrame({"step": pd.Series(dtype="int64")})
    frame = whole_steps(frame, str(path), warnings)
    frame = float_columns(frame, str(path), warnings)
    return merge_steps(frame, str(path), warnings)


class LightningCsvRunWriter(RunWriterBase):
    """One run written by Lightning's own ``CSVLogger`` (``lightning.pytorch.loggers``)."""

    def __init__(self, root: Path, name: str, config: Mapping[str, Any] | None = None) -> None:
        try:
            loggers = require_extra("lightning.pytorch.loggers", "lightning")
        except ImportError as missing:  # the standalone pytorch_lightning package has the same logger
            try:
                loggers = require_extra("pytorch_lightning.loggers", "lightning")
            except ImportError:
                raise missing from None
        root.mkdir(parents=True, exist_ok=True)
        self.logger = loggers.CSVLogger(save_dir=str(root), name=str(name))
        self.name = str(name)
        if config:
            self.log_config(config)

    @property
    def dir(self) -> Path:
        return Path(self.logger.log_dir)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """``log_hyperparams``: merged into hparams.yaml."""
        from toolkit.outputs import to_jsonable

        self.logger.log_hyperparams(to_jsonable(dict(config)))

    def _write_metrics(self, values: dict[str, float], step: int) -> None:
        """One ``log_metrics`` row at ``step``."""
        self.logger.log_metrics(values, step=step)

    def _close(self, status: str) -> None:
        """``finalize``: the rows still buffered are written."""
        self.logger.finalize("success" if str(status).lower() == "finished" else "failed")

