"""A run owns its folder: unique default folders, a reused folder cleared, a broken one a clear error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["analysis.minima.plots=false", "analysis.minima.bootstrap.n=0", 'analysis.minima.horizons=["2^28"]']
TWO = ["analysis.minima.plots=false", "analysis.minima.bootstrap.n=0", "analysis=[minima,regressions]",
       "analysis.regressions.bootstrap.n=0"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SWEEPKIT_RUN_TOKEN"}
    return {**env, "MPLBACKEND": "Agg"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=_env())


def _partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".partial") or p.name.endswith(".tmp")]


def test_eight_runs_started_together_get_eight_complete_folders(tmp_path):
    procs = [subprocess.Popen([sys.executable, str(ROOT / "run.py"), *FAST], cwd=tmp_path, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    folders = sorted(p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir())
    assert len(folders) == 8
    for folder in folders:
        assert {"config.json", "status.json", "table.parquet", "report.html"} <= {p.name for p in folder.iterdir()}
        assert (folder / "minima" / "minima.csv").is_file() and (folder / "minima" / "summary.json").is_file()
        assert json.loads((folder / "status.json").read_text())["analyses"]["minima"]["status"] == "ok"


def test_a_reused_run_folder_keeps_nothing_of_the_earlier_run(tmp_path):
    out = tmp_path / "OUT"
    first = run_cli(*TWO, f"hydra.run.dir={out}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (out / "regressions").is_dir()
    (out / "notes.txt").write_text("mine")  # not the toolkit's: kept
    second = run_cli(*FAST, "analysis=[minima]", f"hydra.run.dir={out}", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert not (out / "regressions").exists() and (out / "notes.txt").read_text() == "mine"
    status = json.loads((out / "status.json").read_text())
    assert list(status["analyses"]) == ["minima"] and any("earlier run" in w for w in status["warnings"])
    assert "regressions: done" not in (out / "run.log").read_text()
    # a run that fails at once leaves no earlier results beside its own config
    failed = run_cli("tracker.path=does/not/exist.csv", f"hydra.run.dir={out}", cwd=tmp_path)
    assert failed.returncode == 2
    assert not (out / "minima").exists() and not (out / "table.parquet").exists()
    assert json.loads((out / "status.json").read_text())["error"]["kind"] == "input"


def test_a_run_folder_that_is_a_file_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "OUT"
    blocker.write_text("not a folder")
    proc = run_cli(*FAST, f"hydra.run.dir={blocker / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(blocker) in errors[0] and "Traceback" not in proc.stderr


def test_a_file_named_like_an_analysis_fails_that_analysis_only(tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "minima").write_text("in the way")
    proc = run_cli(*TWO, f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    status = json.loads((out / "status.json").read_text())
    assert status["analyses"]["minima"]["kind"] == "input" and "is a file" in status["analyses"]["minima"]["message"]
    assert status["analyses"]["regressions"]["status"] == "ok"
    assert _partials(out) == [] and (out / "report.html").exists()
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("weighted, plots", [("no", "off"), ("false", "false")])
def test_yaml_booleans_mean_what_they_say(tmp_path, weighted, plots):
    out = tmp_path / "OUT"
    proc = run_cli('analysis.minima.horizons=["2^28"]', "analysis.minima.bootstrap.n=0",
                   f"analysis.minima.weighted={weighted}", f"analysis.minima.plots={plots}", f"hydra.run.dir={out}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "minima" / "summary.json").read_text())
    assert summary["settings"]["weighted"] is False and summary["settings"]["plots"] is False
    assert not list((out / "minima").glob("*.png"))
    minima = pd.read_csv(out / "minima" / "minima.csv")
    assert len(minima)
