"""Per-run history cache: one parquet file per (tracker, project, run, key set), tracker-agnostic.

Layout: ``<dir>/<tracker>/<safe project>/<safe run id>/<hash of sorted keys>.parquet``. Each file holds one
run's wide history (``step`` plus one column per key) and, in the parquet metadata, the run's *version* (a
string the adapter derives from the run's last update: state, end time, last step/timestamp) and the last
cached step. A run whose version is unchanged is never fetched again; a changed (running) run is fetched
only past ``last_step``; ``refresh`` ignores what is cached. Files are written atomically; a file that cannot
be read back (truncated, foreign, a leftover temp file) counts as missing and is refetched.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.outputs import write_parquet

log = logging.getLogger(__name__)
META_KEY = "sweepkit_cache"
FORMAT = 1
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
        if self.refresh:
            return None
        path = self.path(run_id, keys)
        if not path.is_file():
            return None
        try:
            frame = pd.read_parquet(path)
            meta = dict(frame.attrs.get(META_KEY) or {})
            wanted = sorted(set(map(str, keys)))
            if meta.get("format") != FORMAT or meta.get("run_id") != str(run_id) or meta.get("keys") != wanted:
                raise ValueError("metadata does not match")
            if not {"step", *wanted} <= set(frame.columns):
                raise ValueError("columns do not match")
        except Exception as exc:  # a truncated or foreign file is refetched, never a crash
            log.warning("cache: ignoring unreadable %s (%s)", path.name, type(exc).__name__)
            return None
        frame.attrs = {}
        last = meta.get("last_step")
        return CachedHistory(frame[["step", *wanted]], str(meta.get("version")), None if last is None else int(last))

    def save(self, run_id: str, keys: Sequence[str], frame: pd.DataFrame, version: str) -> Path:
        """Write one run's wide history (``step`` + key columns) atomically."""
        wanted = sorted(set(map(str, keys)))
        out = frame.reindex(columns=["step", *wanted]).reset_index(drop=True)
        out["step"] = out["step"].astype("int64")
        for key in wanted:
            out[key] = pd.to_numeric(out[key], errors="coerce").astype(float)
        last = int(out["step"].max()) if len(out) else None
        out.attrs = {META_KEY: {"format": FORMAT, "tracker": self.tracker, "project": self.project,
                                "run_id": str(run_id), "keys": wanted, "version": str(version), "last_step": last}}
        path = self.path(run_id, keys)
        _remove_stale_temps(path.parent)
        return write_parquet(path, out)


def _remove_stale_temps(folder: Path) -> None:
    """Delete temp files left by writes that were killed long ago."""
    if not folder.is_dir():
        return
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
        except OSError:
            pass
