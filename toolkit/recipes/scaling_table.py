"""Recipe ``scaling_table``: one row per (model, checkpoint) with N, D, C, loss (plus grouping columns).

Three shapes of input give the same table:
- tracker histories, one run per model size (or several, e.g. an lr sweep): N from the run config
  (``columns.N``), every logged step a point, D = step * tokens_per_step or a logged tokens column (``columns.D``);
  the table keeps ``run_id`` and ``step``;
- flat files read by ``tracker=local`` (each row a run ``row-<i>`` at step 0, its columns in ``config.*`` and the
  numeric ones in the history): the named columns are read as they are; every row is a point, so the placeholder
  ``run_id``/``step`` are not kept;
- ``loader: misfitting | warmstarting | porian`` with ``path``: the seeds' public data through
  ``toolkit.scaling_data`` (the tracker is not used; Porian et al.'s pickle only with ``allow_pickle: true``).
C is ``columns.C`` when named, else flops_per_token * D when given, else the loader's C, else 6 N D. Rows with
non-positive or non-finite N, D, C or loss are reported and dropped; so are diverged points (``divergence``, see
``toolkit.divergence``: an overflowing loss, or a blow-up over the run's early loss or the median at the same D; a
run stays diverged over its later steps), named in a warning. ``best_over`` keeps, for each (N, D)
(+ ``keep_columns``), the row with the lowest loss over the listed columns (e.g. the best peak_lr per (N, D)); the
rows then stand for (N, D) points rather than one run's checkpoints, so ``run_id`` and ``step`` are dropped.
The options, their defaults and types are ``ScalingTableSettings`` (documented in conf/recipe/scaling_table.yaml).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd

from toolkit import scaling_data
from toolkit.divergence import DivergenceSettings, find_diverged
from toolkit.errors import UserError
from toolkit.recipes import TableRecipe, as_list, one_point_per_run, recipe_hints
from toolkit.runset import CONFIG_PREFIX, SUMMARY_PREFIX, RunSet
from toolkit.settings import Choice, Settings, as_settings, fail

WHO = "recipe scaling_table"


class Loader(Choice):
    """A public data set read through ``toolkit.scaling_data`` instead of the tracker."""

    misfitting = "misfitting"
    warmstarting = "warmstarting"
    porian = "porian"


@dataclass
class ScalingColumns:
    """Where N, D, C and loss come from: a history metric, else the run config, else the run summary."""

    N: Optional[str] = "N"
    D: Optional[str] = "D"
    C: Optional[str] = None
    loss: Optional[str] = "loss"


@dataclass
class ScalingTableSettings(Settings):
    """Every option of the recipe; see conf/recipe/scaling_table.yaml."""

    columns: ScalingColumns = field(default_factory=ScalingColumns)
    tokens_per_step: Any = None
    flops_per_token: Any = None
    best_over: Any = field(default_factory=list)
    keep_columns: Any = field(default_factory=list)
    loader: Optional[Loader] = None
    path: Optional[str] = None
    allow_pickle: bool = False
    loader_options: Dict[str, Any] = field(default_factory=dict)
    divergence: DivergenceSettings = field(default_factory=DivergenceSettings)

    def __post_init__(self) -> None:
        for key in ("tokens_per_step", "flops_per_token"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (type(None), str, int, float)):
                raise fail(WHO, key, value, "a number or the config key that holds it")
        self.best_over = as_list(self.best_over, WHO, "best_over")
        self.keep_columns = as_list(self.keep_columns, WHO, "keep_columns")
        if self.loader is not None and not self.path:
            raise fail(WHO, "path", self.path, f"the file that loader={self.loader} reads")


def needs_tracker(params: Any) -> bool:
    """False when a loader reads the data itself (the tracker is then not read at all)."""
    return as_settings(ScalingTableSettings, params, who=WHO).loader is None


def metric_keys(params: Any) -> list[str]:
    """History keys to read: the loss, and D and C when they are named logged columns (none with a loader)."""
    s = as_settings(ScalingTableSettings, params, who=WHO)
    if s.loader is not None:
        return []
    cols = s.columns
    return [k for k in (cols.loss, cols.D if s.tokens_per_step is None else None, cols.C) if k]


def lookup_column(frame: pd.DataFrame, name: str) -> pd.Series | None:
    """A column by name: as it is, then as config.<name>, then summary.<name> (first one not all empty)."""
    present = [c for c in (name, CONFIG_PREFIX + name, SUMMARY_PREFIX + name) if c in frame.columns]
    filled = [c for c in present if frame[c].notna().any()]
    return frame[(filled or present)[0]] if present else None


def _number(frame: pd.DataFrame, spec: Any, what: str) -> pd.Series | None:
    """A number given directly, or the name of a column holding it (per row)."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return pd.Series(float(spec), index=frame.index)
    series = lookup_column(frame, str(spec))
    if series is None:
        raise UserError(f"{WHO}: recipe.{what}='{spec}' is neither a number nor a column; columns: {_have(frame)}")
    return _numeric(series)


