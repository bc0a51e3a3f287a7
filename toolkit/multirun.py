"""Gather a Hydra multirun: every job's summaries into sweep_summary.csv and a report.html at the root."""
from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from toolkit.outputs import atomic_write_text, write_csv
from toolkit.secrets import MASK, SECRET_KEY, scrub

log = logging.getLogger(__name__)
JOB_FILE = "job.json"


def mask_overrides(overrides: list[str]) -> list[str]:
    """Mask the values of secret-looking keys in ``key=value`` override strings."""
    masked = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        masked.append(f"{key}={MASK}" if sep and SECRET_KEY.search(key) else scrub(item))
    return masked


def write_job_record(run_dir: str | Path, overrides: list[str], error: str | None, exit_code: int | None = None) -> None:
    """Record a multirun job's overrides and outcome in its folder."""
    from toolkit.outputs import write_json

    write_json(Path(run_dir) / JOB_FILE, {"overrides": mask_overrides(list(overrides)), "status": "failed" if error else "ok",
                                               "error": None if error is None else scrub(error),
                                               "exit_code": exit_code if exit_code is not None else (2 if error else 0)})


def _flatten(prefix: str, value: Any, row: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in ("warnings", "settings"):
                _flatten(f"{prefix}.{k}", v, row)
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) or v is None for v in value):
        row[f"{prefix}_low"], row[f"{prefix}_high"] = value
    elif isinstance(value, (int, float, str, bool)) or value is None:
        row[prefix] = value


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)), key=lambda p: int(p.name))


def gather_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """Write sweep_summary.csv, per-table sweep_<analysis>_<table>.csv and report.html; return the summary."""
    sweep_dir = Path(sweep_dir)
    rows: list[dict[str, Any]] = []
    tables: dict[str, list[pd.DataFrame]] = {}
    for job in _job_dirs(sweep_dir):
        record = json.loads((job / JOB_FILE).read_text()) if (job / JOB_FILE).exists() else {"overrides": [], "status": "unknown", "error": "the job left no record (killed?)"}
        row: dict[str, Any] = {"job": int(job.name), "overrides": " ".join(record.get("overrides", [])), "status": record.get("status"),
                               "error": record.get("error"), "exit_code": record.get("exit_code", 1 if record.get("error") else 0)}
        for summary_path in sorted(job.glob("*/summary.json")):
            name = summary_path.parent.name
            _flatten(name, json.loads(summary_path.read_text()), row)
            for csv in sorted(summary_path.parent.glob("*.csv")):
                try:
                    frame = pd.read_csv(csv)
                except (pd.errors.EmptyDataError, pd.errors.ParserError):
                    continue
                frame.insert(0, "job", int(job.name))
                tables.setdefault(f"{name}_{csv.stem}", []).append(frame)
        rows.append(row)
    summary = pd.DataFrame(rows)
    write_csv(sweep_dir / "sweep_summary.csv", summary)
    for key, frames in tables.items():
        write_csv(sweep_dir / f"sweep_{key}.csv", pd.concat(frames, ignore_index=True))
    _write_sweep_report(sweep_dir, summary, sorted(tables))
    return summary


def _write_sweep_report(sweep_dir: Path, summary: pd.DataFrame, table_names: list[str]) -> None:
    failed = summary[summary["status"] != "ok"] if len(summary) else summary
    parts = [f"<h1>Multirun: {len(summary)} job(s), {len(failed)} failed</h1>"]
    if len(failed):
        parts.append("<h2>Failed jobs</h2><ul>" + "".join(
            f"<li>job {int(r.job)} ({html.escape(str(r.overrides))}): {html.escape(str(r.error))}</li>" for r in failed.itertuples()) + "</ul>")
    parts.append("<h2>Jobs</h2><ul>" + "".join(
        f'<li><a href="{int(r.job)}/report.html">job {int(r.job)}</a> {html.escape(str(r.overrides))}: {html.escape(str(r.status))}</li>' for r in summary.itertuples()) + "</ul>")
    parts.append('<h2>Gathered tables</h2><ul><li><a href="sweep_summary.csv">sweep_summary.csv</a></li>' + "".join(
        f'<li><a href="sweep_{n}.csv">sweep_{html.escape(n)}.csv</a></li>' for n in table_names) + "</ul>")
    parts.append("<h2>Summary</h2>" + summary.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.6g}"))
    style = "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
    atomic_write_text(sweep_dir / "report.html", f"<!doctype html><html><head><meta charset='utf-8'><title>Multirun</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def clean_launcher_files(sweep_dir: Path) -> None:
    """After the jobs: remove the launcher's pickles (submitit keeps each job's config, secrets included, in them)
    and scrub its text logs."""
    from toolkit.secrets import scrub_file

    for folder in sweep_dir.rglob(".submitit"):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix == ".pkl":
                path.unlink(missing_ok=True)
            elif path.is_file():
                scrub_file(path)


class GatherSweep(Callback):
    """Hydra callback: at the end of a multirun, gather every job's results at the sweep root."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        clean_launcher_files(sweep_dir)
        summary = gather_sweep(sweep_dir)
        n_failed = int((summary["status"] != "ok").sum()) if len(summary) else 0
        print(f"sweep summary: {sweep_dir / 'sweep_summary.csv'} ({len(summary)} job(s), {n_failed} failed)")
        if n_failed:  # as a single run would: 1 when a job hit a bug, else 2 (bad input)
            codes = pd.to_numeric(summary["exit_code"], errors="coerce").fillna(1)
            raise SystemExit(1 if (codes[summary["status"] != "ok"] != 2).any() else 2)
