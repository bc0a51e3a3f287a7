"""Learning-rate x batch-size sweep -> one row per (run, logged step) with the token horizon (norm-transfer style).

Output Table columns, in this order:

    run_id, name, lr, bs, seed, momentum, decayed, lr_in, lr_hidden, lr_out, step, horizon, train_loss, output_norm

``lr`` float (> 0), ``bs`` int64, ``seed`` Int64 (<NA> when unknown), ``momentum``/``lr_in``/``lr_hidden``/``lr_out``
float (NaN when absent), ``decayed`` bool (False when absent), ``step`` and ``horizon`` int64 (tokens:
``bs * step * seq_len``, or the logged ``tokens_key``), ``train_loss`` and ``output_norm`` float (NaN where not
logged or non-finite; ``train_loss`` is NaN too from the point where a run diverged: non-finite, an overflow such
as MLflow's stored inf, or a blow-up over the run's early loss or the median at its horizon, see
``toolkit.divergence``; the warning names each run and its step). With ``aggregate_seeds: true`` the rows are per (configuration, step)
and ``run_id``, ``name`` and ``seed`` are dropped; ``train_loss`` / ``output_norm`` are means over seeds, next to
``train_loss_std``, ``train_loss_count`` (seeds with a finite loss) and ``output_norm_std`` (sample std, NaN for one).

Hyperparameters come from the run config (``config_keys``: first key present wins) and otherwise from the run
name (``name_patterns``: regexes with named groups lr, bs, seed, momentum, decayed, lr_in, lr_hidden, lr_out,
seq_len; ``{float}`` and ``{int}`` stand for number patterns). Per-layer names ``lr-i<in>h<hidden>o<out>-bs-<int>``
give lr_in/lr_hidden/lr_out and ``lr`` = the one named by ``layer_lr`` (default hidden).

The options, their defaults and types are ``LrBsSweepSettings`` (documented in conf/recipe/lr_bs_sweep.yaml).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np
import pandas as pd

from toolkit.divergence import DivergenceSettings, find_diverged
from toolkit.errors import UserError
from toolkit.recipes import TableRecipe, as_list, recipe_hints, source_hint
from toolkit.runset import CONFIG_PREFIX, RunSet, coerce_number
from toolkit.settings import Choice, Settings, as_settings, bounded, fail

WHO = "recipe lr_bs_sweep"
FLOAT = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
INT = r"\d+"
_SUFFIX = r"-bs-(?P<bs>{int})(?:-momentum-(?P<momentum>{float}))?(?:-seed-(?P<seed>{int}))?(?P<decayed>-decayed)?(?=$|[-_/.])"
DEFAULT_PATTERNS = [
    r"(?:^|[-_/])lr-(?P<lr>{float})" + _SUFFIX,
    r"(?:^|[-_/])lr-i(?P<lr_in>{float})h(?P<lr_hidden>{float})o(?P<lr_out>{float})" + _SUFFIX,
]
FIELDS = ("lr", "bs", "seed", "momentum", "decayed", "lr_in", "lr_hidden", "lr_out", "seq_len")
CONFIG_FIELDS = ("lr", "bs", "seed", "momentum", "decayed", "lr_in", "lr_hidden", "lr_out")  # identify a configuration
LayerLr = Choice("LayerLr", {"in": "in", "hidden": "hidden", "out": "out"}, module=__name__)  # which lr is "lr"


@dataclass
class SweepMetrics:
    """History keys that become the Table's train_loss and output_norm (output_norm null: NaN column)."""

    train_loss: str = "train_loss"
    output_norm: Optional[str] = "output_norm"


