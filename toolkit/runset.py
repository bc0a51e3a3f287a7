"""RunSet: the tracker-independent shape of a sweep (a runs table and a wide history table)."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from toolkit.errors import UserError

RUN_COLUMNS = ("run_id", "name", "state", "created_at", "tags")
CONFIG_PREFIX = "config."
SUMMARY_PREFIX = "summary."


@dataclass
class RunSet:
    """``runs``: one row per run (run_id, name, state, created_at, tags, config.*, summary.*).

    ``history``: one row per (run_id, step), one column per metric key, NaN where not logged.
    """

    runs: pd.DataFrame
    history: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [col for col in RUN_COLUMNS if col not in self.runs.columns]
        if missing:  # a copy: the caller's frame is never changed
            self.runs = self.runs.assign(**{col: ("" if col == "tags" else None) for col in missing})
        if "run_id" not in self.history.columns or "step" not in self.history.columns:
            raise ValueError("RunSet.history needs run_id and step columns")

    @property
    def config_keys(self) -> list[str]:
        """Flattened config keys present in the runs table (without the prefix)."""
        return [c[len(CONFIG_PREFIX):] for c in self.runs.columns if c.startswith(CONFIG_PREFIX)]

    @property
    def summary_keys(self) -> list[str]:
        """Summary keys present in the runs table (without the prefix)."""
        return [c[len(SUMMARY_PREFIX):] for c in self.runs.columns if c.startswith(SUMMARY_PREFIX)]

    @property
    def metric_keys(self) -> list[str]:
        """Metric columns of the history table."""
        return [c for c in self.history.columns if c not in ("run_id", "step")]

    def normalized(self) -> "RunSet":
        """Rows and columns in a canonical order, so RunSets from different trackers compare equal."""
        runs = self.runs.copy()
        runs["run_id"] = runs["run_id"].astype(str)
        fixed = [c for c in RUN_COLUMNS if c in runs.columns]
        rest = sorted(c for c in runs.columns if c not in fixed)
        runs = runs[fixed + rest].sort_values("name", kind="stable").reset_index(drop=True)
        hist = self.history.copy()
        hist["run_id"] = hist["run_id"].astype(str)
        hist["step"] = hist["step"].astype("int64")
        metrics = sorted(c for c in hist.columns if c not in ("run_id", "step"))
        for m in metrics:
            hist[m] = pd.to_numeric(hist[m], errors="coerce").astype(float)
        hist = hist[["run_id", "step", *metrics]].sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)
        return RunSet(runs, hist, list(self.warnings))


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and "value" not in value:
            flat.update(flatten_config(value, name + "."))
        elif isinstance(value, Mapping) and set(value) <= {"value", "desc"}:
            flat[name] = value.get("value")  # W&B's {"value": ..., "desc": ...} form
        else:
            flat[name] = value
    return flat


def coerce_number(value: Any) -> Any:
    """Turn numeric strings ('1e-3', '42', 'true') back into numbers/bools; leave the rest."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null", ""):
        return None
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return value


