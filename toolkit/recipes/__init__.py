"""Recipes turn a RunSet into the tidy Table an analysis needs.

A recipe's config file (``conf/recipe/<name>.yaml``) names its class by ``_target_``; the class implements
``toolkit.protocol.Recipe``: ``settings_type`` is the dataclass of its options (their only defaults and types, the
schema of the yaml file), ``metric_keys(settings)`` the history keys to read (None: all), ``needs_tracker(settings)``
whether the tracker is read at all (an empty RunSet is given otherwise), and ``build(runset, settings)`` returns a
``toolkit.protocol.Built`` (the Table and the warnings raised on the way). Each module also keeps the plain functions
``build(runset, params, warn) -> DataFrame`` (and ``metric_keys(params)``) for notebooks and tests; ``params`` is a
mapping (checked like a composed config) or the settings object.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from toolkit.protocol import Built, RecipeBase
from toolkit.runset import CONFIG_PREFIX, SUMMARY_PREFIX, RunSet
from toolkit.settings import fail


class TableRecipe(RecipeBase):
    """A recipe whose ``make_table(runset, settings, warn)`` (its module's ``build``) makes the Table."""

    make_table: Callable[[RunSet, Any, Callable[[str], None]], pd.DataFrame]

    def build(self, runset: RunSet, settings: Any) -> Built:
        """The Table and the warnings raised on the way."""
        warnings: list[str] = []
        return Built(self.make_table(runset, settings, warnings.append), warnings)


def as_list(value: Any, who: str, key: str) -> list[str]:
    """An option that may be null, a string or a list of strings, as a list of strings."""
    if value is None or isinstance(value, str):
        return [] if value in (None, "") else [value]
    if not isinstance(value, (list, tuple)) or any(isinstance(v, (list, tuple, dict)) for v in value):
        raise fail(who, key, value, "a string or a list of strings")
    return [str(v) for v in value]


# --- what the source holds, for hints that point at the right recipe ------------------------------------------------

LR_KEYS = ("lr", "peak_lr", "learning_rate", "max_lr", "optim.lr", "optimizer.lr")
HORIZON_KEYS = ("horizon", "D", "tokens", "tokens_seen", "num_tokens")
SEPARATORS = ((";", "';'"), ("\t", "tab"))
FAMILY_MIN_KEYS = 8  # keys under one prefix that make a family (e.g. scaling_factor/sampling1/1, ...)
FAMILY_PREFIXES = ("scaling_factor",)  # families at any count (toolkit.scaling_factors' keys)


def source_keys(runset: RunSet) -> dict[str, list[str]]:
    """The keys a RunSet holds: history metrics with a logged value, the runs' summary keys and config keys."""
    history = runset.history
    logged = [k for k in runset.metric_keys if history[k].notna().any()] if len(history) else []
    runs = runset.runs
    summary = [c[len(SUMMARY_PREFIX):] for c in runs.columns if c.startswith(SUMMARY_PREFIX) and runs[c].notna().any()]
    config = [c[len(CONFIG_PREFIX):] for c in runs.columns if c.startswith(CONFIG_PREFIX)]
    return {"history": logged, "summary": summary, "config": config}


def _listed(keys: list[str], k: int = 12) -> str:
    more = f" (and {len(keys) - k} more)" if len(keys) > k else ""
    return ", ".join(keys[:k]) + more


def describe_source(runset: RunSet, read: list[str] | None = None) -> str:
    """The keys the source has, in words: the logged history keys, else the runs' summary and config keys."""
    keys = source_keys(runset)
    if keys["history"]:
        return f"metric keys logged: {_listed(keys['history'])}"
    asked = f" (this recipe read only {', '.join(read)})" if read else ""
    parts = [f"the history read has no values{asked}"]
    if keys["summary"]:
        parts.append(f"the runs' summary keys: {_listed(keys['summary'])}")
    if keys["config"]:
        parts.append(f"config keys: {_listed(keys['config'])}")
    if len(parts) == 1:
        parts.append("the runs have no summary or config keys either")
    return "; ".join(parts)


def one_point_per_run(runset: RunSet) -> bool:
    """True for flat tables and W&B exports (every run a single row, at step 0), and for an empty history."""
    history = runset.history
    steps = pd.to_numeric(history["step"], errors="coerce").fillna(0)
    return bool(history["run_id"].is_unique and (steps == 0).all())


def recipe_hints(runset: RunSet, current: str, loss_option: str | None = None) -> list[str]:
    """What the keys of ``runset`` suggest when recipe ``current`` finds nothing it can use: a delimiter that is not
    a comma, another recipe (metric_family, scaling_table, lr_table) or the option naming the loss key."""
    keys = source_keys(runset)
    names = list(dict.fromkeys(keys["history"] + keys["summary"] + keys["config"]))
    for sep, label in SEPARATORS:
        odd = [k for k in names if sep in k]
        if odd and len(names) <= 2:
            column = odd[0][:60].replace("\t", "\\t")
            return [f"the file looks {label}-separated (one column '{column}'): the local tracker reads "
                    f"comma-separated files; save it with commas"]
    hints: list[str] = []
    lower = {k.lower(): k for k in names}
    losses = [k for k in names if "loss" in k.lower()]
    flat = one_point_per_run(runset)
    if current != "scaling_table" and "N" in names and "D" in names and losses:
        hints.append(f"columns N, D and {losses[0]} look like a scaling table: use recipe=scaling_table")
    lr = next((lower[k] for k in LR_KEYS if k in lower), None)
    if current != "lr_table" and flat and lr and losses and not hints:
        horizon = next((k for k in HORIZON_KEYS if k in names), "<tokens column>")
        hints.append(f"a flat table with {lr} and {losses[0]} and no steps: use recipe=lr_table "
                     f"recipe.columns.lr={lr} recipe.columns.loss={losses[0]} recipe.columns.horizon={horizon}")
    metric_names = keys["history"] + keys["summary"]
    metric_losses = [k for k in metric_names if "loss" in k.lower()]
    # a family: many keys under one prefix (Fira's scaling_factor/... at any count), not the loss key's own prefix
    loss_prefixes = {k.split("/", 1)[0] for k in metric_losses}
    prefixes = pd.Series([k.split("/", 1)[0] for k in metric_names if "/" in k], dtype=object).value_counts()
    family = [p for p, n in prefixes.items() if p not in loss_prefixes
              and (n >= FAMILY_MIN_KEYS or str(p).startswith(FAMILY_PREFIXES))]
    if current != "metric_family" and family:
        hints.append(f"keys like {family[0]}/... are a metric family: use recipe=metric_family (the recipe of "
                     f"analysis=[correlations])")
    if loss_option and metric_losses:  # the runs logged a loss under another key (train/loss, loss, ...)
        hints.append(f"for the loss, set {loss_option}={metric_losses[0]}")
    return hints


def source_hint(runset: RunSet, current: str, read: list[str] | None = None, loss_option: str | None = None) -> str:
    """``describe_source`` and, when it can tell, which recipe or option fits (``recipe_hints``)."""
    hints = recipe_hints(runset, current, loss_option)
    return describe_source(runset, read) + "".join(f"; {h}" for h in hints[:2])
