"""A recipe that reads nothing: for analyses that need no tracker data (e.g. the spectral benchmark)."""
from __future__ import annotations

import pandas as pd

from toolkit.protocol import Built, RecipeBase
from toolkit.runset import RunSet
from toolkit.settings import Settings


class NoneRecipe(RecipeBase):
    """The recipe ``none`` (``_target_: toolkit.recipes.none.NoneRecipe``): no options, no tracker, an empty table."""

    settings_type = Settings

    def metric_keys(self, settings: Settings) -> list[str]:
        """No history keys."""
        return []

    def needs_tracker(self, settings: Settings) -> bool:
        """The tracker is not read."""
        return False

    def build(self, runset: RunSet, settings: Settings) -> Built:
        """An empty table."""
        return Built(pd.DataFrame())
