"""Correlations when a side misses steps: counted and warned about, and `align: common_steps` against a hand computation;
the bootstrap's progress bar has its total."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analyses import correlations as C
from toolkit.errors import UserError
from toolkit.outputs import AnalysisOutput

STEPS = np.array([10, 20, 30, 40, 50, 60])
MATRIX = "scaling_factor/scaling_factor{matrix}"


def _grids() -> tuple[np.ndarray, np.ndarray]:
    """(keys x steps) values of side a and side b, NaN where the side did not log that key at that step."""
    a = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
                  [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
                  [3.0, 3.0, 3.0, 3.0, 30.0, 30.0],
                  [4.0, 4.0, 4.0, 4.0, 4.0, 4.0],
                  [np.nan, 5.0, 5.0, 5.0, 5.0, 5.0]])   # side a never logged key 5 at step 10
    b = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
                  [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
                  [3.0, 3.0, 3.0, 3.0, np.nan, np.nan],  # side b stopped logging key 3 after step 40
                  [4.0, 4.0, 4.0, 4.0, -20.0, -20.0],
                  [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    return a, b


def _table(a: np.ndarray, b: np.ndarray, nan_as_row: bool = False) -> pd.DataFrame:
    """The long table of the two grids: a missing value is no row (or, with nan_as_row, a row holding NaN)."""
    rows = []
    for run, name, grid in (("r1", "side-a", a), ("r2", "side-b", b)):
        for i in range(grid.shape[0]):
            for j, step in enumerate(STEPS):
                v = grid[i, j]
                if np.isnan(v) and not nan_as_row:
                    continue
                rows.append({"run_id": run, "name": name, "step": int(step),
                             "key": f"scaling_factor/scaling_factor{i + 1}", "value": float(v)})
    return pd.DataFrame(rows)


def _params(**extra) -> dict:
    return {"a": "side-a", "b": "side-b", "family": MATRIX, "bootstrap": {"n": 0}, **extra}


@pytest.mark.parametrize("nan_as_row", [False, True])
def test_missing_steps_are_warned_about_and_logged_align_is_the_nanmean(nan_as_row: bool) -> None:
    a, b = _grids()
    with np.errstate(invalid="ignore"):  # Fira's template: np.mean over the steps, then scipy: NaN
        assert np.isnan(stats.spearmanr(a.mean(axis=1), b.mean(axis=1)).statistic)
    warnings: list[str] = []
    res = C.correlate(_table(a, b, nan_as_row), _params(), warnings.append)
    mean_a, mean_b = np.nanmean(a, axis=1), np.nanmean(b, axis=1)  # each series over the steps it logged
    assert res["aligned"]["a"].tolist() == pytest.approx(mean_a.tolist())
    assert res["aligned"]["b"].tolist() == pytest.approx(mean_b.tolist())
    assert res["summary"]["matrix"]["spearman"] == pytest.approx(stats.spearmanr(mean_a, mean_b).statistic, abs=1e-12)
    assert res["summary"]["matrix"]["kendall"] == pytest.approx(stats.kendalltau(mean_a, mean_b).statistic, abs=1e-12)
    cov = res["summary"]["alignment"]["matrix"]
    assert res["summary"]["align"] == "logged" and cov["align"] == "logged"
    assert (cov["n_keys"], cov["n_steps"], cov["n_common_steps"]) == (5, 6, 3)  # steps 20, 30, 40
    assert cov["a"] == {"n_runs": 1, "missing_values": 1, "missing_steps": 1, "missing_keys": 1, "steps": [10],
                        "keys": ["scaling_factor/scaling_factor5"]}
    assert cov["b"] == {"n_runs": 1, "missing_values": 2, "missing_steps": 2, "missing_keys": 1, "steps": [50, 60],
                        "keys": ["scaling_factor/scaling_factor3"]}
    (note,) = [w for w in warnings if "misses" in w]
    assert note.startswith("level matrix: side a misses 1 of 30 (key, step) value(s): 1 step(s) (10) of 1 key(s) "
                           "(scaling_factor/scaling_factor5); side b misses 2 of 30 (key, step) value(s): 2 step(s) "
                           "(50, 60) of 1 key(s) (scaling_factor/scaling_factor3)")
    assert "align=common_steps uses only the 3 of 6 step(s)" in note


def test_common_steps_reduces_every_series_over_the_steps_both_sides_logged() -> None:
    a, b = _grids()
    common = ~np.isnan(a).any(axis=0) & ~np.isnan(b).any(axis=0)
    assert STEPS[common].tolist() == [20, 30, 40]
    for how, reduce in (("mean", lambda g: g.mean(axis=1)), ("last", lambda g: g[:, -1]), ("median", lambda g: np.median(g, axis=1))):
        warnings: list[str] = []
        res = C.correlate(_table(a, b), _params(align="common_steps", reduce=how), warnings.append)
        x, y = reduce(a[:, common]), reduce(b[:, common])
        assert res["aligned"]["a"].tolist() == pytest.approx(x.tolist()), how
        assert res["aligned"]["b"].tolist() == pytest.approx(y.tolist()), how
        assert res["summary"]["matrix"]["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        assert res["summary"]["matrix"]["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
        assert res["summary"]["alignment"]["matrix"]["align"] == "common_steps"
        assert any("align=common_steps: every series of the level is reduced over the 3 of 6 step(s)" in w for w in warnings)
    # the two options give different answers here, so the option is what makes the difference
    logged = C.correlate(_table(a, b), _params())["summary"]["matrix"]["spearman"]
    common_rho = C.correlate(_table(a, b), _params(align="common_steps"))["summary"]["matrix"]["spearman"]
    assert common_rho == pytest.approx(1.0) and logged == pytest.approx(0.6)


def test_common_steps_on_a_multi_run_side_needs_every_run_and_no_warning_when_complete() -> None:
    a, b = _grids()
    full_a = np.where(np.isnan(a), 7.0, a)
    full_b = np.where(np.isnan(b), 7.0, b)
    table = _table(full_a, full_b)
    warnings: list[str] = []
    res = C.correlate(table, _params(align="common_steps"), warnings.append)
    assert not any("misses" in w for w in warnings)
    assert res["summary"]["alignment"]["matrix"]["n_common_steps"] == 6
    assert res["aligned"]["a"].tolist() == pytest.approx(full_a.mean(axis=1).tolist())
    # a second run on side a that misses step 60 for key 1: step 60 is no longer common
    extra = _table(full_a, full_b)
    extra = extra[(extra["run_id"] == "r1") & ~((extra["step"] == 60) & (extra["key"] == "scaling_factor/scaling_factor1"))]
    extra = extra.assign(run_id="r3", name="side-a-2", value=extra["value"] * 2)
    res = C.correlate(pd.concat([table, extra], ignore_index=True), _params(a="^side-a", align="common_steps"))
    cov = res["summary"]["alignment"]["matrix"]
    assert cov["a"]["n_runs"] == 2 and cov["a"]["steps"] == [60] and cov["n_common_steps"] == 5
    assert res["aligned"]["a"].tolist() == pytest.approx((1.5 * full_a[:, :5].mean(axis=1)).tolist())


def test_no_common_step_leaves_the_level_without_a_correlation() -> None:
    a, b = _grids()
    a[:, :3] = np.nan  # side a logged steps 40..60 only
    b[:, 3:] = np.nan  # side b logged steps 10..30 only
    warnings: list[str] = []
    res = C.correlate(_table(a, b), _params(align="common_steps"), warnings.append)
    assert res["summary"]["matrix"]["n"] == 0 and np.isnan(res["summary"]["matrix"]["spearman"])
    assert res["summary"]["matrix"]["reason"].startswith("align=common_steps: no step at which both sides logged")
    assert any("no step has every key on both sides" in w for w in warnings)
    assert any("only 0 key(s) on both sides" in w for w in warnings)


def test_align_is_a_checked_choice() -> None:
    with pytest.raises(UserError, match="align"):
        C.settings_of(_params(align="intersection"))
    assert C.settings_of(_params()).align == "logged"


def test_summary_keeps_its_keys_and_adds_alignment(tmp_path: Path) -> None:
    a, b = _grids()
    out = AnalysisOutput(tmp_path, "correlations", progress=False)
    summary = C.run(_table(a, b), _params(align="common_steps", bootstrap={"n": 30}), out)
    out.commit(summary)
    saved = json.loads((tmp_path / "correlations" / "summary.json").read_text())
    assert set(saved["matrix"]) == {"spearman", "spearman_p", "kendall", "kendall_p", "n", "spearman_ci", "kendall_ci"}
    assert saved["alignment"]["matrix"]["b"]["steps"] == [50, 60]
    assert any("misses" in w for w in saved["warnings"])


class _Bar:
    made: list["_Bar"] = []

    def __init__(self, total, desc, enabled=True, unit="run"):
        self.total, self.desc, self.enabled, self.unit, self.n = total, desc, enabled, unit, 0
        _Bar.made.append(self)

    def update(self, n=1):
        self.n += n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("progress", [True, False])
def test_bootstrap_bar_has_its_total_and_follows_out_progress(monkeypatch, tmp_path: Path, progress: bool) -> None:
    _Bar.made = []
    monkeypatch.setattr(C, "progress_bar", _Bar)
    a, b = _grids()
    table = _table(np.where(np.isnan(a), 7.0, a), np.where(np.isnan(b), 7.0, b))
    extra = table[table["key"] == "scaling_factor/scaling_factor1"].assign(key="scaling_factor/sampling1/1")
    family = {"matrix": MATRIX, "column": "scaling_factor/sampling{matrix}/{column}"}  # column: 1 key, no bootstrap
    out = AnalysisOutput(tmp_path, "correlations", progress=progress)
    C.run(pd.concat([table, extra], ignore_index=True), {**_params(bootstrap={"n": 250}), "family": family}, out)
    (bar,) = _Bar.made
    assert (bar.total, bar.enabled, bar.unit) == (500, progress, "resample")
    assert bar.n == 500


@pytest.mark.parametrize("steps", [[30.0, 10.0, 30.0, 1e6], [0.5, 0.25, 0.5, 2.0], [-3.0, 7.0, -3.0, 7.0], []])
def test_step_codes_equal_numpy_unique(steps) -> None:
    values = np.asarray(steps, dtype=float)
    codes, grid = C._step_codes(values)
    expect_grid, expect_codes = np.unique(values, return_inverse=True)
    assert grid.tolist() == expect_grid.tolist() and codes.tolist() == expect_codes.tolist()
