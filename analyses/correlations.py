"""Analysis `correlations`: do two runs (or run groups) rank the members of a metric family alike?

The Fira question: are the scaling factors of low-rank training ranked like those of full-rank training, per
matrix and per sampled column? From a LONG table (``run_id, name, step, key, value``; recipe ``metric_family``):

- the family is given by patterns with named groups (``scaling_factor/sampling{matrix}/{column}``); each pattern is
  one level, named after its last group (or the mapping key it is given under);
- each series (run x key) is reduced over a step window (mean, median or last value in ``steps: [from, to]``),
  a side with several runs averages its runs per key;
- the two sides are aligned on the family's group values (keys on one side only are counted and warned about);
- a step one side missed (not logged, or NaN) is counted and warned about per level: Fira's template (``np.mean``
  over the steps, then scipy) would give NaN there; ``align: logged`` (the default) reduces each series over the steps
  it logged, ``align: common_steps`` reduces every series of a level over the steps at which every run of both sides
  logged every key of that level (``summary.alignment`` has the counts either way);
- Spearman and Kendall tau-b with p-values (exactly ``scipy.stats.spearmanr`` / ``kendalltau``) per level, with
  seeded bootstrap CIs over keys, and optionally the same correlations at every logged step (``over_time``).
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, List, Optional

import numpy as np
import pandas as pd

from analyses.correlations_report import render_correlations
from toolkit.columns import require_columns
from toolkit.errors import UserError
from toolkit.progress import progress_bar
from toolkit.protocol import AnalysisBase
from toolkit.runset import CONFIG_PREFIX, Selection
from toolkit.settings import Choice, Settings, as_settings, at_least, boot_count, ci_level, fail

REQUIRED_COLUMNS = ("run_id", "name", "step", "key", "value")
NAME = "correlations"
DEFAULT_FAMILY = {
    "matrix": "scaling_factor/scaling_factor{matrix}",
    "column": "scaling_factor/sampling{matrix}/{column}",
}
_GROUP = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]+))?\}")


# ----------------------------------------------------------------------------------------------- settings


Reduce = Choice("Reduce", {"mean": "mean", "median": "median", "last": "last"}, module=__name__)  # of each series
# which steps each series is reduced over: the steps it logged, or the steps both sides logged for every key of a level
Align = Choice("Align", {"logged": "logged", "common_steps": "common_steps"}, module=__name__)


@dataclass
class CorrelationsBootstrap:
    """Bootstrap over keys for the CIs (n: 0 switches it off)."""

    n: int = boot_count(1000)
    seed: int = 0
    level: float = ci_level()


@dataclass
class CorrelationsSettings(Settings):
    """Every knob of the correlations analysis; see conf/analysis/correlations.yaml."""

    a: Any = "lowrank"
    b: Any = "fullrank"
    family: Any = field(default_factory=lambda: dict(DEFAULT_FAMILY))
    reduce: Reduce = Reduce.mean
    steps: Optional[List[Optional[float]]] = None
    align: Align = Align.logged
    bootstrap: CorrelationsBootstrap = field(default_factory=CorrelationsBootstrap)
    over_time: bool = False
    over_time_every: int = at_least(1, 1, "a step count")
    who: ClassVar[str] = NAME

    def __post_init__(self) -> None:
        self.patterns = parse_family(self.family)
        for side in ("a", "b"):
            side_selection(getattr(self, side), side)
        if self.steps is not None and len(self.steps) != 2:
            raise fail(NAME, "steps", self.steps, "[from, to] (either may be null) or null")
        super().__post_init__()


def settings_of(params: Mapping[str, Any] | CorrelationsSettings | None) -> CorrelationsSettings:
    """Checked settings; a ``family`` given in a mapping replaces the default family (a config file's merges into it)."""
    if isinstance(params, Mapping) and "family" in params:
        rest = as_settings(CorrelationsSettings, {k: v for k, v in params.items() if k != "family"}, who=NAME)
        return replace(rest, family=params["family"])
    return as_settings(CorrelationsSettings, params, who=NAME)


# ----------------------------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class FamilyPattern:
    """One level of a metric family: a key pattern with named groups, compiled to a regex."""

    level: str
    pattern: str
    regex: re.Pattern
    groups: tuple[str, ...]

    def match(self, key: str) -> tuple[str, ...] | None:
        """The group values of ``key``, or None when it is not a member of this level."""
        m = self.regex.fullmatch(key)
        return None if m is None else tuple(m.group(g) for g in self.groups)


def compile_pattern(pattern: str, level: str | None = None) -> FamilyPattern:
    """Compile ``prefix{group}/{other}`` (optionally ``{group:regex}``) to a regex; the level defaults to the last group."""
    if not isinstance(pattern, str) or not pattern:
        raise UserError(f"{NAME}.family: expected a key pattern such as 'scaling_factor/scaling_factor{{matrix}}', got {pattern!r}")
    parts: list[str] = []
    groups: list[str] = []
    pos = 0
    for m in _GROUP.finditer(pattern):
        parts.append(re.escape(pattern[pos:m.start()]))
        name, sub = m.group(1), m.group(2)
        if name in groups:
            raise UserError(f"{NAME}.family: pattern '{pattern}' uses group '{{{name}}}' twice; expected distinct names")
        groups.append(name)
        parts.append(f"(?P<{name}>{sub or '[^/]+'})")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    if not groups:
        raise UserError(f"{NAME}.family: pattern '{pattern}' has no named group; expected e.g. 'scaling_factor/sampling{{matrix}}/{{column}}'")
    try:
        regex = re.compile("".join(parts))
    except re.error as exc:
        raise UserError(f"{NAME}.family: pattern '{pattern}' does not compile: {exc}") from None
    return FamilyPattern(level or groups[-1], pattern, regex, tuple(groups))


def parse_family(family: Any) -> list[FamilyPattern]:
    """Patterns from a string, a list of strings, or a mapping ``{level: pattern}`` (a null pattern drops that level);
    None gives the Fira family."""
    if family is None or (isinstance(family, (list, dict)) and not family):
        family = DEFAULT_FAMILY
    if isinstance(family, str):
        pats = [compile_pattern(family)]
    elif isinstance(family, Mapping):
        pats = [compile_pattern(str(p), str(level)) for level, p in family.items() if p is not None]
    elif isinstance(family, Sequence):
        pats = [compile_pattern(str(p)) for p in family]
    else:
        raise UserError(f"{NAME}.family: expected a pattern, a list of patterns or {{level: pattern}}, got {type(family).__name__}")
    levels = [p.level for p in pats]
    dup = sorted({lv for lv in levels if levels.count(lv) > 1})
    if dup:
        raise UserError(f"{NAME}.family: two patterns define level '{dup[0]}'; name them: family: {{level: pattern}}")
    return pats


def family_members(keys: Sequence[str], patterns: Sequence[FamilyPattern]) -> pd.DataFrame:
    """One row per (key, level) the patterns match: ``key, level, member`` (group values joined by '/') and the groups."""
    rows: list[dict[str, Any]] = []
    for key in keys:
        for p in patterns:
            values = p.match(str(key))
            if values is not None:
                rows.append({"key": key, "level": p.level, "member": "/".join(values), **dict(zip(p.groups, values))})
    return pd.DataFrame(rows, columns=None if rows else ["key", "level", "member"])


# ----------------------------------------------------------------------------------------------- statistics


def rank_correlation(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Spearman and Kendall tau-b with p-values (scipy's) of two aligned vectors; NaN where undefined."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise UserError(f"{NAME}: expected two aligned 1-D vectors, got shapes {a.shape} and {b.shape}")
    n = int(a.size)
    out = {"spearman": np.nan, "spearman_p": np.nan, "kendall": np.nan, "kendall_p": np.nan, "n": n}
    if n < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = stats.spearmanr(a, b)
        k = stats.kendalltau(a, b)
    out.update(spearman=float(s.statistic), spearman_p=float(s.pvalue), kendall=float(k.statistic), kendall_p=float(k.pvalue))
    return out


def _weighted_midranks(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Midranks of ``x`` in each resample given by a row of multiplicities (B x n), as if the sample were expanded."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    group_of = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, xs.size]))
    w_sorted = weights[:, order]
    g_weight = np.add.reduceat(w_sorted, starts, axis=1)
    g_rank = np.cumsum(g_weight, axis=1) - g_weight + (g_weight + 1) / 2.0
    ranks = np.empty_like(w_sorted, dtype=float)
    ranks[:, order] = g_rank[:, group_of]
    return ranks


def bootstrap_spearman(a: np.ndarray, b: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman of each bootstrap resample given as multiplicities (B x n); equals spearmanr on the expanded sample."""
    ra, rb = _weighted_midranks(a, counts), _weighted_midranks(b, counts)
    w = counts.astype(float)
    total = w.sum(axis=1, keepdims=True)
    ma = (w * ra).sum(axis=1, keepdims=True) / total
    mb = (w * rb).sum(axis=1, keepdims=True) / total
    da, db = ra - ma, rb - mb
    cov = (w * da * db).sum(axis=1)
    var = np.sqrt((w * da * da).sum(axis=1) * (w * db * db).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / var, np.nan)


def bootstrap_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 chunk: int = 100, advance: Any = None) -> dict[str, list[float] | None]:
    """Percentile CIs of Spearman and Kendall over keys resampled with replacement (seeded); ``advance(m)`` is
    called after each chunk of ``m`` resamples (a progress bar's ``update``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = a.size
    if n_boot <= 0 or n < 3:
        return {"spearman_ci": None, "kendall_ci": None}
    from scipy import stats

    rng = np.random.default_rng(seed)
    sp: list[np.ndarray] = []
    kt = np.empty(n_boot)
    for done in range(0, n_boot, chunk):
        m = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(m, n))
        counts = np.zeros((m, n), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(m), n), idx.ravel()), 1)
        sp.append(bootstrap_spearman(a, b, counts))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(m):
                kt[done + i] = stats.kendalltau(a[idx[i]], b[idx[i]]).statistic
        if advance is not None:
            advance(m)
    alpha = (1.0 - level) / 2.0

    def ci(values: np.ndarray) -> list[float] | None:
        values = values[np.isfinite(values)]
        return None if values.size == 0 else [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]

    return {"spearman_ci": ci(np.concatenate(sp)), "kendall_ci": ci(kt)}


# ----------------------------------------------------------------------------------------------- sides


def runs_of(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a long table: run_id, name and any config.* columns."""
    first = table["run_id"].drop_duplicates().index
    cols = ["run_id", "name"] + [c for c in table.columns if c.startswith(CONFIG_PREFIX)]
    runs = table.loc[first, cols].reset_index(drop=True)
    for c in runs.columns:
        if isinstance(runs[c].dtype, pd.CategoricalDtype):
            runs[c] = runs[c].astype(object)
    runs["run_id"] = runs["run_id"].astype(str)
    runs["name"] = runs["name"].astype(str)
    return runs


def side_selection(spec: Any, side: str) -> Selection:
    """A run-name regex, or a mapping with name_regex / config / run_ids / tags / state."""
    if spec is None or spec == "":
        raise UserError(f"{NAME}.{side}: no runs chosen; expected a run-name regex or {{name_regex, config, run_ids}}")
    if isinstance(spec, str):
        return Selection(name_regex=spec)
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"name_regex", "config", "run_ids", "tags", "state"}
        if unknown:
            raise UserError(f"{NAME}.{side}: unknown key(s) {', '.join(sorted(unknown))}; expected name_regex, config, run_ids")
        return Selection.from_config(spec)
    if isinstance(spec, Sequence):
        return Selection(run_ids=[str(r) for r in spec])
    raise UserError(f"{NAME}.{side}: expected a run-name regex or a mapping, got {type(spec).__name__}")


def select_side(runs: pd.DataFrame, spec: Any, side: str) -> pd.DataFrame:
    """The runs of one side; fails naming the side and the runs there are when none match."""
    sel = side_selection(spec, side)
    runs = runs.assign(**{col: v for col, v in (("state", "finished"), ("tags", "")) if col not in runs.columns})
    chosen = sel.apply(runs)
    if chosen.empty:
        names = ", ".join(sorted(runs["name"].astype(str).unique())[:10]) or "(none)"
        raise UserError(f"{NAME}.{side}: {spec!r} matched no run; runs in the table: {names}")
    return chosen


# ----------------------------------------------------------------------------------------------- reduction


def _step_mask(steps: np.ndarray, window: Any) -> np.ndarray:
    lo, hi = (None, None) if window is None else window
    mask = np.ones(steps.size, dtype=bool)
    if lo is not None:
        mask &= steps >= float(lo)
    if hi is not None:
        mask &= steps <= float(hi)
    return mask


def family_frame(table: pd.DataFrame, patterns: Sequence[FamilyPattern], run_ids: Sequence[str],
                 window: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The family's rows of the chosen runs inside the step window (``run, key, step, value`` as codes) and its members."""
    keys = table["key"]
    if not isinstance(keys.dtype, pd.CategoricalDtype):
        keys = keys.astype("category")
    members = family_members(list(keys.cat.categories), patterns)
    if members.empty:
        sample = ", ".join(map(str, list(keys.cat.categories)[:5])) or "(none)"
        pats = ", ".join(p.pattern for p in patterns)
        raise UserError(f"{NAME}.family: no metric key matches {pats}; keys in the table include: {sample}")
    key_codes = keys.cat.codes.to_numpy()
    in_family = np.zeros(len(keys.cat.categories), dtype=bool)
    in_family[keys.cat.categories.get_indexer(members["key"].unique())] = True
    run_col = table["run_id"].astype(str) if not isinstance(table["run_id"].dtype, pd.CategoricalDtype) else table["run_id"]
    run_cat = run_col.astype("category") if not isinstance(run_col.dtype, pd.CategoricalDtype) else run_col
    run_cats = run_cat.cat.categories.astype(str)
    chosen = np.isin(run_cats, list(run_ids))
    steps = pd.to_numeric(table["step"], errors="coerce").to_numpy(dtype=float)
    values = pd.to_numeric(table["value"], errors="coerce").to_numpy(dtype=float)
    mask = in_family[key_codes] & chosen[run_cat.cat.codes.to_numpy()] & _step_mask(steps, window) & np.isfinite(values)
    frame = pd.DataFrame({"run_id": pd.Categorical.from_codes(run_cat.cat.codes.to_numpy()[mask], categories=run_cats),
                          "key": key_codes[mask], "step": steps[mask], "value": values[mask]})
    members = members.assign(code=keys.cat.categories.get_indexer(members["key"]))
    return frame, members


def _grid_sums(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums and counts of ``values`` on an (n_rows x n_cols) grid of integer codes."""
    flat = rows.astype(np.int64) * n_cols + cols.astype(np.int64)
    size = n_rows * n_cols
    sums = np.bincount(flat, weights=values, minlength=size).reshape(n_rows, n_cols)
    counts = np.bincount(flat, minlength=size).reshape(n_rows, n_cols)
    return sums, counts


def reduce_series(frame: pd.DataFrame, how: str = "mean") -> pd.DataFrame:
    """One value per (run_id, key) series: mean, median or the value at the last step."""
    how = str(how)
    if frame.empty:
        return pd.DataFrame({"run_id": [], "key": [], "value": []})
    if how == "mean":  # bincount over (run, key) codes: ~10x faster than groupby on 17M rows
        runs = frame["run_id"].astype("category") if not isinstance(frame["run_id"].dtype, pd.CategoricalDtype) else frame["run_id"]
        run_codes = runs.cat.codes.to_numpy().astype(np.int64)
        key_codes = frame["key"].to_numpy().astype(np.int64)  # family_frame's key codes: small non-negative ints
        sums, counts = _grid_sums(run_codes, key_codes, frame["value"].to_numpy(dtype=float), len(runs.cat.categories), int(key_codes.max()) + 1)
        r, k = np.nonzero(counts)
        return pd.DataFrame({"run_id": pd.Categorical.from_codes(r, categories=runs.cat.categories),
                             "key": k, "value": sums[r, k] / counts[r, k]})
    grouped = frame.groupby(["run_id", "key"], sort=False, observed=True)
    if how == "last":
        last = grouped["step"].idxmax()
        out = frame.loc[last.dropna().to_numpy(), ["run_id", "key", "value"]]
    else:
        out = grouped["value"].agg(how).reset_index()
    return out.reset_index(drop=True)


def side_means(reduced: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    """Per key: the mean over the side's runs of their reduced values, and how many runs had it."""
    part = reduced[reduced["run_id"].isin(list(run_ids))]
    return part.groupby("key", sort=True)["value"].agg(value="mean", n_runs="count").reset_index()


def _natural(values: pd.Series) -> pd.Series:
    num = pd.to_numeric(values, errors="coerce")
    return num if num.notna().all() else values.astype(str)


def align_sides(members: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame, level: str, groups: Sequence[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Both sides' values per family member of one level, sorted naturally; members on one side only are counted."""
    from scipy import stats

    m = members[members["level"] == level]
    left = m.merge(a.rename(columns={"key": "code", "value": "a", "n_runs": "a_n_runs"}), on="code", how="left")
    both = left.merge(b.rename(columns={"key": "code", "value": "b", "n_runs": "b_n_runs"}), on="code", how="left")
    has_a, has_b = both["a"].notna(), both["b"].notna()
    only_a = both.loc[has_a & ~has_b, "key"].tolist()
    only_b = both.loc[~has_a & has_b, "key"].tolist()
    aligned = both[has_a & has_b].copy()
    sort_cols = [f"_s{i}" for i in range(len(groups))]
    for col, g in zip(sort_cols, groups):
        aligned[col] = _natural(aligned[g])
    aligned = aligned.sort_values(sort_cols, kind="stable").drop(columns=sort_cols + ["code"])
    for side in ("a", "b"):
        aligned[f"{side}_rank"] = stats.rankdata(aligned[side].to_numpy()) if len(aligned) else []
        aligned[f"{side}_n_runs"] = aligned[f"{side}_n_runs"].astype(int)
    cols = ["level", "member", *groups, "key", "a", "b", "a_rank", "b_rank", "a_n_runs", "b_n_runs"]
    return aligned[cols].reset_index(drop=True), {"only_a": only_a, "only_b": only_b}


def step_coverage(frame: pd.DataFrame, codes: Sequence[int], a_runs: Sequence[str], b_runs: Sequence[str]) -> dict[str, Any]:
    """Which (key, step) values of one level's keys (``codes``) each side misses: the step grid is every step at
    which either side logged one of these keys; a side misses a value when one of its runs (those that logged this
    level) did not log that key at that step (or logged NaN). ``common`` are the steps no side misses for any key."""
    codes = np.unique(np.asarray(codes, dtype=np.int64))
    key = frame["key"].to_numpy().astype(np.int64)
    local = np.full(max(int(key.max()) + 1 if key.size else 0, int(codes.max()) + 1 if codes.size else 0), -1, dtype=np.int64)
    local[codes] = np.arange(codes.size)
    pos = local[key]  # a gather, not a search: this runs on every row of the family (17M for Fira's 1B model)
    in_level = pos >= 0
    s_idx, grid = _step_codes(frame["step"].to_numpy(dtype=float)[in_level])
    flat = pos[in_level] * grid.size + s_idx  # (key, step) cell of each row
    run_codes = frame["run_id"].cat.codes.to_numpy()[in_level]
    cats = np.asarray(frame["run_id"].cat.categories.astype(str))
    out: dict[str, Any] = {"steps": grid, "keys": codes}
    complete = {}
    for side, ids in (("a", a_runs), ("b", b_runs)):
        count = np.zeros((codes.size, grid.size), dtype=np.int32)
        n_runs = 0
        for rc in np.flatnonzero(np.isin(cats, [str(r) for r in ids])):
            mine = run_codes == rc
            if not mine.any():
                continue
            present = np.zeros(codes.size * grid.size, dtype=bool)
            present[flat[mine]] = True  # presence, so a row given twice counts once
            count += present.reshape(codes.size, grid.size)
            n_runs += 1
        full = count == n_runs if n_runs else np.zeros_like(count, dtype=bool)
        complete[side] = full
        out[side] = {"n_runs": n_runs, "missing_values": int((~full).sum()),
                     "missing_steps": grid[(~full).any(axis=0)], "missing_keys": codes[(~full).any(axis=1)]}
    out["common"] = grid[(complete["a"] & complete["b"]).all(axis=0)] if codes.size else grid[:0]
    return out


def _step_codes(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code of each step, the sorted distinct steps); integral steps are coded by offset, without sorting or hashing."""
    if steps.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=float)
    lo, hi = float(steps.min()), float(steps.max())
    if hi - lo < 1e7 and np.array_equal(steps, np.floor(steps)):
        raw = (steps - lo).astype(np.int64)
        seen = np.zeros(int(hi - lo) + 1, dtype=bool)
        seen[raw] = True
        remap = np.cumsum(seen) - 1
        return remap[raw], np.flatnonzero(seen).astype(float) + lo
    codes, uniques = pd.factorize(steps, sort=True)
    return codes.astype(np.int64), np.asarray(uniques, dtype=float)


def _steps_text(steps: np.ndarray, limit: int = 5) -> str:
    shown = [f"{v:g}" for v in np.asarray(steps, dtype=float)[:limit]]
    return ", ".join(shown) + (", ..." if len(steps) > limit else "")


def _plain_steps(steps: np.ndarray, limit: int = 20) -> list[float | int]:
    return [int(v) if float(v).is_integer() else float(v) for v in np.asarray(steps, dtype=float)[:limit]]


def coverage_summary(cov: Mapping[str, Any], key_of: Mapping[int, str], align: str) -> dict[str, Any]:
    """The summary.json entry of one level's step coverage (counts, and the first 20 steps and keys)."""
    entry: dict[str, Any] = {"align": str(align), "n_keys": int(len(cov["keys"])), "n_steps": int(len(cov["steps"])),
                             "n_common_steps": int(len(cov["common"]))}
    for side in ("a", "b"):
        c = cov[side]
        entry[side] = {"n_runs": c["n_runs"], "missing_values": c["missing_values"],
                       "missing_steps": int(len(c["missing_steps"])), "missing_keys": int(len(c["missing_keys"])),
                       "steps": _plain_steps(c["missing_steps"]), "keys": [key_of[int(k)] for k in c["missing_keys"][:20]]}
    return entry


def coverage_warning(level: str, cov: Mapping[str, Any], key_of: Mapping[int, str], align: str) -> str | None:
    """The one-line warning of a level whose sides missed steps (None when neither did)."""
    if cov["a"]["missing_values"] == 0 and cov["b"]["missing_values"] == 0:
        return None
    total = len(cov["keys"]) * len(cov["steps"])
    parts = []
    for side in ("a", "b"):
        c = cov[side]
        if c["missing_values"] == 0:
            parts.append(f"side {side} misses none")
            continue
        keys = ", ".join(key_of[int(k)] for k in c["missing_keys"][:3]) + (", ..." if len(c["missing_keys"]) > 3 else "")
        parts.append(f"side {side} misses {c['missing_values']} of {total} (key, step) value(s): "
                     f"{len(c['missing_steps'])} step(s) ({_steps_text(c['missing_steps'])}) of "
                     f"{len(c['missing_keys'])} key(s) ({keys})")
    n_common, n_steps = len(cov["common"]), len(cov["steps"])
    if str(align) == "common_steps":
        how = (f"align=common_steps: every series of the level is reduced over the {n_common} of {n_steps} step(s) at "
               f"which both sides logged every key" if n_common else
               "align=common_steps: no step has every key on both sides, so the level has no correlation")
    else:
        how = (f"each series is reduced over the steps it logged (Fira's template gives NaN here); "
               f"analysis.correlations.align=common_steps uses only the {n_common} of {n_steps} step(s) at which both "
               f"sides logged every key")
    return f"level {level}: " + "; ".join(parts) + f"; {how}"


def correlations_over_time(frame: pd.DataFrame, members: pd.DataFrame, a_runs: Sequence[str], b_runs: Sequence[str],
                           levels: Sequence[str], every: int = 1) -> pd.DataFrame:
    """Spearman and Kendall across a level's members at each step both sides logged (sides averaged over runs)."""
    rows: list[dict[str, Any]] = []
    all_steps, step_codes = np.unique(frame["step"].to_numpy(dtype=float), return_inverse=True)
    key_codes = frame["key"].to_numpy().astype(np.int64)
    n_codes = int(members["code"].max()) + 1 if len(members) else 0
    grids, logged = [], []
    for ids in (a_runs, b_runs):
        mask = frame["run_id"].isin(list(ids)).to_numpy()
        sums, counts = _grid_sums(step_codes[mask], key_codes[mask], frame["value"].to_numpy(dtype=float)[mask], all_steps.size, n_codes)
        with np.errstate(invalid="ignore", divide="ignore"):
            grids.append(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))
        logged.append(counts.sum(axis=1) > 0)
    keep = np.flatnonzero(logged[0] & logged[1])[:: max(int(every), 1)]
    for level in levels:
        codes = np.sort(members.loc[members["level"] == level, "code"].to_numpy())
        if codes.size == 0:
            continue
        mats = [g[np.ix_(keep, codes)] for g in grids]
        for i, step in zip(range(keep.size), all_steps[keep]):
            ok = np.isfinite(mats[0][i]) & np.isfinite(mats[1][i])
            rows.append({"level": level, "step": step, **rank_correlation(mats[0][i][ok], mats[1][i][ok])})
    out = pd.DataFrame(rows, columns=["level", "step", "spearman", "spearman_p", "kendall", "kendall_p", "n"])
    if len(out) and np.all(np.mod(out["step"].to_numpy(dtype=float), 1) == 0):
        out["step"] = out["step"].astype("int64")
    return out


def _aligned_on_steps(frame: pd.DataFrame, level_members: pd.DataFrame, cov: Mapping[str, Any], how: Any,
                      a_ids: Sequence[str], b_ids: Sequence[str], pattern: FamilyPattern) -> pd.DataFrame:
    """One level's aligned table with every series reduced over the level's common steps only."""
    codes = level_members["code"].to_numpy()
    key = frame["key"].to_numpy().astype(np.int64)
    in_level = np.zeros(max(int(key.max()) + 1, int(codes.max()) + 1 if codes.size else 0), dtype=bool)
    in_level[codes] = True
    keep = in_level[key] & (pd.Index(cov["common"]).get_indexer(frame["step"].to_numpy(dtype=float)) >= 0)
    sub = frame[keep].reset_index(drop=True)
    if sub.empty:
        a_vals = b_vals = pd.DataFrame({"key": pd.Series(dtype=np.int64), "value": pd.Series(dtype=float),
                                        "n_runs": pd.Series(dtype=np.int64)})
    else:
        reduced = reduce_series(sub, how)
        a_vals, b_vals = side_means(reduced, a_ids), side_means(reduced, b_ids)
    aligned, _ = align_sides(level_members, a_vals, b_vals, pattern.level, pattern.groups)
    return aligned


# ----------------------------------------------------------------------------------------------- entry point


def correlate(table: pd.DataFrame, params: Mapping[str, Any] | CorrelationsSettings | None,
              warn=lambda message: None, progress: bool = False) -> dict[str, Any]:
    """All the numbers of the analysis (no files): summary, aligned table and optional over-time table; ``progress``
    shows a bar over the bootstrap resamples."""
    s = settings_of(params)
    require_columns(table, REQUIRED_COLUMNS, NAME)
    patterns = s.patterns
    runs = runs_of(table)
    side_a, side_b = select_side(runs, s.a, "a"), select_side(runs, s.b, "b")
    a_ids, b_ids = side_a["run_id"].tolist(), side_b["run_id"].tolist()
    overlap = sorted(set(a_ids) & set(b_ids))
    if overlap:
        names = ", ".join(runs.loc[runs["run_id"].isin(overlap), "name"].astype(str).head(5))
        if set(a_ids) == set(b_ids):
            raise UserError(f"{NAME}: sides a and b select the same run(s) ({names}); expected two different runs or groups")
        warn(f"{len(overlap)} run(s) are on both sides: {names}")
    frame, members = family_frame(table, patterns, a_ids + b_ids, s.steps)
    if frame.empty:
        raise UserError(f"{NAME}: the chosen runs logged no family value in steps {s.steps!r}")
    present = set(members["level"])
    for p in patterns:
        if p.level not in present:
            warn(f"level {p.level}: no metric key matches '{p.pattern}'; the level is left out")
    patterns = [p for p in patterns if p.level in present]
    reduced = reduce_series(frame, s.reduce)
    a_vals, b_vals = side_means(reduced, a_ids), side_means(reduced, b_ids)
    boot = s.bootstrap

    summary: dict[str, Any] = {}
    aligned_parts: list[pd.DataFrame] = []
    unmatched: dict[str, Any] = {}
    alignment: dict[str, Any] = {}
    key_of = dict(zip(members["code"].astype(int), members["key"].astype(str)))
    with progress_bar(boot.n * len(patterns), "correlations bootstrap", enabled=progress, unit="resample") as bar:
        for p in patterns:
            aligned, missing = align_sides(members, a_vals, b_vals, p.level, p.groups)
            for side, keys in (("a", missing["only_a"]), ("b", missing["only_b"])):
                if keys:
                    warn(f"level {p.level}: {len(keys)} key(s) only on side {side} (left out of the correlation), e.g. {', '.join(map(str, keys[:3]))}")
            unmatched[p.level] = {"only_a": len(missing["only_a"]), "only_b": len(missing["only_b"]),
                                  "only_a_keys": missing["only_a"][:20], "only_b_keys": missing["only_b"][:20]}
            level_members = members[(members["level"] == p.level) & members["key"].isin(aligned["key"])]
            cov = step_coverage(frame, level_members["code"].to_numpy(), a_ids, b_ids)
            alignment[p.level] = coverage_summary(cov, key_of, s.align)
            note = coverage_warning(p.level, cov, key_of, s.align)
            if note is not None:
                warn(note)
                if s.align == Align.common_steps:
                    aligned = _aligned_on_steps(frame, level_members, cov, s.reduce, a_ids, b_ids, p)
            x, y = aligned["a"].to_numpy(), aligned["b"].to_numpy()
            res = rank_correlation(x, y)
            if s.align == Align.common_steps and len(cov["keys"]) and not len(cov["common"]):
                res["reason"] = "align=common_steps: no step at which both sides logged every key of the level"
            if res["n"] < 3:
                warn(f"level {p.level}: only {res['n']} key(s) on both sides; need >= 3 for a correlation")
            elif not np.isfinite(res["spearman"]):
                warn(f"level {p.level}: one side's values are all equal; the rank correlation is undefined")
            res.update(bootstrap_ci(x, y, n_boot=boot.n, seed=boot.seed, level=boot.level, advance=bar.update))
            if boot.n > 0 and x.size < 3:  # bootstrap_ci skips a level with < 3 keys: its share of the bar is done
                bar.update(boot.n)
            summary[p.level] = res
            aligned_parts.append(aligned)
    aligned_all = pd.concat(aligned_parts, ignore_index=True) if aligned_parts else pd.DataFrame()
    group_cols = list(dict.fromkeys(g for p in patterns for g in p.groups))
    front = ["level", "member", *group_cols, "key"]
    aligned_all = aligned_all[front + [c for c in aligned_all.columns if c not in front]]

    over_time = None
    if s.over_time:
        over_time = correlations_over_time(frame, members, a_ids, b_ids, [p.level for p in patterns], every=s.over_time_every)
        ot_summary: dict[str, Any] = {}
        for level, g in over_time.groupby("level", sort=False):
            sp = g["spearman"].to_numpy(dtype=float)
            ot_summary[level] = {"n_steps": int(len(g)), "spearman_first": sp[0], "spearman_last": sp[-1],  # g has rows
                                 "spearman_min": float(np.nanmin(sp)) if np.isfinite(sp).any() else None,
                                 "spearman_median": float(np.nanmedian(sp)) if np.isfinite(sp).any() else None}
        summary["over_time"] = ot_summary

    sides = {name: {"select": spec, "n_runs": len(ids), "runs": side["name"].astype(str).tolist()}
             for name, spec, ids, side in (("a", s.a, a_ids, side_a), ("b", s.b, b_ids, side_b))}
    summary.update(sides=sides, unmatched=unmatched, alignment=alignment, align=s.align.value, reduce=s.reduce.value,
                   steps=s.steps, bootstrap={"n": boot.n, "seed": boot.seed, "level": boot.level})
    return {"summary": summary, "aligned": aligned_all, "over_time": over_time}


def run(table: pd.DataFrame, params: Mapping[str, Any] | CorrelationsSettings | None, out: Any) -> dict[str, Any]:
    """Correlate the two sides per level; write aligned.csv, the rank scatter (PNG and interactive HTML) and (if
    asked) the over-time line."""
    from analyses import correlations_plots as plots

    result = correlate(table, params, out.warn, progress=bool(getattr(out, "progress", False)))
    out.table("aligned", result["aligned"])
    levels = [lv for lv in result["summary"] if lv in set(result["aligned"]["level"])] if len(result["aligned"]) else []
    if levels:
        caption = (f"Rank of each {' and each '.join(levels)} on side a vs side b, one panel per level "
                   f"(dashed: identical ranking), with Spearman and Kendall")
        out.figure("rank_scatter", plots.plot_rank_scatter(result["aligned"], result["summary"], levels), caption=caption)
        out.figure("rank_scatter", plots.rank_scatter_interactive(result["aligned"], result["summary"], levels),
                   caption=caption + "; hover a point for its member, key, ranks and values")
    if result["over_time"] is not None:
        out.table("over_time", result["over_time"])
        if len(result["over_time"]):
            out.figure("over_time", plots.plot_over_time(result["over_time"]),
                       caption="Spearman (solid) and Kendall (dashed) between the sides at every step both logged, per level")
    return result["summary"]


class Correlations(AnalysisBase):
    """The correlations analysis (``_target_: analyses.correlations.Correlations``)."""

    name = NAME
    settings_type = CorrelationsSettings
    REQUIRED_COLUMNS = REQUIRED_COLUMNS
    report_tables = staticmethod(render_correlations)

    def run(self, table: pd.DataFrame, settings: CorrelationsSettings, out: Any) -> dict[str, Any]:
        """See the module-level ``run``."""
        return run(table, settings, out)
