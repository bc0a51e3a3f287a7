"""Fast path: read metric histories straight from an MLflow SQL backend store, read-only.

**sqlite** (the common local store) is read through Python's ``sqlite3`` on a ``mode=ro`` connection. Per-row fetching
costs far more in Python than SQLite needs to find the rows, so points are aggregated in SQLite: one output row per
metric key (or per run and key) carrying the points as comma-joined integers that numpy parses in bulk:

- ``code = step * R + run_index`` (R runs per query), and
- ``mantissa = CAST(value * 2**s AS INTEGER)`` with one power of two ``s`` per key chosen from the key's latest
  values, so the integer is the double's exact significand. A non-zero mantissa below 2**52 (a value too small for
  ``s``: truncated), one from 2**62 up (too large: saturated), more zero mantissas than zero values, or a NaN in
  the group (counted per group) shows that the group could not be encoded exactly (values spanning more than ~10
  binades, +-max-float from a logged infinity, NaN): it is read again row by row, exact as well.

Two query plans, picked per call from the latest_metrics table (how many points the chosen runs hold against all
runs that logged the keys): *key-major* walks the metrics primary-key index, which holds every column, key by key
(sequential, no table lookups; best when the chosen runs hold most of the keys' points); *run-major* walks the
(run_uuid, key, step) index and touches only the chosen runs' rows (best for a few runs out of many). Runs and keys
go into TEMP tables of the read-only connection, so no statement has a parameter per run or key. Large reads are
split by key into ``workers`` parts read in parallel (SQLite runs without the GIL).

**Other SQL stores** (PostgreSQL, MySQL) are read with one plain query per chunk of runs and keys through SQLAlchemy
in a read-only transaction.
"""
from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from toolkit.errors import UserError
from toolkit.secrets import scrub

LONG_COLUMNS = ["run_id", "key", "step", "value", "timestamp"]
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_QUERY = ("SELECT run_uuid, key, step, value, timestamp, is_nan FROM metrics "
          "WHERE run_uuid IN ({runs}) AND key IN ({keys})")
_ROWS_SQLITE = ("SELECT m.run_uuid, m.key, m.step, m.value, m.timestamp, m.is_nan "
                "FROM want_runs r CROSS JOIN metrics m "
                "WHERE m.run_uuid = r.run_uuid AND m.key IN (SELECT key FROM want_keys)")
SPLIT_POINTS = 400_000  # split a read by key into `workers` parallel parts above this many points
MAX_KEYS_PER_QUERY = 5_000  # non-sqlite stores: keys per IN list
FORCE_PLAN: str | None = None  # tests: "key" (key-major), "run" (run-major) or "rows" (row by row); None picks
LENGTH_LIMIT: int | None = None  # tests: a smaller SQLite string limit, to exercise splitting


def sql_scheme(uri: str) -> str | None:
    """'sqlite', 'postgresql', ... for an SQL store URI, else None."""
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    return scheme if scheme in SQL_SCHEMES else None


def sqlite_path(uri: str) -> Path:
    """The database file of a ``sqlite:///...`` URI."""
    if not uri.startswith("sqlite:///"):
        raise UserError(f"tracker.uri: '{uri}' is not a sqlite:///PATH URI")
    return Path(unquote(uri[len("sqlite:///"):].split("?")[0]))


def long_frame(rows: Sequence[tuple], with_nan_flag: bool = True) -> pd.DataFrame:
    """Rows of (run_id, key, step, value, timestamp[, is_nan]) as the long metric frame."""
    cols = LONG_COLUMNS + (["is_nan"] if with_nan_flag else [])
    df = pd.DataFrame.from_records(rows, columns=cols) if len(rows) else pd.DataFrame(columns=cols)
    df["step"] = df["step"].astype("int64")
    df["timestamp"] = df["timestamp"].astype("int64")
    value = pd.to_numeric(df["value"], errors="coerce").astype(float)
    if with_nan_flag:
        value = value.where(~df.pop("is_nan").astype(bool), np.nan)
    df["value"] = value
    return df


def _ints(parts: list[str], dtype=np.int64) -> np.ndarray:
    """Comma-joined numbers (one string per group) as one array."""
    text = ",".join(p for p in parts if p)
    return np.fromstring(text, dtype=dtype, sep=",") if text else np.zeros(0, dtype=dtype)


