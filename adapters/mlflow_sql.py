"""Fast path: read metric histories straight from an MLflow SQL backend store, read-only."""
from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from toolkit.errors import UserError

LONG_COLUMNS = ["run_id", "key", "step", "value", "timestamp"]
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_QUERY = "SELECT run_uuid, key, step, value, timestamp, is_nan FROM metrics WHERE run_uuid IN ({runs}) AND key IN ({keys})"


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


class SqlSource:
    """Reads ``metrics`` rows of a SQL store in one query per chunk of runs and key set (never writes)."""

    workers = 1

    def __init__(self, uri: str, chunk: int = 200, stats: Counter | None = None):
        self.uri = uri
        self.scheme = sql_scheme(uri)
        if self.scheme is None:
            raise UserError(f"tracker.fast_path=sql needs a sqlite:// or postgresql:// URI, got '{uri}'")
        self.chunk = int(chunk)
        self.stats = stats if stats is not None else Counter()
        self._local = threading.local()
        self._engine = None

    def _sqlite(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            path = sqlite_path(self.uri).resolve()
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=10)
            self._local.conn = conn
        return conn

    def query(self, run_ids: Sequence[str], keys: Sequence[str], since: int | None = None) -> pd.DataFrame:
        """All points of ``keys`` for ``run_ids`` (only steps after ``since`` when given)."""
        self.stats["queries"] += 1
        sql = _QUERY
        if self.scheme == "sqlite":
            sql = sql.format(runs=",".join("?" * len(run_ids)), keys=",".join("?" * len(keys)))
            params: list = [*run_ids, *keys]
            if since is not None:
                sql += " AND step > ?"
                params.append(int(since))
            rows = self._sqlite().execute(sql, params).fetchall()
        else:
            rows = self._query_sqlalchemy(run_ids, keys, since)
        return long_frame(rows)

    def _query_sqlalchemy(self, run_ids: Sequence[str], keys: Sequence[str], since: int | None) -> list[tuple]:
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(self.uri, pool_pre_ping=True)
        stmt = sa.text(_QUERY.format(runs=":runs", keys=":keys") + (" AND step > :since" if since is not None else ""))
        stmt = stmt.bindparams(sa.bindparam("runs", expanding=True), sa.bindparam("keys", expanding=True))
        params = {"runs": list(run_ids), "keys": list(keys)}
        if since is not None:
            params["since"] = int(since)
        with self._engine.connect() as conn:
            if self.scheme == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            return [tuple(r) for r in conn.execute(stmt, params).fetchall()]

    def plan(self, run_ids: Sequence[str], keys: Sequence[str], since: Mapping[str, int],
             present: Mapping[str, Mapping[str, int]]) -> list[tuple[tuple[str, ...], Callable[[], pd.DataFrame]]]:
        """Tasks ``(run_ids covered, fetch)``: one query per chunk of full runs, one per incremental run."""
        tasks = []
        full = [r for r in run_ids if r not in since]
        for i in range(0, len(full), self.chunk):
            chunk = tuple(full[i:i + self.chunk])
            tasks.append((chunk, lambda c=chunk: self.query(c, keys)))
        for r in run_ids:
            if r in since:
                tasks.append(((r,), lambda r=r: self.query([r], keys, since[r])))
        return tasks

    def close(self) -> None:
        """Close connections."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._engine is not None:
            self._engine.dispose()
