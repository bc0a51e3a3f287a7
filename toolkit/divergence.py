"""Divergence: which points of a sweep's loss curves belong to a run that has blown up (one rule for every recipe).

A point is diverged when its loss is

- non-finite (``inf``/``-inf``; NaN is a point that was not logged, not a divergence), or
- an overflow: ``|loss| >= max_abs`` (default 1e300; MLflow stores +inf as 1.7976931348623157e308, float64's
  max, and reads it back so), or
- a finite blow-up: above ``early_factor`` x the run's own early loss (the median of its first ``early_points``
  usable points; those points are the reference, not judged by it, so a steep first drop is never a blow-up), or
  above ``median_factor`` x the median loss over the runs at the same position (e.g. the same token horizon; only
  where at least ``min_runs`` points are there).

A run does not recover: once a point of a run is diverged, every later point of that run is diverged too.
``enabled: false`` keeps only the first rule, point by point (the behaviour before this module).

The defaults leave healthy curves alone with a wide margin: on the demo sweep (``toolkit.demo``, losses falling from
about 6 to 2.6) and the bundled example the largest loss / early loss is 1.14 and the largest loss / median at a
horizon 1.8 (1.36 on the default lr grid), while a blow-up is flagged from 5x its early loss (a training loss
stays near or below its early value; 5x leaves room for loss spikes) or 10x the sweep's median.

``find_diverged`` is a pure function of arrays (vectorised: 2M points in a fraction of a second); recipes call it
with their run, order (step or horizon) and position (horizon) columns and report ``Divergence.message``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np
import pandas as pd

from toolkit.settings import at_least, bounded, check_bounds

WHO = "divergence"
FACTOR = "a factor > 1, or null to switch the rule off"
NONFINITE, OVERFLOW, EARLY, MEDIAN = 1, 2, 3, 4  # reason codes, in the order they are told


@dataclass
class DivergenceSettings:
    """When a loss point counts as diverged (see toolkit/divergence.py); a factor null switches its rule off."""

    enabled: bool = True
    max_abs: float = bounded(1.0e300, "a threshold > 0 (|loss| at or above it is an overflow)", gt=0)
    early_factor: Optional[float] = bounded(5.0, FACTOR, gt=1, lt=math.inf)
    early_points: int = at_least(3, 1)
    median_factor: Optional[float] = bounded(10.0, FACTOR, gt=1, lt=math.inf)
    min_runs: int = at_least(3, 1)
    who: ClassVar[str] = WHO

    def __post_init__(self) -> None:
        check_bounds(self, WHO, "divergence.")

    def rule(self, metric: str = "loss", position: str | None = "horizon") -> str:
        """The rule in words, for warnings."""
        if not self.enabled:
            return f"non-finite {metric}"
        parts = [f"non-finite or |{metric}| >= {self.max_abs:g}"]
        if self.early_factor is not None:
            parts.append(f"> {self.early_factor:g}x the run's early {metric}")
        if self.median_factor is not None and position:
            parts.append(f"> {self.median_factor:g}x the median at its {position}")
        return ", ".join(parts) + "; a run stays diverged"


@dataclass
class Divergence:
    """``diverged``: per input point; ``runs``: one row per diverged run (run, step, value, reason) at its first
    diverged point, in the order the runs were given."""

    diverged: np.ndarray
    runs: pd.DataFrame
    rule: str

    @property
    def n_runs(self) -> int:
        return int(len(self.runs))

    def message(self, who: str, what: str = "set to NaN", step: str | None = "step", k: int = 5) -> str:
        """``who: K run(s) diverged (rule: ...; their points from there on <what>): run-a at step s (why), ...``
        (``step``: what orders a run's points, None for one-point runs)."""
        at = (lambda r: f" at {step} {_fmt(r.step)}") if step else (lambda r: "")
        shown = [f"{r.run}{at(r)} ({r.reason})" for r in self.runs.head(k).itertuples()]
        more = f" and {self.n_runs - k} more" if self.n_runs > k else ""
        return (f"{who}: {self.n_runs} run(s) diverged (rule: {self.rule}; their points from there on {what}): "
                f"{', '.join(shown)}{more}")


def _fmt(value: Any) -> str:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{int(f)}" if math.isfinite(f) and f == int(f) and abs(f) < 1e15 else f"{f:g}"


def point_flags(loss: np.ndarray, s: DivergenceSettings) -> np.ndarray:
    """Per point: 0, NONFINITE (+-inf) or OVERFLOW (|loss| >= max_abs); NaN is 0 (not logged)."""
    loss = np.asarray(loss, float)
    out = np.zeros(loss.shape, np.int8)
    out[np.isinf(loss)] = NONFINITE
    if s.enabled:
        with np.errstate(invalid="ignore"):
            out[np.isfinite(loss) & (np.abs(loss) >= s.max_abs)] = OVERFLOW
    return out


def find_diverged(loss: Sequence[float], run: Sequence[Any], order: Sequence[float] | None = None,
                  position: Sequence[Any] | None = None, settings: DivergenceSettings | None = None,
                  *, metric: str = "loss", position_name: str = "horizon",
                  run_label: Callable[[Any], str] = str) -> Divergence:
    """The diverged points of ``loss`` (one value per point).

    ``run``: the run of each point (any labels); ``order``: what orders a run's points (step, tokens; None: as
    given); ``position``: the key of the median rule (e.g. the horizon; None: no median rule). Points of several
    runs may come in any order.
    """
    s = settings if settings is not None else DivergenceSettings()
    loss = np.asarray(loss, float)
    n = loss.size
    codes, labels = pd.factorize(pd.Series(run, dtype=object).to_numpy() if n else np.zeros(0, object),
                                 use_na_sentinel=False)  # a missing run label is a run of its own, not code -1
    codes = codes.astype(np.int64)
    reason = point_flags(loss, s)
    usable = np.isfinite(loss) & (reason == 0)
    against = np.full(n, np.nan)  # the reference a blow-up is measured against
    rule = s.rule(metric, position_name if position is not None else None)
    if s.enabled and n:
        if s.early_factor is not None:
            ref, rank = early_reference(loss, codes, order, usable, s.early_points, len(labels))
            with np.errstate(invalid="ignore"):  # the early points are the reference, not judged by it
                hit = usable & (rank >= s.early_points) & (ref[codes] > 0) & (loss > s.early_factor * ref[codes])
            against[hit] = ref[codes[hit]]
            reason[hit] = EARLY
        if s.median_factor is not None and position is not None:
            med = position_median(loss, position, usable, s.min_runs)
            with np.errstate(invalid="ignore"):
                hit = usable & (reason == 0) & (med > 0) & (loss > s.median_factor * med)
            against[hit] = med[hit]
            reason[hit] = MEDIAN
    flagged = reason > 0
    if not flagged.any():
        return Divergence(np.zeros(n, bool), pd.DataFrame(columns=["run", "step", "value", "reason"]), rule)
    key = np.arange(n, dtype=float) if order is None else np.asarray(order, float)
    # first flagged point of each run (smallest order; ties: the first given)
    idx = np.flatnonzero(flagged)
    first = idx[np.lexsort((idx, key[idx], codes[idx]))]
    first = first[np.r_[True, codes[first][1:] != codes[first][:-1]]]
    start = np.full(len(labels), np.inf)
    start[codes[first]] = key[first]
    diverged = key >= start[codes] if s.enabled else flagged  # disabled: only the non-finite points themselves
    why = [_reason(int(reason[i]), loss[i], against[i], s, metric, position_name) for i in first]
    summary = pd.DataFrame({"run": [run_label(labels[codes[i]]) for i in first], "step": key[first],
                            "value": loss[first], "reason": why})
    return Divergence(diverged, summary, rule)  # runs in the order they first appear (factorize's codes)


def _reason(code: int, value: float, ref: float, s: DivergenceSettings, metric: str, position_name: str) -> str:
    if code == NONFINITE:
        return f"{metric} {value:g}"
    if code == OVERFLOW:
        return f"{metric} {value:.6g} >= {s.max_abs:g}: an overflow, as MLflow stores inf"
    if code == EARLY:
        return f"{metric} {value:.4g} > {s.early_factor:g}x its early {metric} {ref:.4g}"
    return f"{metric} {value:.4g} > {s.median_factor:g}x the median {ref:.4g} at its {position_name}"


def early_reference(loss: np.ndarray, codes: np.ndarray, order: Sequence[float] | None, usable: np.ndarray,
                    k: int, n_runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Per run: the median of its first ``k`` usable points (by ``order``; NaN for a run without one); and per
    point its rank among its run's usable points (-1 for the others)."""
    ref = np.full(n_runs, np.nan)
    rank_of = np.full(loss.size, -1, np.int64)
    idx = np.flatnonzero(usable)
    if not idx.size:
        return ref, rank_of
    key = idx.astype(float) if order is None else np.asarray(order, float)[idx]
    idx = idx[np.lexsort((idx, key, codes[idx]))]
    c = codes[idx]
    starts = np.r_[0, np.flatnonzero(c[1:] != c[:-1]) + 1]
    counts = np.diff(np.r_[starts, c.size])
    rank = np.arange(c.size) - np.repeat(starts, counts)
    rank_of[idx] = rank
    keep = rank < k
    early = pd.Series(loss[idx[keep]]).groupby(c[keep]).median()
    ref[early.index.to_numpy()] = early.to_numpy()
    return ref, rank_of


def position_median(loss: np.ndarray, position: Sequence[Any], usable: np.ndarray, min_runs: int) -> np.ndarray:
    """Per point: the median of the usable losses at its position (NaN where fewer than ``min_runs`` are there)."""
    pos_codes = pd.factorize(pd.Series(position).to_numpy())[0].astype(np.int64)
    out = np.full(loss.size, np.nan)
    sel = usable & (pos_codes >= 0)
    if not sel.any():
        return out
    grouped = pd.Series(loss[sel]).groupby(pos_codes[sel])
    med, count = grouped.median(), grouped.size()
    table = np.full(int(pos_codes.max()) + 1, np.nan)
    enough = count.to_numpy() >= min_runs
    table[med.index.to_numpy()[enough]] = med.to_numpy()[enough]
    ok = pos_codes >= 0
    out[ok] = table[pos_codes[ok]]
    return out