def _scale_exponent(ref: float | None) -> int:
    """Power of two for a key whose reference magnitude is ``ref``: exact for values within ~[ref/64, ref*16]."""
    if not ref or not math.isfinite(ref):
        return 52
    return min(max(58 - math.frexp(ref)[1], -1000), 1000)


class SqlSource:
    """Reads ``metrics`` rows of a SQL store, never writing to it (see the module docstring)."""

    def __init__(self, uri: str, chunk: int = 200, stats: Counter | None = None, workers: int | None = None):
        self.uri = uri
        self.scheme = sql_scheme(uri)
        if self.scheme is None:
            raise UserError(f"tracker.fast_path=sql needs a sqlite:// or postgresql:// URI, got '{scrub(uri)}'")
        self.chunk = max(int(chunk), 1)
        self.stats = stats if stats is not None else Counter()
        cpus = os.cpu_count() or 1
        self.workers = max(1, min(int(workers or cpus), cpus, 4)) if self.scheme == "sqlite" else 1
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._engine = None
        self._indexes: dict[str, str | None] | None = None  # looked up once

    # ------------------------------------------------------------------ sqlite connection and helpers
    def _sqlite(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            path = sqlite_path(self.uri).resolve()
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=10)
            conn.execute("PRAGMA mmap_size=1099511627776")  # read pages through the OS cache (capped by the build)
            conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache: index walks revisit table pages
            conn.execute("PRAGMA automatic_index=OFF")  # never build a transient index over the whole table
            if LENGTH_LIMIT:
                conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, int(LENGTH_LIMIT))
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS want_runs "
                         "(run_uuid TEXT PRIMARY KEY, idx INTEGER) WITHOUT ROWID")
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS want_keys "
                         "(key TEXT PRIMARY KEY, idx INTEGER, scale REAL, est INTEGER) WITHOUT ROWID")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _index(self, conn: sqlite3.Connection, kind: str) -> str | None:
        """Name of the metrics index for a plan: ``pk`` (the primary key, starting with ``key`` and holding every
        column) or ``run_key`` (starting with ``run_uuid, key``); None when the store has no such index."""
        if self._indexes is None:
            found: dict[str, str | None] = {"pk": None, "run_key": None}
            for row in conn.execute("PRAGMA index_list('metrics')").fetchall():
                cols = [r[2] for r in conn.execute(f"PRAGMA index_info('{row[1]}')").fetchall()]
                if row[3] == "pk" and cols[:1] == ["key"] and {"run_uuid", "step", "value", "timestamp",
                                                                 "is_nan"} <= set(cols):
                    found["pk"] = row[1]
                elif cols[:2] == ["run_uuid", "key"] and found["run_key"] is None:
                    found["run_key"] = row[1]
            self._indexes = found
        return self._indexes[kind]

    def _hint(self, conn: sqlite3.Connection, kind: str) -> str:
        """`` INDEXED BY "<name>"`` for the index of a plan (see ``_index``), or "" when the store has none."""
        name = self._index(conn, kind)
        return f' INDEXED BY "{name}"' if name else ""

    @staticmethod
    def _fill(conn: sqlite3.Connection, run_ids: Sequence[str], keys: Sequence[str],
              est: Mapping[str, int] | None = None) -> None:
        conn.execute("DELETE FROM want_runs")
        conn.execute("DELETE FROM want_keys")
        conn.executemany("INSERT INTO want_runs VALUES (?, ?)", [(r, i) for i, r in enumerate(run_ids)])
        conn.executemany("INSERT INTO want_keys VALUES (?, ?, 1.0, ?)",
                         [(k, i, int((est or {}).get(k, 0))) for i, k in enumerate(keys)])

    # ------------------------------------------------------------------ sqlite: row by row (exact, simple)
    def _rows_sqlite(self, run_ids: Sequence[str], keys: Sequence[str], since: int | None = None) -> pd.DataFrame:
        conn = self._sqlite()
        self._fill(conn, run_ids, keys)
        sql, params = _ROWS_SQLITE, []
        if since is not None:
            sql += " AND m.step > ?"
            params.append(int(since))
        self.stats["queries"] += 1
        return long_frame(conn.execute(sql, params).fetchall())

    # ------------------------------------------------------------------ sqlite: aggregated groups
    def _aggregated(self, run_ids: Sequence[str], keys: Sequence[str],
                    present: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
        """All points of ``keys`` for ``run_ids`` through aggregated groups (see the module docstring)."""
        if FORCE_PLAN == "rows":
            return self._rows_sqlite(run_ids, keys)
        conn = self._sqlite()
        est = {k: sum(max(present.get(r, {}).get(k, -1), -1) + 1 for r in run_ids) for k in keys}
        self._fill(conn, run_ids, keys, est)
        max_step = max((abs(int(s)) for r in run_ids for s in present.get(r, {}).values()), default=0)
        mult = max(len(run_ids), 1)
        if (max_step + 1) * mult >= 2**62:  # a step too large to share an integer with the run index
            return self._rows_sqlite(run_ids, keys)
        # one power of two per key, from the largest latest |value| among the runs
        refs = conn.execute(
            "SELECT k.key, max(abs(lm.value)) FROM want_keys k CROSS JOIN latest_metrics lm CROSS JOIN want_runs r "
            "WHERE lm.key = k.key AND lm.run_uuid = r.run_uuid GROUP BY k.key").fetchall()
        conn.executemany("UPDATE want_keys SET scale = ? WHERE key = ?",
                         [(2.0 ** _scale_exponent(ref), key) for key, ref in refs])
        pk = self._index(conn, "pk")
        key_major = False
        if pk is not None:
            (total,) = conn.execute("SELECT coalesce(sum(max(lm.step, 0) + 1), 0) FROM want_keys k "
                                    "CROSS JOIN latest_metrics lm WHERE lm.key = k.key").fetchone()
            key_major = sum(est.values()) * 4 >= int(total or 0)
        if FORCE_PLAN in ("key", "run"):
            key_major = pk is not None and FORCE_PLAN == "key"
        aggs = ("k.idx, count(*), group_concat(m.step * ? + r.idx), group_concat(CAST(m.value * k.scale AS INTEGER)), "
                "k.scale, sum((m.value = 0) + m.is_nan * 4294967296)")
        if key_major:
            sql = (f'SELECT {aggs} FROM want_keys k CROSS JOIN metrics m INDEXED BY "{pk}" CROSS JOIN want_runs r '
                   "WHERE m.key = k.key AND m.run_uuid = r.run_uuid GROUP BY k.key")
        else:
            sql = (f"SELECT {aggs}, group_concat(m.timestamp) "
                   f"FROM want_runs r CROSS JOIN want_keys k CROSS JOIN metrics m{self._hint(conn, 'run_key')} "
                   "WHERE m.run_uuid = r.run_uuid AND m.key = k.key GROUP BY r.run_uuid, k.key")
        self.stats["queries"] += 1
        self.stats["key_major" if key_major else "run_major"] += 1
        cursor = conn.execute(sql, (mult,))
        parts, redo = [], []
        for groups in iter(lambda: cursor.fetchmany(512), []):
            part, bad = self._decode(groups, mult, with_ts=not key_major)
            parts.append(part)
            redo.extend(bad)
        cursor.close()
        run_cat = pd.CategoricalDtype(list(run_ids))
        key_cat = pd.CategoricalDtype(list(keys))
        if parts:
            kidx, ridx, step, value, ts = (np.concatenate(col) for col in zip(*parts))
        else:
            kidx = ridx = step = ts = np.zeros(0, dtype=np.int64)
            value = np.zeros(0)
        # key-major: the index is ordered (key, timestamp, step, run, value), so arrival order is the logging order
        order = np.arange(len(step), dtype=np.int64) if key_major else ts
        frame = pd.DataFrame({
            "run_id": pd.Categorical.from_codes(ridx, dtype=run_cat),
            "key": pd.Categorical.from_codes(kidx, dtype=key_cat),
            "step": step, "value": value, "timestamp": order})
        if redo:  # keys with a group that could not be encoded exactly: read again row by row, for every run
            redo_idx = sorted(set(redo))
            self.stats["exact_rereads"] += len(redo_idx)
            frame = frame[~np.isin(kidx, redo_idx)]
            again = self._rows_sqlite(run_ids, [keys[i] for i in redo_idx])
            again = again.astype({"run_id": run_cat, "key": key_cat})
            frame = pd.concat([frame, again], ignore_index=True)
        return frame

    @staticmethod
    def _decode(groups: list[tuple], mult: int, with_ts: bool) -> tuple[tuple[np.ndarray, ...], list[int]]:
        """Parse a batch of aggregated groups; groups that could not be encoded exactly are returned to redo.

        A point is exact when its mantissa has its top bit between 2**52 and 2**62 (then ``value * 2**s`` was an
        integer that fitted: a truncated small value or a saturated large one falls outside) or when it is 0 and the
        group has as many zero values as zero mantissas (no small value was truncated to 0). A group holding NaNs
        (stored as 0 with is_nan) is read again row by row: they are rare.
        """
        n_groups = len(groups)
        counts = np.fromiter((g[1] for g in groups), dtype=np.int64, count=n_groups)
        kidx = np.fromiter((g[0] for g in groups), dtype=np.int64, count=n_groups)
        scale = np.fromiter((g[4] for g in groups), dtype=np.float64, count=n_groups)
        code, mant = _ints([g[2] for g in groups]), _ints([g[3] for g in groups])
        specials = np.fromiter((g[5] for g in groups), dtype=np.int64, count=n_groups)
        ts = _ints([g[6] for g in groups]) if with_ts else None
        n = int(counts.sum())
        if len(code) != n or len(mant) != n or (ts is not None and len(ts) != n):
            raise RuntimeError("mlflow sql: aggregated groups did not parse")  # never expected; caught by caller
        step, ridx = np.divmod(code, mult)
        size = np.abs(mant)
        zero = size == 0
        ok = zero | ((size >= 2**52) & (size < 2**62))
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        exact = np.ones(n_groups, dtype=bool)
        if n:
            exact &= np.minimum.reduceat(ok.view(np.int8), starts).astype(bool)
            exact &= np.add.reduceat(zero.astype(np.int64), starts) == (specials & 0xFFFFFFFF)
        exact &= (specials >> 32) == 0  # no NaN in the group
        value = mant.astype(np.float64) / np.repeat(scale, counts)
        point_k = np.repeat(kidx, counts)
        cols = (point_k, ridx, step, value, ts if ts is not None else np.zeros(n, dtype=np.int64))
        if not exact.all():
            keep = np.repeat(exact, counts)
            cols = tuple(c[keep] for c in cols)
        return cols, kidx[~exact].tolist()

    # ------------------------------------------------------------------ sqlite: what changed since a cached read
    def _marks(self, conn: sqlite3.Connection, marks: Sequence[tuple[str, str, int]]) -> None:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS want_marks "
                     "(run_uuid TEXT, key TEXT, ts INTEGER, PRIMARY KEY (run_uuid, key)) WITHOUT ROWID")
        conn.execute("DELETE FROM want_marks")
        conn.executemany("INSERT INTO want_marks VALUES (?, ?, ?)", [(r, k, int(t)) for r, k, t in marks])

    def counts(self, run_ids: Sequence[str], keys: Sequence[str]) -> dict[str, dict[str, int]]:
        """``{run: {key: points}}`` (keys with points only): a count per run and key over the (run, key, step)
        index, which holds every column it needs (no point is read from the table)."""
        conn = self._sqlite()
        self._fill(conn, run_ids, keys)
        by_run = self._hint(conn, "run_key")
        self.stats["check_queries"] += 1
        rows = conn.execute(
            "SELECT r.run_uuid, k.key, (SELECT count(*) FROM metrics m" + by_run + " WHERE m.run_uuid = r.run_uuid "
            "AND m.key = k.key) FROM want_runs r CROSS JOIN want_keys k").fetchall()
        out: dict[str, dict[str, int]] = {r: {} for r in run_ids}
        for r, k, n in rows:
            if n:
                out[r][k] = int(n)
        return out

    def newest(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
        """``{(run, key): (newest timestamp, points stamped with it)}``: read backwards along the primary key (key,
        timestamp, ...), which stops at the run's newest point (a few entries for a run that is logging)."""
        conn = self._sqlite()
        self._marks(conn, [(r, k, 0) for r, k in pairs])
        by_pk = self._hint(conn, "pk")
        self.stats["check_queries"] += 2
        conn.execute("UPDATE want_marks SET ts = (SELECT m.timestamp FROM metrics m" + by_pk + " WHERE m.key = "
                     "want_marks.key AND m.run_uuid = want_marks.run_uuid ORDER BY m.timestamp DESC LIMIT 1)")
        rows = conn.execute(
            "SELECT w.run_uuid, w.key, w.ts, (SELECT count(*) FROM metrics m" + by_pk + " WHERE m.key = w.key AND "
            "m.timestamp = w.ts AND m.run_uuid = w.run_uuid) FROM want_marks w WHERE w.ts IS NOT NULL").fetchall()
        return {(r, k): (int(t), int(n)) for r, k, t, n in rows}

    def changed_since(self, marks: Sequence[tuple[str, str, int]]) -> dict[tuple[str, str], tuple[int, int]]:
        """``{(run, key): (points, lowest step)}`` of the points stamped at or after each mark's timestamp (a range
        of the primary key: only the newest points are read)."""
        conn = self._sqlite()
        self._marks(conn, marks)
        by_pk = self._hint(conn, "pk")
        self.stats["check_queries"] += 1
        rows = conn.execute(
            "SELECT w.run_uuid, w.key, count(*), min(m.step) FROM want_marks w CROSS JOIN metrics m" + by_pk +
            " WHERE m.key = w.key AND m.timestamp >= w.ts AND m.run_uuid = w.run_uuid GROUP BY w.run_uuid, w.key")
        return {(r, k): (int(n), int(s)) for r, k, n, s in rows}

    def first_steps(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """``{(run, key): lowest step}`` (the first entry of the (run, key, step) index)."""
        conn = self._sqlite()
        self._marks(conn, [(r, k, 0) for r, k in pairs])
        by_run = self._hint(conn, "run_key")
        self.stats["check_queries"] += 1
        rows = conn.execute(
            "SELECT w.run_uuid, w.key, (SELECT min(m.step) FROM metrics m" + by_run + " WHERE m.run_uuid = w.run_uuid "
            "AND m.key = w.key) FROM want_marks w")
        return {(r, k): int(s) for r, k, s in rows if s is not None}

    # ------------------------------------------------------------------ sqlite: experiments and runs
    def experiment(self, name_or_id: str | None) -> tuple[str | None, list[str]]:
        """``(experiment id, [])`` of an active experiment by name (else by numeric id), or ``(None, names)`` with
        the names of the active experiments. Several experiments of one name (MLflow workspaces): the one in
        ``MLFLOW_WORKSPACE`` (default ``default``)."""
        conn = self._sqlite()
        try:
            cols = {row[1] for row in conn.execute("PRAGMA table_info('experiments')")}
            if not cols:
                raise UserError(f"tracker.uri: {sqlite_path(self.uri)} is not an MLflow tracking database "
                                "(it has no experiments table)")
            ws = ", workspace" if "workspace" in cols else ""
            active = "lifecycle_stage = 'active'"
            rows: list = []
            if name_or_id is not None:
                rows = conn.execute(f"SELECT experiment_id{ws} FROM experiments WHERE name = ? AND {active}",
                                    (name_or_id,)).fetchall()
                if not rows and name_or_id.isdigit():
                    rows = conn.execute(f"SELECT experiment_id{ws} FROM experiments "
                                        f"WHERE experiment_id = ? AND {active}", (int(name_or_id),)).fetchall()
            if rows:
                if len(rows) > 1 and ws:
                    wanted = os.environ.get("MLFLOW_WORKSPACE") or "default"
                    rows = [r for r in rows if r[1] == wanted] or rows
                return str(rows[0][0]), []
            return None, sorted(r[0] for r in conn.execute(f"SELECT name FROM experiments WHERE {active}"))
        finally:
            self.stats["listing_queries"] += 1

    def list_runs(self, experiment_id: str) -> list[SimpleNamespace]:
        """The experiment's active runs, shaped like ``mlflow.entities.Run`` as far as the adapter reads them
        (``info``: run_id, run_name, status, start_time, end_time; ``data``: params, tags, metrics, _metric_objs).

        What ``MlflowClient.search_runs`` returns without a filter, in a few queries and without ORM objects (the
        client takes seconds for runs with tens of thousands of metric keys).
        """
        conn = self._sqlite()
        where = "experiment_id = ? AND lifecycle_stage = 'active'"
        runs = conn.execute(f"SELECT run_uuid, name, status, start_time, end_time FROM runs WHERE {where} "
                            "ORDER BY start_time, run_uuid", (int(experiment_id),)).fetchall()
        self._fill(conn, [r[0] for r in runs], [])
        out: dict[str, SimpleNamespace] = {}
        for run_uuid, name, status, start, end in runs:
            info = SimpleNamespace(run_id=run_uuid, run_name=name, status=status, start_time=start, end_time=end)
            out[run_uuid] = SimpleNamespace(info=info, data=SimpleNamespace(params={}, tags={}, metrics={},
                                                                            _metric_objs=[]))
        join = "FROM want_runs w CROSS JOIN {t} x WHERE x.run_uuid = w.run_uuid"
        for table in ("params", "tags"):
            for run_uuid, key, value in conn.execute("SELECT x.run_uuid, x.key, x.value " + join.format(t=table)):
                getattr(out[run_uuid].data, table)[key] = value
        for run_uuid, key, value, step, stamp, is_nan in conn.execute(
                "SELECT x.run_uuid, x.key, x.value, x.step, x.timestamp, x.is_nan " + join.format(t="latest_metrics")):
            data = out[run_uuid].data
            data.metrics[key] = float("nan") if is_nan else float(value)
            data._metric_objs.append(SimpleNamespace(key=key, step=int(step), timestamp=int(stamp or 0)))
        self.stats["listing_queries"] += 4
        return list(out.values())

    # ------------------------------------------------------------------ other SQL stores
    def _query_sqlalchemy(self, run_ids: Sequence[str], keys: Sequence[str], since: int | None) -> pd.DataFrame:
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(self.uri, pool_pre_ping=True)
        stmt = sa.text(_QUERY.format(runs=":runs", keys=":keys") + (" AND step > :since" if since is not None else ""))
        stmt = stmt.bindparams(sa.bindparam("runs", expanding=True), sa.bindparam("keys", expanding=True))
        rows: list[tuple] = []
        with self._engine.connect() as conn:
            if self.scheme == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            for i in range(0, len(keys), MAX_KEYS_PER_QUERY):
                params = {"runs": list(run_ids), "keys": list(keys[i:i + MAX_KEYS_PER_QUERY])}
                if since is not None:
                    params["since"] = int(since)
                self.stats["queries"] += 1
                rows.extend(tuple(r) for r in conn.execute(stmt, params).fetchall())
        return long_frame(rows)

    # ------------------------------------------------------------------ planning
    def query(self, run_ids: Sequence[str], keys: Sequence[str], since: int | None = None,
              present: Mapping[str, Mapping[str, int]] | None = None) -> pd.DataFrame:
        """All points of ``keys`` for ``run_ids`` (only steps after ``since`` when given) as the long frame."""
        if self.scheme != "sqlite":
            return self._query_sqlalchemy(run_ids, keys, since)
        if since is not None or present is None:
            return self._rows_sqlite(run_ids, keys, since)
        try:
            return self._aggregated(run_ids, keys, present)
        except sqlite3.DataError:  # a group longer than SQLite's string limit: fewer runs (or keys) per query
            if len(run_ids) > 1 or len(keys) > 1:
                self.stats["splits"] += 1
                if len(run_ids) > 1:
                    halves = [(run_ids[:len(run_ids) // 2], keys), (run_ids[len(run_ids) // 2:], keys)]
                else:
                    halves = [(run_ids, keys[:len(keys) // 2]), (run_ids, keys[len(keys) // 2:])]
                return pd.concat([self.query(r, k, present=present) for r, k in halves], ignore_index=True)
            return self._rows_sqlite(run_ids, keys)
        except (RuntimeError, ValueError):  # an aggregate that did not parse (never expected): read row by row
            self.stats["row_fallbacks"] += 1
            return self._rows_sqlite(run_ids, keys)

    def plan(self, run_ids: Sequence[str], keys: Sequence[str], since: Mapping[str, int],
             present: Mapping[str, Mapping[str, int]]) -> list[tuple[tuple[str, ...], Callable[[], pd.DataFrame]]]:
        """Tasks ``(run_ids covered, fetch)``: full runs in chunks (big reads split by key), incremental runs alone."""
        tasks: list[tuple[tuple[str, ...], Callable[[], pd.DataFrame]]] = []
        full = [r for r in run_ids if r not in since]
        for chunk in (tuple(full[i:i + self.chunk]) for i in range(0, len(full), self.chunk)):
            mine = [k for k in keys if any(k in present.get(r, {}) for r in chunk)]
            if not mine:
                tasks.append((chunk, lambda: long_frame([])))
                continue
            points = sum(max(present[r][k], 0) + 1 for r in chunk for k in mine if k in present.get(r, {}))
            n_parts = self.workers if self.scheme == "sqlite" and points >= SPLIT_POINTS and len(mine) > 1 else 1
            for part in np.array_split(np.arange(len(mine)), min(n_parts, len(mine))):
                part_keys = [mine[i] for i in part]
                tasks.append((chunk, lambda c=chunk, k=part_keys: self.query(c, k, present=present)))
        tasks.extend(((r,), lambda r=r: self.query([r], keys, since[r])) for r in run_ids if r in since)
        return tasks

    def close(self) -> None:
        """Close every connection this source opened (one per thread)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
