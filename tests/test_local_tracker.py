"""LocalTracker: every on-disk format read back to the expected RunSet, the writer's folders, errors, selections."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adapters.local import METRICS, LocalTracker
from toolkit.errors import UserError
from toolkit.protocol import Tracker, read_runset
from toolkit.runset import Selection

RUNS = {"a": (1e-3, 32), "b": (3e-3, 32), "c": (1e-3, 64)}


def wide_frame(steps=(10, 20, 30)) -> pd.DataFrame:
    """Three runs x three steps: lr and bs constant per run, loss and norm varying."""
    rows = []
    for i, (run, (lr, bs)) in enumerate(RUNS.items()):
        for j, step in enumerate(steps):
            rows.append({"run_name": run, "step": step, "lr": lr, "bs": bs, "opt": "adam",
                         "loss": 3.0 - 0.1 * j - 0.01 * i, "norm": float(j + i)})
    return pd.DataFrame(rows)


def expected_history(frame: pd.DataFrame, keys=("loss", "norm")) -> pd.DataFrame:
    out = frame.rename(columns={"run_name": "run_id"})[["run_id", "step", *keys]].copy()
    out["step"] = out["step"].astype("int64")
    return out.sort_values(["run_id", "step"]).reset_index(drop=True)


def read(path, keys=None, selection=None):
    return read_runset(LocalTracker(str(path)), selection or Selection(), keys)


def assert_history(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    actual = actual.copy()
    actual["run_id"] = actual["run_id"].astype(str)
    expected = expected.copy()
    expected["run_id"] = expected["run_id"].astype(str)
    pd.testing.assert_frame_equal(actual.sort_values(["run_id", "step"]).reset_index(drop=True),
                                  expected.reset_index(drop=True), check_dtype=False)


# ----------------------------------------------------------------------------------------------- (a) wide file
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_wide_file_reads_config_summary_and_history(tmp_path: Path, suffix: str):
    frame = wide_frame()
    path = tmp_path / f"sweep{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    tracker = LocalTracker(str(path))
    assert isinstance(tracker, Tracker) and tracker.name == "local"
    rs = read_runset(tracker, Selection(), ["loss", "norm"])
    runs = rs.runs.set_index("run_id")
    assert sorted(runs.index) == ["a", "b", "c"]
    assert (runs["name"] == runs.index).all() and (runs["state"] == "finished").all()
    assert runs.loc["b", "config.lr"] == pytest.approx(3e-3) and runs.loc["c", "config.bs"] == 64
    assert runs.loc["a", "config.opt"] == "adam"
    assert "config.loss" not in runs.columns and "config.step" not in runs.columns
    assert runs.loc["a", "summary.loss"] == pytest.approx(2.8)
    assert_history(rs.history, expected_history(frame))
    assert rs.warnings == []
    assert rs.history["run_id"].map(type).eq(str).all() and rs.history["step"].dtype == np.int64


def test_wide_file_serves_any_column_and_all_numeric_by_default(tmp_path: Path):
    path = tmp_path / "sweep.csv"
    wide_frame().to_csv(path, index=False)
    tracker = LocalTracker(str(path))
    runs = tracker.list_runs(Selection())
    lr = tracker.read_history(runs, ["lr"])
    assert list(lr.columns) == ["run_id", "step", "lr"] and len(lr) == 9
    everything = tracker.read_history(runs, None)
    assert set(everything.columns) == {"run_id", "step", "lr", "bs", "loss", "norm"}  # 'opt' is not numeric


def test_wide_file_with_id_and_name_columns_merges_repeated_steps_and_sorts(tmp_path: Path):
    frame = wide_frame()
    frame["run_id"] = frame["run_name"].map({"a": "id-a", "b": "id-b", "c": "id-c"})
    extra = pd.DataFrame([{"run_name": "a", "run_id": "id-a", "step": 20, "lr": 1e-3, "bs": 32, "opt": "adam",
                           "eval": 5.0}])  # an eval row logged separately at an existing step
    frame = pd.concat([frame, extra], ignore_index=True).sample(frac=1.0, random_state=0)
    path = tmp_path / "sweep.parquet"
    frame.to_parquet(path, index=False)
    rs = read(path, ["loss", "eval"])
    assert dict(zip(rs.runs["run_id"], rs.runs["name"])) == {"id-a": "a", "id-b": "b", "id-c": "c"}
    hist = rs.history
    assert len(hist) == 9 and list(hist["run_id"].iloc[:3]) == ["id-a"] * 3
    row = hist[(hist["run_id"] == "id-a") & (hist["step"] == 20)].iloc[0]
    assert row["loss"] == pytest.approx(2.9) and row["eval"] == 5.0


def test_relative_path_resolves_against_cwd(tmp_path: Path, monkeypatch):
    (tmp_path / "data").mkdir()
    wide_frame().to_csv(tmp_path / "data" / "sweep.csv", index=False)
    monkeypatch.chdir(tmp_path)
    assert len(LocalTracker("data/sweep.csv").list_runs(Selection())) == 3


def test_bundled_example_when_path_is_none():
    tracker = LocalTracker(None)
    if not tracker.path.exists():
        pytest.skip("toolkit/data/example_sweep.csv not shipped yet")
    runs = tracker.list_runs(Selection())
    assert len(runs) > 0 and "config.lr" in runs.columns


def test_rewritten_file_is_read_again(tmp_path: Path):
    path = tmp_path / "sweep.csv"
    wide_frame().to_csv(path, index=False)
    tracker = LocalTracker(str(path))
    assert len(tracker.list_runs(Selection())) == 3
    wide_frame()[lambda d: d["run_name"] != "c"].to_csv(path, index=False)
    import os

    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert len(tracker.list_runs(Selection())) == 2


# ----------------------------------------------------------------------------------------------- (b) folder of files
def test_folder_of_files_mixed_csv_parquet_and_per_run_files(tmp_path: Path):
    frame = wide_frame()
    folder = tmp_path / "runs"
    folder.mkdir()
    frame[frame["run_name"] == "a"].to_csv(folder / "a.csv", index=False)
    frame[frame["run_name"] == "b"].to_parquet(folder / "b.parquet", index=False)
    frame[frame["run_name"] == "c"].drop(columns="run_name").to_csv(folder / "c.csv", index=False)  # run = stem
    (folder / "notes.txt").write_text("ignored")
    rs = read(folder, ["loss", "norm"])
    assert sorted(rs.runs["run_id"]) == ["a", "b", "c"]
    assert rs.runs.set_index("run_id").loc["c", "config.bs"] == 64
    assert_history(rs.history, expected_history(frame))


# ----------------------------------------------------------------------------------------------- (c) W&B export
WANDB_EXPORT = '''"Name","train/avg_loss_AVG","eval/ppl/c4","Created","Runtime","Notes","State","Updated","Tags","optim.lr","torch_seed","model.moe","batch_size","steps","train/step"
"moe.lr_4e-3","4.49","96.7","2024-02-25T10:16:21.000Z","160","-","failed","2024-02-26T19:07:00.000Z","a=gshard, experts=4","0.004","0","false","32","250","250"
"moe.lr_1e-3","4.83","133.0","2024-02-25T11:04:31.000Z","170","-","finished","2024-02-26T19:07:00.000Z","a=spm","0.001","0","true","32","250","250"
'''


def test_wandb_export_maps_meta_config_summary_and_step_zero_history(tmp_path: Path):
    path = tmp_path / "wandb_export_2024.csv"
    path.write_text(WANDB_EXPORT)
    rs = read(path, ["train/avg_loss_AVG", "optim.lr"])
    runs = rs.runs.set_index("name")
    assert list(runs.index) == ["moe.lr_4e-3", "moe.lr_1e-3"] and list(rs.runs["run_id"]) == list(runs.index)
    assert list(runs["state"]) == ["failed", "finished"]
    assert runs.loc["moe.lr_4e-3", "created_at"] == pd.Timestamp("2024-02-25T10:16:21Z")
    assert runs.loc["moe.lr_4e-3", "tags"] == "a=gshard,experts=4"
    assert runs.loc["moe.lr_1e-3", "config.optim.lr"] == pytest.approx(1e-3)
    assert runs.loc["moe.lr_1e-3", "summary.train/avg_loss_AVG"] == pytest.approx(4.83)
    assert bool(runs.loc["moe.lr_1e-3", "config.model.moe"]) is True and "summary.model.moe" not in runs.columns
    assert "summary.Runtime" not in runs.columns and "config.Runtime" in runs.columns
    assert (rs.history["step"] == 0).all() and len(rs.history) == 2
    assert rs.history.set_index("run_id").loc["moe.lr_4e-3", "optim.lr"] == pytest.approx(4e-3)
    assert any("no per-step history" in w for w in rs.warnings)
    assert len(read_runset(LocalTracker(str(path)), Selection(tags=["a=spm"]), None).runs) == 1


def test_wandb_export_with_id_column_and_repeated_names(tmp_path: Path):
    path = tmp_path / "export.csv"
    path.write_text('"Name","ID","State","loss"\n"x","id1","finished","1.5"\n"x","id2","finished","2.5"\n')
    rs = read(path, ["loss"])
    assert list(rs.runs["run_id"]) == ["id1", "id2"] and list(rs.runs["name"]) == ["x", "x"]
    path.write_text('"Name","State","loss"\n"x","finished","1.5"\n"x","finished","2.5"\n')
    rs = read(path, ["loss"])
    assert list(rs.runs["run_id"]) == ["x", "x#2"] and any("repeat" in w for w in rs.warnings)


# ----------------------------------------------------------------------------------------------- (d) own folders
def write_runs(root: Path) -> dict[str, str]:
    """Three runs through the writer; returns name -> run_id."""
    tracker = LocalTracker(str(root))
    ids = {}
    for i, (name, (lr, bs)) in enumerate(RUNS.items()):
        writer = tracker.start_run(name, {"optim": {"lr": lr}, "bs": bs}, tags=["sweep", f"bs{bs}"])
        for j, step in enumerate((10, 20, 30)):
            writer.log_metrics({"loss": 3.0 - 0.1 * j - 0.01 * i, "norm": float(j + i)}, step)
        writer.finish("failed" if name == "b" else "finished")
        ids[name] = writer.run_id
    return ids


def test_writer_folders_read_back(tmp_path: Path):
    ids = write_runs(tmp_path / "runs")
    run_dir = tmp_path / "runs" / ids["a"]
    assert {p.name for p in run_dir.iterdir()} == {"meta.json", "config.json", "metrics.jsonl", "summary.json", "artifacts"}
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["name"] == "a" and meta["state"] == "finished" and meta["run_id"] == ids["a"]
    rs = read(tmp_path / "runs", ["loss", "norm"])
    runs = rs.runs.set_index("name")
    assert runs.loc["a", "run_id"] == ids["a"] and runs.loc["b", "state"] == "failed"
    assert runs.loc["b", "config.optim.lr"] == pytest.approx(3e-3) and runs.loc["c", "config.bs"] == 64
    assert runs.loc["a", "tags"] == "bs32,sweep" and runs.loc["a", "summary.loss"] == pytest.approx(2.8)
    assert isinstance(runs.loc["a", "created_at"], pd.Timestamp)
    expected = expected_history(wide_frame())
    expected["run_id"] = expected["run_id"].map(ids)
    assert_history(rs.history, expected.sort_values(["run_id", "step"]).reset_index(drop=True))


def test_writer_folders_equal_the_same_sweep_as_a_wide_file(tmp_path: Path):
    ids = write_runs(tmp_path / "runs")
    frame = wide_frame().drop(columns="opt").rename(columns={"lr": "optim.lr"})
    frame.to_csv(tmp_path / "sweep.csv", index=False)
    from_writer = read(tmp_path / "runs", ["loss", "norm"]).normalized()
    from_file = read(tmp_path / "sweep.csv", ["loss", "norm"]).normalized()
    names = {v: k for k, v in ids.items()}
    hist = (from_writer.history.assign(run_id=from_writer.history["run_id"].map(names))
            .sort_values(["run_id", "step"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(hist, from_file.history, check_dtype=False)
    cols = ["name", "config.bs", "config.optim.lr", "summary.loss", "summary.norm"]
    pd.testing.assert_frame_equal(from_writer.runs[cols], from_file.runs[cols], check_dtype=False)


def test_killed_writer_is_still_readable(tmp_path: Path):
    tracker = LocalTracker(str(tmp_path))
    writer = tracker.start_run("killed", {"lr": 0.1})
    writer.log_metrics({"loss": 2.0}, 1)
    writer.log_metrics({"loss": 1.5, "acc": 0.5}, 2)
    writer._fh.write('{"step": 3, "loss": 1.')  # the process died mid-line
    writer._fh.flush()
    rs = read(tmp_path, ["loss", "acc"])
    assert list(rs.runs["state"]) == ["running"]
    assert rs.runs["summary.loss"].iloc[0] == 1.5  # no summary.json: taken from the metrics
    assert list(rs.history["step"]) == [1, 2] and list(rs.history["loss"]) == [2.0, 1.5]
    assert any("cut short" in w for w in rs.warnings)


def test_non_finite_values_repeated_steps_and_artifacts(tmp_path: Path):
    tracker = LocalTracker(str(tmp_path / "runs"))
    writer = tracker.start_run("diverged")
    writer.log_metrics({"loss": 1.0}, 0)
    writer.log_metrics({"loss": float("inf")}, 1)
    writer.log_metrics({"eval": float("nan")}, 1)
    writer.log_metrics({"eval": 4.0}, 2)
    other = tracker.start_run("fine")
    other.log_metrics({"loss": 0.5, "eval": 1.0}, 0)
    other.finish()
    artifact = tmp_path / "model.txt"
    artifact.write_text("weights")
    writer.log_artifact(str(artifact))
    with pytest.raises(UserError, match="no file"):
        writer.log_artifact(str(tmp_path / "missing.txt"))
    writer.finish("failed")
    assert (writer.dir / "artifacts" / "model.txt").read_text() == "weights"
    rs = read(tmp_path / "runs", ["loss", "eval"])
    hist = rs.history[rs.history["run_id"] == writer.run_id].reset_index(drop=True)
    assert list(hist["step"]) == [0, 1, 2]
    assert hist["loss"].iloc[0] == 1.0 and math.isinf(hist["loss"].iloc[1]) and math.isnan(hist["loss"].iloc[2])
    assert hist["eval"].iloc[2] == 4.0
    assert math.isinf(rs.runs.set_index("name").loc["diverged", "summary.loss"])


def test_writer_rejects_bad_metrics_and_file_paths(tmp_path: Path):
    writer = LocalTracker(str(tmp_path / "runs")).start_run("x")
    with pytest.raises(UserError, match="'loss'.*not a number"):
        writer.log_metrics({"loss": "high"}, 0)
    with pytest.raises(UserError, match="reserved"):
        writer.log_metrics({"step": 1.0}, 0)
    writer.finish()
    (tmp_path / "file.csv").write_text("a\n1\n")
    with pytest.raises(UserError, match="file.csv is a file"):
        LocalTracker(str(tmp_path / "file.csv")).start_run("x")


# ----------------------------------------------------------------------------------------------- (e) flat table
def test_flat_table_is_one_run_per_row(tmp_path: Path):
    path = tmp_path / "scaling.csv"
    pd.DataFrame({"loss": [3.1, 2.9], "N": [1e6, 2e6], "D": [1e9, 2e9], "model": ["s", "m"]}).to_csv(path, index=False)
    rs = read(path, ["loss", "N", "model"])
    assert list(rs.runs["run_id"]) == ["row-0", "row-1"] and list(rs.runs["name"]) == ["row-0", "row-1"]
    assert list(rs.runs["config.model"]) == ["s", "m"] and list(rs.runs["config.N"]) == [1e6, 2e6]
    assert list(rs.history.columns) == ["run_id", "step", "loss", "N", "model"]
    assert (rs.history["step"] == 0).all() and list(rs.history["loss"]) == [3.1, 2.9]
    assert rs.history["model"].isna().all()  # not numeric: never in the history
    assert any("model" in w for w in rs.warnings)  # read_runset: no run logged metric 'model'


# ----------------------------------------------------------------------------------------------- selections
def test_selection_filters_on_a_local_folder(tmp_path: Path):
    write_runs(tmp_path)
    tracker = LocalTracker(str(tmp_path))
    names = lambda **kw: sorted(read_runset(tracker, Selection(**kw), None).runs["name"])  # noqa: E731
    assert names(name_regex="^[ab]$") == ["a", "b"]
    assert names(config={"optim.lr": 1e-3}) == ["a", "c"]
    assert names(config={"bs": [64, 128]}) == ["c"]
    assert names(state=["failed"]) == ["b"]
    assert names(tags=["bs64"]) == ["c"]
    assert names(config={"optim.lr": "0.001"}, tags=["sweep"]) == ["a", "c"]
    assert names(run_ids=[read_runset(tracker, Selection(name_regex="c"), None).runs["run_id"].iloc[0]]) == ["c"]


def test_missing_metric_key_is_a_warning_not_an_error(tmp_path: Path):
    path = tmp_path / "sweep.csv"
    wide_frame().to_csv(path, index=False)
    rs = read(path, ["loss", "nope"])
    assert rs.history["nope"].isna().all() and any("nope" in w for w in rs.warnings)


# ----------------------------------------------------------------------------------------------- errors
def test_error_missing_path(tmp_path: Path):
    with pytest.raises(UserError, match=r"nothing\.csv does not exist"):
        LocalTracker(str(tmp_path / "nothing.csv")).list_runs(Selection())


@pytest.mark.parametrize("text, message", [("", "is empty"), ("run_name,step,loss\n", "no rows")])
def test_error_empty_file(tmp_path: Path, text: str, message: str):
    path = tmp_path / "empty.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        LocalTracker(str(path)).list_runs(Selection())
    assert "empty.csv" in str(err.value) and "\n" not in str(err.value)


def test_error_run_column_without_step_column_and_vice_versa(tmp_path: Path):
    path = tmp_path / "half.csv"
    pd.DataFrame({"run_name": ["a"], "loss": [1.0]}).to_csv(path, index=False)
    with pytest.raises(UserError, match=r"half\.csv.*run column 'run_name'.*step columns \(step, _step, Step\)"):
        LocalTracker(str(path)).list_runs(Selection())
    pd.DataFrame({"iteration": [1], "loss": [1.0]}).to_csv(path, index=False)
    with pytest.raises(UserError, match=r"step column 'iteration'.*run columns \(run, exp\)"):
        LocalTracker(str(path), run_columns=["run", "exp"], step_columns=["iteration"]).list_runs(Selection())


def test_error_bad_step_values(tmp_path: Path):
    path = tmp_path / "steps.csv"
    pd.DataFrame({"run_name": ["a", "a"], "step": ["1", "two"], "loss": [1.0, 2.0]}).to_csv(path, index=False)
    with pytest.raises(UserError, match=r"steps\.csv.*'step'.*'two'.*whole numbers"):
        LocalTracker(str(path)).list_runs(Selection())


def test_error_unreadable_parquet(tmp_path: Path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError, match=r"broken\.parquet: cannot read it as parquet") as err:
        LocalTracker(str(path)).list_runs(Selection())
    assert "\n" not in str(err.value)


def test_error_folder_without_recognised_files(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(UserError, match=r"has no run folders .* and no \*\.csv"):
        LocalTracker(str(tmp_path)).list_runs(Selection())


def test_error_corrupt_meta_json(tmp_path: Path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "meta.json").write_text("{not json")
    with pytest.raises(UserError, match=r"r1.meta\.json: cannot read it as JSON"):
        LocalTracker(str(tmp_path)).list_runs(Selection())


def test_metrics_file_without_step_field(tmp_path: Path):
    write_runs(tmp_path)
    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    (run_dir / METRICS).write_text('{"loss": 1.0}\n')
    tracker = LocalTracker(str(tmp_path))
    runs = tracker.list_runs(Selection())
    with pytest.raises(UserError, match=r"metrics\.jsonl: lines have no 'step'"):
        tracker.read_history(runs, ["loss"])


@pytest.mark.parametrize("n_keys", [8, 600])  # 600 keys a line takes the wide-line (json) parser
def test_wide_and_narrow_metric_lines_read_the_same_values(tmp_path: Path, n_keys: int):
    rng = np.random.default_rng(n_keys)
    values = rng.random((6, n_keys))
    keys = [f"sf/{i}" for i in range(n_keys)]
    tracker = LocalTracker(str(tmp_path / "runs"))
    for name in ("a", "b"):
        writer = tracker.start_run(name)
        for step, row in enumerate(values):
            writer.log_metrics(dict(zip(keys, row.tolist())), step)
        writer.log_metrics({"late": 1.0}, 5)  # a second call at one step, with its own schema
        writer.finish()
    wanted = [keys[0], keys[-1], "late"]
    rs = read(tmp_path / "runs", wanted)
    hist = rs.history[rs.history["run_id"] == rs.runs.set_index("name").loc["a", "run_id"]].reset_index(drop=True)
    assert list(hist["step"]) == list(range(6))
    np.testing.assert_array_equal(hist[keys[0]].to_numpy(), values[:, 0])
    np.testing.assert_array_equal(hist[keys[-1]].to_numpy(), values[:, -1])
    assert hist["late"].iloc[5] == 1.0 and hist["late"].iloc[:5].isna().all()
    assert set(read(tmp_path / "runs", None).history.columns) >= {*keys, "late"}


def test_wide_lines_with_non_finite_values_and_a_torn_middle_line(tmp_path: Path):
    keys = [f"k{i}" for i in range(300)]
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"run_id": "r1", "name": "r1", "state": "finished"}))
    lines = [json.dumps({"step": 0, **{k: 1.0 for k in keys}}), '{"step": 1, "k0": 2.',
             json.dumps({"step": 2, **{k: float("nan") for k in keys}, "k1": float("inf")})]
    (run / METRICS).write_text("\n".join(lines) + "\n")
    hist = read(tmp_path / "runs", ["k0", "k1"]).history
    assert list(hist["step"]) == [0, 2] and hist["k0"].iloc[0] == 1.0
    assert math.isnan(hist["k0"].iloc[1]) and math.isinf(hist["k1"].iloc[1])
