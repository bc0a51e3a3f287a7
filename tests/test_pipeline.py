"""The pipeline wires tracker -> recipe -> analyses, stages outputs, masks secrets and isolates failures."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest
from omegaconf import OmegaConf

from toolkit import pipeline
from toolkit.errors import UserError

STUBS = '''
from dataclasses import dataclass
from typing import Optional

import pandas as pd
from toolkit.errors import UserError
from toolkit.protocol import AnalysisBase, Built, RecipeBase, TrackerBase
from toolkit.settings import Settings


@dataclass
class StubTrackerSettings(Settings):
    n_runs: int = 3
    api_key: Optional[str] = None


class StubTracker(TrackerBase):
    name = "stub"
    settings_type = StubTrackerSettings

    def __init__(self, n_runs=3, api_key=None):
        self.n_runs = n_runs
        self.warnings = ["a tracker warning"]

    def list_runs(self, selection):
        return pd.DataFrame({"run_id": [f"r{i}" for i in range(self.n_runs)], "name": [f"run-{i}" for i in range(self.n_runs)],
                             "state": "finished", "config.lr": [0.1 * (i + 1) for i in range(self.n_runs)]})

    def read_history(self, runs, keys):
        return pd.DataFrame([{"run_id": r, "step": s, "loss": 1.0 / (s + 1)} for r in runs.run_id for s in range(3)])

    def start_run(self, name, config=None):
        raise NotImplementedError


@dataclass
class JoinSettings(Settings):
    pass


class Join(RecipeBase):
    settings_type = JoinSettings

    def metric_keys(self, settings):
        return ["loss"]

    def build(self, runset, settings):
        return Built(runset.history.merge(runset.runs[["run_id", "config.lr"]], on="run_id"), ["a recipe warning"])


@dataclass
class GoodSettings(Settings):
    scale: int = 1


class Good(AnalysisBase):
    name = "good"
    settings_type = GoodSettings
    REQUIRED_COLUMNS = ("loss",)

    def run(self, table, settings, out):
        out.table("points", table)
        out.warn("an analysis warning")
        return {"n": len(table), "scale": settings.scale}


class BadInput(Good):
    def run(self, table, settings, out):
        out.table("half", table)
        raise UserError("column 'nope' is missing; the table has: loss")


class Buggy(Good):
    def run(self, table, settings, out):
        out.table("half", table)
        return {"x": 1 / 0}


class NeedsColumn(Good):
    REQUIRED_COLUMNS = ("loss", "absent")


class NeedsAnExtra(Good):
    def run(self, table, settings, out):
        raise ModuleNotFoundError("No module named 'aim'", name="aim")  # an optional module imported plainly


class CutShort(Good):
    """A signal arrives while a C extension initialises: the import machinery turns it into an ImportError."""

    def run(self, table, settings, out):
        import signal

        from toolkit.errors import interrupt

        out.table("half", table)
        try:
            interrupt(signal.SIGTERM)
        except KeyboardInterrupt:
            raise ImportError("initialization failed") from None
'''


@pytest.fixture()
def stub_module(tmp_path, monkeypatch):
    (tmp_path / "pipeline_stubs.py").write_text(textwrap.dedent(STUBS))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "pipeline_stubs"
    sys.modules.pop("pipeline_stubs", None)


def _cfg(analyses: dict, **tracker):
    return OmegaConf.create({
        "title": "t",
        "select": {"name_regex": "run-[01]"},
        "tracker": {"_target_": "pipeline_stubs.StubTracker", **tracker},
        "recipe": {"_target_": "pipeline_stubs.Join"},
        "analysis": {name: {"_target_": f"pipeline_stubs.{cls}", **extra} for name, (cls, extra) in analyses.items()},
    })


def test_pipeline_runs_every_analysis_and_writes_report(stub_module, tmp_path):
    out = tmp_path / "out"
    status = pipeline.run(_cfg({"good": ("Good", {"scale": 2})}), out)
    assert pipeline.exit_code(status) == 0 and status["failed"] == {}
    assert {"a recipe warning", "a tracker warning"} <= set(status["warnings"])
    summary = json.loads((out / "good" / "summary.json").read_text())
    assert summary["n"] == 6  # 2 selected runs x 3 steps: the selection is applied once, for every tracker
    assert summary["scale"] == 2 and summary["settings"] == {"scale": 2}
    assert summary["warnings"] == ["an analysis warning"]
    assert (out / "good" / "points.csv").exists() and (out / "table.parquet").exists()
    assert "good" in (out / "report.md").read_text()
    assert (out / "report.html").read_text().startswith("<!doctype html>")


def test_input_error_and_bug_are_recorded_and_the_others_still_run(stub_module, tmp_path):
    out = tmp_path / "out"
    cfg = _cfg({"bad": ("BadInput", {}), "buggy": ("Buggy", {}), "good": ("Good", {}), "needs": ("NeedsColumn", {})})
    status = pipeline.run(cfg, out)
    recorded = json.loads((out / "status.json").read_text())["analyses"]
    assert recorded["bad"] == {"status": "failed", "kind": "input", "message": "column 'nope' is missing; the table has: loss"}
    assert recorded["buggy"]["kind"] == "bug" and "ZeroDivisionError" in recorded["buggy"]["message"]
    assert recorded["needs"]["kind"] == "input" and "absent" in recorded["needs"]["message"]
    assert recorded["good"]["status"] == "ok"
    assert pipeline.exit_code(status) == 1  # a bug outranks input errors
    assert not (out / "bad").exists() and not (out / "buggy").exists()
    assert not any(p.name.endswith(".partial") for p in out.iterdir())
    assert (out / "good" / "summary.json").exists()
    report = (out / "report.md").read_text()
    assert "column 'nope' is missing" in report and "ZeroDivisionError" in report


def test_a_missing_optional_module_is_an_input_error_naming_the_extra(stub_module, tmp_path):
    out = tmp_path / "out"
    status = pipeline.run(_cfg({"needs": ("NeedsAnExtra", {}), "good": ("Good", {})}), out)
    recorded = json.loads((out / "status.json").read_text())["analyses"]["needs"]
    assert recorded["kind"] == "input" and "pip install 'sweepkit[aim]'" in recorded["message"]
    assert pipeline.exit_code(status) == 2


def test_only_input_errors_exit_with_2(stub_module, tmp_path):
    status = pipeline.run(_cfg({"bad": ("BadInput", {}), "good": ("Good", {})}), tmp_path / "out")
    assert pipeline.exit_code(status) == 2
    assert "bad: column 'nope'" in pipeline.error_line(status, tmp_path / "out")


def test_saved_config_masks_secrets(stub_module, tmp_path):
    out = tmp_path / "out"
    pipeline.run(_cfg({"good": ("Good", {})}, api_key="sk-planted-secret-123456"), out)
    for path in out.rglob("*"):
        if path.is_file():
            assert b"sk-planted-secret-123456" not in path.read_bytes(), path


def test_unknown_tracker_module_is_a_one_line_error(stub_module, tmp_path):
    cfg = _cfg({})
    cfg.tracker = {"_target_": "adapters.nonexistent.Tracker"}
    status = pipeline.run(cfg, tmp_path / "out")
    assert status["error"]["kind"] == "input" and "adapters.nonexistent.Tracker" in status["error"]["message"]
    assert (tmp_path / "out" / "status.json").exists() and (tmp_path / "out" / "report.html").exists()


def test_a_bad_setting_is_caught_before_any_work(stub_module, tmp_path):
    status = pipeline.run(_cfg({"good": ("Good", {"scale": "lots"})}), tmp_path / "out")
    assert status["error"]["kind"] == "input" and "analysis.good" in status["error"]["message"]
    assert "scale" in status["error"]["message"] and not (tmp_path / "out" / "table.parquet").exists()


def test_a_node_without_target_names_the_missing_package_header(stub_module, tmp_path):
    cfg = _cfg({"good": ("Good", {})})
    cfg.analysis.horizons = "pow2"  # what an analysis file without its '# @package' header leaves behind
    status = pipeline.run(cfg, tmp_path / "out")
    assert "# @package analysis.horizons" in status["error"]["message"]


def test_part_that_breaks_its_protocol_is_refused(stub_module, tmp_path):
    cfg = _cfg({})
    cfg.recipe = {"_target_": "pipeline_stubs.Good"}  # an analysis where a recipe belongs
    status = pipeline.run(cfg, tmp_path / "out")
    assert "does not implement the Recipe protocol" in status["error"]["message"]


def test_runset_does_not_change_the_callers_frames():
    import pandas as pd

    from toolkit.runset import RunSet

    runs = pd.DataFrame({"run_id": ["a"]})
    RunSet(runs, pd.DataFrame({"run_id": ["a"], "step": [0]}))
    assert list(runs.columns) == ["run_id"]


def test_user_error_is_raised_by_build_tracker_for_unknown_modules():
    with pytest.raises(UserError, match="adapters.nonexistent"):
        pipeline.build_tracker({"_target_": "adapters.nonexistent.Tracker"})


def test_an_exception_raised_around_a_signal_is_the_interruption_not_a_bug(stub_module, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(_cfg({"good": ("Good", {}), "cut": ("CutShort", {})}), out)
    status = json.loads((out / "status.json").read_text())
    assert status["analyses"]["cut"]["kind"] == "interrupted" and status["error"]["kind"] == "interrupted"
    assert status["analyses"]["good"]["status"] == "ok" and (out / "report.html").exists()
    assert not any(p.name.endswith(".partial") for p in out.iterdir())
    # the next run starts afresh: a later bug is a bug again
    status = pipeline.run(_cfg({"buggy": ("Buggy", {})}), tmp_path / "again")
    assert status["analyses"]["buggy"]["kind"] == "bug"


def test_a_signal_during_an_import_is_delivered_once_the_import_is_done(tmp_path):
    """An exception raised inside a module's initialisation can leave a C extension half made (an ImportError, then
    a crash at exit): the handler lets the import finish and raises KeyboardInterrupt right after it."""
    import subprocess

    (tmp_path / "slow_module.py").write_text(textwrap.dedent('''
        import os, signal, time
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(50):
            time.sleep(0.01)
        done = True
    '''))
    script = textwrap.dedent('''
        import signal, sys, time
        from toolkit.errors import interrupt, interrupted
        signal.signal(signal.SIGTERM, interrupt)
        try:
            import slow_module
            time.sleep(5)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted after the import:", "slow_module" in sys.modules and sys.modules["slow_module"].done,
                  interrupted())
    ''')
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{pipeline.__file__.rsplit('/toolkit/', 1)[0]}"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "interrupted after the import: True True", proc.stdout + proc.stderr[-2000:]
