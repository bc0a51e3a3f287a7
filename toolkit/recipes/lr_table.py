"""Recipe lr_table: a flat table of checkpoints (one row per run and point) -> the sweep Table that minima reads.

For sweeps logged outside a tracker's step histories, e.g. the (Mis)Fitting survey's CSV (model, peak_lr, D, loss):
``columns`` names the source columns of lr, horizon (tokens), loss and the second sweep axis that lands in the
``bs`` column (a batch size, or e.g. the model size N; null: a single value, 1). Rows with the same
(keep_columns, bs, lr, horizon) are reduced to one: ``min`` keeps the lowest loss (a point reached by several runs,
e.g. checkpoints of runs with different schedules, as scaling surveys do), ``mean`` averages them.
Each (keep_columns, bs, lr) becomes one run, so a bootstrap over runs has nothing to resample here. Diverged
points (``divergence``, see ``toolkit.divergence``: a non-finite or overflowing loss, or a blow-up over the run's
early loss or the median at its horizon; a run stays diverged over its larger horizons) are dropped and named in a
warning, before the reduction.
The options, their defaults and types are ``LrTableSettings`` (documented in conf/recipe/lr_table.yaml).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np
import pandas as pd

from toolkit.divergence import DivergenceSettings, find_diverged
from toolkit.errors import UserError
from toolkit.recipes import TableRecipe, recipe_hints
from toolkit.recipes.scaling_table import joined_history, lookup_column
from toolkit.runset import RunSet
from toolkit.settings import Choice, Settings, as_settings

WHO = "recipe lr_table"


class Reduce(Choice):
    """Several rows at one (keep_columns, bs, lr, horizon): keep the lowest loss, or average them."""

    min = "min"
    mean = "mean"


@dataclass
class LrTableColumns:
    """Source columns of each axis (a plain column, or a run's config/summary value); bs and output_norm optional."""

    lr: str = "lr"
    horizon: str = "horizon"
    loss: str = "loss"
    bs: Optional[str] = None
    output_norm: Optional[str] = None


@dataclass
class LrTableSettings(Settings):
    """Every option of the recipe; see conf/recipe/lr_table.yaml."""

    columns: LrTableColumns = field(default_factory=LrTableColumns)
    keep_columns: List[str] = field(default_factory=list)
    reduce: Reduce = Reduce.min
    divergence: DivergenceSettings = field(default_factory=DivergenceSettings)


def _column(frame: pd.DataFrame, name: str | None, axis: str, required: bool,
            runset: RunSet | None = None) -> pd.Series | None:
    series = lookup_column(frame, name) if name else None
    if series is None and required:
        names = ", ".join(str(c) for c in frame.columns[:40])
        hints = recipe_hints(runset, "lr_table", "recipe.columns.loss" if axis == "loss" else None) if runset else []
        raise UserError(f"{WHO}: no column '{name}' for {axis} (set recipe.columns.{axis}); columns: {names}"
                        + "".join(f"; {h}" for h in hints[:2]))
    return None if series is None else pd.to_numeric(series, errors="coerce").astype(float)


def build(runset: RunSet, params: Any, warn: Callable[[str], None]) -> pd.DataFrame:
    """The Table ``run_id, name, lr, bs, horizon, train_loss[, output_norm], <keep_columns>`` of a flat table."""
    s = as_settings(LrTableSettings, params, who=WHO)
    if not len(runset.history):
        raise UserError(f"{WHO}: the tracker returned no rows (check tracker.path and select)")
    columns, reduce, keep = s.columns, s.reduce, s.keep_columns
    frame = joined_history(runset)
    table = pd.DataFrame(index=frame.index)
    for col in keep:
        series = lookup_column(frame, col)
        if series is None:
            raise UserError(f"{WHO}: recipe.keep_columns: no column '{col}'")
        table[col] = series.to_numpy()
    table["lr"] = _column(frame, columns.lr, "lr", True, runset)
    table["bs"] = _column(frame, columns.bs, "bs", True, runset) if columns.bs else 1.0
    table["horizon"] = _column(frame, columns.horizon, "horizon", True, runset)
    table["train_loss"] = _column(frame, columns.loss, "loss", True, runset)
    norm = _column(frame, columns.output_norm, "output_norm", False)
    if norm is not None:
        table["output_norm"] = norm
    values = table[["lr", "bs", "horizon"]].to_numpy(float)
    axes_ok = (np.isfinite(values) & (values > 0)).all(axis=1)
    diverged = _diverged(table, keep, axes_ok, s, warn)
    bad = (~axes_ok | np.isnan(table["train_loss"].to_numpy(float))) & ~diverged
    if bad.any():
        first = frame.iloc[int(np.flatnonzero(bad)[0])]
        warn(f"{WHO}: dropped {int(bad.sum())} of {len(table)} rows with a missing, non-positive or non-finite lr, bs, "
             f"horizon or loss (first: run '{first.get('run_id', '?')}')")
    table = table[~bad & ~diverged]
    if not len(table):
        raise UserError(f"{WHO}: no rows with positive lr, bs, horizon and a finite loss are left")
    keys = [*keep, "bs", "lr", "horizon"]
    if reduce == "min":
        reduced = table.loc[table.groupby(keys, sort=True, dropna=False)["train_loss"].idxmin()]
    else:
        reduced = table.groupby(keys, sort=True, dropna=False, as_index=False).mean(numeric_only=True)
    if len(reduced) < len(table):
        warn(f"{WHO}: {len(table)} rows reduced to {len(reduced)} points, one per ({', '.join(keys)}) ({reduce} loss)")
    run = _run_labels(reduced, keep)
    reduced = reduced.assign(run_id=run.to_numpy(), name=run.to_numpy(), step=0)
    order = ["run_id", "name", "lr", "bs", "horizon", "step", "train_loss", *(["output_norm"] if norm is not None else []), *keep]
    return reduced[order].sort_values([*keep, "bs", "lr", "horizon"], kind="stable").reset_index(drop=True)


def _run_labels(table: pd.DataFrame, keep: list[str]) -> pd.Series:
    """The run each row becomes: ``<keep values>/<bs>/<lr>``, or ``bs=<bs>/lr=<lr>`` without keep_columns."""
    if keep:
        return table[[*keep, "bs", "lr"]].astype(str).agg("/".join, axis=1)
    return "bs=" + table["bs"].map("{:g}".format) + "/lr=" + table["lr"].map("{:g}".format)


def _diverged(table: pd.DataFrame, keep: list[str], axes_ok: np.ndarray, s: LrTableSettings,
              warn: Callable[[str], None]) -> np.ndarray:
    """Rows whose run (keep_columns, bs, lr) has diverged by their horizon (toolkit.divergence); warned once."""
    out = np.zeros(len(table), bool)
    if not axes_ok.any():
        return out
    rows = table[axes_ok]
    div = find_diverged(rows["train_loss"].to_numpy(float), _run_labels(rows, keep).to_numpy(),
                        rows["horizon"].to_numpy(float), rows["horizon"].to_numpy(float), s.divergence)
    if div.n_runs:
        warn(div.message(WHO, "dropped", step="horizon"))
    out[np.flatnonzero(axes_ok)[div.diverged]] = True
    return out


class LrTable(TableRecipe):
    """The lr_table recipe (``_target_: toolkit.recipes.lr_table.LrTable``); reads every key (config values too)."""

    settings_type = LrTableSettings
    make_table = staticmethod(build)
