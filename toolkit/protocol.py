"""The adapter protocol every tracker implements (read side and write side)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from toolkit.runset import RunSet, Selection


@runtime_checkable
class RunWriter(Protocol):
    """One run being written: config once, metrics at steps, artifacts, then finish."""

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_artifact(self, path: str) -> None: ...

    def finish(self, status: str = "finished") -> None: ...


@runtime_checkable
class Tracker(Protocol):
    """A tracker adapter: list runs, read their histories, start runs for writing."""

    name: str

    def list_runs(self, selection: Selection) -> pd.DataFrame:
        """Runs table (RunSet.runs layout) of the runs the selection admits."""
        ...

    def read_history(self, runs: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
        """Wide history (run_id, step, one column per key) of the given runs; all keys when None."""
        ...

    def start_run(self, name: str, config: Mapping[str, Any] | None = None) -> RunWriter:
        """Start a run for writing."""
        ...


def read_runset(tracker: Tracker, selection: Selection, keys: Sequence[str] | None) -> RunSet:
    """Select runs and read their histories for the given metric keys into a RunSet."""
    runs = tracker.list_runs(selection)
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
    return RunSet(runs, history, warnings + list(getattr(tracker, "warnings", [])))
