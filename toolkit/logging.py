"""Write side for training code: one small logger that fans out to any number of tracker run writers.

In the spirit of Lightning's ``Logger`` and accelerate's ``GeneralTracker``::

    from toolkit.logging import open_logger
    with open_logger([LocalTracker("runs/"), MlflowTracker(uri=...)], "lr-1e-3", {"lr": 1e-3}) as log:
        for step in range(steps):
            log.log_metrics({"train/loss": loss}, step)      # floats, numpy scalars or 0-d torch tensors
        log.log_artifact("model.pt")
    # finished with "finished", or "failed" when the block raised

Only rank 0 writes: when ``torch.distributed`` is initialised (or, before that, when the ``RANK`` environment
variable set by torchrun/accelerate is not 0) every call is a no-op and no run is created. torch is never
imported by this module: if the program has not imported ``torch.distributed``, it cannot be initialised.

``InMemoryWriter`` is a test/debug back end that only records the calls it receives.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.errors import UserError
from toolkit.runset import flatten_config


def _distributed_rank() -> int | None:
    """The torch.distributed rank when a process group is initialised, else None (torch is not imported here)."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:  # pragma: no cover - a broken or partial torch install
        pass
    return None


def global_rank() -> int:
    """This process's rank: torch.distributed's when initialised, else the RANK environment variable, else 0."""
    rank = _distributed_rank()
    if rank is not None:
        return rank
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def _as_float(key: str, value: Any, step: int) -> float:
    """A metric value as a float: Python and numpy numbers, 0-d tensors and arrays (``.item()``)."""
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            raise UserError(f"log_metrics: metric '{key}' at step {step} has more than one element; "
                            f"expected a scalar") from None
    if isinstance(value, str):
        raise UserError(f"log_metrics: metric '{key}' at step {step} is a string {value!r}; expected a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"log_metrics: metric '{key}' at step {step} is not a number: {value!r}") from None


def _container(config: Any) -> Any:
    """An OmegaConf config as plain containers (resolved); anything else as it is."""
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config


def _as_step(step: Any) -> int:
    if hasattr(step, "item") and not isinstance(step, int):
        step = step.item()
    if isinstance(step, bool) or not float(step).is_integer():
        raise UserError(f"log_metrics: step {step!r} is not a whole number")
    return int(step)


class Logger:
    """Fans every call out to its run writers; a no-op on ranks other than 0."""

    def __init__(self, writers: Sequence[Any], rank_zero_only: bool = True):
        self.active = (not rank_zero_only) or global_rank() == 0
        self.writers = list(writers) if self.active else []
        self.finished = False
        self.status: str | None = None

    def _each(self, method: str, *args: Any) -> None:
        """Call ``method`` on every writer; if some fail, the others still get the call and the first error is raised."""
        error: BaseException | None = None
        for writer in self.writers:
            try:
                getattr(writer, method)(*args)
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the run's configuration (nested mappings, OmegaConf configs and dataclass dicts)."""
        if self.active:
            self._each("log_config", dict(_container(config)))

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record metric values at a step (converted to float; tensors through ``.item()``)."""
        if not self.active:
            return
        step = _as_step(step)
        values = {str(k): _as_float(str(k), v, step) for k, v in metrics.items()}
        if values:
            self._each("log_metrics", values, step)

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Store a file (or folder) with the run."""
        if not self.active:
            return
        if not Path(path).exists():
            raise UserError(f"log_artifact: no file or folder at {path}")
        self._each("log_artifact", str(path))

    def finish(self, status: str = "finished") -> None:
        """End the run in every back end (once): finished, failed or killed."""
        if self.finished:
            return
        self.finished = True
        self.status = status
        if self.active:
            self._each("finish", status)

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish("failed" if exc_type is not None else "finished")


def open_logger(trackers: Sequence[Any], name: str, config: Mapping[str, Any] | None = None,
                rank_zero_only: bool = True) -> Logger:
    """Start run ``name`` in each tracker (objects with ``start_run``, or configs with ``_target_``); one Logger over them."""
    if rank_zero_only and global_rank() != 0:
        return Logger([], rank_zero_only=True)
    config = _container(config)
    writers = []
    try:
        for tracker in trackers:
            if isinstance(tracker, Mapping):
                from toolkit.pipeline import build_tracker

                tracker = build_tracker(dict(tracker))
            writers.append(tracker.start_run(name, dict(config) if config else None))
    except BaseException:
        for writer in writers:  # do not leave half the runs open as "running"
            try:
                writer.finish("failed")
            except Exception:
                pass
        raise
    return Logger(writers, rank_zero_only=rank_zero_only)


class InMemoryWriter:
    """Test/debug back end: records every call (config, metrics by step, artifacts, status) in memory."""

    def __init__(self, name: str = "run", config: Mapping[str, Any] | None = None):
        self.name = name
        self.config: dict[str, Any] = {}
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.artifacts: list[str] = []
        self.status: str | None = None
        self.calls: list[tuple[str, Any]] = []
        if config:
            self.log_config(config)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record (and merge) the config."""
        self.calls.append(("log_config", dict(config)))
        self.config.update(dict(config))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record metrics at a step."""
        self.calls.append(("log_metrics", (dict(metrics), int(step))))
        self.metrics.append((int(step), {str(k): float(v) for k, v in metrics.items()}))

    def log_artifact(self, path: str) -> None:
        """Record an artifact path (nothing is copied)."""
        self.calls.append(("log_artifact", str(path)))
        self.artifacts.append(str(path))

    def finish(self, status: str = "finished") -> None:
        """Record the final status."""
        self.calls.append(("finish", status))
        self.status = status

    @property
    def flat_config(self) -> dict[str, Any]:
        """The config with nested keys flattened (``optim.lr``)."""
        return flatten_config(self.config)

    def history(self) -> pd.DataFrame:
        """The recorded metrics as a wide frame (step + one column per key; the last value wins at a repeated step)."""
        rows = [{"step": step, **values} for step, values in self.metrics]
        if not rows:
            return pd.DataFrame({"step": pd.Series(dtype="int64")})
        return pd.DataFrame(rows).groupby("step", as_index=False, sort=True).last()


class InMemoryTracker:
    """Test/debug tracker whose ``start_run`` returns InMemoryWriters (kept in ``runs``)."""

    name = "memory"

    def __init__(self) -> None:
        self.runs: list[InMemoryWriter] = []

    def start_run(self, name: str, config: Mapping[str, Any] | None = None) -> InMemoryWriter:
        """A new recording writer."""
        writer = InMemoryWriter(name, config)
        self.runs.append(writer)
        return writer

