"""Publish a finished run's results back to a tracker, as ONE run named ``sweepkit/<title>``.

``publish=<tracker>`` (conf/publish/<tracker>.yaml) names any tracker of conf/tracker/ with a write side; its settings
are that tracker's own node (``publish.settings.*``, typed by the tracker's schema when the config is composed and
checked again by ``resolve_publish`` before any work). The stage runs after the analyses (``toolkit.pipeline.run``),
builds the tracker with ``toolkit.pipeline.build_tracker`` (what ``toolkit.trackers.make_tracker`` does after composing
conf/tracker/<name>.yaml) and writes only through the ``RunWriter`` protocol (``start_run``, ``log_metrics``,
``log_artifact``, ``finish``): a new tracker needs no code here, only its 10-line conf/publish/<name>.yaml (a copy of
local.yaml with the name changed; tests/test_publish.py checks every tracker with a write side has one). Everything
comes from the run folder, which is already masked (config.json) and scrubbed:

- **config** (params in MLflow): ``sweepkit.{title, command, run_dir, recipe, analyses, failed}``, ``source.tracker``
  (the tracker name) and ``source.settings.*`` (its settings, secrets masked by ``toolkit.secrets.mask_config``), and
  ``select.*`` (the runs' selection, masked);
- **metrics** (logged once, at step 0): ``<analysis>/<key>/<key>...`` for every numeric scalar of
  ``<analysis>/summary.json`` (``settings`` and ``warnings`` skipped; nested mappings joined with ``/``; a two-number
  ``X_ci`` list becomes ``X_ci_low`` and ``X_ci_high``; other lists and booleans are left to summary.json), e.g.
  ``regressions/lr_vs_bs_horizon/alpha``, ``regressions/lr_vs_bs_horizon/alpha_ci_low``,
  ``scaling_laws/approach2/a_ci_high``, ``correlations/matrix/spearman``; and from each ``<analysis>/minima.csv``
  one ``<analysis>/lr_star/h_<horizon>/bs_<bs>`` per row (also ``lr_star_ci_low``, ``lr_star_ci_high`` and
  ``loss_star``; a grouping column before ``lr`` adds ``<column>_<value>`` in front). Keys keep only letters,
  digits, ``_ - . /`` and spaces (MLflow's rule), anything else becomes ``_``;
- **artifacts**: each analysis' CSV tables, PNG figures and summary.json as ``<analysis>.<file>`` (one flat
  namespace: the RunWriter protocol names an artifact by its file name), then config.json, report.md and report.html
  (written first, so the uploaded report names the published run). Text files are scrubbed once more on the way.

``sys.argv`` is masked while the run is written (W&B records the command line), and a tracker offering the MLflow
adapter's bounded-HTTP context (``_http_settings``: no long client retries) is written inside it. A failed publish
(unreachable tracker, missing extra, a rejected write) is a warning in status.json and the report; the local results
and the exit status are kept, and a run left half-written is finished as failed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import numbers
import re
import shlex
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import MissingExtraError, UserError
from toolkit.secrets import MASK, SECRET_KEY, mask_config, scrub
from toolkit.settings import CONF_DIR, PublishSettings, RunSettings, locate, part_targets, settings_of

log = logging.getLogger(__name__)
RUN_NAME = "sweepkit/{title}"
ARTIFACT_SUFFIXES = (".csv", ".png")
TEXT_SUFFIXES = (".csv", ".json", ".md", ".html", ".txt")
ROOT_ARTIFACTS = ("config.json", "report.md", "report.html")
_BAD_CHARS = re.compile(r"[^\w.\- ]")


@dataclass
class PublishTarget:
    """A checked publish node: the tracker's name, its settings node (plain, with ``_target_``) and the run name."""

    tracker: str
    node: dict[str, Any]
    name: str | None = None

    def describe(self) -> str:
        """``<tracker> (key=value, ...)``: the settings that differ from the tracker's defaults, secrets masked."""
        shown = {k: v for k, v in mask_config(self.node).items() if k != "_target_"}
        defaults: dict[str, Any] = {}
        with contextlib.suppress(UserError):
            settings_type = getattr(locate(str(self.node.get("_target_")), "publish"), "settings_type", None)
            if dataclasses.is_dataclass(settings_type):
                for f in dataclasses.fields(settings_type):
                    if f.default is not dataclasses.MISSING:
                        defaults[f.name] = _plain(f.default)
                    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                        defaults[f.name] = _plain(f.default_factory())  # type: ignore[misc]
        parts = [f"{k}={v}" for k, v in shown.items() if v is not None and (k not in defaults or defaults[k] != v)]
        return scrub(f"{self.tracker} ({', '.join(parts)})" if parts else self.tracker)


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def _container(node: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(node).items()}
    return node


