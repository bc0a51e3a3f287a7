"""Output layer: atomic files, one staged folder per analysis, figures as PNG and HTML."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import UserError

log = logging.getLogger(__name__)
PLOTLY_JS = "plotly.min.js"
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would give; mkstemp alone gives 0600


def atomic_write_with(path: str | os.PathLike, write: Callable[[int, str], None], mode: int = FILE_MODE) -> Path:
    """Make ``path`` through a temporary file in the same folder (``write(fd, tmp)`` fills it, and closes ``fd``),
    then chmod and rename; the temporary file is removed when anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        write(fd, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``path`` through a temporary file in the same folder, then rename."""

    def write(fd: int, tmp: str) -> None:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write_with(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/pandas scalars and containers to JSON types; NaN and inf become None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (pd.Timestamp,)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int)):
        return obj
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(obj, (DictConfig, ListConfig)):
        return to_jsonable(OmegaConf.to_container(obj, resolve=True))
    return str(obj)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically, converting numpy types and NaN."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write a CSV atomically."""
    return atomic_write_text(path, df.to_csv(index=False))


def write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write a parquet file atomically."""

    def write(fd: int, tmp: str) -> None:
        os.close(fd)
        df.to_parquet(tmp, index=False)

    return atomic_write_with(path, write)


def copy_artifact(src: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Copy a file or folder into ``folder`` (via a temporary name, then rename); a one-line error if it is missing."""
    src, folder = Path(src), Path(folder)
    if not src.exists():
        raise UserError(f"log_artifact: no file at {src}")
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{src.name}.", dir=folder)) / src.name
    try:
        if src.is_dir():
            shutil.copytree(src, tmp)
            if dest.exists():
                shutil.rmtree(dest)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return dest


def ensure_plotly_js(run_dir: str | os.PathLike) -> Path:
    """Write the one shared plotly.min.js of an output folder (once)."""
    target = Path(run_dir) / PLOTLY_JS
    if not target.exists():
        from plotly.offline import get_plotlyjs

        atomic_write_text(target, get_plotlyjs())
    return target


def save_figure(fig: Any, stem: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> Path:
    """Save a matplotlib figure as ``stem.png`` or a plotly figure as ``stem.html``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(fig, "savefig"):
        import io

        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return atomic_write_bytes(stem.with_suffix(".png"), buf.getvalue())
    if hasattr(fig, "to_html"):
        root = Path(run_dir) if run_dir else stem.parent
        ensure_plotly_js(root)
        rel = os.path.relpath(root / PLOTLY_JS, stem.parent)
        html = fig.to_html(include_plotlyjs=rel, full_html=True)
        return atomic_write_text(stem.with_suffix(".html"), html)
    raise TypeError(f"cannot save a figure of type {type(fig).__name__}")


# what a run writes at the top of its folder (an analysis writes a folder holding summary.json)
RUN_FILES = ("config.json", "table.parquet", "status.json", "report.md", "report.html", PLOTLY_JS, "job.json")


def _folder_error(path: Path, exc: OSError, what: str) -> UserError:
    """A one-line error for a folder that cannot be made or replaced."""
    blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
    why = f"{blocker} is a file, expected a folder" if blocker else f"{type(exc).__name__}: {exc.strerror or exc}"
    return UserError(f"cannot write {what} at {path}: {why}")


def claim_run_dir(run_dir: str | os.PathLike) -> list[str]:
    """Make ``run_dir`` this run's own: remove what an earlier run left there (its files, analysis folders and
    staging folders; nothing else) and return the names removed."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _folder_error(run_dir, exc, "the run folder") from None
    removed = []
    for path in sorted(run_dir.iterdir()):
        earlier = (path.name in RUN_FILES and path.is_file()) or (path.is_dir() and (
            (path / "summary.json").is_file() or (path.name.startswith(".") and path.name.endswith(".partial"))))
        if earlier:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path.name)
    return removed


class AnalysisOutput:
    """Where one analysis writes: a staging folder renamed to ``<run_dir>/<name>`` on success."""

    def __init__(self, run_dir: str | os.PathLike, name: str, progress: bool = True):
        self.run_dir = Path(run_dir)
        self.name = name
        self.progress = progress  # the run's progress switch: analyses pass it to toolkit.progress.progress_bar
        self.final_dir = self.run_dir / name
        self.dir = self.run_dir / f".{name}.partial"
        try:
            if self.dir.is_dir():
                shutil.rmtree(self.dir)
            elif self.dir.exists():
                self.dir.unlink()
            self.dir.mkdir(parents=True)
        except OSError as exc:
            raise _folder_error(self.dir, exc, f"the {name} results") from None
        self.warnings: list[str] = []
        self.files: list[str] = []
        self.captions: dict[str, str] = {}  # figure file name -> one-line caption (summary.json "figures")

    def warn(self, message: str) -> None:
        """Record a warning for summary.json and the log."""
        log.warning("%s: %s", self.name, message)
        self.warnings.append(message)

    def _kept(self, path: Path) -> Path:
        self.files.append(path.name)
        return path

    def table(self, name: str, df: pd.DataFrame) -> Path:
        """Save a table as ``<name>.csv``."""
        return self._kept(write_csv(self.dir / f"{name}.csv", df))

    def figure(self, name: str, fig: Any, caption: str | None = None) -> Path:
        """Save a matplotlib (PNG) or plotly (HTML) figure; ``caption`` (one line: what it shows) goes to the report."""
        path = self._kept(save_figure(fig, self.dir / name, run_dir=self.run_dir))  # staged beside the final folder
        if caption:
            self.captions[path.name] = caption
        return path

    def json(self, name: str, obj: Any) -> Path:
        """Save a JSON file."""
        return self._kept(write_json(self.dir / f"{name}.json", obj))

    def commit(self, summary: dict[str, Any]) -> Path:
        """Write summary.json and move the staged folder into place."""
        summary = dict(summary)
        if self.warnings:
            summary["warnings"] = list(summary.get("warnings", [])) + self.warnings
        if self.captions:
            summary["figures"] = {**dict(summary.get("figures", {})), **self.captions}
        write_json(self.dir / "summary.json", summary)
        if self.final_dir.exists() and not self.final_dir.is_dir():
            raise UserError(f"cannot write the {self.name} results: {self.final_dir} is a file, expected a folder "
                            f"(move it away or choose another hydra.run.dir)")
        try:
            if self.final_dir.exists():
                shutil.rmtree(self.final_dir)
            os.replace(self.dir, self.final_dir)
        except OSError as exc:
            raise _folder_error(self.final_dir, exc, f"the {self.name} results") from None
        return self.final_dir

    def discard(self) -> None:
        """Remove the staged folder (the analysis failed)."""
        shutil.rmtree(self.dir, ignore_errors=True)
