"""W&B cloud API helpers: bounded Api construction, retries with backoff, paginated listing, full histories."""
from __future__ import annotations

import logging
import netrc
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from toolkit.errors import UserError
from toolkit.runset import Selection
from toolkit.secrets import scrub

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_HOST = "https://api.wandb.ai"
_STATUS_IN_TEXT = re.compile(r"\b(429|50[0-9]|52[0-9])\b")


def base_url() -> str:
    """The W&B server the client talks to (WANDB_BASE_URL or the public cloud)."""
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST


def has_api_key(url: str | None = None) -> bool:
    """Whether an API key is available from the environment or wandb's login (~/.netrc), without reading it out."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(url or base_url()).hostname or ""
    for path in (os.environ.get("NETRC") or "", os.path.expanduser("~/.netrc"), os.path.expanduser("~/_netrc")):
        if path and os.path.isfile(path):
            try:
                if netrc.netrc(path).authenticators(host):
                    return True
            except (netrc.NetrcParseError, OSError):
                continue
    return False


def probe_host(url: str, timeout: float) -> None:
    """Open a TCP connection to the W&B server within ``timeout`` seconds, or raise a one-line UserError."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise UserError(f"W&B: cannot reach {parsed.scheme}://{host} within {timeout:g} s ({type(exc).__name__}): "
                        "no network? (offline runs: set tracker.path to a wandb/ folder)") from None


def construct_api(factory: Callable[[], T], timeout: float) -> T:
    """Call ``factory`` (wandb.Api) in a daemon thread and give up after ``timeout`` seconds."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["api"] = factory()
        except BaseException as exc:  # re-raised below in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="wandb-api-init", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise UserError(f"W&B: connecting to {base_url()} took longer than {timeout:g} s (no network or server down?)")
    if "error" in box:
        raise UserError(f"W&B: could not connect: {one_line(box['error'])}") from None
    return box["api"]


def one_line(exc: BaseException | str) -> str:
    """An exception as one scrubbed line (no secrets, no traceback)."""
    text = str(exc) if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    return scrub(" ".join(text.split()))[:300]


def status_code(exc: BaseException) -> int | None:
    """The HTTP status behind an exception (requests/wandb errors, chained causes), if any."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        response = getattr(err, "response", None)
        for code in (getattr(response, "status_code", None), getattr(err, "status_code", None), getattr(err, "code", None)):
            if isinstance(code, int) and 100 <= code < 600:
                return code
        todo.extend([getattr(err, "exc", None), err.__cause__, err.__context__])
    return None


def is_transient(exc: BaseException) -> bool:
    """429, 5xx, timeouts and dropped connections are worth retrying; the rest are not."""
    code = status_code(exc)
    if code is not None:
        return code == 429 or code >= 500
    name = type(exc).__name__.lower()
    if isinstance(exc, (TimeoutError, ConnectionError, socket.timeout)) or "timeout" in name or "connection" in name:
        return True
    return bool(_STATUS_IN_TEXT.search(str(exc)))


_OWN_CODE = tuple(f"{os.sep}{pkg}{os.sep}" for pkg in ("toolkit", "adapters", "analyses"))


def api_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the W&B client's, the network's or the server's answer, not a bug of ours: its type comes
    from those libraries, or it was raised outside this toolkit's own code (inside the API client)."""
    import traceback

    module = type(exc).__module__.split(".")[0]
    if isinstance(exc, OSError) or module in ("wandb", "wandb_gql", "requests", "urllib3", "http", "graphql"):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and not any(part in frames[-1].filename for part in _OWN_CODE)


def with_retries(fn: Callable[[], T], what: str, retries: int, backoff: float, max_backoff: float = 30.0) -> T:
    """Call ``fn``; retry transient failures with exponential backoff (``retries`` extra attempts)."""
    attempt = 0
    while True:
        try:
            return fn()
        except UserError:
            raise
        except Exception as exc:
            code = status_code(exc)
            if not is_transient(exc):
                if code is None and not api_error(exc):
                    raise  # a bug, not the server's answer: keep its traceback
                if code in (401, 403):
                    raise UserError(f"W&B: {what}: the API key was rejected (HTTP {code}); check WANDB_API_KEY or `wandb login`") from None
                raise UserError(f"W&B: {what}: {one_line(exc)}") from None
            if attempt >= retries:
                raise UserError(f"W&B: {what} failed after {attempt + 1} attempts: {one_line(exc)}") from None
            delay = min(max_backoff, backoff * (2 ** attempt)) * (0.5 + random.random() / 2)
            log.info("W&B: %s: %s; retrying in %.1f s", what, one_line(exc), delay)
            attempt += 1
            if delay > 0:
                time.sleep(delay)