def resolve_publish(node: Any) -> PublishTarget | None:
    """The publish node checked before any work (None when publishing is off); a bad one is a one-line UserError.

    A composed ``publish=<name>`` node holds the tracker's own composed node under ``settings`` (typed by its schema);
    a plain mapping (a notebook, a test) may give ``settings`` as a few options, composed here with
    ``toolkit.trackers.tracker_config`` from conf/tracker/<name>.yaml. The settings are checked against the tracker's
    ``settings_type``; a tracker whose module needs a missing extra is left to the publish stage (a warning then).
    """
    from omegaconf import DictConfig

    if node is None or (isinstance(node, (Mapping, DictConfig)) and not node):
        return None
    settings = settings_of(node, PublishSettings, who="publish")
    if not settings.tracker:
        raise UserError("publish.tracker: no tracker named; choose one with publish=mlflow|wandb|local|...")
    name = str(settings.tracker)
    targets = {n: t for (g, n), t in part_targets(CONF_DIR).items() if g == "tracker"}
    if name not in targets:
        raise UserError(f"publish.tracker: unknown tracker '{name}'; expected one of {', '.join(sorted(targets))}")
    given = node.get("settings") if isinstance(node, (Mapping, DictConfig)) else None
    options = _container(given) or {}
    if not isinstance(options, Mapping):
        raise UserError(f"publish.settings: expected the {name} tracker's settings (a mapping), got {options!r}")
    if options.get("_target_"):
        if str(options["_target_"]) != targets[name]:
            raise UserError(f"publish.settings: _target_ '{options['_target_']}' is not the {name} tracker's "
                            f"('{targets[name]}'); choose the tracker with publish={name}")
        try:
            cls = locate(str(options["_target_"]), f"publish {name}")
        except MissingExtraError:
            cls = None  # reported by the publish stage, as a warning
        if cls is not None and isinstance(getattr(cls, "settings_type", None), type):
            settings_of(given, cls.settings_type, who="publish.settings")
        plain = dict(options)
    else:
        from toolkit.trackers import tracker_config

        try:
            plain = _container(tracker_config(name, options))
        except UserError as exc:
            raise UserError(f"publish.settings: {exc}") from None
    return PublishTarget(tracker=name, node=plain, name=settings.name or None)


# ------------------------------------------------------------------------------------------ what is published
def _clean(part: Any) -> str:
    """One segment of a metric or config key: MLflow's characters only (letters, digits, _ - . space)."""
    text = _BAD_CHARS.sub("_", scrub(str(part)).replace(MASK, "_")).strip()
    return "_" if text in ("", ".", "..") else text


