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
from toolkit.runset import RunSet
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