def selection_filters(selection: Selection) -> dict[str, Any]:
    """Server-side W&B filters for the parts of a Selection that match exactly (the rest is applied client-side)."""
    parts: list[dict[str, Any]] = []
    # in W&B filters, "name" is the run id
    for name, values in (("state", selection.state), ("name", selection.run_ids), ("tags", selection.tags)):
        if values:
            parts.append({name: {"$in": list(values)}})
    for key, wanted in selection.config.items():
        options = wanted if isinstance(wanted, (list, tuple)) else [wanted]
        if options and all(isinstance(o, (str, bool)) for o in options) and not any(_numeric_text(o) for o in options):
            parts.append({f"config.{key}": {"$in": list(options)}})
    return {"$and": parts} if len(parts) > 1 else parts[0] if parts else {}


def _numeric_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
        return True
    except ValueError:
        return value.strip().lower() in ("true", "false", "none", "null")


def merge_filters(*filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """AND together several Mongo-style filter dicts (empty ones dropped)."""
    parts = [dict(f) for f in filters if f]
    return {"$and": parts} if len(parts) > 1 else parts[0] if parts else {}


def run_summary(run: Any) -> dict[str, Any]:
    """A public Run's summary as a plain dict."""
    summary = getattr(run, "summary_metrics", None)
    if summary is None:
        summary = getattr(run, "summary", None) or {}
    if hasattr(summary, "_json_dict"):
        summary = summary._json_dict
    try:
        return dict(summary)
    except (TypeError, ValueError):
        return {}


def run_row(run: Any) -> dict[str, Any]:
    """One public Run as a row of RunSet.runs."""
    from adapters.wandb_offline import table_row

    created = getattr(run, "created_at", None)
    try:
        created_at = pd.Timestamp(created, tz="UTC") if created and pd.Timestamp(created).tzinfo is None else pd.Timestamp(created)
    except (ValueError, TypeError):
        created_at = pd.NaT
    return table_row(str(run.id), getattr(run, "name", None), getattr(run, "state", None), created_at,
                     getattr(run, "tags", None) or [], dict(getattr(run, "config", None) or {}), run_summary(run))


def run_version(run: Any) -> str:
    """What changes when a run gets new data (for the history cache)."""
    attrs = getattr(run, "_attrs", None) or {}
    summary = run_summary(run)
    parts = [getattr(run, "state", ""), attrs.get("heartbeatAt") or getattr(run, "heartbeat_at", "") or "",
             summary.get("_step", ""), summary.get("_runtime", "")]
    return "|".join(str(p) for p in parts)


def history_keys(run: Any) -> list[str]:
    """The numeric metric keys a run logged (from its summary, which holds each key's last value)."""
    return sorted(str(key) for key, value in run_summary(run).items()
                  if not str(key).startswith("_") and isinstance(value, (int, float)) and not isinstance(value, bool))


def scan_key(run: Any, key: str, page_size: int, min_step: int | None = None) -> pd.Series:
    """Every logged value of one key (full, unsampled), indexed by step."""
    kwargs: dict[str, Any] = {"keys": [key], "page_size": page_size}
    if min_step is not None:
        kwargs["min_step"] = min_step
    steps: list[int] = []
    values: list[Any] = []
    for row in run.scan_history(**kwargs):
        if key in row and "_step" in row:
            steps.append(int(row["_step"]))
            values.append(row[key])
    series = pd.Series(pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float),
                       index=pd.Index(np.asarray(steps, dtype=np.int64), name="step"), name=key)
    return series[~series.index.duplicated(keep="last")]


def join_on_step(series: Sequence[pd.Series], keys: Sequence[str]) -> pd.DataFrame:
    """Outer-join per-key series on step into a wide frame (step + one column per key)."""
    present = [s for s in series if len(s)]
    if present:
        frame = pd.concat(present, axis=1, join="outer").sort_index()
    else:
        frame = pd.DataFrame(index=pd.Index([], dtype=np.int64, name="step"))
    frame = frame.reindex(columns=list(keys))
    frame.index.name = "step"
    return frame.reset_index().astype({"step": "int64"})


def sampled_history(run: Any, keys: Sequence[str]) -> pd.DataFrame:
    """W&B's 500-row sample of a run's history (only when sample=True)."""
    rows = run.history(keys=list(keys), pandas=False) if keys else run.history(pandas=False)
    frame = pd.DataFrame(list(rows))
    if "_step" not in frame.columns:
        return pd.DataFrame(columns=["step", *keys])
    frame = frame.rename(columns={"_step": "step"})
    cols = list(keys) if keys else [c for c in frame.columns if c != "step" and not str(c).startswith("_")]
    frame = frame.reindex(columns=["step", *cols])
    for col in cols:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame.astype({"step": "int64"})
