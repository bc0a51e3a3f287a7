"""Where a run's results came from: the command, the tracker and its source, the runs read and kept, the time,
the toolkit version and the git commit. Recorded in status.json (``provenance``) and shown at the top of the report.
"""
from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toolkit.secrets import mask_argument, mask_config, scrub

# the tracker settings that say where the runs are read from, in the order they are shown
SOURCE_KEYS = ("path", "uri", "experiment", "entity", "project", "sweep", "query", "filter_string")
PACKAGE = "sweepkit"


def command_line(overrides: Iterable[str] | None, multirun: bool = False) -> str | None:
    """``python run.py <overrides>`` with secrets masked; None when the overrides are unknown."""
    if overrides is None:
        return None
    return shlex.join(["python", "run.py"] + (["-m"] if multirun else []) + [mask_argument(o) for o in overrides])


def hydra_command() -> str | None:
    """The command line of the current Hydra job (secrets masked), or None outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        return command_line([str(o) for o in hc.overrides.task], multirun=hc.mode == RunMode.MULTIRUN)
    except Exception:  # a Hydra without this API: the command is simply not recorded
        return None


def toolkit_version() -> str | None:
    """The installed sweepkit version, or None when it is not installed as a package."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(PACKAGE)
    except (ImportError, PackageNotFoundError):
        return None


def git_commit(cwd: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the working tree at ``cwd`` (a ``+dirty`` suffix when it has changes); None when
    there is no git or no repository."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        commit = head.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                               text=True, timeout=5)
        return commit + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def tracker_source(tracker_cfg: Any) -> dict[str, Any]:
    """The tracker's class and the settings naming its source (path, uri, experiment, project, ...), masked."""
    if tracker_cfg is None:
        return {"tracker": None, "source": {}}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(tracker_cfg, DictConfig):
            tracker_cfg = OmegaConf.to_container(tracker_cfg, resolve=True)
    except Exception:  # an interpolation that does not resolve: show what is there
        tracker_cfg = {}
    if not isinstance(tracker_cfg, Mapping):
        return {"tracker": None, "source": {}}
    masked = mask_config(dict(tracker_cfg))
    target = masked.get("_target_")
    name = None
    if target:
        try:
            from toolkit.settings import locate

            name = getattr(locate(str(target), "tracker"), "name", None)
        except Exception:  # a tracker that does not import: its target names it
            name = None
    return {"tracker": name or (str(target).rpartition(".")[2] if target else None), "target": target,
            "source": {k: scrub(str(masked[k])) for k in SOURCE_KEYS if masked.get(k) not in (None, "", [], {})}}


def collect(tracker_cfg: Any = None, n_runs_read: int | None = None, n_runs_kept: int | None = None,
            recipe: str | None = None, command: str | None = None, cwd: str | Path | None = None) -> dict[str, Any]:
    """The provenance record of one run (see the module docstring)."""
    where = tracker_source(tracker_cfg)
    return {
        "command": command if command is not None else hydra_command(),
        "tracker": where["tracker"],
        "tracker_target": where.get("target"),
        "source": where["source"],
        "recipe": recipe,
        "n_runs_read": n_runs_read,
        "n_runs_kept": n_runs_kept,
        "time": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "version": toolkit_version(),
        "git_commit": git_commit(cwd),
    }


def runs_kept(table: Any) -> int | None:
    """How many runs the Table holds (distinct ``run_id``), or None when it has no run column."""
    try:
        return int(table["run_id"].nunique()) if "run_id" in table.columns else None
    except Exception:  # not a frame: unknown
        return None
