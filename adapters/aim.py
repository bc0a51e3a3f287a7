"""Aim adapter: runs of an Aim repository (the folder holding ``.aim/``) read into a RunSet; runs written with aim.Run.

Read side, ``AimTracker(path)``:

- **Runs** are the repository's registered runs (``.aim/run_metadata.sqlite``) that have data (``.aim/meta/chunks``);
  a run folder without metadata (its creation was interrupted) or metadata without a folder (deleted data) is
  skipped with a warning. Archived runs are left out, as Aim's own query does by default, with a warning that
  counts them (``query`` mentioning ``run.archived`` decides instead).
- Each run's metadata is read from **its own chunk**, never from the repository index (``.aim/meta/index``): Aim
  fills the index only while ``aim up`` runs (or by ``aim storage reindex``), so a repository that was only written
  to (a training job's) reads through the SDK as runs with no params, no metrics and no end time. The chunk is what
  the index is copied from, so this read is exact whether or not the repository was ever indexed.
- ``config.*``: ``run["hparams"]`` flattened (what accelerate's and Aim's integrations log), else every run param
  except Aim's own (``__system_params`` ...). ``name``: ``run.name``. ``created_at``: the creation time (UTC).
  ``tags``: the run's tags, comma-joined. ``summary.<key>``: each metric's last tracked value.
- ``state``: ``finished`` once the run has an end time; ``failed`` when Aim's status check-ins say so (the last
  check-in promised more progress, ``run.report_progress(expect_next_in=N)``, and none came: the run ended, or the
  promise plus Aim's 100 s grace period has passed); ``running`` while the run has no end time. A run without an
  end time whose lock (``.aim/locks/<hash>.softlock``) is held by a live process is still being written; one whose
  lock holder is gone was left open by a killed process: both stay ``running``, with a warning naming the repository.
- **Metrics**: every numeric sequence (Aim's ``Metric``: int/float values), keyed by its name with its context folded
  in: ``loss`` with context ``{"subset": "train"}`` is ``loss/subset=train`` (context keys sorted, nested keys
  dotted, several joined by ``,``); a metric without context keeps its name. Histories are read **in full** from the
  sequence storage (``Metric.data`` with every item), never through the query API's density sampling. Aim keeps one
  value per step (a step tracked again overwrites the old value), so there are no duplicate steps to resolve.
- ``query``: Aim's query language (``run.hparams.bs == 64 and run.experiment == 'lr-sweep'``), evaluated by Aim's
  own ``RestrictedPythonQuery`` on each run; a query that does not compile, or that fails on every run (a name
  that is not ``run``/``metric``, e.g. ``bs == 64``), is a one-line ``UserError``; one failing on some runs only
  drops them with a warning. ``experiment`` keeps only the runs of that experiment. The toolkit's ``select`` node is
  applied on top (by ``read_runset``).
- **Cache**: each finished run's history is cached per key set (``toolkit.cache``) against a version made of its end
  time, the last step and value of each metric and a fingerprint of its files (both chunks: name, size and mtime of
  every file, as Aim's own indexer decides whether a run changed; a read changes none of them). A re-read of a
  finished run whose fingerprint is unchanged opens nothing of it: its listing (config, last values, sequences) comes
  from ``aim-listing.json`` beside its cached histories, name, tags and archived state from run_metadata.sqlite
  (always read), its history from the cache. With a ``query`` every run is opened (Aim evaluates it on the run). A
  running run is always read again in full (Aim keeps no cheap count of points to check).
- **Locks and timeouts**: reading needs no lock (run chunks are opened read-only), so a run held open by another
  process does not block it. What can block is Aim's run-metadata lock (``.aim/locks/structured_db_lock``, held
  while another process registers a run or upgrades an older repository; a crashed process leaves it behind and
  Aim then waits 5 minutes): opening and listing the repository run under ``timeout`` seconds and fail with a
  one-line error naming the repository and the lock; creating a run waits at most ``timeout`` for that lock.

Write side, ``start_run(name, config)``: ``aim.Run(repo=path, experiment=experiment)`` (the repository is created when
missing) with system metrics, system params and terminal-log capture off; config as ``run["hparams"]``; metrics with
``run.track(value, name=key, step=step)``; artifacts with ``run.log_artifact`` into ``<path>/artifacts`` (a
``file://`` artifacts URI) unless the run already has one; ``finish("finished")`` reports Aim's successful finish,
``finish("failed")`` a check-in whose promised progress never comes (Aim's own notion of a failed run), then closes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import pandas as pd

from adapters.local import _tag_list
from toolkit.cache import HistoryCache, safe_name
from toolkit.errors import UserError, require_extra
from toolkit.outputs import atomic_write_text, to_jsonable
from toolkit.progress import progress_bar
from toolkit.protocol import RunWriterBase, TrackerBase
from toolkit.runset import CONFIG_PREFIX, SUMMARY_PREFIX, Selection, flatten_config, history_frame, runs_frame
from toolkit.settings import Settings, bounded

log = logging.getLogger(__name__)

AIM_DIR = ".aim"
METRIC_DTYPES = ("float", "float64", "int", "number")  # aim.sdk.sequences.metric.Metric.allowed_dtypes()
STATUS = {"finished": "finished", "success": "finished", "failed": "failed", "crashed": "failed", "killed": "failed"}
STATUS_EVENTS = ("finished", "starting", "check_in")  # the check-ins Aim's RunStatusWatcher judges a run by
GRACE_S = 100  # aim.sdk.run_status_watcher.GRACE_PERIOD
SDB_LOCK = "structured_db_lock"
QUERY_LOGGER = "aim.storage.query"
LISTING_FILE = "aim-listing.json"  # beside a run's cached histories: what its chunk said, and the files' fingerprint
LISTING_FORMAT = 1


@dataclass
class AimSettings(Settings):
    """tracker=aim: an Aim repository on disk, an optional experiment and query (conf/tracker/aim.yaml)."""

    path: Optional[str] = None
    experiment: Optional[str] = None
    query: Optional[str] = None
    timeout: float = bounded(30.0, "a number of seconds > 0", gt=0)
    who: ClassVar[str] = "tracker"


@dataclass
class _RunMeta:
    """What the listing learned about a run: its cache version, whether it ended, and its metric sequences."""

    version: str
    finished: bool
    name: str = ""
    series: dict[str, tuple[int, str]] = field(default_factory=dict)  # folded key -> (context idx, metric name)


def _one_line(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    text = " ".join(str(a) for a in (args[0] if len(args) == 1 and isinstance(args[0], tuple) else args))
    return (" ".join((text or str(exc)).split()) or type(exc).__name__)[:300]


def fold_key(name: str, context: Mapping[str, Any] | None) -> str:
    """A metric's key with its context folded in: ``loss`` + ``{"subset": "train"}`` -> ``loss/subset=train``."""
    if not context:
        return str(name)
    flat = flatten_config(dict(context))
    parts = [f"{k}={v if isinstance(v, str) else json.dumps(to_jsonable(v))}" for k, v in sorted(flat.items())]
    return f"{name}/{','.join(parts)}"


