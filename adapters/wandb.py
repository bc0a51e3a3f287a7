"""Weights & Biases adapter: online through wandb.Api, or offline run folders read straight from disk.

``WandbTracker(entity, project)`` lists runs (every page), reads full unsampled histories key by key with
``scan_history`` (joined on ``_step``) in a thread pool, retries 429/5xx/timeouts with exponential backoff and
caches finished runs. ``WandbTracker(path="wandb/")`` reads ``offline-run-*``/``run-*`` folders without network.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import pandas as pd

from adapters import wandb_offline as offline
from adapters import wandb_online as online
from toolkit.cache import HistoryCache
from toolkit.errors import UserError, require_extra
from toolkit.progress import progress_bar
from toolkit.protocol import RunWriterBase, TrackerBase
from toolkit.runset import RUN_COLUMNS, Selection
from toolkit.secrets import scrub
from toolkit.settings import Settings, at_least

log = logging.getLogger(__name__)
_SELECTION_FIELDS = {"name_regex", "config", "state", "tags", "run_ids"}


@dataclass
class WandbSettings(Settings):
    """tracker=wandb: a project online, or offline run folders on disk (conf/tracker/wandb.yaml)."""

    entity: Optional[str] = None
    project: Optional[str] = None
    path: Optional[str] = None
    filters: Any = None
    sweep: Optional[str] = None
    timeout: float = at_least(20.0, 0, "a number of seconds")
    connect_timeout: float = at_least(3.0, 0, "a number of seconds")
    max_workers: int = at_least(8, 1, "an integer")
    sample: bool = False
    per_page: int = at_least(100, 1, "an integer")
    page_size: int = at_least(10000, 1, "an integer")
    retries: int = at_least(5, 0, "an integer")
    backoff: float = at_least(1.0, 0, "a number of seconds")
    max_backoff: float = 30.0
    offline: bool = False
    who: ClassVar[str] = "tracker"


class WandbTracker(TrackerBase):
    """Tracker adapter for W&B: online (entity/project, optional sweep and filters) or offline (path)."""

    name = "wandb"
    settings_type = WandbSettings

    def __init__(self, *args: Any, progress: bool = True, api_factory: Callable[[], Any] | None = None,
                 **kwargs: Any) -> None:
        """The settings (``WandbSettings``), the progress switch and, in tests, a stand-in for ``wandb.Api``."""
        self._progress = bool(progress)
        self._api_factory = api_factory
        super().__init__(*args, **kwargs)

    def setup(self, settings: WandbSettings) -> None:
        """Entity and project from the environment when unset; filters split."""
        self.entity = settings.entity or os.environ.get("WANDB_ENTITY") or None  # as wandb itself reads them
        self.project = settings.project or os.environ.get("WANDB_PROJECT") or None
        self.path = settings.path or None
        self.sweep = settings.sweep or None
        self.filters, self.filter_selection = _split_filters(settings.filters)
        self.timeout, self.retries, self.offline = settings.timeout, settings.retries, settings.offline
        self.backoff, self.max_backoff = settings.backoff, settings.max_backoff
        self._api: Any = None
        self._offline_runs: dict[str, offline.OfflineRun] = {}
        self._online_runs: dict[str, Any] = {}

    # ------------------------------------------------------------------ settings
    @property
    def is_offline(self) -> bool:
        """Reads come from run files on disk (tracker.path is set)."""
        return self.path is not None

    @property
    def run_path(self) -> str:
        """``entity/project`` (or ``project`` with the login's default entity)."""
        if not self.project:
            raise UserError("tracker=wandb: no project: set tracker.project=PROJECT or WANDB_PROJECT (tracker.entity "
                            "or WANDB_ENTITY too, unless it is your default), or tracker.path=wandb/ for offline runs")
        return f"{self.entity}/{self.project}" if self.entity else self.project

    def _warn(self, message: str) -> None:
        message = scrub(message)
        log.warning(message)
        self.warnings.append(message)

    # ------------------------------------------------------------------ read side
    def list_runs(self, selection: Selection) -> pd.DataFrame:
        """Runs table of the runs the selection (and tracker.filters / tracker.sweep) admit."""
        self.warnings = []
        rows = self._list_offline() if self.is_offline else self._list_online(selection)
        runs = pd.DataFrame(rows)
        for col in RUN_COLUMNS:
            if col not in runs.columns:
                runs[col] = pd.Series(dtype=object)
        fixed = list(RUN_COLUMNS)
        runs = runs[fixed + [c for c in runs.columns if c not in fixed]]
        if self.filter_selection is not None:
            runs = self.filter_selection.apply(runs)
        return runs

    def read_history(self, runs: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
        """Full history (run_id, step, one float column per key) of the given runs; all keys when None."""
        keys = [str(k) for k in keys] if keys else None
        run_ids = [str(r) for r in runs["run_id"]] if len(runs) else []
        frames = (self._history_offline if self.is_offline else self._history_online)(run_ids, keys)
        present = [f for f in frames if len(f)]
        if not present:
            return pd.DataFrame(columns=["run_id", "step", *(keys or [])])
        history = pd.concat(present, ignore_index=True, sort=False)
        metrics = keys or sorted(c for c in history.columns if c not in ("run_id", "step"))
        return history.reindex(columns=["run_id", "step", *metrics])

    # offline ----------------------------------------------------------------
    def _list_offline(self) -> list[dict[str, Any]]:
        self._offline_runs = {}
        found: list[str] = []
        files = offline.find_run_files(self.path or ".", found)
        for message in found:
            self._warn(message)
        with progress_bar(len(files), "reading W&B run files", self._progress) as bar:
            for file in files:
                bar.update(1)
                try:
                    run = offline.read_run_file(file)
                except (offline.CorruptRunFile, OSError) as exc:
                    why = type(exc).__name__ if isinstance(exc, OSError) else exc
                    self._warn(f"skipped W&B run file {file.parent.name}/{file.name}: {why}")
                    continue
                if self.sweep and run.sweep_id != self.sweep:
                    continue
                if self.filters and not mongo_match(run.doc(), self.filters):
                    continue
                steps = len(run.history_payloads)
                if run.problem:
                    self._warn(f"run {run.run_id} ({run.name}): {file.name} is damaged ({run.problem}); "
                               f"kept the readable prefix ({steps} steps), marked crashed")
                    run.exit_code = None
                elif run.exit_code is None:
                    self._warn(f"run {run.run_id} ({run.name}) has no exit record (killed, or still running); "
                               f"kept its {steps} steps, marked crashed")
                if run.run_id in self._offline_runs:
                    self._warn(f"run {run.run_id} appears in several folders; kept {file.parent.name}")
                self._offline_runs[run.run_id] = run
        return [run.row() for run in self._offline_runs.values()]

    def _history_offline(self, run_ids: Sequence[str], keys: list[str] | None) -> list[pd.DataFrame]:
        missing = [r for r in run_ids if r not in self._offline_runs]
        if missing:
            self._list_offline()
            unknown = [r for r in missing if r not in self._offline_runs]
            if unknown:
                raise UserError(f"W&B: no run file for run id(s) {', '.join(unknown[:5])} under '{self.path}'")
        frames = []
        with progress_bar(len(run_ids), "reading W&B histories", self._progress) as bar:
            for run_id in run_ids:
                frame = offline.history_frame(self._offline_runs[run_id], keys)
                frame.insert(0, "run_id", run_id)
                frames.append(frame)
                bar.update(1)
        return frames

    # online -----------------------------------------------------------------
    def api(self) -> Any:
        """The wandb.Api, built on first use within bounded time (no key or no network: a one-line UserError)."""
        if self._api is not None:
            return self._api
        if self._api_factory is not None:
            self._api = online.construct_api(self._api_factory, self.timeout)
            return self._api
        _ = self.run_path  # no project is said first, before the key, the extra or the network
        if not online.has_api_key():
            raise UserError("W&B: no API key: set WANDB_API_KEY or run `wandb login` "
                            "(or read offline runs with tracker.path=wandb/)")
        wandb = require_extra("wandb", "wandb", "tracker=wandb")
        if not any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
            online.probe_host(online.base_url(), self.settings.connect_timeout)  # behind a proxy: only the thread timeout
        self._api = online.construct_api(lambda: wandb.Api(timeout=int(max(1, self.timeout))), self.timeout)
        return self._api

    def _list_online(self, selection: Selection | None) -> list[dict[str, Any]]:
        path = self.run_path
        api = self.api()
        pushed = online.selection_filters(selection) if selection is not None else {}
        filters = online.merge_filters(self.filters, {"sweep": self.sweep} if self.sweep else None, pushed)
        kwargs: dict[str, Any] = {"filters": filters or None, "per_page": self.settings.per_page}
        if _accepts(api.runs, "lazy"):
            kwargs["lazy"] = False  # config and summary come with each page, not one request per run
        try:
            paginator = online.with_retries(lambda: api.runs(path, **kwargs), f"listing runs of {path}",
                                             self.retries, self.backoff, self.max_backoff)
            found: list[Any] = []
            with progress_bar(None, f"listing W&B runs of {path}", self._progress) as bar:
                def load_all() -> list[Any]:
                    found.clear()
                    for run in paginator:  # re-iterating resumes after the pages already loaded
                        found.append(run)
                        bar.update(1)
                    return found

                online.with_retries(load_all, f"listing runs of {path}", self.retries, self.backoff, self.max_backoff)
        except UserError:
            self._check_project()
            raise
        if not found:
            self._check_project()
        expected = _length(paginator)
        if expected is not None and expected != len(found):
            self._warn(f"W&B reported {expected} runs in {path} but {len(found)} were listed")
        self._online_runs = {str(run.id): run for run in found}
        return [online.run_row(run) for run in found]

    def _check_project(self) -> None:
        """Raise a UserError listing the entity's projects when the configured one does not exist."""
        api = self._api
        if api is None or not hasattr(api, "projects"):
            return
        try:
            projects = online.with_retries(lambda: [p.name for p in api.projects(self.entity)], "listing projects",
                                           min(self.retries, 2), self.backoff, self.max_backoff)
        except UserError:
            return
        if self.project not in projects:
            who = self.entity or "your default entity"
            listed = ", ".join(sorted(projects)[:30]) or "(none)"
            raise UserError(f"W&B: project '{self.project}' not found for {who}; its projects: {listed}")

    def _history_online(self, run_ids: Sequence[str], keys: list[str] | None) -> list[pd.DataFrame]:
        missing = [r for r in run_ids if r not in self._online_runs]
        if missing:
            api = self.api()
            for run_id in missing:
                self._online_runs[run_id] = online.with_retries(lambda r=run_id: api.run(f"{self.run_path}/{r}"),
                                                                f"fetching run {run_id}", self.retries, self.backoff,
                                                                self.max_backoff)
        if self.settings.sample:
            self._warn("tracker.sample=true: histories are W&B's 500-row samples, not the full logs")
        cache = self._cache()
        frames: dict[str, pd.DataFrame] = {}
        workers = max(1, min(self.settings.max_workers, len(run_ids)))
        with progress_bar(len(run_ids), "fetching W&B histories", self._progress) as bar, \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wandb-history") as pool:
            futures = {pool.submit(self._fetch_run, self._online_runs[r], keys, cache): r for r in run_ids}
            for future in as_completed(futures):
                frames[futures[future]] = future.result()
                bar.update(1)
        out = []
        for run_id in run_ids:
            frame = frames[run_id]
            frame.insert(0, "run_id", run_id)
            out.append(frame)
        return out

    def _cache(self) -> Any:
        if not self._cache_settings or self.settings.sample:
            return None
        try:
            return HistoryCache.from_settings(self._cache_settings, self.name, self.run_path)
        except UserError:
            raise
        except Exception as exc:  # pragma: no cover - an unusable cache folder must not stop reading
            self._warn(f"cache disabled: {online.one_line(exc)}")
            return None

    def _fetch_run(self, run: Any, keys: list[str] | None, cache: Any) -> pd.DataFrame:
        """One run's full history for the keys (from the cache when the run has not changed)."""
        run_keys = keys or online.history_keys(run)
        rid = str(run.id)
        if self.settings.sample:
            return online.with_retries(lambda: online.sampled_history(run, run_keys), f"history of run {rid}",
                                       self.retries, self.backoff, self.max_backoff)
        version = online.run_version(run)
        cached = cache.load(rid, run_keys) if cache is not None and run_keys else None
        if cached is not None and cached.version == version:
            return cached.frame.copy()
        min_step = None
        if cached is not None and cached.last_step is not None and getattr(run, "state", "") == "running":
            min_step = cached.last_step + 1
        series = [online.with_retries(lambda k=key: online.scan_key(run, k, self.settings.page_size, min_step),
                                      f"history of run {rid} key '{key}'", self.retries, self.backoff,
                                      self.max_backoff) for key in run_keys]
        frame = online.join_on_step(series, run_keys)
        if min_step is not None and cached is not None:
            frame = pd.concat([cached.frame, frame], ignore_index=True)
            frame = frame.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
        if cache is not None and run_keys:
            try:
                cache.save(rid, run_keys, frame, version)
            except OSError as exc:
                self._warn(f"could not cache run {rid}: {type(exc).__name__}")
        return frame

    # ------------------------------------------------------------------ write side
    def start_run(self, name: str, config: Mapping[str, Any] | None = None) -> "WandbRunWriter":
        """Start a W&B run (offline when tracker.offline or WANDB_MODE=offline; several per process)."""
        wandb = require_extra("wandb", "wandb", "tracker=wandb")
        kwargs: dict[str, Any] = {"project": self.project or "sweepkit", "entity": self.entity, "name": name,
                                  "config": dict(config or {}), "reinit": "create_new"}
        if self.offline or os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun"):
            kwargs["mode"] = "offline"
        if self.path:
            folder = Path(self.path).expanduser()
            root = folder.parent if folder.name == "wandb" else folder
            root.mkdir(parents=True, exist_ok=True)
            kwargs["dir"] = str(root)
        try:
            run = wandb.init(**kwargs)
        except Exception as exc:
            raise UserError(f"W&B: could not start run '{name}': {online.one_line(exc)}") from None
        return WandbRunWriter(run)


class WandbRunWriter(RunWriterBase):
    """One W&B run being written (config, metrics at steps, artifacts, finish)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.run_id = str(getattr(run, "id", ""))
        self.name = str(getattr(run, "name", None) or self.run_id)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Add to (or change) the run's config."""
        self.run.config.update(dict(config), allow_val_change=True)

    def _where(self) -> str:
        return self.run_id

    def _value(self, key: str, value: Any, step: int) -> Any:
        return value  # as given: W&B takes its own media and histogram types too

    def _write_metrics(self, values: dict[str, Any], step: int) -> None:
        """Log metrics at a step (steps must not decrease, as W&B requires)."""
        self.run.log(values, step=step)

    def log_artifact(self, path: str) -> None:
        """Save a file with the run (wandb.save semantics: kept in the run's files)."""
        file = Path(path)
        if not file.exists():
            raise UserError(f"log_artifact: '{path}' does not exist")
        self.run.save(str(file.resolve()), base_path=str(file.resolve().parent), policy="now")

    def _close(self, status: str) -> None:
        """Finish the run: exit code 0 for finished/success, 1 otherwise."""
        ok = str(status).lower() in ("finished", "success", "succeeded", "ok", "completed")
        self.run.finish(exit_code=0 if ok else 1)


def _length(paginator: Any) -> int | None:
    """The total a W&B paginator reports (known once its pages are loaded), if any."""
    try:
        value = getattr(paginator, "_length", None)
    except Exception:  # a count we cannot get is only a missed consistency check
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _accepts(fn: Any, name: str) -> bool:
    """Whether a callable takes a keyword argument ``name`` (or **kwargs)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _split_filters(filters: Any) -> tuple[dict[str, Any], Selection | None]:
    """tracker.filters: a Selection (or its mapping form) is applied client-side, else a W&B Mongo-style dict."""
    if filters is None:
        return {}, None
    if isinstance(filters, Selection):
        return {}, filters
    if hasattr(filters, "items"):
        filters = dict(filters)
    if not isinstance(filters, dict):
        raise UserError(f"tracker.filters: expected a mapping (W&B filters or a selection), got {type(filters).__name__}")
    if filters and set(filters) <= _SELECTION_FIELDS and not _has_operator(filters) and \
            not (set(filters) <= {"state", "tags"} and all(isinstance(v, str) for v in filters.values())):
        return {}, Selection.from_config(filters)
    return filters, None


def _has_operator(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(str(k).startswith("$") or _has_operator(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_operator(v) for v in value)
    return False


# ---------------------------------------------------------------------- Mongo-style filters for offline runs
_MISSING = object()


def _lookup(doc: Any, path: str) -> Any:
    value = doc
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, Mapping) and "value" in value and isinstance(value["value"], Mapping) and part in value["value"]:
            value = value["value"][part]
        else:
            return _MISSING
    if isinstance(value, Mapping) and set(value) <= {"value", "desc"} and "value" in value and path.startswith("config."):
        value = value["value"]  # config.lr means config.lr.value
    return value


def _compare(value: Any, op: str, arg: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if value is _MISSING:
        return op in ("$ne", "$nin")
    if op == "$eq":
        return value == arg or any(v == arg for v in values)
    if op == "$ne":
        return not _compare(value, "$eq", arg)
    if op == "$in":
        return any(v == a for v in values for a in (arg or []))
    if op == "$nin":
        return not _compare(value, "$in", arg)
    if op == "$regex":
        return any(isinstance(v, str) and re.search(str(arg), v) is not None for v in values)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        try:
            a, b = float(value), float(arg)
        except (TypeError, ValueError):
            return False
        return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]
    raise UserError(f"tracker.filters: operator '{op}' is not supported for offline runs "
                    "($and $or $nor $eq $ne $in $nin $gt $gte $lt $lte $regex $exists)")


_LOGIC: dict[str, Callable[[Iterable[bool]], bool]] = {"$and": all, "$or": any, "$nor": lambda m: not any(m)}


def mongo_match(doc: Mapping[str, Any], flt: Mapping[str, Any]) -> bool:
    """Whether a run document matches a W&B (Mongo-style) filter; the common operators only."""
    for key, cond in flt.items():
        if key in _LOGIC:
            if not _LOGIC[key](mongo_match(doc, c) for c in cond):
                return False
        elif str(key).startswith("$"):
            raise UserError(f"tracker.filters: operator '{key}' is not supported for offline runs")
        else:
            value = _lookup(doc, str(key))
            if isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond):
                if not all(_compare(value, op, arg) for op, arg in cond.items()):
                    return False
            elif not _compare(value, "$eq", cond):
                return False
    return True


__all__ = ["WandbTracker", "WandbRunWriter", "mongo_match"]
