"""Recipe lr_table: flat checkpoint tables (a scaling survey's CSV) -> minima per (model, tokens) and their law."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adapters.local import LocalTracker
from analyses.minima import find_minima
from toolkit.errors import UserError
from toolkit.protocol import Built, read_runset
from toolkit.recipes import lr_table
from toolkit.runset import Selection
from toolkit.settings import as_settings

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"m20": 2.0e7, "m80": 8.0e7, "m320": 3.2e8}
ALPHA, BETA, GAMMA = -0.5, 0.1, -2.0  # planted: log2 lr* = ALPHA log2 N + BETA log2 D + GAMMA


def planted_log2_lr(n: float, d: float) -> float:
    return ALPHA * np.log2(n) + BETA * np.log2(d) + GAMMA


def survey_csv(path: Path, edge_model: str | None = None) -> pd.DataFrame:
    """Checkpoints of (model, peak_lr, total tokens) runs, loss parabolic in log2 lr around the planted optimum;
    each run logs every power of two of tokens up to its length (two run lengths: duplicates at shared D)."""
    rows = []
    for model, n in SIZES.items():
        for total in (2**30, 2**32):
            for d_log2 in range(27, int(np.log2(total)) + 1):
                d = 2.0**d_log2
                centre = planted_log2_lr(n, d) + (6.0 if model == edge_model else 0.0)
                for x in np.arange(-4.0, 4.5, 1.0) + round(planted_log2_lr(n, 2.0**30)):
                    loss = 2.0 + 40 / np.log2(n) + 0.05 * (x - centre) ** 2 + (0.01 if total == 2**32 else 0.0)
                    rows.append({"model": model, "N": n, "D": d, "peak_lr": 2.0**x, "loss": loss, "total_tokens": total})
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return frame


def table_of(path: Path, **params) -> tuple[pd.DataFrame, list[str]]:
    runset = read_runset(LocalTracker(str(path)), Selection(), None)
    warnings: list[str] = []
    params = {"columns": {"lr": "peak_lr", "horizon": "D", "loss": "loss", "bs": "N"}, "keep_columns": ["model"], **params}
    return lr_table.build(runset, params, warnings.append), warnings


def test_min_reduction_keeps_the_best_checkpoint_per_point(tmp_path):
    frame = survey_csv(tmp_path / "survey.csv")
    table, warnings = table_of(tmp_path / "survey.csv")
    expected = frame.groupby(["model", "N", "peak_lr", "D"])["loss"].min()
    assert len(table) == len(expected)
    got = table.set_index(["model", "bs", "lr", "horizon"])["train_loss"].sort_index()
    np.testing.assert_allclose(got.to_numpy(), expected.sort_index().to_numpy())
    assert any("reduced to" in w for w in warnings)
    mean, _ = table_of(tmp_path / "survey.csv", reduce="mean")
    assert mean["train_loss"].mean() == pytest.approx(frame.groupby(["model", "peak_lr", "D"])["loss"].mean().mean())
    assert table.groupby(["model", "lr"])["run_id"].nunique().eq(1).all()  # one run per (model, lr)


def test_minima_recover_the_planted_optimum_per_model_and_tokens(tmp_path):
    survey_csv(tmp_path / "survey.csv")
    table, _ = table_of(tmp_path / "survey.csv")
    minima = find_minima(table, {"horizons": "pow2", "by": ["model"], "bootstrap": {"n": 0}, "plots": False})
    assert len(minima) == 3 * 6 and not minima["on_edge"].any()
    expected = [planted_log2_lr(n, d) for n, d in zip(minima["bs"], minima["horizon"])]
    np.testing.assert_allclose(np.log2(minima["lr"].to_numpy(float)), expected, atol=1e-6)


def test_a_diverged_run_is_dropped_and_the_minima_stay_planted(tmp_path):
    """The longer run of one (model, lr) blows up to a finite 1e30 from 2^29 tokens: that (model, lr)'s points from
    there on are dropped and named in a warning, and the minima still recover the planted optimum (before, the
    1e30 checkpoints past 2^30, where only that run logs, were losses and wrecked the fits)."""
    frame = survey_csv(tmp_path / "survey.csv")
    lr = sorted(frame.loc[frame["model"] == "m80", "peak_lr"].unique())[-1]
    blow = (frame["model"] == "m80") & (frame["peak_lr"] == lr) & (frame["total_tokens"] == 2**32) & (frame["D"] >= 2**29)
    frame.loc[blow, "loss"] = 1e30
    frame.to_csv(tmp_path / "survey.csv", index=False)
    table, warnings = table_of(tmp_path / "survey.csv")
    (warning,) = [w for w in warnings if "diverged" in w]
    assert "1 run(s) diverged" in warning and f"m80/80000000.0/{lr} at horizon {2**29}" in warning
    assert (table["train_loss"] < 10).all()
    assert not ((table["model"] == "m80") & (table["lr"] == lr) & (table["horizon"] >= 2**29)).any()
    minima = find_minima(table, {"horizons": "pow2", "by": ["model"], "bootstrap": {"n": 0}, "plots": False})
    assert len(minima) == 3 * 6 and set(minima["method"]) == {"fit"}
    expected = [planted_log2_lr(n, d) for n, d in zip(minima["bs"], minima["horizon"])]
    np.testing.assert_allclose(np.log2(minima["lr"].to_numpy(float)), expected, atol=1e-6)


def test_an_optimum_beyond_the_lr_grid_is_flagged_on_edge(tmp_path):
    survey_csv(tmp_path / "survey.csv", edge_model="m20")
    table, _ = table_of(tmp_path / "survey.csv")
    minima = find_minima(table, {"horizons": "pow2", "by": ["model"], "bootstrap": {"n": 0}, "plots": False})
    edge = minima.groupby("model")["on_edge"].any()
    assert edge["m20"] and not edge["m80"] and not edge["m320"]


def test_bad_columns_are_one_line_errors(tmp_path):
    survey_csv(tmp_path / "survey.csv")
    with pytest.raises(UserError, match="no column 'lr_peak' for lr"):
        table_of(tmp_path / "survey.csv", columns={"lr": "lr_peak", "horizon": "D", "loss": "loss"})
    with pytest.raises(UserError, match=r"recipe lr_table: Key 'tokens' not in 'LrTableColumns'"):
        table_of(tmp_path / "survey.csv", columns={"lr": "peak_lr", "tokens": "D"})
    with pytest.raises(UserError, match=r"recipe lr_table: Invalid value 'max', expected one of \[min, mean\] \(key reduce\)"):
        table_of(tmp_path / "survey.csv", reduce="max")
    with pytest.raises(UserError, match=r"recipe.keep_columns: no column 'size'"):
        table_of(tmp_path / "survey.csv", keep_columns=["size"])


def test_the_recipe_class_returns_the_table_and_its_warnings(tmp_path):
    """LrTable (the yaml's _target_) builds from its settings object and hands the warnings back."""
    survey_csv(tmp_path / "survey.csv")
    runset = read_runset(LocalTracker(str(tmp_path / "survey.csv")), Selection(), None)
    settings = as_settings(lr_table.LrTableSettings, {"columns": {"lr": "peak_lr", "horizon": "D", "bs": "N"}})
    recipe = lr_table.LrTable()
    assert recipe.metric_keys(settings) is None and recipe.needs_tracker(settings)
    built = recipe.build(runset, settings)
    assert isinstance(built, Built) and any("reduced to" in w for w in built.warnings)
    pd.testing.assert_frame_equal(built.table, lr_table.build(runset, settings, [].append))
    assert built.table["run_id"].str.startswith("bs=").all()  # no keep_columns: runs named by bs and lr


def test_experiment_misfitting_lr_gives_minima_with_edge_flags_and_the_planted_law(tmp_path):
    from hydra import compose, initialize_config_dir

    from toolkit.pipeline import run
    from toolkit.settings import register_schemas

    register_schemas(ROOT / "conf")
    survey_csv(tmp_path / "survey.csv")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=misfitting_lr", f"tracker.path={tmp_path / 'survey.csv'}",
                                           "progress=false", "analysis.minima.plots=false"])
    run(cfg, tmp_path / "out")
    minima = pd.read_csv(tmp_path / "out" / "minima" / "minima.csv")
    assert {"model", "horizon", "bs", "lr", "on_edge"} <= set(minima.columns) and len(minima) == 18
    fit = json.loads((tmp_path / "out" / "regressions" / "summary.json").read_text())["lr_vs_bs_horizon"]
    assert fit["alpha"] == pytest.approx(ALPHA, abs=1e-6) and fit["beta"] == pytest.approx(BETA, abs=1e-6)