@dataclass
class ConfigKeys:
    """Run-config keys of each hyperparameter (a key or a list; the first one present wins)."""

    lr: Any = field(default_factory=lambda: ["lr", "optim.lr", "optimizer.lr", "learning_rate"])
    bs: Any = field(default_factory=lambda: ["bs", "batch_size", "training.batch_size", "data.batch_size"])
    seed: Any = field(default_factory=lambda: ["seed"])
    momentum: Any = field(default_factory=lambda: ["momentum", "optim.momentum", "optimizer.momentum"])
    decayed: Any = field(default_factory=lambda: ["decayed"])
    lr_in: Any = field(default_factory=lambda: ["lr_in"])
    lr_hidden: Any = field(default_factory=lambda: ["lr_hidden"])
    lr_out: Any = field(default_factory=lambda: ["lr_out"])
    seq_len: Any = field(default_factory=lambda: ["seq_len", "data.seq_len", "seq_length", "block_size"])

    def __post_init__(self) -> None:
        for name in FIELDS:
            setattr(self, name, as_list(getattr(self, name), WHO, f"config_keys.{name}"))


@dataclass
class SweepFilters:
    """Keep only these runs (null: no filter); a value or a list of alternatives."""

    momentum: Any = None
    decayed: Optional[bool] = None
    seeds: Any = None
    batch_sizes: Any = None

    def __post_init__(self) -> None:
        for name, kind, what in (("momentum", float, "a number"), ("seeds", int, "an integer"),
                                 ("batch_sizes", int, "an integer")):
            value = getattr(self, name)
            try:
                if value is not None:
                    setattr(self, name, [kind(v) for v in (value if isinstance(value, (list, tuple)) else [value])])
            except (TypeError, ValueError):
                raise fail(WHO, f"filters.{name}", value, f"{what} or a list of them") from None


@dataclass
class LrBsSweepSettings(Settings):
    """Every option of the recipe; see conf/recipe/lr_bs_sweep.yaml."""

    metrics: SweepMetrics = field(default_factory=SweepMetrics)
    seq_len: Optional[int] = bounded(None, "a positive integer (tokens per sequence) or null", gt=0)
    tokens_key: Optional[str] = None
    config_keys: ConfigKeys = field(default_factory=ConfigKeys)
    name_patterns: Any = field(default_factory=lambda: list(DEFAULT_PATTERNS))
    layer_lr: LayerLr = LayerLr.hidden
    filters: SweepFilters = field(default_factory=SweepFilters)
    aggregate_seeds: bool = False
    divergence: DivergenceSettings = field(default_factory=DivergenceSettings)
    who: ClassVar[str] = WHO

    def __post_init__(self) -> None:
        if not self.metrics.train_loss:
            raise fail(WHO, "metrics.train_loss", self.metrics.train_loss, "the history key of the training loss")
        super().__post_init__()
        self.name_patterns, self.patterns = as_list(self.name_patterns, WHO, "name_patterns"), []
        for pat in self.name_patterns:
            try:
                self.patterns.append(re.compile(pat.replace("{float}", FLOAT).replace("{int}", INT)))
            except re.error as exc:
                raise fail(WHO, "name_patterns", pat, f"a valid regex ({exc})") from None


def metric_keys(params: Any) -> list[str]:
    """History keys to read: the train-loss and output-norm source keys, and the tokens key when set."""
    s = as_settings(LrBsSweepSettings, params, who=WHO)
    return list(dict.fromkeys(str(k) for k in (s.metrics.train_loss, s.metrics.output_norm, s.tokens_key) if k))


def build(runset: RunSet, params: Any, warn: Callable[[str], None]) -> pd.DataFrame:
    """The sweep Table (see the module docstring for its columns); ``params``: a mapping or the settings."""
    s = as_settings(LrBsSweepSettings, params, who=WHO)
    loss_key = s.metrics.train_loss
    if loss_key in runset.history.columns and len(runset.history) and not runset.history[loss_key].notna().any():
        hint = source_hint(runset, "lr_bs_sweep", metric_keys(s), "recipe.metrics.train_loss")
        raise UserError(f"{WHO}: no run logged '{loss_key}' (metrics.train_loss); {hint}")
    try:
        runs = _resolve_runs(runset.runs, s, warn)
    except UserError as exc:  # e.g. no lr/bs anywhere: the source may be meant for another recipe
        hints = recipe_hints(runset, "lr_bs_sweep")
        if not hints:
            raise
        raise UserError(f"{exc}; {'; '.join(hints[:2])}") from None
    runs = _apply_filters(runs, s.filters)
    runs = runs.sort_values(["bs", "lr", "seed", "name"], kind="stable").reset_index(drop=True)
    table = _long_table(runset.history, runs, s, warn)
    if table.empty:
        hint = source_hint(runset, "lr_bs_sweep", metric_keys(s), "recipe.metrics.train_loss")
        raise UserError(f"{WHO}: none of the {len(runs)} selected run(s) logged '{loss_key}' (metrics.train_loss); {hint}")
    table = _dedupe(table, runs, warn)
    return aggregate_seeds(table) if s.aggregate_seeds else table


