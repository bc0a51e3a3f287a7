"""Fast path: read metric histories from an MLflow tracking server through its bulk history endpoint."""
from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from adapters.mlflow_sql import long_frame

BULK = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
INTERVAL = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
HISTORY = "/api/2.0/mlflow/metrics/get-history"
BULK_CAP = 25_000  # the server silently drops points past this many per response
BULK_MAX_RUNS = 100  # run ids per bulk request
INTERVAL_MAX = 2_500  # points per run per interval request (sampled beyond)
END_STEP = 2**62


class ServerError(Exception):
    """A non-OK HTTP answer (``status`` tells whether a retry may help)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def plan_bulk_chunks(estimates: Mapping[str, int], cap: int = BULK_CAP, max_runs: int = BULK_MAX_RUNS) -> list[list[str]]:
    """Group runs so each chunk's estimated points stay below ``cap`` (a full answer then means truncation)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    total = 0
    for run_id in sorted(estimates):
        n = max(int(estimates[run_id]), 1)
        if current and (total + n > cap - 1 or len(current) >= max_runs):
            chunks.append(current)
            current, total = [], 0
        current.append(run_id)
        total += n
    if current:
        chunks.append(current)
    return chunks


class RestSource:
    """Parallel bulk-history requests, split so that no answer can be truncated."""

    def __init__(self, uri: str, workers: int = 8, timeout: float = 30.0, cap: int = BULK_CAP,
                 stats: Counter | None = None):
        self.base = uri.rstrip("/")
        self.workers = max(int(workers), 1)
        self.timeout = float(timeout)
        self.cap = int(cap)
        self.stats = stats if stats is not None else Counter()
        self._local = threading.local()
        self._sessions: list = []

    def _session(self):
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            token = os.environ.get("MLFLOW_TRACKING_TOKEN")
            user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
            if user and password:
                session.auth = (user, password)
            elif token:
                session.headers["Authorization"] = f"Bearer {token}"
            if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
                session.verify = False
            elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
                session.verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
            self._local.session = session
            self._sessions.append(session)
        return session

    def get(self, endpoint: str, params: list[tuple[str, object]]) -> dict:
        """One GET returning parsed JSON; a non-OK status raises ServerError."""
        self.stats["requests"] += 1
        resp = self._session().get(self.base + endpoint, params=params, timeout=self.timeout)
        if resp.status_code != 200:
            try:
                message = str(resp.json().get("message", ""))[:200]
            except ValueError:
                message = resp.reason or ""
            raise ServerError(resp.status_code, message)
        return resp.json() if resp.content else {}

    @staticmethod
    def _rows(metrics: list[dict], run_id: str | None = None) -> pd.DataFrame:
        rows = [(run_id or m["run_id"], m["key"], int(m.get("step", 0)), float(m["value"]), int(m.get("timestamp", 0)))
                for m in metrics]
        return long_frame(rows, with_nan_flag=False)

    def bulk(self, run_ids: Sequence[str], key: str) -> pd.DataFrame:
        """All points of one key for a chunk of runs; a full answer is split until none can be truncated."""
        params = [("run_id", r) for r in run_ids] + [("metric_key", key), ("max_results", self.cap)]
        metrics = self.get(BULK, params).get("metrics", [])
        if len(metrics) < self.cap:
            return self._rows(metrics)
        self.stats["truncated"] += 1
        if len(run_ids) > 1:
            half = len(run_ids) // 2
            return pd.concat([self.bulk(run_ids[:half], key), self.bulk(run_ids[half:], key)], ignore_index=True)
        return self.paged(run_ids[0], key)

    def paged(self, run_id: str, key: str) -> pd.DataFrame:
        """One run's full history of one key through the paginated get-history endpoint."""
        metrics: list[dict] = []
        token = None
        while True:
            params: list[tuple[str, object]] = [("run_id", run_id), ("metric_key", key), ("max_results", self.cap)]
            if token:
                params.append(("page_token", token))
            data = self.get(HISTORY, params)
            metrics.extend(data.get("metrics", []))
            token = data.get("next_page_token")
            if not token:
                return self._rows(metrics, run_id)

    def since(self, run_id: str, key: str, after: int) -> pd.DataFrame:
        """Points of one run and key after step ``after`` (interval endpoint; full fetch if it would sample)."""
        params = [("run_ids", run_id), ("metric_key", key), ("start_step", after + 1), ("end_step", END_STEP),
                  ("max_results", INTERVAL_MAX)]
        metrics = self.get(INTERVAL, params).get("metrics", [])
        if len(metrics) >= INTERVAL_MAX:
            frame = self.bulk([run_id], key)
            return frame[frame["step"] > after].reset_index(drop=True)
        return self._rows(metrics, run_id)

    def plan(self, run_ids: Sequence[str], keys: Sequence[str], since: Mapping[str, int],
             present: Mapping[str, Mapping[str, int]]) -> list[tuple[tuple[str, ...], Callable[[], pd.DataFrame]]]:
        """Tasks ``(run_ids covered, fetch)``: per key, chunks planned from each run's last step."""
        tasks = []
        for key in keys:
            estimates = {r: present[r][key] + 1 for r in run_ids if r not in since and key in present.get(r, {})}
            tasks.extend((tuple(c), lambda c=c, k=key: self.bulk(c, k)) for c in plan_bulk_chunks(estimates, self.cap))
            tasks.extend(((r,), lambda r=r, k=key: self.since(r, k, since[r]))
                         for r in run_ids if r in since and key in present.get(r, {}))
        return tasks

    def close(self) -> None:
        """Close every thread's session."""
        for session in self._sessions:
            session.close()
        self._sessions.clear()
        self._local = threading.local()
