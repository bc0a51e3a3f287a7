"""Recipe `metric_family`: a LONG table (run_id, name, step, key, value[, config.*]) of a family of metric keys.

For analyses that need each run's identity and the metric key of every value (``correlations``). The family is
given by key patterns with named groups (``scaling_factor/sampling{matrix}/{column}``); with ``ranges`` (e.g.
``{matrix: [1, 168], column: [1, 100]}``) the keys are spelled out so only they are read (the 16,968-key case),
otherwise every key is read and the pattern filters them. The melt keeps only logged values (NaN dropped), with
``run_id``, ``name`` and ``key`` as categoricals, so 17M values take about 0.3 GB.
The options, their defaults and types are ``MetricFamilySettings`` (documented in conf/recipe/metric_family.yaml).
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from toolkit.errors import UserError
from toolkit.recipes import TableRecipe, as_list
from toolkit.runset import CONFIG_PREFIX, RunSet
from toolkit.settings import Settings, as_settings, fail

_GROUP = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]+))?\}")
MAX_AUTO_CONFIG = 20
WHO = "recipe metric_family"


@dataclass
class MetricFamilySettings(Settings):
    """Every option of the recipe; see conf/recipe/metric_family.yaml."""

    family: Any = None
    ranges: Optional[Dict[str, Any]] = None
    keys: Optional[List[str]] = None
    config: Any = "auto"

    def __post_init__(self) -> None:
        family = self.family
        if isinstance(family, Mapping):
            family = list(family.values())
        self.patterns = as_list(family, WHO, "family")
        self.regexes = [pattern_regex(p) for p in self.patterns]
        if self.ranges and not self.patterns and not self.keys:
            raise fail(WHO, "ranges", self.ranges, "a family pattern to expand (recipe.family)")
        if self.config not in (None, "auto"):
            self.config = as_list(self.config, WHO, "config")


def _pattern_parts(pattern: str) -> tuple[list[str], list[tuple[str, str | None]]]:
    """The literal texts of a pattern (one more than its groups: before, between and after them) and its groups
    as (name, regex or None)."""
    pieces = _GROUP.split(pattern)  # text, then name, regex, text for each group
    return pieces[::3], list(zip(pieces[1::3], pieces[2::3]))


def pattern_regex(pattern: str) -> re.Pattern:
    """``a{x}/b{y}`` -> a regex with named groups (``{x:regex}`` narrows a group; default: no '/')."""
    texts, groups = _pattern_parts(pattern)
    regex = re.escape(texts[0]) + "".join(f"(?P<{name}>{rx or '[^/]+'}){re.escape(text)}"
                                          for (name, rx), text in zip(groups, texts[1:]))
    try:
        return re.compile(regex)
    except re.error as exc:
        raise UserError(f"recipe.family: pattern '{pattern}' does not compile: {exc}") from None


def _range_values(spec: Any, group: str) -> list[str]:
    if isinstance(spec, Mapping):
        spec = [spec.get("from"), spec.get("to")]
    if isinstance(spec, (int, np.integer)):
        return [str(i) for i in range(1, int(spec) + 1)]
    if isinstance(spec, Sequence) and len(spec) == 2 and all(isinstance(v, (int, np.integer)) for v in spec):
        return [str(i) for i in range(int(spec[0]), int(spec[1]) + 1)]
    raise UserError(f"recipe.ranges.{group}: expected [first, last] (inclusive integers) or a count, got {spec!r}")


def expand_pattern(pattern: str, ranges: Mapping[str, Any]) -> list[str]:
    """All keys of a pattern for the given inclusive group ranges (``{matrix: [1, 168], column: [1, 100]}``)."""
    texts, parts = _pattern_parts(pattern)
    groups = [name for name, _ in parts]
    missing = [g for g in groups if g not in ranges]
    if missing:
        raise UserError(f"recipe.ranges: pattern '{pattern}' needs a range for {', '.join(missing)}; have {', '.join(ranges) or '(none)'}")
    values = [_range_values(ranges[g], g) for g in groups]
    return [texts[0] + "".join(v + t for v, t in zip(combo, texts[1:])) for combo in itertools.product(*values)]


def metric_keys(params: Any) -> list[str] | None:
    """Explicit ``keys``, else the family spelled out from ``ranges``, else None (read all, filter by pattern)."""
    s = as_settings(MetricFamilySettings, params, who=WHO)
    if s.keys:
        return list(s.keys)
    if s.ranges:
        return list(dict.fromkeys(k for p in s.patterns for k in expand_pattern(p, s.ranges)))
    return None


def _config_columns(runs: pd.DataFrame, wanted: Any) -> list[str]:
    cols = [c for c in runs.columns if c.startswith(CONFIG_PREFIX)]
    if wanted in (None, "auto"):
        varying = [c for c in cols if runs[c].astype(str).nunique(dropna=False) > 1]
        return varying[:MAX_AUTO_CONFIG]
    chosen = []
    for key in wanted:
        col = key if str(key).startswith(CONFIG_PREFIX) else CONFIG_PREFIX + str(key)
        if col not in runs.columns:
            have = ", ".join(c[len(CONFIG_PREFIX):] for c in cols) or "(none)"
            raise UserError(f"recipe.config: no run has config key '{key}'; config keys: {have}")
        chosen.append(col)
    return chosen


def melt_history(history: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Wide history -> long (run_id, step, key, value) with NaN dropped; run_id and key categorical."""
    n_rows = len(history)
    if n_rows == 0 or not keys:
        return pd.DataFrame({"run_id": pd.Categorical([]), "step": np.array([], dtype=np.int64),
                             "key": pd.Categorical([], categories=list(keys)), "value": np.array([], dtype=float)})
    values = np.empty((n_rows, len(keys)), dtype=float)
    for j, key in enumerate(keys):  # column by column: no copy of the whole frame, numeric coercion per key
        values[:, j] = pd.to_numeric(history[key], errors="coerce").to_numpy(dtype=float)
    rows, cols = np.nonzero(~np.isnan(values))
    run_cat = history["run_id"].astype(str).astype("category")
    steps = pd.to_numeric(history["step"], errors="coerce").to_numpy()
    return pd.DataFrame({
        "run_id": pd.Categorical.from_codes(run_cat.cat.codes.to_numpy()[rows], categories=run_cat.cat.categories),
        "step": steps[rows],
        "key": pd.Categorical.from_codes(cols.astype(np.int32), categories=list(keys)),
        "value": values[rows, cols],
    })


