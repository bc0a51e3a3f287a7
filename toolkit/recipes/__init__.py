"""Recipes turn a RunSet into the tidy Table an analysis needs.

A recipe is a module with ``metric_keys(params) -> list[str] | None`` (history keys to read; None: all),
``NEEDS_TRACKER`` (bool, default True) or ``needs_tracker(params) -> bool`` when that depends on the settings, and
``build(runset, params, warn) -> pandas.DataFrame`` (given an empty RunSet when no tracker is needed).
"""