def _key(parts: list[Any]) -> str:
    return "/".join(_clean(p) for p in parts)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy numbers too; booleans are not metrics
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _flatten(obj: Any, parts: list[Any], out: dict[str, float], clashes: list[str]) -> None:
    """Numeric scalars of a summary, nested keys joined with '/'; ``X_ci: [lo, hi]`` as X_ci_low / X_ci_high."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            key = str(key)
            if len(parts) == 1 and key in ("settings", "warnings"):
                continue
            if key.endswith("_ci") and isinstance(value, (list, tuple)) and len(value) == 2:
                for suffix, bound in zip(("_low", "_high"), value):
                    _put(out, _key([*parts, key + suffix]), _number(bound), clashes)
                continue
            _flatten(value, [*parts, key], out, clashes)
        return
    _put(out, _key(parts), _number(obj), clashes)


def _put(out: dict[str, float], key: str, value: float | None, clashes: list[str]) -> None:
    if value is None:
        return
    if key in out and out[key] != value:
        clashes.append(key)
    out[key] = value


def _label(column: str, value: Any) -> str:
    name = {"horizon": "h"}.get(column, column)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{name}_{value}"


def minima_metrics(analysis: str, csv: Path, out: dict[str, float], clashes: list[str]) -> None:
    """``<analysis>/lr_star/h_<horizon>/bs_<bs>`` (and its CI, ``loss_star``) for each row of a minima.csv."""
    import pandas as pd

    table = pd.read_csv(csv)
    if "lr" not in table.columns:
        return
    ident = list(table.columns[:list(table.columns).index("lr")])
    values = {"lr_star": "lr", "lr_star_ci_low": "lr_ci_low", "lr_star_ci_high": "lr_ci_high", "loss_star": "loss"}
    for row in table.to_dict("records"):
        labels = [_label(c, row[c]) for c in ident]
        for name, column in values.items():
            if column in row:
                _put(out, _key([analysis, name, *labels]), _number(row[column]), clashes)


def analysis_dirs(run_dir: Path) -> list[Path]:
    """The committed analysis folders of a run folder (those holding summary.json)."""
    return sorted(p for p in run_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "summary.json").is_file())


def summary_metrics(run_dir: str | Path) -> tuple[dict[str, float], list[str]]:
    """The metrics published for a run folder (see the module docstring) and the keys that two values claimed."""
    out: dict[str, float] = {}
    clashes: list[str] = []
    for adir in analysis_dirs(Path(run_dir)):
        summary = json.loads((adir / "summary.json").read_text(encoding="utf-8"))
        _flatten(summary, [adir.name], out, clashes)
        if (adir / "minima.csv").is_file():
            minima_metrics(adir.name, adir / "minima.csv", out, clashes)
    return out, sorted(set(clashes))


def _clean_config(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_BAD_CHARS.sub("_", str(k)) or "_": _clean_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_config(v) for v in value]
    if isinstance(value, str):
        return scrub(value)
    return value


def mask_override(item: str) -> str:
    """A Hydra ``key=value`` override with a secret-looking key's value masked, URL passwords and known secrets too."""
    key, sep, value = str(item).partition("=")
    if sep and SECRET_KEY.search(key) and value.strip() not in ("", "null"):
        item = f"{key}={MASK}"
    return scrub(mask_config(str(item)))


def command_overrides() -> list[str] | None:
    """The command's overrides (Hydra's task overrides) when run under Hydra, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(o) for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else None
    except Exception:  # outside Hydra, or a Hydra without this API: the command is simply not recorded
        return None


def _saved_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def published_config(run_dir: Path, status: Mapping[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """The published run's config: the sweepkit run, the source tracker and the selection (all masked)."""
    saved = mask_config(_saved_config(run_dir))
    tracker = dict(saved.get("tracker") or {})
    source_name = target = tracker.pop("_target_", None)
    if target:
        with contextlib.suppress(UserError):
            source_name = getattr(locate(str(target), "tracker"), "name", target)
    analyses = status.get("analyses", {})
    sweepkit = {
        "title": saved.get("title"),
        "run_dir": str(run_dir.resolve()),
        "recipe": (saved.get("recipe") or {}).get("_target_"),
        "analyses": ",".join(k for k, v in analyses.items() if v.get("status") == "ok"),
        "failed": ",".join(k for k, v in analyses.items() if v.get("status") != "ok"),
    }
    if overrides is not None:
        sweepkit["command"] = "python run.py " + shlex.join(mask_override(o) for o in overrides)
    return _clean_config({"sweepkit": sweepkit, "source": {"tracker": source_name, "settings": tracker},
                          "select": saved.get("select") or {}})


def _stage(src: Path, dest: Path) -> Path:
    """A copy of ``src`` at ``dest``; text files scrubbed."""
    if src.suffix in TEXT_SUFFIXES:
        try:
            dest.write_text(scrub(src.read_text(encoding="utf-8")), encoding="utf-8")
            return dest
        except UnicodeDecodeError:
            pass
    shutil.copyfile(src, dest)
    return dest


def stage_results(run_dir: Path, stage: Path) -> list[Path]:
    """Copies of the analyses' tables, figures and summaries named ``<analysis>.<file>``."""
    staged = []
    for adir in analysis_dirs(run_dir):
        for path in sorted(adir.iterdir()):
            if path.is_file() and (path.suffix in ARTIFACT_SUFFIXES or path.name == "summary.json"):
                staged.append(_stage(path, stage / f"{adir.name}.{path.name}"))
    return staged


# ------------------------------------------------------------------------------------------ the stage
@contextlib.contextmanager
def masked_argv() -> Iterator[None]:
    """``sys.argv`` with secret-looking overrides and URL passwords masked (trackers record the command line)."""
    saved = list(sys.argv)
    sys.argv[:] = saved[:1] + [mask_override(a) for a in saved[1:]]
    try:
        yield
    finally:
        sys.argv[:] = saved