class LrBsSweep(TableRecipe):
    """The lr x bs sweep recipe (``_target_: toolkit.recipes.lr_bs_sweep.LrBsSweep``)."""

    settings_type = LrBsSweepSettings
    metric_keys = staticmethod(metric_keys)
    make_table = staticmethod(build)


# --- hyperparameters per run -------------------------------------------------------------------------------------


def _parse_names(names: pd.Series, patterns: list[re.Pattern]) -> pd.DataFrame:
    """Hyperparameters parsed from each unique run name (NaN where no pattern gives them)."""
    parsed: dict[str, dict[str, Any]] = {}
    for name in names.unique():
        values: dict[str, Any] = {}
        for pat in patterns:
            match = pat.search(str(name))
            if match:
                for col, text in match.groupdict().items():
                    if col == "decayed":
                        values[col] = bool(text)
                    elif col in FIELDS and text is not None:
                        values[col] = float(text)
                break
        parsed[name] = values
    return pd.DataFrame([parsed[n] for n in names], index=names.index, columns=list(FIELDS))


def _config_values(runs: pd.DataFrame, hp: str, keys: list[str]) -> pd.Series:
    """First present config value per run among ``keys`` (numbers; bools for decayed)."""
    out = pd.Series(np.nan, index=runs.index, dtype=object)
    for key in keys:
        col = CONFIG_PREFIX + str(key)
        if col not in runs.columns:
            continue
        raw = runs[col].map(coerce_number)
        if hp == "decayed":
            bad = raw.notna() & ~raw.map(lambda v: isinstance(v, (bool, np.bool_, int, np.integer, float)))
        else:
            bad = raw.notna() & ~raw.map(lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
        if bad.any():
            i = bad.to_numpy().nonzero()[0][0]
            raise UserError(f"{WHO}: run '{runs['name'].iloc[i]}' has config '{key}' = {runs[col].iloc[i]!r}; expected a number")
        fill = out.isna() & raw.notna()
        out[fill] = raw[fill]
    if hp == "decayed":
        return out.map(lambda v: bool(v) if pd.notna(v) else np.nan)
    return pd.to_numeric(out, errors="coerce").astype(float)


def _examples(names: Any, k: int = 3) -> str:
    names = [str(n) for n in names]
    more = f" and {len(names) - k} more" if len(names) > k else ""
    return ", ".join(names[:k]) + more


def _resolve_runs(runs_in: pd.DataFrame, s: LrBsSweepSettings, warn: Callable[[str], None]) -> pd.DataFrame:
    """One row per usable run: run_id, name, the CONFIG_FIELDS and seq_len."""
    if runs_in is None or not len(runs_in):
        raise UserError(f"{WHO}: the tracker returned no runs (check select)")
    runs = runs_in.reset_index(drop=True)
    run_id = runs["run_id"].astype(str)
    name = runs["name"].where(runs["name"].notna(), run_id).astype(str)
    runs = runs.assign(run_id=run_id, name=name)
    parsed = _parse_names(runs["name"], s.patterns)
    out = pd.DataFrame({"run_id": run_id, "name": name})
    disagree: list[str] = []
    for col in FIELDS:
        conf = _config_values(runs, col, getattr(s.config_keys, col))
        from_name = parsed[col]
        if col == "decayed":
            from_name = from_name.map(lambda v: bool(v) if pd.notna(v) else np.nan)
        else:
            from_name = pd.to_numeric(from_name, errors="coerce").astype(float)
            both = conf.notna() & from_name.notna()
            differ = both & ~np.isclose(conf.where(both, 0.0), from_name.where(both, 0.0), rtol=1e-6, atol=0.0)
            if differ.any():
                disagree.append(f"{col} ({_examples(name[differ])})")
        out[col] = conf.where(conf.notna(), from_name)
    if disagree:
        warn(f"{WHO}: config values differ from the run names for {'; '.join(disagree)}; the config values are used")
    layer = f"lr_{s.layer_lr}"
    out["lr"] = out["lr"].where(out["lr"].notna(), out[layer]).astype(float)
    missing = out["lr"].isna() | out["bs"].isna()
    if missing.all():
        raise UserError(
            f"{WHO}: none of the {len(out)} run(s) has lr and bs in its config (config_keys.lr/bs) or its name "
            f"(name_patterns, e.g. lr-<float>-bs-<int>-seed-<int>); runs: {_examples(name)}"
        )
    if missing.any():
        warn(f"{WHO}: {int(missing.sum())} run(s) have no lr/bs in config or name and are left out: {_examples(name[missing])}")
    out = out.loc[~missing].reset_index(drop=True)
    _check_values(out)
    out["bs"] = out["bs"].round().astype("int64")
    out["seed"] = out["seed"].round().astype("Int64")
    out["decayed"] = out["decayed"].map(lambda v: bool(v) if pd.notna(v) else False).astype(bool)
    for col in ("momentum", "lr_in", "lr_hidden", "lr_out", "seq_len"):
        out[col] = out[col].astype(float)
    _resolve_seq_len(out, s, warn)
    return out


def _check_values(out: pd.DataFrame) -> None:
    checks = (
        ("lr", ~(out["lr"] > 0) | ~np.isfinite(out["lr"]), "a finite learning rate > 0"),
        ("bs", ~(out["bs"] > 0) | (out["bs"] % 1 != 0), "a positive integer batch size"),
        ("seed", out["seed"].notna() & (out["seed"] % 1 != 0), "an integer seed"),
    )
    for col, bad, expected in checks:
        if bad.any():
            i = bad.to_numpy().nonzero()[0][0]
            raise UserError(f"{WHO}: run '{out['name'].iloc[i]}' has {col} = {out[col].iloc[i]}; expected {expected}")


def _resolve_seq_len(out: pd.DataFrame, s: LrBsSweepSettings, warn: Callable[[str], None]) -> None:
    if s.seq_len is not None:
        seq = float(s.seq_len)
        differ = out["seq_len"].notna() & (out["seq_len"] != seq)
        if differ.any() and not s.tokens_key:
            warn(f"{WHO}: recipe.seq_len={int(seq)} overrides the runs' own seq_len for {_examples(out.loc[differ, 'name'])}")
        out["seq_len"] = seq
    elif out["seq_len"].isna().any() and not s.tokens_key:
        bad = out.loc[out["seq_len"].isna(), "name"]
        raise UserError(
            f"{WHO}: run '{bad.iloc[0]}' has no seq_len in its config; set recipe.seq_len (tokens per sequence) "
            f"or recipe.tokens_key (a logged token count) to compute the horizon"
        )


def _apply_filters(runs: pd.DataFrame, f: SweepFilters) -> pd.DataFrame:
    keep = np.ones(len(runs), dtype=bool)
    if f.momentum is not None:
        mom = runs["momentum"].to_numpy(dtype=float)
        keep &= np.any([np.isclose(mom, w, rtol=1e-9, atol=1e-12) for w in f.momentum], axis=0)
    if f.decayed is not None:
        keep &= runs["decayed"].to_numpy() == f.decayed
    if f.seeds is not None:
        keep &= runs["seed"].isin(f.seeds).fillna(False).to_numpy(dtype=bool)
    if f.batch_sizes is not None:
        keep &= runs["bs"].isin(f.batch_sizes).to_numpy()
    if not keep.any():
        active = {k: v for k, v in dataclasses.asdict(f).items() if v is not None}
        raise UserError(f"{WHO}: no run is left after filters {active}")
    return runs.loc[keep].reset_index(drop=True)


# --- history -> long table ---------------------------------------------------------------------------------------


def _numeric(values: pd.Series, name_of: Callable[[int], str], key: str) -> np.ndarray:
    """Float values of a history column; strings that are not numbers are an error naming the run."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return np.array(values.to_numpy(dtype=float, na_value=np.nan), dtype=float)  # a writable copy
    num = pd.to_numeric(values, errors="coerce")
    suspect = (num.isna() & values.notna()).to_numpy()
    if suspect.any():
        text = values[suspect].astype(str).str.strip().str.lower()
        bad_rows = np.flatnonzero(suspect)[~text.isin(["nan", "none", "null", "", "inf", "-inf", "infinity"]).to_numpy()]
        if bad_rows.size:
            i = bad_rows[0]
            raise UserError(f"{WHO}: run '{name_of(i)}' logged '{key}' = {values.iloc[i]!r} at a step; expected a number")
        fix = text.map({"inf": np.inf, "infinity": np.inf, "-inf": -np.inf})
        num = num.astype(float)
        num[suspect] = fix.to_numpy(dtype=float, na_value=np.nan)
    return np.array(num.to_numpy(dtype=float, na_value=np.nan), dtype=float)


def _long_table(history: pd.DataFrame, runs: pd.DataFrame, s: LrBsSweepSettings, warn: Callable[[str], None]) -> pd.DataFrame:
    loss_key, norm_key = s.metrics.train_loss, s.metrics.output_norm
    if loss_key not in history.columns:
        have = ", ".join(c for c in history.columns if c not in ("run_id", "step")) or "(none)"
        raise UserError(f"{WHO}: no history column '{loss_key}' (metrics.train_loss); the history has: {have}")
    codes = pd.Index(runs["run_id"]).get_indexer(history["run_id"].astype(str))
    hist = history.loc[codes >= 0]
    codes = codes[codes >= 0]
    names, hist_codes = runs["name"].to_numpy(), codes

    def name_of(i: int) -> str:
        return str(names[hist_codes[i]])

    loss = _numeric(hist[loss_key], name_of, loss_key)
    norm = np.full(len(hist), np.nan)
    if norm_key and norm_key in hist.columns:
        norm = _numeric(hist[norm_key], name_of, str(norm_key))
    elif norm_key:
        warn(f"{WHO}: no history column '{norm_key}' (metrics.output_norm); output_norm is NaN")
    present = ~np.isnan(loss) | ~np.isnan(norm)
    step_num = pd.to_numeric(hist["step"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad_step = present & (~np.isfinite(step_num) | (step_num % 1 != 0) | (step_num < 0))
    if bad_step.any():
        i = np.flatnonzero(bad_step)[0]
        raise UserError(f"{WHO}: run '{name_of(i)}' has step {hist['step'].iloc[i]!r}; expected a non-negative integer")
    norm[~np.isfinite(norm)] = np.nan
    step = step_num[present].astype(np.int64)
    codes, loss, norm = codes[present], loss[present], norm[present]
    if s.tokens_key:
        tkey = s.tokens_key
        if tkey not in hist.columns:
            raise UserError(f"{WHO}: no history column '{tkey}' (tokens_key)")
        tokens = _numeric(hist[tkey], name_of, tkey)[present]
        if not np.isfinite(tokens).all():
            i = np.flatnonzero(~np.isfinite(tokens))[0]
            raise UserError(f"{WHO}: run '{names[codes[i]]}' has no '{tkey}' at step {step[i]}; expected a token count at every logged step")
        horizon = np.rint(tokens).astype(np.int64)
    else:
        horizon = runs["bs"].to_numpy(dtype=np.int64)[codes] * step * runs["seq_len"].to_numpy(dtype=float)[codes].astype(np.int64)
    div = find_diverged(loss, codes, step, horizon, s.divergence, metric=str(loss_key), run_label=lambda c: str(names[c]))
    if div.n_runs:
        warn(div.message(WHO, f"set to NaN in {loss_key}"))
    loss[div.diverged | ~np.isfinite(loss)] = np.nan
    order = np.lexsort((step, codes))  # runs in their resolved order, then steps
    table = runs.iloc[codes[order]][["run_id", "name", *CONFIG_FIELDS]].reset_index(drop=True)
    return table.assign(step=step[order], horizon=horizon[order], train_loss=loss[order], output_norm=norm[order],
                        _run=codes[order])


def _dedupe(table: pd.DataFrame, runs: pd.DataFrame, warn: Callable[[str], None]) -> pd.DataFrame:
    """Drop repeated rows of one configuration; conflicting horizons or values for one configuration are an error."""
    if table.empty:
        return table.drop(columns="_run")
    gid_runs = runs.groupby(list(CONFIG_FIELDS), dropna=False, sort=False).ngroup().to_numpy()
    shared = np.bincount(gid_runs)[gid_runs] > 1
    run = table["_run"].to_numpy()
    step = table["step"].to_numpy()
    same_row = np.r_[False, (run[1:] == run[:-1]) & (step[1:] == step[:-1])]  # table is sorted by (run, step)
    check = shared[run] | same_row | np.r_[same_row[1:], False]
    if not check.any():
        return table.drop(columns="_run")
    idx = np.flatnonzero(check)
    gid, st, rr = gid_runs[run[idx]], step[idx], run[idx]
    order = np.lexsort((rr, st, gid))
    idx, gid, st, rr = idx[order], gid[order], st[order], rr[order]
    new = np.r_[True, (gid[1:] != gid[:-1]) | (st[1:] != st[:-1])]
    first = np.maximum.accumulate(np.where(new, np.arange(idx.size), 0))
    hz = table["horizon"].to_numpy()[idx]
    same_h = hz == hz[first]
    same_v = np.ones(idx.size, dtype=bool)
    for col in ("train_loss", "output_norm"):
        v = table[col].to_numpy()[idx]
        same_v &= np.isclose(v, v[first], rtol=1e-9, atol=0.0, equal_nan=True)
    dup = ~new & same_h & same_v
    seed_known = runs["seed"].notna().to_numpy()[rr]
    conflict = ~new & ~dup & (seed_known | (rr == rr[first]))
    if conflict.any():
        k = np.flatnonzero(conflict)[0]
        a, b = runs.iloc[rr[first[k]]], runs.iloc[rr[k]]
        what = f"horizon ({hz[first[k]]} vs {hz[k]})" if not same_h[k] else "train_loss/output_norm values"
        conf = ", ".join(f"{f}={a[f]}" for f in ("lr", "bs", "seed") if pd.notna(a[f]))
        raise UserError(
            f"{WHO}: runs '{a['name']}' and '{b['name']}' have the same configuration ({conf}) at step {st[k]} "
            f"but different {what}; keep one of them (select) or give them distinct seeds"
        )
    if dup.any():
        warn(f"{WHO}: removed {int(dup.sum())} duplicate row(s) (same configuration, step and values), "
             f"e.g. from {_examples(runs['name'].to_numpy()[np.unique(rr[dup])])}")
    keep = np.ones(len(table), dtype=bool)
    keep[idx[dup]] = False
    return table.loc[keep].drop(columns="_run").reset_index(drop=True)


def aggregate_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds per (configuration, step, horizon); drops run_id, name and seed."""
    keys = [f for f in CONFIG_FIELDS if f != "seed"]
    cfg = table.groupby(keys, dropna=False, sort=False).ngroup()
    grouped = table.assign(_cfg=cfg.to_numpy()).groupby(["_cfg", "step", "horizon"], sort=True)
    agg = grouped.agg(
        train_loss=("train_loss", "mean"),
        train_loss_std=("train_loss", "std"),
        train_loss_count=("train_loss", "count"),
        output_norm=("output_norm", "mean"),
        output_norm_std=("output_norm", "std"),
    ).reset_index()
    configs = table.assign(_cfg=cfg.to_numpy()).drop_duplicates("_cfg")[["_cfg", *keys]]
    out = agg.merge(configs, on="_cfg", how="left", validate="many_to_one")
    out["train_loss_count"] = out["train_loss_count"].astype("int64")
    cols = [*keys, "step", "horizon", "train_loss", "train_loss_std", "train_loss_count", "output_norm", "output_norm_std"]
    return out.sort_values(["bs", "lr", "momentum", "decayed", "step"], kind="stable")[cols].reset_index(drop=True)
