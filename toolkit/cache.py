"""Per-run history cache: one parquet file per (tracker, project, run, key set), tracker-agnostic.

Layout: ``<dir>/<tracker>/<safe project>/<safe run id>/<hash of sorted keys>.parquet``. Each file holds one
run's wide history (``step`` plus one column per key) and, in the parquet schema metadata, the run's *version* (a
string the adapter derives from the run's last update: state, end time, last step/timestamp), the last cached
step and, when the adapter can give one, a *fingerprint* of the points the history was built from (MLflow: per key
the number of points, the newest timestamp and the number of points stamped with it). The adapter decides from
these whether what is cached is still what a fresh read would give: a finished run whose version is unchanged is
never fetched again; a running (or changed) run is checked against its fingerprint and fetched again only from the
earliest step that may have changed (a run resumed from a checkpoint logs old steps again). ``refresh`` ignores what
is cached. Files are written atomically (temporary file, fsync, rename); a file that cannot be read back
(truncated, foreign, a leftover temp file, an older format) counts as missing and is refetched. Written with
pyarrow directly: pandas' ``to_parquet`` takes minutes for a frame of ~17,000 columns, pyarrow about a second.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from toolkit.outputs import atomic_write_with

log = logging.getLogger(__name__)
META_KEY = "sweepkit_cache"
FORMAT = 3  # 3: fingerprints; files of format 2 may hold values of re-logged steps from before
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
STALE_TMP_S = 3600


def safe_name(text: str, max_len: int = 80) -> str:
    """A file-name-safe form of a run id, run name or project (unique: a hash is added when changed)."""
    text = str(text)
    clean = _UNSAFE.sub("_", text).strip("._") or "_"
    if clean != text or len(clean) > max_len:
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
        clean = f"{clean[: max_len - 11]}-{digest}"
    return clean


def keys_hash(keys: Sequence[str]) -> str:
    """Stable short hash of a key set (order does not matter)."""
    joined = "\x1f".join(sorted(set(map(str, keys))))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()[:16]


@dataclass
class CachedHistory:
    """One run's cached wide history and what it was cached against."""

    frame: pd.DataFrame
    version: str
    last_step: int | None
    fingerprint: dict[str, Any] | None = None


class HistoryCache:
    """Read and write cached run histories for one tracker and project."""

    def __init__(self, root: str | os.PathLike, tracker: str, project: str, refresh: bool = False):
        self.root = Path(root)
        self.tracker = str(tracker)
        self.project = str(project)
        self.refresh = bool(refresh)
        self.dir = self.root / safe_name(self.tracker) / safe_name(self.project)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None, tracker: str, project: str) -> "HistoryCache | None":
        """Build from the ``cache`` config (enabled, dir, refresh); None when caching is off."""
        settings = dict(settings or {})
        if not settings.get("enabled", False) or not settings.get("dir"):
            return None
        return cls(settings["dir"], tracker, project, refresh=bool(settings.get("refresh", False)))

    def path(self, run_id: str, keys: Sequence[str]) -> Path:
        """The cache file of one run and key set."""
        return self.dir / safe_name(run_id) / f"{keys_hash(keys)}.parquet"

    def load(self, run_id: str, keys: Sequence[str]) -> CachedHistory | None:
        """The cached history, or None when missing, unreadable, foreign or when refreshing."""
        path = self.path(run_id, keys)
        if self.refresh or not path.is_file():
            return None
        wanted = sorted(set(map(str, keys)))
        try:
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {}).get(META_KEY.encode(), b"{}"))
            if meta.get("format") != FORMAT or meta.get("run_id") != str(run_id) or meta.get("keys") != wanted:
                log.debug("cache: %s was written by another version or for another run; refetching", path.name)
                return None
            if not {"step", *wanted} <= set(table.column_names):
                raise ValueError("columns do not match")
            steps = table.column("step").to_numpy().astype(np.int64)
            matrix = np.empty((len(steps), len(wanted)), dtype=np.float64, order="F")
            for i, key in enumerate(wanted):
                matrix[:, i] = table.column(key).to_numpy(zero_copy_only=False)
        except Exception as exc:  # a truncated or foreign file is refetched, never a crash
            log.warning("cache: ignoring unreadable %s (%s)", path.name, type(exc).__name__)
            return None
        frame = pd.DataFrame(matrix, columns=wanted, copy=False)
        frame.insert(0, "step", steps)
        last = meta.get("last_step")
        fingerprint = meta.get("fingerprint")
        return CachedHistory(frame, str(meta.get("version")), None if last is None else int(last),
                             fingerprint if isinstance(fingerprint, dict) else None)

    def save(self, run_id: str, keys: Sequence[str], frame: pd.DataFrame, version: str,
             fingerprint: Mapping[str, Any] | None = None) -> Path:
        """Write one run's wide history (``step`` + key columns) atomically: a temporary file in the same folder,
        flushed to disk, then renamed over the old one (a reader sees the old file or the new one, never half).
        ``fingerprint`` (JSON-able) describes the points the history was built from, for the adapter's checks."""
        wanted = sorted(set(map(str, keys)))
        values = frame.reindex(columns=wanted)
        try:  # one float block (a column at a time takes minutes for thousands of keys)
            matrix = values.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            matrix = values.apply(lambda col: pd.to_numeric(col, errors="coerce")).to_numpy(dtype=np.float64)
        matrix = np.asfortranarray(matrix)  # contiguous columns: arrow arrays without copies
        steps = frame["step"].to_numpy(dtype=np.int64) if "step" in frame else np.zeros(len(matrix), np.int64)
        last = int(steps.max()) if len(steps) else None
        meta = {"format": FORMAT, "tracker": self.tracker, "project": self.project, "run_id": str(run_id),
                "keys": wanted, "version": str(version), "last_step": last,
                "fingerprint": None if fingerprint is None else dict(fingerprint)}
        table = pa.Table.from_arrays([pa.array(steps)] + [pa.array(matrix[:, i]) for i in range(len(wanted))],
                                     names=["step", *wanted], metadata={META_KEY: json.dumps(meta)})
        path = self.path(run_id, keys)
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path.parent)

        def write(fd: int, tmp: str) -> None:
            with os.fdopen(fd, "wb") as fh:
                # uncompressed float columns without dictionaries: a cached re-read is mostly this file's read
                pq.write_table(table, fh, compression="none", use_dictionary=False)
                fh.flush()
                os.fsync(fh.fileno())

        return atomic_write_with(path, write, mode=0o644)


def _remove_stale_temps(folder: Path) -> None:
    """Delete temp files left by writes that were killed long ago (``folder``: one that exists)."""
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
        except OSError:
            pass