def _per_run_categorical(per_run: Sequence[str], run_codes: np.ndarray) -> pd.Categorical:
    """A categorical column from one value per run category, indexed by the rows' run codes (no per-row strings)."""
    cats = pd.Index(pd.unique(np.asarray(per_run, dtype=object)))
    value_codes = cats.get_indexer(list(per_run)).astype(np.int32)
    return pd.Categorical.from_codes(value_codes[run_codes] if len(run_codes) else np.array([], dtype=np.int32), categories=cats)


def build(runset: RunSet, params: Any, warn: Callable[[str], None]) -> pd.DataFrame:
    """The long table of the family's keys for every selected run (plus the config columns asked for)."""
    s = as_settings(MetricFamilySettings, params, who=WHO)
    pats = s.regexes
    metrics = runset.metric_keys
    keys = [k for k in metrics if any(r.fullmatch(str(k)) for r in pats)] if pats else list(metrics)
    if pats and not keys and metrics:
        sample = ", ".join(map(str, metrics[:5]))
        warn(f"metric_family: no history key matches {', '.join(s.patterns)}; keys include: {sample}")
    long = melt_history(runset.history, keys)
    if runset.runs.empty:
        return long.assign(name=pd.Categorical([]))[["run_id", "name", "step", "key", "value"]]
    runs = runset.runs.assign(run_id=runset.runs["run_id"].astype(str)).drop_duplicates("run_id")
    cats = long["run_id"].cat.categories
    idx = pd.Index(runs["run_id"]).get_indexer(cats)
    unknown = [str(c) for c, i in zip(cats, idx) if i < 0]
    if unknown:
        warn(f"metric_family: history has run(s) not in the runs table: {', '.join(unknown[:3])}")
    codes = long["run_id"].cat.codes.to_numpy()
    long["name"] = _per_run_categorical([str(runs["name"].iloc[i]) if i >= 0 else str(c) for c, i in zip(cats, idx)], codes)
    for col in _config_columns(runs, s.config):
        long[col] = _per_run_categorical([str(runs[col].iloc[i]) if i >= 0 else "" for i in idx], codes)
    front = ["run_id", "name", "step", "key", "value"]
    return long[front + [c for c in long.columns if c not in front]]


class MetricFamily(TableRecipe):
    """The metric_family recipe (``_target_: toolkit.recipes.metric_family.MetricFamily``)."""

    settings_type = MetricFamilySettings
    metric_keys = staticmethod(metric_keys)
    make_table = staticmethod(build)
