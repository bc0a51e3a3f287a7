"""MLflow adapter: list runs, read full metric histories (fast paths + cache), write runs with MlflowClient.

Histories are read by one of three paths, chosen by ``fast_path`` ("auto" picks from the URI):

- ``sql``: a SQL backend store (``sqlite:///...``, ``postgresql://...``) read directly and read-only
  (``adapters.mlflow_sql``: sqlite is read with points aggregated in SQLite and parsed by numpy, exactly, in
  parallel parts; a sqlite store without a filter string is also *listed* in SQL, so mlflow is not even imported);
- ``rest``: a tracking server (``http(s)://...``) through its bulk history endpoint, in parallel chunks that
  stay below its 25,000-points-per-response cap (a full answer is split further, never trusted);
- ``client``: ``MlflowClient.get_metric_history`` per run and key (any URI; the slow fallback).

All paths return the same RunSet. Runs are otherwise listed with ``MlflowClient.search_runs``, page by page. Each
run's history is cached per key set (``toolkit.cache``) against a version made of its status, end time and latest
metric timestamps/steps, and a fingerprint of its points (per key: how many, the newest timestamp, how many carry
it). A cached read always equals a fresh read:

- a finished (failed, killed) run whose version is unchanged is served from the cache without a query;
- a running run may log any step again (resumed from a checkpoint), which changes neither its version nor its
  latest metrics, so on a sqlite store its fingerprint is checked on every read (a count over the (run, key, step)
  index, no points read): unchanged, the cache is served; changed, the run is fetched again from the lowest step
  among the points stamped at or after the newest cached timestamp (exact: when the counts show that some new point
  is older than that, e.g. a skewed clock, it is fetched in full). A version change is checked the same way;
- on a server, through the client or on another SQL store there is no cheap count: a running or changed run is
  fetched in full.

MLflow keeps every logged point with its timestamp; each step takes the newest value (then the largest).

Write side: ``start_run`` creates the experiment when missing; a new experiment in a sqlite store keeps its
artifacts beside the database (``<store folder>/mlruns/<experiment>``) rather than in the current folder.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from adapters.mlflow_rest import BULK_CAP, RestSource, ServerError
from adapters.mlflow_sql import SqlSource, long_frame, sql_scheme, sqlite_path
from toolkit.cache import HistoryCache, safe_name
from toolkit.errors import UserError, require_extra
from toolkit.protocol import RunWriterBase, TrackerBase
from toolkit.settings import Choice, Settings, at_least
from toolkit.progress import progress_bar
from toolkit.runset import (CONFIG_PREFIX, SUMMARY_PREFIX, Selection, coerce_number, flatten_config,
                            runs_frame)
from toolkit.secrets import scrub

log = logging.getLogger(__name__)

STATE = {"RUNNING": "running", "SCHEDULED": "scheduled", "FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
TERMINAL = ("FINISHED", "FAILED", "KILLED")
STATUS = {"finished": "FINISHED", "success": "FINISHED", "failed": "FAILED", "crashed": "FAILED", "killed": "KILLED"}
PAGE_SIZE = 1000  # runs per search_runs page (tests shrink it to check pagination)
MAX_PARAM_LENGTH = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


def normalize_uri(uri: str | None) -> str:
    """The tracking URI: the given one, else MLFLOW_TRACKING_URI; a bare ``*.db`` path becomes sqlite:///."""
    uri = str(uri or os.environ.get("MLFLOW_TRACKING_URI") or "").strip()
    if not uri:
        raise UserError("tracker.uri: no MLflow tracking URI (set tracker.uri=http://HOST:5000 or sqlite:///mlflow.db)")
    if "://" not in uri and not uri.startswith("file:") and uri.endswith((".db", ".sqlite", ".sqlite3")):
        uri = "sqlite:///" + uri
    return uri


def _one_line(exc: BaseException) -> str:
    return scrub((" ".join(str(exc).split()) or type(exc).__name__)[:300])


def _transient(exc: BaseException) -> bool:
    """Whether retrying may help (connection trouble, timeouts, 5xx, a locked database)."""
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (ConnectionError, TimeoutError, sqlite3.OperationalError)):
        return not isinstance(exc, sqlite3.OperationalError) or "locked" in str(exc) or "unable to open" in str(exc)
    if isinstance(exc, ServerError):
        return exc.status >= 500 or exc.status == 429
    return type(exc).__name__ == "MlflowException" and getattr(exc, "error_code", "") in _TRANSIENT_CODES


def transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the store's or the server's answer (or the network's), not a bug of ours."""
    if _transient(exc) or isinstance(exc, (OSError, sqlite3.Error, ServerError)):
        return True
    module = type(exc).__module__.split(".")[0]
    return module in ("mlflow", "requests", "urllib3", "http", "sqlalchemy")


@dataclass
class _RunMeta:
    """What the listing learned about a run: its cache version and last step per metric key."""

    version: str
    last_steps: dict[str, int] = field(default_factory=dict)
    status: str = ""

    @property
    def finished(self) -> bool:
        """Whether the run has ended (FINISHED, FAILED, KILLED): no more points are expected."""
        return self.status in TERMINAL


class FastPath(Choice):
    """Where histories are read from: chosen from the URI, the SQL store, the server's bulk endpoint, the client."""

    auto = "auto"
    sql = "sql"
    rest = "rest"
    client = "client"


@dataclass
class MlflowSettings(Settings):
    """tracker=mlflow: the store or server, the experiment, and how to read it (conf/tracker/mlflow.yaml)."""

    uri: Optional[str] = None
    experiment: Optional[str] = None
    filter_string: Optional[str] = None
    fast_path: FastPath = FastPath.auto
    max_workers: int = at_least(8, 1, "an integer")
    retries: int = at_least(3, 0, "an integer")
    backoff: float = at_least(0.5, 0, "a number of seconds")
    timeout: float = 30.0
    bulk_cap: int = at_least(BULK_CAP, 1, "an integer")
    sql_chunk: int = at_least(200, 1, "an integer")
    flush_every: int = at_least(100, 1, "an integer")
    artifact_root: Optional[str] = None
    who: ClassVar[str] = "tracker"


class MlflowTracker(TrackerBase):
    """MLflow runs of one experiment through the adapter protocol (read: RunSet; write: RunWriter)."""

    name = "mlflow"
    settings_type = MlflowSettings

    def setup(self, settings: MlflowSettings) -> None:
        """The normalised URI and the history source the fast path resolves to."""
        self.uri = normalize_uri(settings.uri)
        self.experiment = settings.experiment or None
        self.filter_string = (settings.filter_string or "").strip()
        fast_path = settings.fast_path.value
        self.scheme = urlparse(self.uri).scheme.lower()
        if fast_path == "auto":
            fast_path = "sql" if sql_scheme(self.uri) else "rest" if self.scheme in ("http", "https") else "client"
        elif fast_path == "sql" and not sql_scheme(self.uri):
            raise UserError(f"tracker.fast_path=sql needs a sqlite:/// or postgresql:// URI, got '{scrub(self.uri)}'")
        elif fast_path == "rest" and self.scheme not in ("http", "https"):
            raise UserError(f"tracker.fast_path=rest needs an http(s):// URI, got '{scrub(self.uri)}'")
        self.fast_path = fast_path
        self.max_workers, self.retries, self.timeout = settings.max_workers, settings.retries, settings.timeout
        self.flush_every = settings.flush_every
        self.artifact_root = settings.artifact_root or None
        self.stats: Counter = Counter()
        self._client_obj = None
        self._meta: dict[str, _RunMeta] = {}

    # ---------------------------------------------------------------- settings, client, errors
    @property
    def _client(self):
        if self._client_obj is None:
            require_extra("mlflow", "mlflow")
            from mlflow import MlflowClient

            self._client_obj = MlflowClient(tracking_uri=self.uri)
        return self._client_obj

    @contextlib.contextmanager
    def _http_settings(self) -> Iterator[None]:
        """Let our own retry loop (bounded, configurable) replace MLflow's long built-in HTTP retries."""
        wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(int(self.timeout), 1))}
        saved = {k: os.environ.get(k) for k in wanted}
        os.environ.update({k: v for k, v in wanted.items() if saved[k] is None})
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn``, retrying transient failures ``retries`` times with doubling backoff."""
        delay = self.settings.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:
                if attempt >= self.retries or not _transient(exc):
                    raise
                self.stats["retries"] += 1
                log.debug("mlflow: retrying after %s", type(exc).__name__)
                time.sleep(delay)
                delay *= 2

    def _fault(self, exc: BaseException, doing: str) -> BaseException:
        """A one-line UserError for a transport or server failure while ``doing`` (secrets scrubbed); anything
        else (a bug) is given back as it is, to be raised with its traceback."""
        if isinstance(exc, UserError):
            return UserError(scrub(str(exc)))
        if not transport_error(exc):
            return exc
        tries = f" after {self.retries + 1} tries" if _transient(exc) else ""
        return UserError(f"mlflow: {doing} at {scrub(self.uri)} failed{tries}: {_one_line(exc)}")

    def _check_store_exists(self) -> None:
        if self.uri.startswith("sqlite:///") and not sqlite_path(self.uri).is_file():
            raise UserError(f"tracker.uri: no MLflow database at {sqlite_path(self.uri)} (from '{scrub(self.uri)}')")

    # ---------------------------------------------------------------- read side: runs
    def _direct_sqlite(self) -> bool:
        """Whether experiments and runs come straight from a sqlite store (no filter string to evaluate): fast, and
        without importing mlflow at all."""
        return self.fast_path == "sql" and self.uri.startswith("sqlite:///") and not self.filter_string

    def _experiment_id(self) -> str:
        """Resolve the experiment name (or id); an unknown one lists those that exist."""
        if self._direct_sqlite():
            with contextlib.closing(SqlSource(self.uri, stats=self.stats)) as source:
                found, names = self._retrying(lambda: source.experiment(self.experiment))
            if found is not None:
                return found
            self._unknown_experiment(names)
        client = self._client
        exp = None
        if self.experiment is not None:
            exp = self._retrying(lambda: client.get_experiment_by_name(self.experiment))
            if exp is None and self.experiment.isdigit():
                with contextlib.suppress(Exception):
                    exp = client.get_experiment(self.experiment)
        if exp is None or getattr(exp, "lifecycle_stage", "active") == "deleted":
            self._unknown_experiment(self._experiment_names())
        return exp.experiment_id

    def _unknown_experiment(self, names: list[str]) -> None:
        shown = ", ".join(names[:30]) + (f" (+{len(names) - 30} more)" if len(names) > 30 else "")
        what = f"no experiment '{self.experiment}'" if self.experiment else "tracker.experiment is not set"
        raise UserError(f"mlflow: {what} at {scrub(self.uri)}; experiments: {shown or '(none)'}")

    def _experiment_names(self) -> list[str]:
        pages = self._pages(lambda t: self._client.search_experiments(max_results=1000, page_token=t))
        return sorted(e.name for page in pages for e in page)

    def _pages(self, fetch: Callable[[Any], Any], stop_empty: bool = False) -> Iterator[Any]:
        """The pages of a paginated client call ``fetch(page_token)``, each retried, up to the last one (without a
        next token; or an empty one, when ``stop_empty``)."""
        token = None
        while True:
            page = self._retrying(lambda: fetch(token))
            yield page
            token = page.token
            if not token or (stop_empty and not len(page)):
                return

    def _filter(self, selection: Selection) -> str:
        clauses = [self.filter_string] if self.filter_string else []
        if selection.run_ids and len(selection.run_ids) <= 100:
            ids = ", ".join("'" + r.replace("'", "") + "'" for r in selection.run_ids)
            clauses.append(f"attributes.run_id IN ({ids})")
        return " and ".join(clauses)

    def list_runs(self, selection: Selection) -> pd.DataFrame:
        """Runs table of the experiment's runs matching filter_string and the selection (all pages)."""
        self._check_store_exists()
        with self._http_settings():
            try:
                exp_id = self._experiment_id()
                runs = self._search(exp_id, self._filter(selection))
            except UserError:
                raise
            except Exception as exc:
                if type(exc).__name__ == "MlflowException" and getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
                    raise UserError(f"tracker.filter_string '{self.filter_string}': {_one_line(exc)}") from None
                raise self._fault(exc, "listing runs") from None
        rows = [self._run_row(run) for run in runs]
        self._meta.update((row["run_id"], meta) for row, meta in rows)
        return selection.apply(runs_frame([row for row, _ in rows], tags_dtype=str))

    def _search(self, exp_id: str, filter_string: str) -> list:
        runs: list = []
        with progress_bar(None, "listing mlflow runs", self._progress) as bar:
            if self._direct_sqlite():  # all active runs straight from the store (no filter string to evaluate)
                with contextlib.closing(SqlSource(self.uri, stats=self.stats)) as source:
                    runs = self._retrying(lambda: source.list_runs(exp_id))
                bar.update(len(runs))
                return runs
            for page in self._pages(lambda t: self._client.search_runs(
                    [exp_id], filter_string=filter_string, max_results=PAGE_SIZE, page_token=t,
                    order_by=["attributes.start_time ASC"]), stop_empty=True):
                runs.extend(page)
                bar.update(len(page))
            return runs

    @staticmethod
    def _run_row(run: Any) -> tuple[dict[str, Any], _RunMeta]:
        info, data = run.info, run.data
        tags = dict(data.tags)
        user_tags = sorted(k if v in ("", "true", "True") else f"{k}={v}" for k, v in tags.items()
                           if not k.startswith("mlflow."))
        row: dict[str, Any] = {
            "run_id": info.run_id,
            "name": info.run_name or tags.get("mlflow.runName") or info.run_id,
            "state": STATE.get(str(info.status), str(info.status).lower()),
            "created_at": pd.Timestamp(info.start_time, unit="ms", tz="UTC") if info.start_time else pd.NaT,
            "tags": ",".join(user_tags),
        }
        row.update({CONFIG_PREFIX + key: coerce_number(value) for key, value in sorted(data.params.items())})
        row.update({SUMMARY_PREFIX + key: float(value) for key, value in sorted(data.metrics.items())})
        metric_objs = list(getattr(data, "_metric_objs", []) or [])
        last_steps = {m.key: int(m.step) for m in metric_objs}
        newest = max((int(m.timestamp) for m in metric_objs), default=0)
        version = f"{info.status}|{info.end_time}|{newest}|{max(last_steps.values(), default=-1)}|{len(last_steps)}"
        return row, _RunMeta(version, last_steps, str(info.status))

    def _ensure_meta(self, run_ids: Sequence[str]) -> None:
        """Learn versions and last steps of runs that were not listed by this tracker."""
        with self._http_settings():
            for run_id in run_ids:
                if run_id not in self._meta:
                    try:
                        run = self._retrying(lambda r=run_id: self._client.get_run(r))
                    except Exception as exc:
                        raise self._fault(exc, f"reading run {run_id}") from None
                    self._meta[run_id] = self._run_row(run)[1]

    # ---------------------------------------------------------------- read side: histories
    def _source(self) -> Any:
        if self.fast_path == "sql":
            return SqlSource(self.uri, chunk=self.settings.sql_chunk, stats=self.stats, workers=self.max_workers)
        if self.fast_path == "rest":
            return RestSource(self.uri, workers=self.max_workers, timeout=self.timeout, cap=self.settings.bulk_cap, stats=self.stats)
        return _ClientSource(self._client, self.max_workers, self.stats)

    def _cache(self) -> HistoryCache | None:
        return HistoryCache.from_settings(self._cache_settings, self.name, self.experiment or "_")

    def read_history(self, runs: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
        """Wide history of the runs for ``keys`` (all logged keys when None), from the cache where it is current."""
        run_ids = [str(r) for r in runs["run_id"]] if len(runs) else []
        self._check_store_exists()
        self._ensure_meta(run_ids)
        if keys is None:
            keys = sorted({k for r in run_ids for k in self._meta[r].last_steps})
        keys = list(dict.fromkeys(str(k) for k in keys))
        cache = self._cache()
        frames: dict[str, pd.DataFrame] = {}
        hits: dict[str, Any] = {}
        todo: list[tuple[str, int | None, pd.DataFrame | None]] = []
        for run_id in run_ids:
            meta = self._meta[run_id]
            hit = cache.load(run_id, keys) if cache is not None and keys else None
            if hit is not None and hit.version == meta.version and meta.finished:
                frames[run_id] = hit.frame
                self.stats["cached_runs"] += 1
            elif hit is not None and hit.fingerprint is not None and self._checks_points():
                hits[run_id] = hit
            else:
                todo.append((run_id, None, None))
        fingerprints: dict[str, dict[str, list[int]]] = {}
        if keys and cache is not None and self._checks_points():
            need = [r for r in run_ids if r in hits or (r not in frames and not self._meta[r].finished)]
            if need:
                try:
                    fingerprints, since = self._check_points(need, hits, keys)
                except Exception as exc:
                    raise self._fault(exc, "checking cached histories") from None
                for run_id, hit in hits.items():
                    if run_id not in since:  # not one point changed
                        frames[run_id] = hit.frame
                        self.stats.update(cached_runs=1, verified_runs=1)
                        if hit.version != self._meta[run_id].version:  # e.g. it finished: not checked again
                            self._save(cache, run_id, keys, hit.frame, fingerprints.get(run_id))
                    else:
                        todo.append((run_id, since[run_id], None if since[run_id] is None else hit.frame))
        if todo and keys:
            frames.update(self._fetch(todo, keys, cache, fingerprints))
        parts = [frames[r].assign(run_id=r) for r in run_ids if r in frames and len(frames[r])]
        if not parts:
            return _empty_wide(keys).assign(run_id=pd.Series(dtype=object))[["run_id", "step", *keys]]
        history = pd.concat(parts, ignore_index=True)[["run_id", "step", *keys]]
        return history.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)

    def _checks_points(self) -> bool:
        """Whether the store can be asked cheaply what changed (a sqlite store read directly)."""
        return self.fast_path == "sql" and sql_scheme(self.uri) == "sqlite"

    def _check_points(self, run_ids: list[str], hits: Mapping[str, Any], keys: list[str]
                      ) -> tuple[dict[str, dict[str, list[int]]], dict[str, int | None]]:
        """The runs' fingerprints now, and for each cached run that changed the step after which it must be fetched
        again (None: in full). All queries run in one read transaction (one snapshot of the store).

        Points are only ever added. Per key, with ``n, t, e`` cached (points, newest timestamp, points stamped ``t``)
        and ``n'`` points now (a count over an index): ``n' == n``: unchanged, nothing more is read. Else every new
        point is stamped at or after ``t`` exactly when the store holds ``e + n' - n`` points from ``t`` on (a range
        of the primary key); then the lowest of their steps bounds every changed step. A key with nothing cached is
        fetched from its first step; anything else (fewer points, a new point stamped before ``t``, e.g. a skewed
        clock) fetches the run in full. Newest timestamps are looked up only for keys that changed (or were never
        cached), so an unchanged run, even one left RUNNING by a dead process, costs one count per key."""
        with contextlib.closing(SqlSource(self.uri, stats=self.stats)) as source:
            now = self._retrying(lambda: source.counts(run_ids, keys))
            marks, firsts, since, stale = [], [], {}, []
            for run_id in run_ids:
                hit = hits.get(run_id)
                if hit is None:  # fetched in full: its fingerprint is taken now
                    stale += [(run_id, k) for k in now[run_id]]
                    continue
                old, new = hit.fingerprint, now[run_id]
                changed = [k for k in keys if _points_of(old, k)[0] != new.get(k, 0)]
                if not changed:
                    continue
                since[run_id] = -1
                stale += [(run_id, k) for k in changed if new.get(k, 0)]
                for k in changed:
                    n_old, t_old, _ = _points_of(old, k)
                    if new.get(k, 0) < n_old:
                        since[run_id] = None
                    elif n_old == 0:
                        firsts.append((run_id, k))
                    else:
                        marks.append((run_id, k, t_old))
            found = self._retrying(lambda: source.changed_since(marks)) if marks else {}
            first = self._retrying(lambda: source.first_steps(firsts)) if firsts else {}
            newest = self._retrying(lambda: source.newest(stale)) if stale else {}
        lowest: dict[str, list[int]] = defaultdict(list)
        for run_id, k, _ in marks:
            n_old, _, e_old = _points_of(hits[run_id].fingerprint, k)
            count, step = found.get((run_id, k), (0, 0))
            if count != e_old + now[run_id].get(k, 0) - n_old:
                since[run_id] = None  # some new point is stamped before the newest cached one
            else:
                lowest[run_id].append(step)
        for run_id, k in firsts:
            lowest[run_id].append(first.get((run_id, k), 0))
        for run_id in since:
            if since[run_id] is not None:
                since[run_id] = min(lowest[run_id]) - 1 if lowest[run_id] else None
        fingerprints: dict[str, dict[str, list[int]]] = {}
        for run_id in run_ids:
            old = hits[run_id].fingerprint if run_id in hits else {}
            fp = fingerprints[run_id] = {}
            for k, n in now[run_id].items():
                if (run_id, k) in newest:
                    fp[k] = [n, *newest[(run_id, k)]]
                elif _points_of(old, k)[0] == n:
                    fp[k] = list(_points_of(old, k))
        self.stats["changed_runs"] += len(since)
        return fingerprints, since

    def _save(self, cache: HistoryCache, run_id: str, keys: list[str], frame: pd.DataFrame,
              fingerprint: Mapping[str, Any] | None) -> None:
        try:
            cache.save(run_id, keys, frame, self._meta[run_id].version, fingerprint)
        except OSError as exc:  # an unwritable cache folder must not stop the read
            message = f"mlflow: could not write the history cache under {cache.dir}: {_one_line(exc)}"
            if message not in self.warnings:
                self.warnings.append(message)

    def _fetch(self, todo: list[tuple[str, int | None, pd.DataFrame | None]], keys: list[str],
               cache: HistoryCache | None, fingerprints: Mapping[str, dict[str, list[int]]] | None = None
               ) -> dict[str, pd.DataFrame]:
        """Fetch what is missing in parallel tasks; cache each run as soon as all its keys are in.

        ``todo``: (run, step after which to fetch or None for all, cached frame up to that step). Each run is cached
        with its fingerprint: the one taken before the fetch (``fingerprints``, a sqlite store), else one computed
        from the fetched points when their timestamps are the store's (every path but sqlite's key-major plan)."""
        fingerprints = fingerprints or {}
        since = {r: s for r, s, _ in todo if s is not None}
        base = {r: b for r, _, b in todo if b is not None}
        run_ids = [r for r, _, _ in todo]
        present = {r: self._meta[r].last_steps for r in run_ids}
        source = self._source()
        tasks = source.plan(run_ids, keys, since, present)
        pending: Counter = Counter(r for covered, _ in tasks for r in covered)
        pieces: dict[str, list[pd.DataFrame]] = defaultdict(list)
        done: dict[str, pd.DataFrame] = {}
        self.stats["fetched_runs"] += len(run_ids)
        self.stats["incremental_runs"] += len(since)

        def finish(run_id: str) -> None:
            got = pieces.pop(run_id, [])
            wide = _to_wide(got, keys)
            if run_id in base:  # cached steps up to `since`, fetched ones after it
                old = base[run_id]
                wide = pd.concat([old[old["step"] <= since[run_id]], wide[wide["step"] > since[run_id]]],
                                 ignore_index=True)
            done[run_id] = wide
            if cache is not None:
                fingerprint = fingerprints.get(run_id)
                if fingerprint is None and self.fast_path != "sql" and run_id not in since:
                    fingerprint = _fingerprint(got)
                self._save(cache, run_id, keys, wide, fingerprint)
            bar.update(1)

        with self._http_settings(), progress_bar(len(run_ids), "fetching mlflow histories", self._progress) as bar:
            for run_id in run_ids:
                if not pending[run_id]:
                    finish(run_id)
            pool = ThreadPoolExecutor(max_workers=min(source.workers, max(len(tasks), 1)))
            try:
                futures = {pool.submit(self._retrying, fn): covered for covered, fn in tasks}
                for fut in as_completed(futures):
                    try:
                        frame = fut.result()
                    except Exception as exc:
                        for other in futures:
                            other.cancel()
                        raise self._fault(exc, "fetching metric histories") from None
                    for run_id, part in frame.groupby("run_id", sort=False, observed=True):
                        pieces[str(run_id)].append(part)
                    for run_id in futures[fut]:
                        pending[run_id] -= 1
                        if not pending[run_id]:
                            finish(run_id)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                source.close()
        return done

    # ---------------------------------------------------------------- write side
    def _artifact_location(self, exp_name: str) -> str | None:
        """Where a new experiment keeps its artifacts: ``<artifact_root>/<experiment>``.

        ``artifact_root`` defaults, for a sqlite store, to ``mlruns/`` beside the database file (MLflow's own default
        is ``./mlruns`` in whatever folder the writer happens to run in); for a server or another SQL store it is
        left to MLflow (the server's ``--default-artifact-root``).
        """
        root = self.artifact_root
        if root is None and self.uri.startswith("sqlite:///"):
            root = str(sqlite_path(self.uri).resolve().parent / "mlruns")
        if root is None:
            return None
        if "://" in root or root.startswith("file:"):
            return root.rstrip("/") + "/" + safe_name(exp_name)
        return (Path(root).expanduser().resolve() / safe_name(exp_name)).as_uri()

    def start_run(self, name: str, config: Mapping[str, Any] | None = None,
                  tags: Sequence[str] | Mapping[str, str] | None = None) -> "MlflowRunWriter":
        """Create a run in the experiment (created if missing) and return its writer."""
        client = self._client
        exp_name = self.experiment or "Default"
        exp = client.get_experiment_by_name(exp_name)
        if exp is None:
            try:
                exp_id = client.create_experiment(exp_name, artifact_location=self._artifact_location(exp_name))
            except Exception:  # created meanwhile by another writer
                if (exp := client.get_experiment_by_name(exp_name)) is None:
                    raise
        if exp is not None:
            exp_id = exp.experiment_id
        tag_map = dict(tags) if isinstance(tags, Mapping) else {str(t): "" for t in (tags or [])}
        run = client.create_run(exp_id, run_name=str(name), tags={str(k): str(v) for k, v in tag_map.items()})
        writer = MlflowRunWriter(client, run.info.run_id, flush_every=self.flush_every, name=str(name))
        if config:
            writer.log_config(config)
        return writer