def _config_of(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config: ``run["hparams"]`` when logged, else its params without Aim's own (``__...``)."""
    if "hparams" in attrs:
        hparams = attrs["hparams"]
        return flatten_config(hparams) if isinstance(hparams, Mapping) else {"hparams": hparams}
    return flatten_config({k: v for k, v in attrs.items() if not str(k).startswith("__")})


class AimTracker(TrackerBase):
    """Runs of one Aim repository through the adapter protocol (read: RunSet; write: RunWriter)."""

    name = "aim"
    settings_type = AimSettings

    def setup(self, settings: AimSettings) -> None:
        """The repository folder (the one holding .aim/), the experiment, the query and the timeout."""
        if not settings.path:
            raise UserError("tracker.path is not set; expected the folder holding an Aim repository's .aim/ "
                            "(tracker.path=PATH)")
        root = Path(settings.path).expanduser()
        if root.name == AIM_DIR and (root / "VERSION").is_file():  # the .aim folder itself was given
            root = root.parent
        self.path = root
        self.experiment = settings.experiment or None
        self.query = (settings.query or "").strip()
        self.timeout = settings.timeout
        self.stats: Counter = Counter()
        self._meta: dict[str, _RunMeta] = {}

    # ---------------------------------------------------------------- repository, timeouts, locks
    @property
    def aim_dir(self) -> Path:
        return self.path / AIM_DIR

    def _check_repo(self) -> None:
        if not self.aim_dir.is_dir():
            what = "does not exist" if not self.path.exists() else "has no .aim/ folder"
            raise UserError(f"tracker.path: {self.path} {what}; expected an Aim repository (the folder holding "
                            f".aim/, made by `aim init` or by logging a run)")

    def _within(self, fn: Callable[[], Any], doing: str) -> Any:
        """``fn()`` in a daemon thread, waited for at most ``timeout`` seconds (Aim's locks wait minutes)."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the caller
                box["error"] = exc

        worker = threading.Thread(target=target, name="sweepkit-aim", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise UserError(f"aim: {doing} {self.path} did not finish within {self.timeout:g} s (tracker.timeout); "
                            f"{self._lock_report()}")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _lock_report(self) -> str:
        """What holds the repository: Aim's run-metadata lock and the runs held open (for error messages)."""
        locks = self.aim_dir / "locks"
        sdb = locks / SDB_LOCK
        held = []
        if sdb.exists():
            age = max(time.time() - sdb.stat().st_mtime, 0.0)
            held.append(f"Aim's run-metadata lock {sdb} is held (for {age:.0f} s) by another process registering a "
                        f"run or upgrading the repository; if no Aim process is running it was left by a crashed "
                        f"one: delete that file")
        open_runs = sorted(p.name[: -len(".softlock")] for p in locks.glob("*.softlock")) if locks.is_dir() else []
        if open_runs:
            held.append(f"{len(open_runs)} run(s) held open by other processes, e.g. {', '.join(open_runs[:3])}")
        return "; ".join(held) if held else "no Aim lock file is held (a slow or unresponsive file system?)"

    def _open_repo(self, listing: bool = False) -> Any:
        """The aim.Repo of ``path`` and, when ``listing``, its registered runs; both under the timeout (an older
        repository is upgraded under Aim's lock on open; run_metadata.sqlite may be locked by a writer)."""
        self._check_repo()
        aim = require_extra("aim", "aim")

        def open_it() -> Any:
            try:
                repo = aim.Repo.from_path(str(self.path.resolve()))
            except Exception as exc:  # e.g. RuntimeError "Cannot find repository", a damaged run_metadata.sqlite
                raise UserError(f"aim: cannot open the repository at {self.path}: {type(exc).__name__}: "
                                f"{_one_line(exc)}") from None
            if not listing:
                return repo
            try:
                return repo, self._registered(repo)
            except Exception as exc:  # a locked or damaged run_metadata.sqlite
                raise UserError(f"aim: cannot list the runs of {self.path} ({self.aim_dir / 'run_metadata.sqlite'}): "
                                f"{type(exc).__name__}: {_one_line(exc)}") from None

        return self._within(open_it, "opening and listing the Aim repository at" if listing else
                            "opening the Aim repository at")

    @staticmethod
    def _release(repo: Any) -> None:
        """Drop the repository's open read-only containers: a later read sees what was written meanwhile."""
        with contextlib.suppress(Exception):
            repo.container_pool.clear()

    def _open_run(self, aim: Any, repo: Any, run_hash: str) -> Any:
        """A read-only aim.Run whose metadata trees are the run's own chunk (see the module docstring: the index is
        filled only by ``aim up``); its props (name, experiment, tags) come from run_metadata.sqlite as usual."""
        run = aim.Run(run_hash, repo=repo, read_only=True)
        meta_tree = repo.request_tree("meta", run_hash, read_only=True).subtree("meta")
        run.meta_tree = meta_tree
        run.meta_run_tree = meta_tree.subtree(("chunks", run_hash))
        run.meta_run_attrs_tree = run.meta_run_tree.subtree("attrs")
        run._tracker.meta_tree = meta_tree  # contexts (run.idx_to_ctx) from the chunk too
        return run

    # ---------------------------------------------------------------- read side: runs
    def _warn_once(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _cache(self) -> HistoryCache | None:
        return HistoryCache.from_settings(self._cache_settings, self.name, str(self.path.resolve()))

    def _registered(self, repo: Any) -> list[dict[str, Any]]:
        """The runs registered in run_metadata.sqlite (one query), as plain dicts."""
        repo._prepare_runs_cache()  # what repo.query_runs does first: props (and the query's run.name ...) cached
        cache = repo.structured_db.caches["runs_cache"]
        out = []
        for run_hash in cache.keys():  # fills the cache: one query, here under the timeout
            props = cache[run_hash]
            out.append({"hash": str(props.hash), "name": props.name, "experiment": props.experiment,
                        "tags": [str(t) for t in (props.tags or [])], "archived": bool(props.archived),
                        "creation_time": props.creation_time})
        return out

    def _compile_query(self) -> Any:
        from aim.storage.query import RestrictedPythonQuery

        try:
            return RestrictedPythonQuery(self.query)
        except SyntaxError as exc:
            raise UserError(f"tracker.query '{self.query}': not a valid Aim query: {_one_line(exc)} "
                            f"(e.g. run.hparams.bs == 64 and run.experiment == 'sweep')") from None

    def list_runs(self, selection: Selection | None = None) -> pd.DataFrame:
        """Runs table of the repository's runs matching ``experiment``, ``query`` and the selection's run ids."""
        aim = require_extra("aim", "aim")
        selection = selection or Selection()
        repo, registered = self._open_repo(listing=True)
        try:
            rows = self._scan(aim, repo, registered, selection)
        finally:
            self._release(repo)
        table = runs_frame(rows, tags_dtype=str)
        if len(table):
            table = table.assign(created_at=pd.to_datetime(table["created_at"], unit="s", utc=True))
        return table

    def _scan(self, aim: Any, repo: Any, registered: list[dict[str, Any]], selection: Selection) -> list[dict]:
        chunks_dir = self.aim_dir / "meta" / "chunks"
        chunks = {p.name for p in chunks_dir.iterdir() if p.is_dir()} if chunks_dir.is_dir() else set()
        known = {r["hash"] for r in registered}
        orphans = sorted(chunks - known)
        if orphans:
            self.warnings.append(f"aim: {len(orphans)} run folder(s) in {chunks_dir} have no entry in "
                                 f"{self.aim_dir / 'run_metadata.sqlite'} (their creation was interrupted?); skipped, "
                                 f"e.g. {', '.join(orphans[:3])}")
        missing = sorted(known - chunks)
        if missing:
            self.warnings.append(f"aim: {len(missing)} run(s) registered in {self.path} have no data in {chunks_dir} "
                                 f"(deleted?); skipped, e.g. {', '.join(missing[:3])}")
        runs = [r for r in registered if r["hash"] in chunks]
        if self.experiment is not None:
            experiments = sorted({str(r["experiment"]) for r in runs if r["experiment"] is not None})
            runs = [r for r in runs if r["experiment"] == self.experiment]
            if not runs:
                raise UserError(f"aim: no experiment '{self.experiment}' in {self.path}; experiments: "
                                f"{', '.join(experiments) or '(none)'}")
        if selection.run_ids:
            wanted = set(selection.run_ids)
            runs = [r for r in runs if r["hash"] in wanted]
        if "run.archived" not in self.query:
            archived = [r for r in runs if r["archived"]]
            if archived:
                self.warnings.append(f"aim: {len(archived)} archived run(s) in {self.path} left out, as Aim's query "
                                     f"does by default (tracker.query=\"run.archived == True\" reads them), e.g. "
                                     f"'{archived[0]['name']}' ({archived[0]['hash']})")
            runs = [r for r in runs if not r["archived"]]
        query = self._compile_query() if self.query else None
        status = self._status_events()
        locks = self._run_locks()
        rows: list[dict[str, Any]] = []
        failed_query: list[tuple[str, str]] = []
        unreadable: list[tuple[str, str]] = []
        still_open: dict[str, list[str]] = {"live": [], "gone": [], "elsewhere": [], "unlocked": []}
        cache = self._cache()
        index = None
        with progress_bar(len(runs), "listing aim runs", self._progress) as bar, _query_errors() as errors:
            for props in runs:
                bar.update(1)
                run_hash = props["hash"]
                fingerprint = self._fingerprint(run_hash)
                # a finished run whose files did not change since it was cached is listed from the cache (a query
                # is evaluated by Aim on the run itself, so then every run is opened)
                record = self._load_record(cache, run_hash, fingerprint) if query is None else None
                if record is not None:
                    self.stats["listed_from_cache"] += 1
                else:
                    try:
                        if index is None:  # kept open while listing: every read-only aim.Run opens it again
                            index = repo.request_tree("meta", read_only=True)
                        run = self._open_run(aim, repo, run_hash)
                        if query is not None:
                            from aim.sdk.query_utils import RunView

                            errors.clear()
                            if not query.check(run=RunView(run)):
                                if errors:
                                    failed_query.append((run_hash, errors[-1]))
                                continue
                        record = self._record(run, run_hash, fingerprint)
                    except UserError:
                        raise
                    except Exception as exc:  # a damaged or half-written chunk (aimrocks' RocksIOError, Corruption)
                        unreadable.append((run_hash, f"{type(exc).__name__}: {_one_line(exc)}"))
                        continue
                    if cache is not None and record["end_time"] is not None \
                            and self._fingerprint(run_hash) == fingerprint:  # not written to while it was read
                        self._save_record(cache, run_hash, record)
                row, meta = self._row(props, record, status.get(run_hash))
                if record["end_time"] is None:
                    still_open[self._holder(locks.get(run_hash))].append(f"'{row['name']}' ({run_hash})"
                                                                         + _pid_text(locks.get(run_hash)))
                self._meta[run_hash] = meta
                rows.append(row)
        if failed_query:
            if not rows and len(failed_query) == len(runs):
                hint = (" (Aim's query names run attributes as run.<...>, e.g. run.hparams.bs == 64)"
                        if "is not defined" in failed_query[0][1] else "")
                raise UserError(f"tracker.query '{self.query}': failed on every run of {self.path}: "
                                f"{failed_query[0][1]}{hint}")
            self.warnings.append(f"aim: tracker.query '{self.query}' failed on {len(failed_query)} run(s) of "
                                 f"{self.path}, which were left out, e.g. {failed_query[0][0]}: {failed_query[0][1]}")
        if unreadable:
            self.warnings.append(f"aim: {len(unreadable)} run(s) of {self.path} could not be read and were skipped, "
                                 f"e.g. {unreadable[0][0]}: {unreadable[0][1]}")
        self._warn_open(still_open)
        del index
        return rows

    def _record(self, run: Any, run_hash: str, fingerprint: str) -> dict[str, Any]:
        """What a run's own chunk says, JSON-able (cached for finished runs): end time, config, last values, and its
        metric sequences (folded key -> context idx, name)."""
        tree = run.meta_run_tree
        end_time = tree.get("end_time", None)
        try:
            attrs = run.meta_run_attrs_tree.collect()
        except KeyError:
            attrs = {}
        traces = tree.get("traces", None)
        traces = traces if isinstance(traces, Mapping) else {}
        config = {k: json.dumps(to_jsonable(list(v))) if isinstance(v, (list, tuple)) else v
                  for k, v in sorted(_config_of(attrs if isinstance(attrs, Mapping) else {}).items())}
        series: dict[str, list] = {}
        summary: dict[str, float] = {}
        notes: list[str] = []
        marks = []
        for ctx_idx in sorted(traces, key=str):
            by_name = traces[ctx_idx]
            if not isinstance(by_name, Mapping):
                continue
            for metric, info in sorted(by_name.items()):
                if not isinstance(info, Mapping) or info.get("dtype", "float") not in METRIC_DTYPES:
                    continue
                key = fold_key(metric, run.idx_to_ctx(ctx_idx).to_dict())
                if key in series:
                    notes.append(f"aim: run {run_hash} in {self.path}: two metrics both read as '{key}' (one named "
                                 f"so, one with a context); the first is kept")
                    continue
                series[key] = [int(ctx_idx), str(metric)]
                last = info.get("last")
                try:
                    summary[key] = float(last)
                except (TypeError, ValueError):
                    summary[key] = float("nan")
                marks.append([key, info.get("last_step"), None if last is None else repr(last)])
        version = json.dumps([end_time, sorted(marks, key=lambda m: m[0]), fingerprint], default=str)
        return {"format": LISTING_FORMAT, "run_id": run_hash, "fingerprint": fingerprint, "end_time": end_time,
                "config": config, "summary": summary, "series": series, "notes": notes,
                "version": hashlib.sha1(version.encode("utf-8")).hexdigest()}

    def _row(self, props: Mapping[str, Any], record: Mapping[str, Any], event: tuple[str, float, int] | None
             ) -> tuple[dict[str, Any], _RunMeta]:
        """The runs-table row (props from run_metadata.sqlite, the rest from the run's record) and its _RunMeta."""
        run_hash = props["hash"]
        name = str(props["name"] if props["name"] not in (None, "") else run_hash)
        end_time = record["end_time"]
        row: dict[str, Any] = {"run_id": run_hash, "name": name, "state": _state(end_time, event),
                               "created_at": props["creation_time"], "tags": ",".join(sorted(props["tags"]))}
        row.update({CONFIG_PREFIX + k: v for k, v in record["config"].items()})
        row.update({SUMMARY_PREFIX + k: v for k, v in record["summary"].items()})
        for note in record["notes"]:
            self._warn_once(note)
        series = {k: (int(v[0]), str(v[1])) for k, v in record["series"].items()}
        return row, _RunMeta(record["version"], end_time is not None, name, series)

    def _fingerprint(self, run_hash: str) -> str:
        """The files of a run's two chunks (name, size, mtime), as Aim's indexer checks them: any write changes it,
        a read does not (read-only opens only write rocksdb's LOG files, left out)."""
        digest = hashlib.sha1()
        for part in ("meta", "seqs"):
            folder = str(self.aim_dir / part / "chunks" / run_hash)
            for dirpath, dirnames, files in os.walk(folder):
                dirnames.sort()
                where = part + dirpath[len(folder):]
                for name in sorted(files):
                    if name.startswith("LOG"):
                        continue
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except FileNotFoundError:
                        continue
                    digest.update(f"{where}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8"))
        return digest.hexdigest()

    def _load_record(self, cache: HistoryCache | None, run_hash: str, fingerprint: str) -> dict[str, Any] | None:
        if cache is None or cache.refresh:
            return None
        try:
            record = json.loads((cache.dir / safe_name(run_hash) / LISTING_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("format") != LISTING_FORMAT \
                or record.get("run_id") != run_hash or record.get("fingerprint") != fingerprint:
            return None
        return record

    def _save_record(self, cache: HistoryCache, run_hash: str, record: Mapping[str, Any]) -> None:
        try:
            text = json.dumps(record)
        except (TypeError, ValueError):  # a param Aim stores as an object of its own: listed from the run each time
            return
        self._cache_write(cache, lambda: atomic_write_text(cache.dir / safe_name(run_hash) / LISTING_FILE, text))

    def _cache_write(self, cache: HistoryCache, write: Callable[[], Any]) -> None:
        """``write()``, where an unwritable cache folder is a warning, not a failed read."""
        try:
            write()
        except OSError as exc:
            self._warn_once(f"aim: could not write the history cache under {cache.dir}: {_one_line(exc)}")

    def _status_events(self) -> dict[str, tuple[str, float, int]]:
        """Per run, its newest status check-in (``.aim/check_ins/<hash>-<idx>-<flag>-<time>-<next>``) among the
        flags Aim's watcher judges: (flag, time, seconds until the next promised check-in)."""
        folder = self.aim_dir / "check_ins"
        newest: dict[str, tuple[int, str, float, int]] = {}
        if not folder.is_dir():
            return {}
        for entry in os.listdir(folder):
            parts = entry.split("-")
            if len(parts) != 5 or parts[2] not in STATUS_EVENTS:
                continue
            try:
                idx, when, next_in = int(parts[1]), float(parts[3]), int(parts[4])
            except ValueError:
                continue
            if parts[0] not in newest or idx > newest[parts[0]][0]:
                newest[parts[0]] = (idx, parts[2], when, next_in)
        return {h: (flag, when, next_in) for h, (_, flag, when, next_in) in newest.items()}

    def _run_locks(self) -> dict[str, str]:
        """Run hash -> the content of its soft lock (``<machine id>-<pid>-<time>``), for runs held open."""
        locks = self.aim_dir / "locks"
        out = {}
        if locks.is_dir():
            for path in locks.glob("*.softlock"):
                with contextlib.suppress(OSError):
                    out[path.name[: -len(".softlock")]] = path.read_text(encoding="utf-8", errors="replace").strip()
        return out

    @staticmethod
    def _holder(lock: str | None) -> str:
        """Who holds a run open: a live process here, one that is gone, another machine, or nobody."""
        if lock is None:
            return "unlocked"
        parts = lock.split("-")
        try:
            machine, pid = int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            return "elsewhere"
        if machine != uuid.getnode():
            return "elsewhere"
        try:
            os.kill(pid, 0)
        except PermissionError:  # alive, another user's
            return "live"
        except OSError:  # no such process (ProcessLookupError) or another failure
            return "gone"
        return "live"

    def _warn_open(self, still_open: Mapping[str, list[str]]) -> None:
        texts = {
            "live": "still open in a running process (being written); read as running, its history may still grow",
            "gone": "left open by a process that is gone (killed?); read as running (`aim runs close --force HASH` "
                    "closes such a run)",
            "elsewhere": "open on another machine; read as running, its history may still grow",
            "unlocked": "not closed (no end time) and held by no process; read as running",
        }
        for kind, runs in still_open.items():
            if runs:
                self.warnings.append(f"aim: {len(runs)} run(s) in {self.path} {texts[kind]}: {', '.join(runs[:3])}"
                                     + (f" (+{len(runs) - 3} more)" if len(runs) > 3 else ""))

    # ---------------------------------------------------------------- read side: histories
    def read_history(self, runs: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
        """Wide history of the runs for ``keys`` (every metric key when None), from the cache where it is current."""
        run_ids = list(dict.fromkeys(str(r) for r in runs["run_id"])) if len(runs) else []
        unknown = [r for r in run_ids if r not in self._meta]
        if unknown:  # runs this tracker did not list: learn their sequences and versions
            saved_query, self.query = self.query, ""
            try:
                self.list_runs(Selection(run_ids=unknown))
            finally:
                self.query = saved_query
            lost = [r for r in unknown if r not in self._meta]
            if lost:
                raise UserError(f"aim: no run {lost[0]} in {self.path}")
        if keys is None:
            keys = sorted({k for r in run_ids for k in self._meta[r].series})
        keys = list(dict.fromkeys(str(k) for k in keys))
        frames: dict[str, pd.DataFrame] = {}
        todo: list[str] = []
        cache = self._cache() if keys else None
        for run_id in run_ids:
            meta = self._meta[run_id]
            hit = cache.load(run_id, keys) if cache is not None and meta.finished else None
            if hit is not None and hit.version == meta.version:
                frames[run_id] = hit.frame
                self.stats["cached_runs"] += 1
            else:
                todo.append(run_id)
        if todo and keys:
            frames.update(self._fetch(todo, keys, cache))
        present = sorted(r for r in run_ids if r in frames and len(frames[r]))
        if not present:
            return _empty_wide(keys).assign(run_id=pd.Series(dtype=object))[["run_id", "step", *keys]]
        # one float block filled in place (runs in id order, each run's rows by step, as _to_wide and the cache
        # keep them); column-major, so each key is one contiguous copy and the frame takes the block as it is
        steps = [frames[r]["step"].to_numpy(dtype=np.int64) for r in present]
        matrix = np.empty((sum(len(x) for x in steps), len(keys)), dtype=np.float64, order="F")
        start = 0
        for run_id, run_steps in zip(present, steps):
            frame, stop = frames[run_id], start + len(run_steps)
            for j, key in enumerate(keys):
                matrix[start:stop, j] = frame[key].to_numpy(dtype=np.float64) if key in frame.columns else np.nan
            start = stop
        history = history_frame(present, [len(s) for s in steps], np.concatenate(steps), matrix, keys)
        if not all(np.all(s[1:] > s[:-1]) for s in steps):  # never expected; kept exact rather than assumed
            history = history.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)
        return history

    def _fetch(self, run_ids: list[str], keys: list[str], cache: HistoryCache | None) -> dict[str, pd.DataFrame]:
        """Read the runs' sequences in full (every stored item: no sampling) and cache the finished ones."""
        aim = require_extra("aim", "aim")
        repo = self._open_repo()
        done: dict[str, pd.DataFrame] = {}
        index = repo.request_tree("meta", read_only=True)  # kept open: every read-only aim.Run opens it again
        try:
            with progress_bar(len(run_ids), "reading aim histories", self._progress) as bar:
                for run_id in run_ids:
                    meta = self._meta[run_id]
                    try:
                        frame = self._read_run(aim, repo, run_id, meta, keys)
                    except UserError:
                        raise
                    except Exception as exc:
                        raise UserError(f"aim: cannot read the metrics of run '{meta.name}' ({run_id}) in "
                                        f"{self.path}: {type(exc).__name__}: {_one_line(exc)}") from None
                    done[run_id] = frame
                    self.stats["fetched_runs"] += 1
                    if cache is not None and meta.finished:
                        self._cache_write(cache, lambda: cache.save(run_id, keys, frame, meta.version))
                    bar.update(1)
        finally:
            del index
            self._release(repo)
        return done

    def _read_run(self, aim: Any, repo: Any, run_id: str, meta: _RunMeta, keys: list[str]) -> pd.DataFrame:
        from aim.sdk.sequences.metric import Metric

        wanted = [(k, meta.series[k]) for k in keys if k in meta.series]
        if not wanted:
            return _empty_wide(keys)
        run = self._open_run(aim, repo, run_id)
        pieces: list[tuple[int, np.ndarray, np.ndarray]] = []
        for col, (ctx_idx, metric) in ((keys.index(k), where) for k, where in wanted):
            sequence = Metric(metric, run.idx_to_ctx(ctx_idx), run)
            try:  # every item: SequenceData.numpy() samples only after .sample(k), which is never called here
                steps, (values,) = sequence.data.view("val").numpy()
            except ValueError:  # Aim raises this for a sequence with no items yet
                continue
            self.stats["points"] += len(steps)
            pieces.append((col, np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)))
        return _to_wide(pieces, keys)

    # ---------------------------------------------------------------- write side
    def _wait_for_metadata_lock(self) -> None:
        """Wait at most ``timeout`` for Aim's run-metadata lock (Aim itself waits 5 minutes, then fails)."""
        lock_path = self.aim_dir / "locks" / SDB_LOCK
        if not lock_path.exists():
            return
        from filelock import SoftFileLock, Timeout

        try:
            with SoftFileLock(str(lock_path), timeout=self.timeout):
                pass
        except Timeout:
            raise UserError(f"aim: cannot create a run in {self.path}: {self._lock_report()} "
                            f"(waited {self.timeout:g} s, tracker.timeout)") from None

    def start_run(self, name: str, config: Mapping[str, Any] | None = None,
                  tags: Sequence[str] | Mapping[str, str] | None = None) -> "AimRunWriter":
        """Create a run in the repository (created when missing) and return its writer."""
        aim = require_extra("aim", "aim")
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"tracker.path: {self.path} is a file; writing runs needs a folder (an Aim repository)")
        self.path.mkdir(parents=True, exist_ok=True)
        self._wait_for_metadata_lock()
        try:
            repo = self._within(lambda: aim.Repo.from_path(str(self.path.resolve()), init=not self.aim_dir.is_dir()),
                                "opening the Aim repository at")
            lock = getattr(repo, "_sdb_lock", None)
            if lock is not None and hasattr(lock, "timeout"):
                lock.timeout = self.timeout  # registering the run: Aim's own wait, capped too
            run = aim.Run(repo=repo, experiment=self.experiment, system_tracking_interval=None,
                          log_system_params=False, capture_terminal_logs=False)
        except UserError:
            raise
        except Exception as exc:
            if type(exc).__name__ == "Timeout":
                raise UserError(f"aim: cannot create a run in {self.path}: {self._lock_report()} "
                                f"(waited {self.timeout:g} s, tracker.timeout)") from None
            raise UserError(f"aim: cannot create a run in {self.path}: {type(exc).__name__}: "
                            f"{_one_line(exc)}") from None
        writer = AimRunWriter(run, str(name), self.path)
        for tag in _tag_list(tags):
            run.add_tag(tag)
        if config:
            writer.log_config(config)
        return writer


class AimRunWriter(RunWriterBase):
    """Writes one Aim run: config as run["hparams"], metrics with run.track, artifacts, then finish."""

    statuses = STATUS

    def __init__(self, run: Any, name: str, root: Path):
        self.run = run
        self.run_id = str(run.hash)
        self.name = name
        self.root = Path(root)
        self.run.name = name
        self._config: dict[str, Any] = {}

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Merge ``config`` into the run's ``hparams`` (nested, JSON types)."""
        self._config.update(to_jsonable(dict(config)))
        self.run["hparams"] = self._config

    def _where(self) -> str:
        return self.run_id

    def _write_metrics(self, values: dict[str, float], step: int) -> None:
        """``run.track(value, name=key, step=step)`` for each metric."""
        for key, number in values.items():
            self.run.track(number, name=key, step=step)

    def _store_artifact(self, src: Path) -> None:
        """``run.log_artifact`` (a folder: ``run.log_artifacts``) into the run's artifacts URI, by default
        ``<repository>/artifacts`` as a file:// URI (the file is copied before this returns)."""
        if self.run.artifacts_uri is None:
            self.run.set_artifacts_uri((self.root.resolve() / "artifacts").as_uri())
        log_it = self.run.log_artifacts if src.is_dir() else self.run.log_artifact
        log_it(str(src), name=src.name, block=True)

    def _close(self, status: str) -> None:
        """Report the outcome through Aim's status check-ins and close the run."""
        if status == "finished":
            self.run.report_successful_finish(block=True)
        else:  # a check-in promising progress that never comes: how Aim tells a failed run
            self.run.report_progress(expect_next_in=1, block=True)
        self.run.close()


# --------------------------------------------------------------------------------------------- helpers
def _state(end_time: Any, event: tuple[str, float, int] | None) -> str:
    """finished / failed / running from the end time and the newest status check-in (see the module docstring)."""
    if event is not None:
        flag, when, next_in = event
        if flag == "finished":
            return "finished"
        if flag == "check_in" and next_in > 0 and (end_time is not None or when + next_in + GRACE_S < time.time()):
            return "failed"
    return "finished" if end_time is not None else "running"


def _pid_text(lock: str | None) -> str:
    if not lock:
        return ""
    parts = lock.split("-")
    return f" by pid {parts[1]}" if len(parts) >= 2 and parts[1].isdigit() else ""


@contextlib.contextmanager
def _query_errors() -> Iterator[list[str]]:
    """The messages of Aim's query evaluation failures (Aim logs them as warnings and treats the run as no match)."""
    found: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("query failed"):
                found.append(message.split(",", 1)[-1].strip())

    logger = logging.getLogger(QUERY_LOGGER)
    handler = Catch(level=logging.WARNING)
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # gathered here (and reported once), not printed per run
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved


def _empty_wide(keys: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype="int64"), **{k: pd.Series(dtype=float) for k in keys}})


def _to_wide(pieces: list[tuple[int, np.ndarray, np.ndarray]], keys: list[str]) -> pd.DataFrame:
    """(column, steps, values) per metric -> one row per step, one float column per key (NaN where not tracked)."""
    pieces = [p for p in pieces if len(p[1])]
    if not pieces:
        return _empty_wide(keys)
    steps = np.unique(np.concatenate([p[1] for p in pieces]))
    matrix = np.full((len(steps), len(keys)), np.nan)
    for col, s, v in pieces:
        matrix[np.searchsorted(steps, s), col] = v
    wide = pd.DataFrame(matrix, columns=list(keys))
    wide.insert(0, "step", steps)
    return wide