def _numeric(series: pd.Series) -> pd.Series:
    """Numbers as floats (big integers and numeric strings included); anything else NaN."""
    return pd.to_numeric(series, errors="coerce").astype(float)


class KeptColumnMissing(UserError):
    """A column asked for besides N, D, C and loss is not in the source."""


def _have(frame: pd.DataFrame) -> str:
    """The column names of a frame, for error messages (config./summary. prefixes kept)."""
    names = [str(c) for c in frame.columns]
    return ", ".join(names[:40]) + (" ..." if len(names) > 40 else "") if names else "(none)"


def _required(frame: pd.DataFrame, name: str | None, key: str, hint: str) -> pd.Series:
    """A required numeric column, or a one-line error naming it and what is there."""
    series = lookup_column(frame, name) if name else None
    if series is None:
        raise UserError(f"{WHO}: no column '{name}' for {key} (set recipe.columns.{key}{hint}); columns: {_have(frame)}")
    return _numeric(series)


def table_from_frame(frame: pd.DataFrame, s: ScalingTableSettings, warn: Callable[[str], None],
                     *, from_history: bool = False, keep_run_columns: bool = True,
                     default_c: str | None = None) -> pd.DataFrame:
    """The scaling table of a flat frame (a CSV read with pandas, or a RunSet's history joined with its runs).

    ``default_c``: a column of the frame used for C when neither ``columns.C`` nor ``flops_per_token`` is set
    (a loader's C); ``keep_run_columns``: carry ``run_id`` and ``step`` over (not for one-point-per-row tables).
    """
    cols, keep, best_over = s.columns, s.keep_columns, s.best_over
    out = pd.DataFrame(index=frame.index)
    out["loss"] = _required(frame, cols.loss, "loss", "=<loss column>")
    out["N"] = _required(frame, cols.N, "N", "=<config key with the parameter count>")
    tokens_per_step = _number(frame, s.tokens_per_step, "tokens_per_step")
    d_series = lookup_column(frame, cols.D) if cols.D else None
    if d_series is not None and _numeric(d_series).notna().any() and tokens_per_step is None:
        out["D"] = _numeric(d_series)
    elif tokens_per_step is not None:
        if "step" not in frame.columns:
            raise UserError(f"{WHO}: recipe.tokens_per_step needs a step column; columns: {_have(frame)}")
        out["D"] = _numeric(frame["step"]) * tokens_per_step
    else:
        raise UserError(f"{WHO}: no column '{cols.D}' for D; set recipe.columns.D=<tokens column> or "
                        f"recipe.tokens_per_step=<tokens per step or config key>; columns: {_have(frame)}")
    flops_per_token = _number(frame, s.flops_per_token, "flops_per_token")
    if cols.C:
        out["C"] = _required(frame, cols.C, "C", "=<compute column> or null to derive it")
    elif flops_per_token is not None:
        out["C"] = out["D"] * flops_per_token
    elif default_c is not None and default_c in frame.columns:
        out["C"] = _numeric(frame[default_c])
    else:
        out["C"] = 6.0 * out["N"] * out["D"]
    for name in ("run_id", "step"):
        if name in frame.columns and keep_run_columns:
            out[name] = frame[name].to_numpy()
    for name in dict.fromkeys(keep + best_over):
        series = lookup_column(frame, name)
        if series is None:
            raise KeptColumnMissing(f"{WHO}: no column '{name}' (named in recipe.keep_columns or recipe.best_over, or "
                                    f"grouped by in an analysis, e.g. analysis.scaling_laws.group_by); columns: {_have(frame)}")
        out[name] = series.to_numpy()
    if from_history:
        out = out[out["loss"].notna()]  # steps where another metric was logged, not the loss
    out = _drop_diverged(out, frame, s, warn)
    out = _drop_bad_rows(out, warn)
    if best_over:
        out = best_rows(out, keys=["N", "D", *keep], warn=warn)
        out = out.drop(columns=[c for c in ("run_id", "step") if c in out.columns and c not in keep + best_over])
    return out.reset_index(drop=True)


def _drop_diverged(table: pd.DataFrame, frame: pd.DataFrame, s: ScalingTableSettings,
                   warn: Callable[[str], None]) -> pd.DataFrame:
    """Drop (and name) the points of diverged runs (toolkit.divergence): per run_id over its steps when the frame
    holds run curves, else each row on its own (the overflow rule and the median at its D)."""
    if not len(table):
        return table
    curves = "run_id" in frame.columns and "step" in frame.columns and not frame["run_id"].is_unique
    label: Callable[[Any], str] = str
    if curves:
        run = frame.loc[table.index, "run_id"].astype(str).to_numpy()
        order = pd.to_numeric(frame.loc[table.index, "step"], errors="coerce").to_numpy(float)
        if "name" in frame.columns:  # warnings name runs by their names
            names = dict(zip(frame["run_id"].astype(str), frame["name"].astype(str)))
            label = lambda rid: names.get(rid, rid)  # noqa: E731
    else:
        run = np.array([f"row {i}" for i in table.index], dtype=object)
        order = None
    div = find_diverged(table["loss"].to_numpy(float), run, order, table["D"].to_numpy(float), s.divergence,
                        position_name="D", run_label=label)
    if not div.n_runs:
        return table
    warn(div.message(WHO, "dropped", step="step" if curves else None))
    return table.loc[~div.diverged]


