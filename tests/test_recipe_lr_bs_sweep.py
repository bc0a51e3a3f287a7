"""The lr x bs sweep recipe: hyperparameters from config or names, horizons, filters, duplicates, seed aggregation."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from toolkit import demo
from toolkit.demo import make_lr_bs_sweep
from toolkit.errors import UserError
from toolkit.protocol import Built
from toolkit.recipes import lr_bs_sweep as recipe
from toolkit.runset import RunSet

YAML = Path(__file__).resolve().parents[1] / "conf" / "recipe" / "lr_bs_sweep.yaml"
COLUMNS = ["run_id", "name", "lr", "bs", "seed", "momentum", "decayed", "lr_in", "lr_hidden", "lr_out",
           "step", "horizon", "train_loss", "output_norm"]


def make_runset(history: pd.DataFrame, *, config: bool = False, extra: dict | None = None) -> RunSet:
    """RunSet from a demo-style wide history (run_name, step, lr, bs, seed, metrics)."""
    first = history.drop_duplicates("run_name").reset_index(drop=True)
    runs = pd.DataFrame({"run_id": [f"id{i}" for i in range(len(first))], "name": first["run_name"],
                         "state": "finished", "created_at": None, "tags": ""})
    if config:
        for key in ("lr", "bs", "seed"):
            runs[f"config.{key}"] = first[key]
    for key, values in (extra or {}).items():
        runs[key] = values
    ids = dict(zip(runs["name"], runs["run_id"]))
    metrics = [c for c in history.columns if c not in ("run_name", "step", "lr", "bs", "seed")]
    hist = history[["step", *metrics]].assign(run_id=history["run_name"].map(ids))
    return RunSet(runs, hist[["run_id", "step", *metrics]])


def build(runset: RunSet, **params):
    warnings: list[str] = []
    table = recipe.build(runset, {"seq_len": 1024, **params}, warnings.append)
    return table, warnings


def small_history(names, steps=(1, 2, 3), loss=None, **cols) -> pd.DataFrame:
    rows = []
    for k, name in enumerate(names):
        for j, step in enumerate(steps):
            value = 3.0 - 0.1 * j + 0.01 * k if loss is None else loss[k][j]
            rows.append({"run_name": name, "step": step, "train_loss": value, "output_norm": 10.0 + j, **cols})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def sweep():
    return make_lr_bs_sweep(lr_log2=[-10.0, -9.0, -8.0], batch_sizes=(32, 256), log_every_tokens=2**25)


def test_demo_sweep_gives_the_right_horizons_and_columns(sweep):
    table, warnings = build(make_runset(sweep.history))
    assert list(table.columns) == COLUMNS
    assert (table["horizon"] == table["bs"] * table["step"] * 1024).all()
    assert str(table["bs"].dtype) == "int64" and str(table["seed"].dtype) == "Int64" and table["decayed"].dtype == bool
    healthy = set(table["name"]) - set(sweep.planted["diverged_runs"])
    for horizon in sweep.planted["horizons"]:
        assert healthy <= set(table.loc[table["horizon"] == horizon, "name"])
    # names parsed back to exactly the demo's lr/bs/seed
    runs = table.drop_duplicates("name").set_index("name")
    truth = sweep.history.drop_duplicates("run_name").set_index("run_name")
    assert (runs.loc[truth.index, "lr"].to_numpy() == truth["lr"].to_numpy()).all()
    assert (runs.loc[truth.index, "bs"].to_numpy() == truth["bs"].to_numpy()).all()
    assert (runs.loc[truth.index, "seed"].to_numpy() == truth["seed"].to_numpy()).all()
    assert table["momentum"].isna().all() and not table["decayed"].any() and table["lr_in"].isna().all()
    # diverged runs: NaN from their first blow-up point (x10, x100, x1e4, then inf), the all-NaN rows after it are
    # gone, and a warning names each run and the step it diverged at
    (diverged,) = [w for w in warnings if "diverged" in w]
    assert "2 run(s) diverged" in diverged
    for name in sweep.planted["diverged_runs"]:
        curve = sweep.history[sweep.history["run_name"] == name]
        loss = curve["train_loss"].to_numpy()
        start = int(np.flatnonzero(loss[1:] > 5 * loss[:-1])[0]) + 1  # the x10 jump
        assert f"{name} at step {curve['step'].iloc[start]}" in diverged
        got = table.loc[table["name"] == name, "train_loss"]
        assert got.iloc[:start].notna().all() and got.iloc[start:].isna().all() and got.iloc[start:].size == 4
    assert table["train_loss"].isna().sum() == 2 * 4


def test_bundled_example_through_the_recipe():
    history = pd.read_csv(demo.EXAMPLE_SWEEP)
    table, _ = build(make_runset(history))
    planted = demo.load_planted()
    assert set(planted["horizons"]) <= set(table["horizon"])
    assert table["name"].nunique() == 96


def test_config_values_win_over_names():
    history = small_history(["lr-0.001-bs-64-seed-0", "my-run"])
    runset = make_runset(history, extra={"config.lr": [0.002, 0.004], "config.batch_size": [64, 128], "config.seed": [0, 5]})
    table, warnings = build(runset)
    runs = table.drop_duplicates("name").set_index("name")
    assert runs.loc["lr-0.001-bs-64-seed-0", "lr"] == 0.002
    assert runs.loc["my-run", ["lr", "bs", "seed"]].tolist() == [0.004, 128, 5]
    assert any("differ from the run names" in w and "lr (lr-0.001-bs-64-seed-0)" in w for w in warnings)


def test_configurable_config_keys_and_metric_names():
    history = small_history(["a", "b"]).rename(columns={"train_loss": "train/loss", "output_norm": "norms/out"})
    runset = make_runset(history, extra={"config.optim.peak_lr": [0.01, 0.02], "config.bs": [8, 8]})
    params = {"config_keys": {"lr": ["optim.peak_lr"]}, "metrics": {"train_loss": "train/loss", "output_norm": "norms/out"}}
    assert recipe.metric_keys(params) == ["train/loss", "norms/out"]
    table, _ = build(runset, **params)
    assert sorted(table["lr"].unique()) == [0.01, 0.02]
    assert table["train_loss"].notna().all() and table["output_norm"].notna().all()
    assert table["seed"].isna().all()


def test_per_layer_learning_rates():
    history = small_history(["lr-i0.001h0.0005o0.002-bs-64-seed-0", "lr-i1e-3h2.5e-4o4e-3-bs-64-seed-0"])
    table, _ = build(make_runset(history))
    runs = table.drop_duplicates("name").set_index("name")
    cols = ["lr_in", "lr_hidden", "lr_out", "lr"]
    assert runs.loc["lr-i0.001h0.0005o0.002-bs-64-seed-0", cols].tolist() == [0.001, 0.0005, 0.002, 0.0005]
    assert runs.loc["lr-i1e-3h2.5e-4o4e-3-bs-64-seed-0", cols].tolist() == [1e-3, 2.5e-4, 4e-3, 2.5e-4]
    table, _ = build(make_runset(history), layer_lr="out")
    assert sorted(table["lr"].unique()) == [0.002, 0.004]


def test_momentum_decayed_and_filters():
    names = ["lr-0.001-bs-64-momentum-0.9-seed-0", "lr-0.001-bs-64-momentum-0.9-seed-1-decayed",
             "lr-0.001-bs-128-momentum-1.0-seed-0", "sweep/lr-0.002-bs-64-seed-2"]
    runset = make_runset(small_history(names))
    table, _ = build(runset)
    runs = table.drop_duplicates("name").set_index("name")
    assert runs.loc[names[:3], "momentum"].tolist() == [0.9, 0.9, 1.0]
    assert runs.loc[names[1], "decayed"] and not runs.loc[names[0], "decayed"]
    assert runs.loc[names[3], "lr"] == 0.002 and np.isnan(runs.loc[names[3], "momentum"])
    pick = lambda **f: set(build(runset, filters=f)[0]["name"])  # noqa: E731
    assert pick(momentum=0.9) == set(names[:2])
    assert pick(momentum=[0.9, 1.0], decayed=False) == {names[0], names[2]}
    assert pick(seeds=[0, 2]) == {names[0], names[2], names[3]}
    assert pick(batch_sizes=[128]) == {names[2]}
    with pytest.raises(UserError, match="no run is left after filters"):
        pick(seeds=[7])
    with pytest.raises(UserError, match=r"recipe lr_bs_sweep: Key 'colour' not in 'SweepFilters'"):
        pick(colour="red")
    with pytest.raises(UserError, match=r"filters.seeds=\['one'\]; expected an integer or a list"):
        pick(seeds=["one"])


def test_unparseable_names_are_warned_once_and_left_out():
    names = ["lr-0.001-bs-64-seed-0", "baseline", "ablation-1", "ablation-2", "ablation-3"]
    table, warnings = build(make_runset(small_history(names)))
    assert set(table["name"]) == {names[0]}
    (warning,) = [w for w in warnings if "no lr/bs" in w]
    assert "4 run(s)" in warning and "baseline, ablation-1, ablation-2 and 1 more" in warning
    with pytest.raises(UserError, match="none of the 4 run"):
        build(make_runset(small_history(names[1:])))


def test_exact_duplicates_are_removed():
    history = small_history(["lr-0.001-bs-64-seed-0", "lr-0.002-bs-64-seed-0"])
    copy = history[history["run_name"] == "lr-0.001-bs-64-seed-0"]
    runset = make_runset(history)
    runset.runs.loc[len(runset.runs)] = {"run_id": "copy", "name": "lr-0.001-bs-64-seed-0", "state": "finished", "created_at": None, "tags": ""}
    runset.history = pd.concat([runset.history, copy[["step", "train_loss", "output_norm"]].assign(run_id="copy")], ignore_index=True)
    table, warnings = build(runset)
    assert len(table) == 6 and not table.duplicated(["lr", "bs", "seed", "step"]).any()
    assert any("removed 3 duplicate row(s)" in w for w in warnings)


def test_conflicting_horizons_name_both_runs():
    history = small_history(["run-a", "run-b"])
    runset = make_runset(history, extra={"config.lr": [0.001, 0.001], "config.bs": [64, 64], "config.seed": [0, 0],
                                         "config.seq_len": [1024, 2048]})
    runset.history["train_loss"] = np.tile([3.0, 2.9, 2.8], 2)
    with pytest.raises(UserError, match=r"runs 'run-a' and 'run-b' have the same configuration .* different horizon"):
        recipe.build(runset, {"seq_len": None}, [].append)


def test_same_horizon_different_losses_is_an_error_unless_seeds_are_unknown():
    history = small_history(["run-a", "run-b"])  # losses differ by 0.01
    extra = {"config.lr": [0.001, 0.001], "config.bs": [64, 64]}
    with pytest.raises(UserError, match=r"'run-a' and 'run-b'.*different train_loss/output_norm"):
        build(make_runset(history, extra={**extra, "config.seed": [1, 1]}))
    table, _ = build(make_runset(history, extra=extra))  # no seeds: two replicates, both kept
    assert len(table) == 6


def test_non_numeric_and_infinite_losses():
    history = small_history(["lr-0.001-bs-64-seed-0", "lr-0.002-bs-64-seed-0"])
    history["train_loss"] = history["train_loss"].astype(object)
    history.loc[5, "train_loss"] = "inf"
    table, warnings = build(make_runset(history))
    assert table["train_loss"].isna().sum() == 1
    assert any("1 run(s) diverged" in w and "lr-0.002-bs-64-seed-0" in w for w in warnings)
    history.loc[1, "train_loss"] = "oops"
    with pytest.raises(UserError, match=r"run 'lr-0.001-bs-64-seed-0' logged 'train_loss' = 'oops'"):
        build(make_runset(history))


def test_bad_config_values_and_missing_inputs():
    history = small_history(["a"])
    with pytest.raises(UserError, match=r"run 'a' has config 'lr' = 'fast'; expected a number"):
        build(make_runset(history, extra={"config.lr": ["fast"], "config.bs": [8]}))
    with pytest.raises(UserError, match=r"run 'a' has bs = 8.5"):
        build(make_runset(history, extra={"config.lr": [0.1], "config.bs": [8.5]}))
    runset = make_runset(small_history(["lr-0.001-bs-64"]))
    with pytest.raises(UserError, match="no seq_len in its config; set recipe.seq_len"):
        recipe.build(runset, {"seq_len": None}, [].append)
    with pytest.raises(UserError, match=r"no history column 'loss'.*history has: train_loss, output_norm"):
        build(runset, metrics={"train_loss": "loss"})
    with pytest.raises(UserError, match="Key 'seqlen' not in 'LrBsSweepSettings'"):
        build(runset, seqlen=3)
    with pytest.raises(UserError, match=r"seq_len=0; expected a positive integer"):
        build(runset, seq_len=0)
    with pytest.raises(UserError, match=r"Invalid value 'middle', expected one of \[in, hidden, out\] \(key layer_lr\)"):
        build(runset, layer_lr="middle")
    with pytest.raises(UserError, match=r"metrics.train_loss=''; expected the history key"):
        build(runset, metrics={"train_loss": ""})
    with pytest.raises(UserError, match=r"name_patterns='lr-\(\?P<lr>'; expected a valid regex"):
        build(runset, name_patterns="lr-(?P<lr>")


def _read(path: Path) -> RunSet:
    """What the pipeline reads for this recipe: only its metric keys (train_loss, output_norm)."""
    from adapters.local import LocalTracker
    from toolkit.protocol import read_runset
    from toolkit.runset import Selection

    return read_runset(LocalTracker(str(path)), Selection(), recipe.metric_keys({}))


def test_scaling_factor_runs_name_their_keys_and_the_metric_family_recipe(tmp_path):
    """analysis=[correlations] on scaling-factor runs under the default recipe: the error lists the keys the runs
    logged (the history holds only train_loss/output_norm, empty) and points at recipe=metric_family; before, it
    said 'metric keys logged: (none)'."""
    from adapters.local import LocalTracker

    writer_side = LocalTracker(str(tmp_path / "runs"))
    for i in range(2):
        run = writer_side.start_run(f"fira-{i}", {"lr": 0.001 * (i + 1), "bs": 32})
        for step in range(3):
            run.log_metrics({"scaling_factor/sampling1/1": 1.0 + step, "scaling_factor/sampling1/2": 2.0 - step}, step)
        run.finish()
    runset = _read(tmp_path / "runs")
    assert "no run logged metric 'train_loss'" in runset.warnings
    with pytest.raises(UserError) as err:
        recipe.build(runset, {"seq_len": 1024}, [].append)
    message = str(err.value)
    assert "(none)" not in message
    assert "scaling_factor/sampling1/1, scaling_factor/sampling1/2" in message and "config keys: lr, bs" in message
    assert "recipe=metric_family" in message
    # Fira's toy logs its loss as train/loss next to the factors: both hints
    fira = LocalTracker(str(tmp_path / "fira"))
    run = fira.start_run("fira", {"lr": 0.001, "bs": 32})
    run.log_metrics({"scaling_factor/sampling1/1": 1.0, "scaling_factor/sampling1/2": 2.0, "train/loss": 3.0}, 1)
    run.finish()
    with pytest.raises(UserError, match=r"use recipe=metric_family .*; for the loss, set recipe.metrics.train_loss=train/loss"):
        recipe.build(_read(tmp_path / "fira"), {"seq_len": 1024}, [].append)
    # a run that logged its loss under another key: the hint names the option
    other = LocalTracker(str(tmp_path / "other"))
    run = other.start_run("lr-0.001-bs-32", {})
    run.log_metrics({"train/loss": 3.0}, 1)
    run.finish()
    with pytest.raises(UserError, match=r"summary keys: train/loss; .*set recipe.metrics.train_loss=train/loss"):
        recipe.build(_read(tmp_path / "other"), {"seq_len": 1024}, [].append)


def test_a_semicolon_csv_is_named_as_such(tmp_path):
    """A ';'-delimited file reads as one column: the error says the file looks ';'-separated."""
    frame = pd.DataFrame({"run_name": ["lr-0.001-bs-32"] * 2 + ["lr-0.002-bs-32"] * 2, "step": [1, 2] * 2,
                          "train_loss": [3.0, 2.9, 3.1, 3.0]})
    frame.to_csv(tmp_path / "sweep.csv", sep=";", index=False)
    with pytest.raises(UserError) as err:
        recipe.build(_read(tmp_path / "sweep.csv"), {"seq_len": 1024}, [].append)
    message = str(err.value)
    assert "looks ';'-separated" in message and "run_name;step;train_loss" in message and "(none)" not in message
    frame.to_csv(tmp_path / "tabs.csv", sep="\t", index=False)
    with pytest.raises(UserError, match="looks tab-separated"):
        recipe.build(_read(tmp_path / "tabs.csv"), {"seq_len": 1024}, [].append)
    frame.to_csv(tmp_path / "good.csv", index=False)  # the same file with commas builds
    assert len(recipe.build(_read(tmp_path / "good.csv"), {"seq_len": 1024}, [].append)) == 4


def test_flat_tables_point_at_scaling_table_and_lr_table(tmp_path):
    pd.DataFrame({"N": [1e7, 1e8], "D": [1e9, 1e9], "loss": [3.0, 2.5]}).to_csv(tmp_path / "nd.csv", index=False)
    with pytest.raises(UserError, match=r"config keys: N, D, loss; .*use recipe=scaling_table"):
        recipe.build(_read(tmp_path / "nd.csv"), {"seq_len": 1024}, [].append)
    pd.DataFrame({"model": ["m1", "m1"], "peak_lr": [1e-3, 2e-3], "D": [1e9, 1e9], "loss": [3.0, 2.5]}).to_csv(
        tmp_path / "lr.csv", index=False)
    with pytest.raises(UserError, match=r"use recipe=lr_table recipe.columns.lr=peak_lr recipe.columns.loss=loss "
                                        r"recipe.columns.horizon=D"):
        recipe.build(_read(tmp_path / "lr.csv"), {"seq_len": 1024}, [].append)


def test_tokens_key_is_the_horizon():
    history = small_history(["lr-0.001-bs-64"]).assign(tokens=[100.0, 200.0, 300.0])
    params = {"tokens_key": "tokens", "seq_len": None}
    assert recipe.metric_keys(params) == ["train_loss", "output_norm", "tokens"]
    table = recipe.build(make_runset(history), params, [].append)
    assert table["horizon"].tolist() == [100, 200, 300]


def test_seed_aggregation_matches_an_independent_groupby(sweep):
    runset = make_runset(sweep.history)
    table, _ = build(runset)
    agg, _ = build(runset, aggregate_seeds=True)
    assert list(agg.columns) == ["lr", "bs", "momentum", "decayed", "lr_in", "lr_hidden", "lr_out", "step", "horizon",
                                 "train_loss", "train_loss_std", "train_loss_count", "output_norm", "output_norm_std"]
    h = table  # the per-run rows: diverged points already NaN (checked in the first test), all-NaN rows gone
    ref = h.groupby(["lr", "bs", "step"]).agg(
        m=("train_loss", "mean"), s=("train_loss", "std"), n=("train_loss", "count"),
        nm=("output_norm", "mean"), ns=("output_norm", "std")).reset_index()
    got = agg.merge(ref, on=["lr", "bs", "step"], how="outer", validate="one_to_one", indicator=True)
    assert (got["_merge"] == "both").all() and len(agg) == table.drop_duplicates(["lr", "bs", "step"]).shape[0]
    np.testing.assert_allclose(got["train_loss"], got["m"], equal_nan=True)
    np.testing.assert_allclose(got["train_loss_std"], got["s"], equal_nan=True)
    assert (got["train_loss_count"] == got["n"]).all()
    np.testing.assert_allclose(got["output_norm"], got["nm"], equal_nan=True)
    np.testing.assert_allclose(got["output_norm_std"], got["ns"], equal_nan=True)
    assert set(got["train_loss_count"]) == {1, 2} and (got["train_loss_count"] == 2).mean() > 0.75


def test_yaml_lists_every_option_with_the_code_defaults():
    """Each `# key: value` line of the yaml is the dataclass default; the file sets only seq_len (the example's)."""
    text = YAML.read_text()
    documented = {m[1]: yaml.safe_load(m[2]) for m in re.finditer(r"^# ([A-Za-z_]\w*): (.*)$", text, re.M)}
    assert documented == recipe.LrBsSweepSettings().to_dict()
    cfg = OmegaConf.to_container(OmegaConf.load(YAML))
    assert cfg == {"defaults": ["/schema/recipe/lr_bs_sweep@_here_", "_self_"],
                   "_target_": "toolkit.recipes.lr_bs_sweep.LrBsSweep", "seq_len": 1024}
    settings = recipe.as_settings(recipe.LrBsSweepSettings, {"seq_len": cfg["seq_len"]})
    assert recipe.LrBsSweep().metric_keys(settings) == recipe.metric_keys({}) == ["train_loss", "output_norm"]
    built = recipe.LrBsSweep().build(make_runset(small_history(["lr-0.001-bs-64-seed-0", "x"])), settings)
    assert isinstance(built, Built) and built.table["horizon"].tolist() == [64 * 1024 * s for s in (1, 2, 3)]
    assert any("left out: x" in w for w in built.warnings)


@pytest.mark.slow
def test_two_thousand_runs_by_a_thousand_steps_is_fast():
    big = make_lr_bs_sweep(lr_log2=np.linspace(-12, -5, 250), log_every_tokens=2**20)
    runset = make_runset(big.history, config=True)
    t0 = time.perf_counter()
    table, _ = build(runset)
    assert len(table) > 2_000_000 and time.perf_counter() - t0 < 5
    t0 = time.perf_counter()
    agg, _ = build(runset, aggregate_seeds=True)
    assert len(agg) == 1000 * 1024 and time.perf_counter() - t0 < 8