@dataclass
class Selection:
    """Which runs to read: all conditions must hold (values within a list are alternatives)."""

    name_regex: Optional[str] = None
    config: Dict[str, Any] = field(default_factory=dict)
    state: List[str] = field(default_factory=list)
    tags: List[str] = field(default_factory=list)
    run_ids: List[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: Any) -> "Selection":
        """Build from the config's ``select`` node, a plain mapping or a Selection."""
        if isinstance(cfg, Selection):
            return cfg
        cfg = dict(cfg or {})

        def as_list(v: Any) -> list:
            if v is None:
                return []
            return [v] if isinstance(v, (str, int, float)) else list(v)

        return cls(
            name_regex=cfg.get("name_regex") or None,
            config={str(k): v for k, v in dict(cfg.get("config") or {}).items()},
            state=[str(s) for s in as_list(cfg.get("state"))],
            tags=[str(t) for t in as_list(cfg.get("tags"))],
            run_ids=[str(r) for r in as_list(cfg.get("run_ids"))],
        )

    def apply(self, runs: pd.DataFrame) -> pd.DataFrame:
        """Keep the rows of a runs table that this selection admits."""
        keep = np.ones(len(runs), dtype=bool)
        if self.name_regex:
            try:
                pattern = re.compile(self.name_regex)
            except re.error as exc:
                raise UserError(f"select.name_regex '{self.name_regex}' is not a valid regex: {exc}") from None
            keep &= runs["name"].astype(str).map(lambda s: bool(pattern.search(s))).to_numpy()
        for key, wanted in self.config.items():
            col = key if key in runs.columns else CONFIG_PREFIX + key
            if col not in runs.columns:
                have = ", ".join(c[len(CONFIG_PREFIX):] for c in runs.columns if c.startswith(CONFIG_PREFIX))
                raise UserError(f"select.config: no run has config key '{key}'; config keys: {have or '(none)'}")
            options = wanted if isinstance(wanted, (list, tuple)) else [wanted]
            keep &= runs[col].map(lambda v: _matches(v, options)).to_numpy()
        if self.state:
            keep &= runs["state"].astype(str).isin(self.state).to_numpy()
        if self.tags:
            wanted_tags = set(self.tags)
            keep &= runs["tags"].fillna("").astype(str).map(lambda t: bool(wanted_tags & set(_split_tags(t)))).to_numpy()
        if self.run_ids:
            keep &= runs["run_id"].astype(str).isin(self.run_ids).to_numpy()
        return runs.loc[keep].reset_index(drop=True)


def _split_tags(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _matches(value: Any, options: Iterable[Any]) -> bool:
    value = coerce_number(value)
    for option in options:
        option = coerce_number(option)
        if isinstance(value, (int, float)) and isinstance(option, (int, float)) and not isinstance(value, bool):
            if np.isclose(float(value), float(option), rtol=1e-9, atol=0.0):
                return True
        elif str(value) == str(option):
            return True
    return False


def empty_runset() -> RunSet:
    """A RunSet with no runs (for analyses that need no tracker data)."""
    return RunSet(pd.DataFrame(columns=list(RUN_COLUMNS)), pd.DataFrame(columns=["run_id", "step"]))


STRING_DTYPE = pd.Series(["x"]).dtype  # pandas' default string dtype (arrow-backed in pandas 3)


def take_strings(values: np.ndarray, codes: np.ndarray) -> Any:
    """``values[codes]`` as a string column, built in arrow when that is pandas' string storage (no Python objects)."""
    if getattr(STRING_DTYPE, "storage", None) == "pyarrow":
        import pyarrow as pa

        taken = pa.array([str(v) for v in values], type=pa.large_string()).take(pa.array(codes))
        return taken.to_pandas(types_mapper=lambda _t: STRING_DTYPE)
    return values[codes].astype(str)


def runs_frame(rows: list[dict[str, Any]], tags_dtype: Any = object) -> pd.DataFrame:
    """The runs table (RunSet.runs layout) of ``rows``: the fixed columns first (empty where no row has them), then
    the config and summary columns, each sorted."""
    table = pd.DataFrame(rows)
    for col in RUN_COLUMNS:
        if col not in table.columns:
            table[col] = pd.Series(dtype=tags_dtype if col == "tags" else object)
    config = sorted(c for c in table.columns if c.startswith(CONFIG_PREFIX))
    summary = sorted(c for c in table.columns if c.startswith(SUMMARY_PREFIX))
    return table[[*RUN_COLUMNS, *config, *summary]]


def history_frame(run_ids: Sequence[str], counts: np.ndarray, steps: np.ndarray, values: np.ndarray,
                  metrics: Sequence[str]) -> pd.DataFrame:
    """A wide history: run_id (each of ``run_ids`` repeated ``counts`` times), step and the metric columns (the
    value block not copied)."""
    history = pd.DataFrame(values, columns=list(metrics), copy=False)
    history.insert(0, "step", steps)
    codes = np.repeat(np.arange(len(run_ids)), counts)
    history.insert(0, "run_id", take_strings(np.array(list(run_ids), dtype=object), codes))
    return history
