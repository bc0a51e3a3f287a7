"""``sk.recipes.<name>(runs, **settings)``: the Table of ``recipe=<name>`` (one function per conf/recipe/*.yaml).

Each takes the runs of ``sk.read(...)`` (none for a recipe that reads its own file, e.g. ``scaling_table`` with a
``loader``) and the recipe's settings as keywords; settings not given have the command line's defaults.
"""
from __future__ import annotations

from typing import Any, Callable

from sweepkit.api import build, recipe_names

__all__ = list(recipe_names())


def _recipe(name: str) -> Callable[..., Any]:
    def make_table(runs: Any = None, **settings: Any) -> Any:
        return build(name, runs, **settings)

    make_table.__name__ = make_table.__qualname__ = name
    make_table.__doc__ = (f"The Table of recipe={name} (conf/recipe/{name}.yaml) built from ``runs`` (sk.read); "
                          f"keywords are its settings (recipe.*), checked as on the command line.")
    return make_table


globals().update({name: _recipe(name) for name in __all__})
