"""The one place that wires the stages: tracker -> RunSet -> recipe -> Table -> analyses -> outputs.

``resolve`` checks every part of the composed config before any work starts (each ``_target_`` imports and
implements its protocol, each settings node is valid). ``run`` then reads, builds the Table and runs every analysis
under its own guard: an input error (``UserError``) or a bug in one analysis is recorded in ``status.json``
(``kind: input | bug``; a bug's traceback goes to the log) and the others still run. ``status.json`` and the
report are written whatever happens, an interruption included.
"""
from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from toolkit.columns import require_columns
from toolkit.errors import UserError, forget_interrupts, interrupted, missing_extra_from
from toolkit.outputs import AnalysisOutput, claim_run_dir, write_json, write_parquet
from toolkit.protocol import Analysis, Recipe, Tracker, protocol_problems, read_runset
from toolkit.report import write_report
from toolkit.runset import RunSet, Selection, empty_runset
from toolkit.secrets import mask_config, scrub
from toolkit.settings import CacheSettings, RunSettings, check_known_keys, locate, settings_of

log = logging.getLogger(__name__)


@dataclass
class Part:
    """A resolved part: its config name, the object behind ``_target_`` and its checked settings."""

    name: str
    impl: Any
    settings: Any


@dataclass
class Job:
    """Everything ``run`` needs, checked: the tracker's config node, the selection, the recipe and the analyses."""

    tracker: Any
    selection: Selection
    recipe: Part
    analyses: list[Part]
    cache: CacheSettings
    progress: bool
    title: str
    publish: Any  # a toolkit.publish.PublishTarget, or None


