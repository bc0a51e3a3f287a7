"""The notebook API (``import sweepkit as sk``): the command line's stages and defaults on pandas objects."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sweepkit as sk
from toolkit.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def example_runs():
    return sk.read("local")  # tracker=local with path null: the bundled toolkit/data/example_sweep.csv


@pytest.fixture(scope="module")
def example_table(example_runs):
    return sk.recipes.lr_bs_sweep(example_runs)


def test_notebook_minima_equal_the_command_line(example_table, tmp_path):
    """The API on the bundled example gives the very minima.csv of ``python run.py`` (its default config)."""
    cli_dir = tmp_path / "cli"
    # figures off on both sides (they take seconds and do not touch the numbers); every other setting is the default
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={cli_dir}", "analysis.minima.plots=false"],
                          cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = sk.minima(example_table, out=tmp_path / "nb", plots=False)
    assert (tmp_path / "nb" / "minima" / "minima.csv").read_bytes() == (cli_dir / "minima" / "minima.csv").read_bytes()
    cli_summary = json.loads((cli_dir / "minima" / "summary.json").read_text())
    assert m.summary == cli_summary
    # the command line's defaults (horizons: pow2), not every logged horizon: the example logs 2^25 .. 2^30 and more
    logged = pd.to_numeric(example_table["horizon"]).unique()
    assert len(logged) > 6
    horizons = sorted(m.table["horizon"].unique())
    assert horizons == [2**k for k in range(25, 31)] and len(m.table) == 6 * 4
    assert m.summary["settings"]["horizons"] == "pow2"
    assert m.folder == tmp_path / "nb" / "minima" and set(m.tables) == {"minima", "points"}
    on_disk = pd.read_csv(m.folder / "minima.csv")  # .table is the frame that was written
    for col in ("horizon", "bs", "lr", "lr_ci_low", "lr_ci_high", "loss"):
        assert m.table[col].tolist() == pytest.approx(on_disk[col].tolist(), rel=1e-12, nan_ok=True), col


def test_result_renders_the_key_table_with_cis(example_table, tmp_path):
    m = sk.minima(example_table, horizons=["2^28", "2^30"], bootstrap={"n": 50}, plots=False, out=tmp_path)
    assert sorted(m.table["horizon"].unique()) == [2**28, 2**30]
    view = m.key_table()
    assert "lr [CI]" in view.columns and "lr_ci_low" not in view.columns
    row = m.table.iloc[0]
    assert view["lr [CI]"].iloc[0] == f"{row['lr']:.4g} [{row['lr_ci_low']:.4g}, {row['lr_ci_high']:.4g}]"
    assert view["horizon"].iloc[0] == "2^28"
    page = m._repr_html_()
    assert "<table" in page and "lr [CI]" in page and "minima" in page
    text = repr(m)
    assert text.startswith("<sweepkit result minima: 8 rows in minima") and "lr [CI]" in text
    assert isinstance(m.warnings, list) and m.summary["n_groups"] == 8


def test_settings_are_checked_like_the_command_line(example_table, example_runs, tmp_path):
    with pytest.raises(UserError, match="horizon_tolerance"):
        sk.minima(example_table, horizon_tolerance=-1, out=tmp_path)
    with pytest.raises(UserError, match="bogus"):
        sk.minima(example_table, bogus=1, out=tmp_path)
    with pytest.raises(UserError, match="seq_len"):
        sk.recipes.lr_bs_sweep(example_runs, seq_len="long")
    with pytest.raises(UserError, match="unknown tracker"):
        sk.read("nosuchtracker")
    with pytest.raises(UserError, match="RunSet"):
        sk.recipes.lr_bs_sweep(example_table)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_read_applies_the_selection(example_runs):
    runs = sk.read("local", select={"config": {"bs": [64]}})
    assert len(runs.runs) and set(runs.runs["config.bs"]) == {64}
    assert len(runs.runs) == (example_runs.runs["config.bs"] == 64).sum()
    assert set(runs.history["run_id"]) == set(runs.runs["run_id"])


def test_minima_find_the_planted_optimum_and_report(example_table, tmp_path):
    """Against the example's planted law log2 lr* = A log2 horizon + B log2 bs + C; then the HTML report."""
    planted = json.loads((ROOT / "toolkit" / "data" / "example_sweep.planted.json").read_text())
    m = sk.minima(example_table, out=tmp_path, bootstrap={"n": 0}, plots=False)
    fitted = m.table[m.table["method"] == "fit"]
    assert len(fitted) >= 20
    expected = planted["A"] * np.log2(fitted["horizon"]) + planted["B"] * np.log2(fitted["bs"]) + planted["C"]
    assert np.abs(np.log2(fitted["lr"]) - expected).max() < 0.25
    page = sk.report(m, title="notebook report")
    assert page == tmp_path / "report.html" and page.is_file()
    text = page.read_text()
    assert "notebook report" in text and "minima" in text
    other = sk.report([m], title="copied", out=tmp_path / "elsewhere")
    assert other.is_file() and (tmp_path / "elsewhere" / "minima" / "minima.csv").is_file()


def test_run_is_the_command_line_pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outputs go under the current folder, as on the command line
    res = sk.run(["analysis=[minima]", "analysis.minima.bootstrap.n=0", "analysis.minima.plots=false"])
    assert res.exit_code == 0 and res.error is None
    assert res.folder.parts[0] == "outputs" and (tmp_path / res.folder / "minima" / "minima.csv").is_file()
    assert (res.folder / "run.log").is_file() and (res.folder / "status.json").is_file()
    assert (res.folder / "report.html").is_file() and len(res["minima"].table) == 24
    bad = sk.run(["tracker.path=nothing_here.csv"], out=tmp_path / "bad")
    assert bad.exit_code == 2 and "nothing_here.csv" in bad.error
    with pytest.raises(UserError, match="analysis.minima.bootstrap.n"):
        sk.run(["analysis.minima.bootstrap.n=lots"])
