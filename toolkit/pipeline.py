"""The one place that wires the stages: tracker -> RunSet -> recipe -> Table -> analyses -> outputs."""
from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from toolkit.errors import UserError
from toolkit.outputs import AnalysisOutput, write_json, write_parquet
from toolkit.protocol import read_runset
from toolkit.report import write_report
from toolkit.runset import RunSet, Selection, empty_runset
from toolkit.secrets import mask_config, scrub

log = logging.getLogger(__name__)


def _container(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _import(path: str, what: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserError(f"{what}: no module '{module_name}'") from None
        raise
    return getattr(module, attr) if attr else module


def build_tracker(tracker_cfg: Any) -> tuple[Any, Selection]:
    """Instantiate the configured tracker adapter and its run selection."""
    params = _container(tracker_cfg)
    target = params.pop("_target_", None)
    if not target:
        raise UserError("tracker: the config has no _target_ (choose one with tracker=local|mlflow|wandb)")
    selection = Selection.from_config(params.pop("select", None))
    module_name, _, cls_name = target.rpartition(".")
    cls = _import(f"{module_name}:{cls_name}", "tracker")
    return cls(**params), selection


def load_runset(cfg: DictConfig, keys: list[str] | None) -> RunSet:
    """Read the selected runs' histories for ``keys`` through the configured tracker."""
    tracker, selection = build_tracker(cfg.tracker)
    if hasattr(tracker, "configure"):
        tracker.configure(cache=_container(cfg.get("cache")), progress=bool(cfg.get("progress", True)))
    return read_runset(tracker, selection, keys)


def build_table(cfg: DictConfig, warnings: list[str]) -> pd.DataFrame:
    """Run the configured recipe on the tracker's runs and return its Table."""
    recipe_params = _container(cfg.recipe)
    recipe = _import(recipe_params.pop("module"), "recipe")
    needs_tracker = getattr(recipe, "needs_tracker", None)
    if needs_tracker(recipe_params) if callable(needs_tracker) else getattr(recipe, "NEEDS_TRACKER", True):
        runset = load_runset(cfg, recipe.metric_keys(recipe_params))
        warnings.extend(runset.warnings)
    else:
        runset = empty_runset()
    return recipe.build(runset, recipe_params, warnings.append)


def run_analyses(cfg: DictConfig, table: pd.DataFrame, run_dir: Path) -> dict[str, str]:
    """Run every configured analysis into its own folder; return {name: error} for the failures."""
    failed: dict[str, str] = {}
    for name, acfg in (_container(cfg.get("analysis")) or {}).items():
        params = dict(acfg or {})
        module_path = params.pop("module", f"analyses.{name}")
        out = AnalysisOutput(run_dir, name)
        started = time.perf_counter()
        try:
            target = _import(module_path, f"analysis.{name}")
            summary = target(table, params, out) if callable(target) else target.run(table, params, out)
            summary = dict(summary or {})
            summary.setdefault("settings", params)
            out.commit(summary)
            log.info("%s: done in %.2f s -> %s", name, time.perf_counter() - started, out.final_dir)
        except UserError as exc:
            out.discard()
            failed[name] = scrub(str(exc))
            log.error("%s: %s", name, failed[name])
    return failed


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run the whole configured job into ``run_dir``; raise UserError if any stage fails on bad input."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", mask_config(_container(cfg)))
    warnings: list[str] = []
    table = build_table(cfg, warnings)
    for w in warnings:
        log.warning(w)
    if len(table.columns):
        write_parquet(run_dir / "table.parquet", table)
    failed = run_analyses(cfg, table, run_dir)
    status = {"failed": failed, "warnings": warnings}
    write_json(run_dir / "status.json", status)
    write_report(run_dir, title=str(cfg.get("title", "Sweep analysis")), status=status)
    if failed:
        names = ", ".join(failed)
        raise UserError(f"analysis failed: {names}: {'; '.join(failed.values())} (the others are in {run_dir})")
    return status