def _container(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _implements(impl: Any, protocol: type, where: str, target: Any) -> None:
    """A one-line UserError naming what ``impl`` (the object behind ``target``) lacks of ``protocol``."""
    problems = protocol_problems(impl, protocol)
    if problems:
        raise UserError(f"{where}: _target_ '{target}' does not implement the {protocol.__name__} protocol: "
                        f"{', '.join(problems)}")


def _part(node: Any, where: str, protocol: type) -> Part:
    """Locate the ``_target_`` of a config node, check it against ``protocol`` and check its settings."""
    if not isinstance(node, (DictConfig, Mapping)) or not node.get("_target_"):
        header = f" (is the '# @package {where}' header missing from its file?)" if where.startswith("analysis.") else ""
        raise UserError(f"{where}: not a part config with a _target_{header}")
    cls = locate(str(node["_target_"]), where)
    impl = cls() if isinstance(cls, type) else cls
    _implements(impl, protocol, where, node["_target_"])
    return Part(where.rpartition(".")[2], impl, settings_of(node, impl.settings_type, who=where))


def resolve(cfg: DictConfig) -> Job:
    """Check the whole composed config before any work; a bad part is a one-line UserError naming it."""
    top = [k for k in cfg.keys() if k != "hydra"]
    check_known_keys({k: None for k in top}, RunSettings, "config")
    recipe = _part(cfg.get("recipe"), "recipe", Recipe)
    analyses = [_part(node, f"analysis.{name}", Analysis) for name, node in (cfg.get("analysis") or {}).items()]
    for part in analyses:
        missing = [c for c in part.impl.carried_columns(part.settings) if c]
        if missing and hasattr(recipe.settings, "keep_columns"):
            keep = list(recipe.settings.keep_columns or [])
            recipe.settings.keep_columns = keep + [c for c in missing if c not in keep]
    if recipe.impl.needs_tracker(recipe.settings):
        _check_tracker(cfg.get("tracker"))
    from toolkit.publish import resolve_publish

    return Job(tracker=cfg.get("tracker"), selection=settings_of(cfg.get("select"), Selection, who="select"), recipe=recipe,
               analyses=analyses, cache=settings_of(cfg.get("cache"), CacheSettings, who="cache"),
               progress=bool(cfg.get("progress", RunSettings.progress)), title=str(cfg.get("title", RunSettings.title)),
               publish=resolve_publish(cfg.get("publish")))


def _check_tracker(tracker_cfg: Any) -> None:
    """The tracker's settings, checked before any work (unknown keys, types, values)."""
    target = tracker_cfg.get("_target_") if isinstance(tracker_cfg, (DictConfig, Mapping)) else None
    if target:
        cls = locate(str(target), "tracker")
        if isinstance(getattr(cls, "settings_type", None), type):
            settings_of(tracker_cfg, cls.settings_type, who="tracker")


def build_tracker(tracker_cfg: Any) -> Tracker:
    """The configured tracker adapter (``_target_`` instantiated with the node's settings)."""
    from hydra.utils import instantiate

    if not isinstance(tracker_cfg, (DictConfig, Mapping)) or not tracker_cfg.get("_target_"):
        raise UserError("tracker: the config has no _target_ (choose one with tracker=local|mlflow|wandb)")
    locate(str(tracker_cfg["_target_"]), "tracker")  # a missing module is a one-line error naming the extra
    try:
        tracker = instantiate(tracker_cfg, _convert_="all")
    except Exception as exc:  # Hydra wraps the constructor's own error; a UserError inside stays one line
        cause = exc.__cause__ or exc
        if isinstance(cause, UserError):
            raise cause from None
        raise
    _implements(tracker, Tracker, "tracker", tracker_cfg["_target_"])
    return tracker


def load_runset(job: Job, keys: list[str] | None) -> RunSet:
    """Read the selected runs' histories for ``keys`` through the configured tracker."""
    tracker = build_tracker(job.tracker)
    tracker.configure(cache=job.cache, progress=job.progress)
    return read_runset(tracker, job.selection, keys)


def build_table(job: Job, warnings: list[str], info: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run the configured recipe on the tracker's runs and return its Table (``info["n_runs_read"]``: runs read)."""
    recipe, settings = job.recipe.impl, job.recipe.settings
    if recipe.needs_tracker(settings):
        started = time.perf_counter()
        log.info("reading runs (tracker %s)", job.tracker.get("_target_", "?") if job.tracker is not None else "?")
        runset = load_runset(job, recipe.metric_keys(settings))
        log.info("read %d run(s), %d history row(s) in %.2f s", len(runset.runs), len(runset.history),
                 time.perf_counter() - started)
        warnings.extend(runset.warnings)
        if info is not None:
            info["n_runs_read"] = len(runset.runs)
    else:
        runset = empty_runset()
    started = time.perf_counter()
    log.info("building the table (recipe %s)", job.recipe.name)
    built = recipe.build(runset, settings)
    log.info("table: %d row(s) x %d column(s) in %.2f s", len(built.table), len(built.table.columns),
             time.perf_counter() - started)
    warnings.extend(built.warnings)
    return built.table


def failure(exc: BaseException, where: str = "") -> dict[str, str]:
    """How a failure is recorded: an input error (a UserError or a missing extra), an interruption (also an exception
    raised around a signal, e.g. an import cut short) or a bug (its traceback goes to the log)."""
    if isinstance(exc, UserError):
        return {"kind": "input", "message": scrub(str(exc))}
    if not isinstance(exc, Exception) or interrupted():
        return {"kind": "interrupted", "message": "interrupted"}
    extra = missing_extra_from(exc, f"analysis {where}" if where else "")
    if extra is not None:  # an optional module that is not installed: bad setup, not a bug
        return {"kind": "input", "message": scrub(str(extra))}
    log.error("%sbug: %s", f"{where}: " if where else "", scrub(traceback.format_exc()))
    return {"kind": "bug", "message": scrub(f"{type(exc).__name__}: {exc}")}


def _raise_interrupt(exc: BaseException) -> NoReturn:
    """Raise the interruption ``exc`` stands for: itself, or KeyboardInterrupt for an exception raised around a
    signal."""
    if isinstance(exc, Exception):
        raise KeyboardInterrupt from exc
    raise exc


def run_analyses(job: Job, table: pd.DataFrame, run_dir: Path, status: dict[str, Any]) -> None:
    """Run every analysis into its own folder, each under its own guard; record each outcome in ``status``."""
    for part in job.analyses:
        name = part.name
        started = time.perf_counter()
        out = None
        log.info("%s: running", name)
        try:
            out = AnalysisOutput(run_dir, name, progress=job.progress)
            require_columns(table, part.impl.required_columns(part.settings), name)
            summary = dict(part.impl.run(table, part.settings, out) or {})
            summary.setdefault("settings", part.settings.to_dict() if hasattr(part.settings, "to_dict") else part.settings)
            out.commit(summary)
            status["analyses"][name] = {"status": "ok", "seconds": round(time.perf_counter() - started, 3)}
            log.info("%s: done in %.2f s -> %s", name, time.perf_counter() - started, out.final_dir)
        except BaseException as exc:  # recorded; the other analyses still run unless the run was interrupted
            got = failure(exc, name)
            kind, message = got["kind"], _strip(got["message"], name)
            status["analyses"][name] = {"status": "interrupted" if kind == "interrupted" else "failed",
                                        "kind": kind, "message": message}
            if kind == "interrupted":  # nothing half-written stays, the caller records it
                _raise_interrupt(exc)
            if kind == "input":  # to the log file: the error line repeats it
                log.error("%s", _prefixed(name, message), extra={"console": False})
        finally:
            if out is not None:
                out.discard()  # after a commit there is nothing left to remove


def _prefixed(name: str, message: str) -> str:
    """``name: message``, unless the message already starts with the name."""
    return message if message.startswith((f"{name}:", f"{name} ")) else f"{name}: {message}"


def _strip(message: str, name: str) -> str:
    """The message without a repeated ``name:`` prefix."""
    while message.startswith(f"{name}: {name}:"):
        message = message[len(name) + 2:]
    return message


def finish(run_dir: Path, job_title: str, status: dict[str, Any]) -> None:
    """Write status.json and the report (also after a failure or an interruption)."""
    status["failed"] = {k: v["message"] for k, v in status["analyses"].items() if v.get("status") != "ok"}
    write_json(run_dir / "status.json", status)
    write_report(run_dir, title=job_title, status=status)


def _provenance(cfg: DictConfig, info: Mapping[str, Any], table: pd.DataFrame | None) -> dict[str, Any]:
    """The run's provenance (toolkit.provenance) for status.json: never fails the run."""
    from toolkit import provenance

    try:
        recipe = cfg.get("recipe")
        target = recipe.get("_target_") if isinstance(recipe, (DictConfig, Mapping)) else None
        needs_tracker = info.get("n_runs_read") is not None or table is None
        return provenance.collect(cfg.get("tracker") if needs_tracker else None, n_runs_read=info.get("n_runs_read"),
                                  n_runs_kept=provenance.runs_kept(table) if table is not None else None,
                                  recipe=str(target) if target else None) | (
            {"n_table_rows": int(len(table))} if table is not None else {})
    except Exception as exc:  # provenance is a record, not a stage: a problem here is said, not raised
        log.warning("provenance: %s", scrub(f"{type(exc).__name__}: {exc}"))
        return {}


def exit_code(status: Mapping[str, Any]) -> int:
    """0 when everything ran, 2 when only input errors stopped something, 1 when there was a bug."""
    kinds = [v.get("kind") for v in status.get("analyses", {}).values() if v.get("status") != "ok"]
    kinds += [status["error"]["kind"]] if status.get("error") else []
    if "bug" in kinds:
        return 1
    if "interrupted" in kinds:
        return 130
    return 2 if kinds else 0


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run the whole configured job into ``run_dir``; return its status (see ``exit_code``)."""
    run_dir = Path(run_dir)
    forget_interrupts()
    status: dict[str, Any] = {"analyses": {}, "warnings": [], "error": None}
    removed = claim_run_dir(run_dir)  # a run owns its folder: nothing of an earlier run stays beside this one's
    if removed:
        status["warnings"].append(f"{run_dir} held an earlier run's results; removed {', '.join(removed)}")
    write_json(run_dir / "config.json", mask_config(_container(cfg)))
    title = str(cfg.get("title", RunSettings.title))
    target = None
    info: dict[str, Any] = {}
    status["provenance"] = _provenance(cfg, info, None)
    try:
        job = resolve(cfg)
        title, target = job.title, job.publish
        table = build_table(job, status["warnings"], info)
        status["provenance"] = _provenance(cfg, info, table)
        for w in status["warnings"]:
            log.warning(w)
        if len(table.columns):
            write_parquet(run_dir / "table.parquet", table)
        run_analyses(job, table, run_dir, status)
        if target is not None:  # a failed publish is a warning: the local results and the exit status stay
            from toolkit.publish import command_overrides, publish_run

            publish_run(target, run_dir, status, overrides=command_overrides(),
                        write_report=lambda: finish(run_dir, title, status))
    except BaseException as exc:
        status["error"] = failure(exc)
        if status["error"]["kind"] == "interrupted":
            finish(run_dir, title, status)
            _raise_interrupt(exc)
    if target is not None and status.get("publish") is None:
        from toolkit.publish import skipped

        status["publish"] = skipped(target, "the run failed before its results were complete")
    finish(run_dir, title, status)
    return status


def error_line(status: Mapping[str, Any], run_dir: str | Path) -> str | None:
    """The one line a failed run prints (None when everything ran)."""
    if status.get("error"):
        err = status["error"]
        return err["message"] if err["kind"] == "input" else f"bug: {err['message']} (traceback in the log, {run_dir})"
    failed = {k: v for k, v in status.get("analyses", {}).items() if v.get("status") != "ok"}
    if not failed:
        return None
    parts = [_prefixed(k, v["message"]) + (" (a bug; traceback in the log)" if v.get("kind") == "bug" else "")
             for k, v in failed.items()]
    return f"analysis failed: {'; '.join(parts)} (the others are in {run_dir})"
