"""Gather a Hydra multirun: every job's summaries into sweep_summary.csv and a report.html at the root."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from toolkit.outputs import atomic_write_text, write_csv, write_json
from toolkit.secrets import mask_argument, scrub, scrub_file

log = logging.getLogger(__name__)
JOB_FILE = "job.json"


def mask_overrides(overrides: list[str]) -> list[str]:
    """Mask the values of secret-looking keys (and URL passwords) in ``key=value`` override strings."""
    return [mask_argument(o) for o in overrides]


def write_job_record(run_dir: str | Path, overrides: list[str], error: str | None, exit_code: int | None = None) -> None:
    """Record a multirun job's overrides and outcome in its folder."""
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


def split_override(item: str) -> tuple[str, str]:
    """``key=value`` -> (key, value) (a ``+``/``~`` prefix kept off the key); a bare word is (word, '')."""
    key, _, value = str(item).partition("=")
    return key.lstrip("+~"), value


def sweep_key_numbers(sweep_dir: Path, summary: pd.DataFrame) -> list[dict[str, Any]]:
    """Per analysis, one row per job: the job, its status, its overrides as columns and the same key numbers as each
    job's report (``toolkit.report`` renderers)."""
    from toolkit.report import analysis_view, key_numbers

    override_keys: list[str] = []
    jobs: list[dict[str, Any]] = []
    per_analysis: dict[str, dict[int, list[tuple[str, str, str]]]] = {}
    for r in summary.itertuples() if len(summary) else []:
        job = int(r.job)
        record = json.loads((sweep_dir / str(job) / JOB_FILE).read_text()) if (sweep_dir / str(job) / JOB_FILE).exists() else {}
        values = dict(split_override(o) for o in record.get("overrides", []))
        override_keys += [k for k in values if k not in override_keys]
        jobs.append({"job": job, "status": str(r.status), "overrides": values})
        for adir in sorted(p for p in (sweep_dir / str(job)).glob("*/") if (p / "summary.json").is_file()):
            try:
                per_analysis.setdefault(adir.name, {})[job] = key_numbers(analysis_view(adir, inline=False))
            except Exception as exc:  # one odd job folder does not stop the sweep report
                log.warning("sweep report: %s of job %d: %s: %s", adir.name, job, type(exc).__name__, exc)
    tables = []
    for name, by_job in per_analysis.items():
        labels: list[str] = []
        for numbers in by_job.values():
            labels += [label for label, _, _ in numbers if label not in labels]
        rows = []
        for j in jobs:
            cells = {label: (text, reason) for label, text, reason in by_job.get(j["job"], [])}
            rows.append({"job": j["job"], "status": j["status"], "overrides": [scrub(j["overrides"].get(k, "")) for k in override_keys],
                         "cells": [cells.get(label, ("", "")) for label in labels]})
        tables.append({"analysis": name, "labels": labels, "rows": rows})
    return [{"override_keys": override_keys, "tables": tables}]


def _write_sweep_report(sweep_dir: Path, summary: pd.DataFrame, table_names: list[str]) -> None:
    from toolkit.report import render

    failed = summary[summary["status"] != "ok"] if len(summary) else summary
    keys = sweep_key_numbers(sweep_dir, summary)[0]
    jobs = [{"job": int(r.job), "overrides": scrub(str(r.overrides)), "status": str(r.status),
             "error": scrub(str(r.error)) if isinstance(r.error, str) else ""} for r in summary.itertuples()] if len(summary) else []
    page = render("sweep_report.html.j2", n_jobs=len(summary), n_failed=len(failed), jobs=jobs,
                  failed=[j for j in jobs if j["status"] != "ok"], override_keys=keys["override_keys"],
                  key_tables=keys["tables"], table_names=table_names,
                  summary_html=summary.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.6g}", classes="flat"))
    atomic_write_text(sweep_dir / "report.html", page)


def clean_launcher_files(sweep_dir: Path) -> None:
    """After the jobs: remove the launcher's pickles (submitit keeps each job's config, secrets included, in them)
    and scrub its text logs."""
    for folder in sweep_dir.rglob(".submitit"):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix == ".pkl":
                path.unlink(missing_ok=True)
            elif path.is_file():
                scrub_file(path)


def sweep_job_count(overrides: list[str], params: Any = None) -> int | None:
    """How many jobs a sweep over these command-line overrides (and ``hydra.sweeper.params``) runs, counted the way
    Hydra's BasicSweeper splits them; None when they cannot be parsed here (e.g. a glob over a config group)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        arguments = [f"{k}={v}" for k, v in dict(params or {}).items()] + [str(o) for o in overrides]
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
        return sum(len(batch) for batch in batches)
    except Exception:  # a sweeper or grammar this cannot count: the bar then has no total
        return None


class GatherSweep(Callback):
    """Hydra callback: a progress bar over the sweep's jobs, and at the end of a multirun, every job's results
    gathered at the sweep root."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Start the jobs' progress bar (its total from the sweep's overrides; silent off a terminal or with
        progress=false)."""
        from toolkit.progress import progress_bar

        try:
            sweeper = config.hydra.get("sweeper") or {}
            total = sweeper.get("n_trials") if isinstance(sweeper.get("n_trials"), int) else None
            if total is None:
                total = sweep_job_count(list(config.hydra.overrides.task), sweeper.get("params"))
            enabled = bool(config.get("progress", True))
        except Exception:  # a config without these nodes: no bar
            return
        self.bar = progress_bar(total, "jobs", enabled=enabled, unit="job")

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """One job done (in this process: the basic launcher; a joblib or SLURM worker has no bar)."""
        if self.bar is not None:
            self.bar.update(1)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
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