def _drop_bad_rows(table: pd.DataFrame, warn: Callable[[str], None]) -> pd.DataFrame:
    """Drop (and report, with a count and examples) rows whose N, D, C or loss is not a positive finite number."""
    values = table[["N", "D", "C", "loss"]].to_numpy(float)
    bad_cells = ~np.isfinite(values) | (values <= 0)
    bad = bad_cells.any(axis=1)
    if bad.any():
        examples = []
        for pos in np.flatnonzero(bad)[:3]:
            label = table["run_id"].iloc[pos] if "run_id" in table.columns else table.index[pos]
            step = f" step {table['step'].iloc[pos]}" if "step" in table.columns else ""
            cells = ", ".join(f"{c}={values[pos, j]:g}" for j, c in enumerate(("N", "D", "C", "loss")) if bad_cells[pos, j])
            examples.append(f"{label}{step} ({cells})")
        warn(f"{WHO}: dropped {int(bad.sum())} of {len(table)} rows with non-positive or non-finite N, D, C or loss, "
             f"e.g. {'; '.join(examples)}")
    return table.loc[~bad]


def best_rows(table: pd.DataFrame, keys: Sequence[str], warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """For each combination of ``keys`` (e.g. N, D), the row with the lowest loss."""
    if not len(table):
        return table
    grouped = table.groupby(list(keys), sort=True, dropna=False)["loss"]
    best = table.loc[grouped.idxmin()].sort_values(list(keys), kind="stable")
    if warn is not None and len(best) < len(table):
        warn(f"{WHO}: kept the lowest-loss row of each ({', '.join(keys)}): {len(best)} of {len(table)} rows")
    return best


def joined_history(runset: RunSet) -> pd.DataFrame:
    """The history with each run's config and summary columns attached."""
    history = runset.history.assign(run_id=runset.history["run_id"].astype(str))
    runs = runset.runs.assign(run_id=runset.runs["run_id"].astype(str))
    extra = [c for c in runs.columns if c == "run_id" or c not in history.columns]
    return history.merge(runs[extra], on="run_id", how="left")


def load_source(s: ScalingTableSettings) -> tuple[pd.DataFrame, bool]:
    """The frame of ``recipe.loader`` and whether it holds per-run curves (run_id, step)."""
    name, path, options = s.loader, str(s.path), dict(s.loader_options)
    try:
        if name == "misfitting":
            return scaling_data.load_misfitting(path, **options), False
        if name == "warmstarting":
            return scaling_data.load_warmstarting(path, **options), False
        options.setdefault("allow_pickle", s.allow_pickle)
        return scaling_data.load_porian(path, **options), True
    except TypeError as exc:  # an unknown loader option
        raise UserError(f"{WHO}: recipe.loader_options for {name}: {exc}") from None


def build(runset: RunSet, params: Any, warn: Callable[[str], None]) -> pd.DataFrame:
    """The scaling table of a RunSet (tracker histories or a flat file read by tracker=local), or of the file
    ``recipe.path`` read by ``recipe.loader`` (the RunSet is then ignored); ``params``: a mapping or the settings."""
    s = as_settings(ScalingTableSettings, params, who=WHO)
    if s.loader is not None:
        frame, curves = load_source(s)
        table = table_from_frame(frame, s, warn, keep_run_columns=curves, default_c="C")
    else:
        if not len(runset.history):
            raise UserError(f"{WHO}: the tracker returned no history rows (check tracker.path and select)")
        points = one_point_per_run(runset)  # a flat table: a row without a loss is a bad row, not a gap
        try:
            table = table_from_frame(joined_history(runset), s, warn, from_history=not points, keep_run_columns=not points)
        except KeptColumnMissing:  # an extra column asked for: the source itself fits this recipe
            raise
        except UserError as exc:  # a missing column: the source may be meant for another recipe
            hints = recipe_hints(runset, "scaling_table", "recipe.columns.loss")
            if not hints:
                raise
            raise UserError(f"{exc}; {'; '.join(hints[:2])}") from None
    if not len(table):
        raise UserError(f"{WHO}: no rows with positive finite N, D, C and loss are left")
    return table


class ScalingTable(TableRecipe):
    """The scaling_table recipe (``_target_: toolkit.recipes.scaling_table.ScalingTable``)."""

    settings_type = ScalingTableSettings
    metric_keys = staticmethod(metric_keys)
    needs_tracker = staticmethod(needs_tracker)
    make_table = staticmethod(build)