def _points_of(fingerprint: Mapping[str, Any] | None, key: str) -> tuple[int, int, int]:
    """(points, newest timestamp, points at it) of one key in a fingerprint; (0, 0, 0) when it has none."""
    entry = (fingerprint or {}).get(key) or (0, 0, 0)
    return int(entry[0]), int(entry[1]), int(entry[2])


def _fingerprint(pieces: Sequence[pd.DataFrame]) -> dict[str, list[int]]:
    """The fingerprint of fetched long points (their timestamps must be the store's): per key the number of points,
    the newest timestamp and the number of points stamped with it."""
    present = [p[["key", "timestamp"]] for p in pieces if len(p)]
    if not present:
        return {}
    points = pd.concat(present, ignore_index=True)
    points["key"] = points["key"].astype(str)
    newest = points.groupby("key", sort=False)["timestamp"].transform("max")
    stats = points.assign(at_newest=points["timestamp"] == newest).groupby("key", sort=False).agg(
        n=("timestamp", "size"), t=("timestamp", "max"), e=("at_newest", "sum"))
    return {str(k): [int(n), int(t), int(e)] for k, n, t, e in stats.itertuples()}


def _empty_wide(keys: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype="int64"), **{k: pd.Series(dtype=float) for k in keys}})


def _to_wide(pieces: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """Long points of one run -> wide (step + one column per key); a key logged twice at a step keeps the newest
    (then the largest) value.

    Vectorised for millions of points: keys become column numbers per piece (a categorical piece maps its categories,
    not each point), steps become row numbers through a lookup table, and values are written into one matrix.
    """
    key_index = pd.Index(keys)
    parts = []
    for piece in pieces:
        if not len(piece):
            continue
        key = piece["key"]
        if isinstance(key.dtype, pd.CategoricalDtype):
            remap = np.append(key_index.get_indexer(key.cat.categories), -1)
            col = remap[key.cat.codes.to_numpy()]  # code -1 (missing) maps to the appended -1
        else:
            col = key_index.get_indexer(key.to_numpy(dtype=object))
        cols = (col, piece["step"].to_numpy(dtype=np.int64), piece["timestamp"].to_numpy(dtype=np.int64),
                piece["value"].to_numpy(dtype=np.float64))
        wanted = col >= 0
        parts.append(cols if wanted.all() else tuple(c[wanted] for c in cols))
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return _empty_wide(keys)
    n_points = sum(len(p[0]) for p in parts)
    lo = min(int(p[1].min()) for p in parts)
    hi = max(int(p[1].max()) for p in parts)
    if hi - lo < 4 * n_points + 4096:  # dense enough for a lookup table
        seen = np.zeros(hi - lo + 1, dtype=bool)
        for p in parts:
            seen[p[1] - lo] = True
        uniq = np.flatnonzero(seen).astype(np.int64) + lo
        lookup = np.cumsum(seen, dtype=np.int64) - 1
        rows = [lookup[p[1] - lo] for p in parts]
    else:
        uniq = np.unique(np.concatenate([p[1] for p in parts]))
        rows = [np.searchsorted(uniq, p[1]) for p in parts]
    n_keys = len(keys)
    cells = [row * n_keys + p[0] for row, p in zip(rows, parts)]
    matrix = np.full(len(uniq) * n_keys, np.nan)
    hit = np.zeros(len(matrix), dtype=bool)
    for cell in cells:
        hit[cell] = True
    if int(np.count_nonzero(hit)) == n_points:  # every (step, key) once: order does not matter
        for cell, p in zip(cells, parts):
            matrix[cell] = p[3]
    else:
        cell = np.concatenate(cells)
        stamp = np.concatenate([p[2] for p in parts])
        value = np.concatenate([p[3] for p in parts])
        order = np.lexsort((value, stamp, cell))
        cell, value = cell[order], value[order]
        last = np.ones(len(cell), dtype=bool)
        last[:-1] = cell[1:] != cell[:-1]
        matrix[cell[last]] = value[last]
    wide = pd.DataFrame(matrix.reshape(len(uniq), n_keys), columns=list(keys))
    wide.insert(0, "step", uniq)
    return wide


class _ClientSource:
    """The slow fallback: MlflowClient.get_metric_history per run and key, runs in parallel."""

    def __init__(self, client: Any, workers: int, stats: Counter):
        self.client = client
        self.workers = workers
        self.stats = stats

    def _run(self, run_id: str, keys: Sequence[str], after: int | None) -> pd.DataFrame:
        rows = []
        for key in keys:
            self.stats["requests"] += 1
            for m in self.client.get_metric_history(run_id, key):
                if after is None or m.step > after:
                    rows.append((run_id, key, int(m.step), float(m.value), int(m.timestamp)))
        return long_frame(rows, with_nan_flag=False)

    def plan(self, run_ids: Sequence[str], keys: Sequence[str], since: Mapping[str, int],
             present: Mapping[str, Mapping[str, int]]) -> list[tuple[tuple[str, ...], Callable[[], pd.DataFrame]]]:
        """One task per run (only the keys it logged)."""
        return [((r,), lambda r=r, mine=mine: self._run(r, mine, since.get(r)))
                for r in run_ids if (mine := [k for k in keys if k in present.get(r, {})])]

    def close(self) -> None:
        """Nothing to close."""


def _param_value(value: Any) -> str:
    text = "None" if value is None else str(value)
    if len(text) > MAX_PARAM_LENGTH:
        log.warning("mlflow: a param value was cut to %d characters", MAX_PARAM_LENGTH)
        text = text[:MAX_PARAM_LENGTH]
    return text


class MlflowRunWriter(RunWriterBase):
    """Writes one MLflow run through MlflowClient: params, batched metrics, artifacts, terminal status."""

    statuses = STATUS

    def __init__(self, client: Any, run_id: str, flush_every: int = 100, name: str | None = None):
        self.client = client
        self.run_id = run_id
        self.name = run_id if name is None else str(name)
        self.flush_every = max(int(flush_every), 1)
        self._buffer: list = []
        self._steps = 0
        self._last_ts = 0

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Log the flattened config as params (stringified, cut to MLflow's 6000-character limit)."""
        from mlflow.entities import Param

        params = [Param(str(k), _param_value(v)) for k, v in flatten_config(dict(config)).items()]
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MAX_PARAMS_PER_BATCH], synchronous=True)

    def _where(self) -> str:
        return "MLflow"

    def _write_metrics(self, values: dict[str, float], step: int) -> None:
        """Buffer metrics at a step; flushed every ``flush_every`` steps and at finish."""
        from mlflow.entities import Metric

        # strictly increasing: a re-logged step keeps the newest value
        stamp = self._last_ts = max(int(time.time() * 1000), self._last_ts + 1)
        self._buffer.extend(Metric(key, number, stamp, step) for key, number in values.items())
        self._steps += 1
        if self._steps % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        """Send buffered metrics in batches of at most 1,000."""
        buffer, self._buffer = self._buffer, []
        for i in range(0, len(buffer), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=buffer[i:i + MAX_METRICS_PER_BATCH], synchronous=True)

    def _store_artifact(self, src: Path) -> None:
        """Upload a file (or folder) as an artifact of the run."""
        (self.client.log_artifacts if src.is_dir() else self.client.log_artifact)(self.run_id, str(src))

    def _close(self, status: str) -> None:
        """Flush and mark the run FINISHED, FAILED or KILLED."""
        self.flush()
        self.client.set_terminated(self.run_id, status=status)