def _bounded(tracker: Any) -> Any:
    """The tracker's own bounded-network context (the MLflow adapter's ``_http_settings``), else nothing."""
    bound = getattr(tracker, "_http_settings", None)
    return bound() if callable(bound) else contextlib.nullcontext()


def _message(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
    return scrub(" ".join(text.split()))[:500]


def publish_run(target: PublishTarget, run_dir: str | Path, status: dict[str, Any],
                overrides: list[str] | None = None, write_report: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Publish the run folder's results as one run of ``target``; record the outcome in ``status["publish"]``.

    Never raises for a failed publish (it becomes a warning in ``status["warnings"]``); an interruption finishes the
    started run as killed and is raised. ``write_report`` writes status.json and the report (uploaded afterwards).
    """
    run_dir = Path(run_dir)
    saved = _saved_config(run_dir)
    title = str(saved.get("title") or RunSettings.title)
    name = scrub(target.name or RUN_NAME.format(title=title))
    where = target.describe()
    record: dict[str, Any] = {"tracker": target.tracker, "target": where, "run": name, "run_id": None,
                              "status": "publishing", "metrics": 0, "artifacts": 0}
    status["publish"] = record
    warnings = status.setdefault("warnings", [])
    writer = None
    try:
        from toolkit.pipeline import build_tracker

        with masked_argv():
            tracker = build_tracker(target.node)
            with _bounded(tracker):
                writer = tracker.start_run(name, published_config(run_dir, status, overrides))
                run_id = getattr(writer, "run_id", None) or getattr(writer, "id", None)
                record["run_id"] = scrub(str(run_id)) if run_id else None
                metrics, clashes = summary_metrics(run_dir)
                if clashes:
                    warnings.append(f"publish: {len(clashes)} metric key(s) named two values (the last was "
                                    f"published), e.g. {', '.join(clashes[:3])}")
                if metrics:
                    writer.log_metrics(metrics, 0)
                record["metrics"] = len(metrics)
                with tempfile.TemporaryDirectory(prefix="sweepkit-publish-") as tmp:
                    stage = Path(tmp)
                    results = stage_results(run_dir, stage)
                    root = [f for f in ROOT_ARTIFACTS if (run_dir / f).is_file()
                            or (write_report is not None and f.startswith("report."))]
                    for path in results:
                        writer.log_artifact(str(path))
                    record.update(status="published", artifacts=len(results) + len(root))
                    record["line"] = _line(record)
                    if write_report is not None:
                        write_report()  # the uploaded report names the published run
                    for file in root:
                        writer.log_artifact(str(_stage(run_dir / file, stage / file)))
                    failed = any(v.get("status") != "ok" for v in status.get("analyses", {}).values())
                    writer.finish("failed" if failed else "finished")
                    writer = None
        log.info("published to %s as run '%s'", where, name)
    except Exception as exc:
        message = _message(exc)
        if not isinstance(exc, UserError):
            log.warning("publish: %s", scrub(traceback.format_exc()))
        left = ""
        if writer is not None:
            left = f"; its run '{name}' was left incomplete (finished as failed)"
            with contextlib.suppress(Exception):
                writer.finish("failed")
        record.update(status="failed", message=message)
        record["line"] = _line(record)
        warnings.append(f"publish: the results were not published to {where}: {message}{left}; "
                        f"the local results are complete")
        log.warning(warnings[-1])
    except BaseException:
        record.update(status="interrupted", message="interrupted")
        record["line"] = _line(record)
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.finish("killed")
        raise
    return record


def _line(record: Mapping[str, Any]) -> str:
    """The report's one line about the publish target."""
    run = f"run '{record['run']}'" + (f" (id {record['run_id']})" if record.get("run_id") else "")
    if record.get("status") == "published":
        return (f"published to {record['target']} as {run}: {record.get('metrics', 0)} metrics, "
                f"{record.get('artifacts', 0)} artifacts")
    if record.get("status") in ("skipped", "interrupted"):  # an interrupted record's message is "interrupted"
        return f"not published to {record['target']}: {record.get('message', '')}"
    return f"not published to {record['target']} (the warning below says why); the local results are complete"


def skipped(target: PublishTarget, why: str) -> dict[str, Any]:
    """The record of a publish that did not run (the run failed before its analyses)."""
    record = {"tracker": target.tracker, "target": target.describe(), "run": None, "run_id": None,
              "status": "skipped", "message": why}
    record["line"] = _line(record)
    return record
