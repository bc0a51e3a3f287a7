"""tracker=lightning_csv and tracker=dvclive: folders written by Lightning's CSVLogger and DVCLive's Live themselves,
the faults their files can hold, and the demo sweep end to end (same Table and minima as tracker=local on its CSV).

Tests marked ``needs_lightning`` / ``needs_dvclive`` use the real packages and skip without them; the fault tests
that write files by hand (layouts older writers left, or damage no library writes on purpose) need neither.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adapters.dvclive import DvcLiveTracker
from adapters.lightning_csv import LightningCsvTracker
from test_hf_trainer import DEMO_ARGS, N_RUNS, assert_same_results, assert_same_runs, reference, run_py, sweep
from toolkit import demo
from toolkit.errors import UserError
from toolkit.protocol import Tracker, read_runset
from toolkit.runset import Selection


def read_lightning(path):
    return read_runset(LightningCsvTracker(str(path)), Selection(), None)


def read_dvclive(path):
    return read_runset(DvcLiveTracker(str(path)), Selection(), None)


def warned(rs, *parts: str) -> list[str]:
    return [w for w in rs.warnings if all(p in w for p in parts)]


def by_step(rs, run_id: str | None = None) -> pd.DataFrame:
    h = rs.history if run_id is None else rs.history[rs.history["run_id"] == run_id]
    return h.drop(columns="run_id").set_index("step")


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    return reference(tmp_path_factory.mktemp("ld_ref"))


@pytest.fixture
def quiet_dvc(monkeypatch, tmp_path):
    """DVCLive offline and silent, with the working directory under tmp (nothing lands in the checkout)."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.delenv("DVC_STUDIO_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)


def expected_from_csv(path: Path) -> dict[int, dict[str, float]]:
    """What metrics.csv says, read independently with csv.DictReader: non-empty cells per step, later rows win."""
    out: dict[int, dict[str, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(row.pop("step"))
            out.setdefault(step, {}).update({k: float(v) for k, v in row.items() if v != ""})
    return out


def assert_history_is(rs, run_id: str, expected: dict[int, dict[str, float]]) -> None:
    h = by_step(rs, run_id)
    assert h.index.tolist() == sorted(expected)
    for step, values in expected.items():
        row = h.loc[step]
        assert {k: v for k, v in row.items() if not math.isnan(v)} == values, step


# ============================================================================================ Lightning
@pytest.mark.needs_lightning
def test_a_real_lightning_trainer_with_csvlogger(tmp_path: Path):
    """Lightning's Trainer fitting a tiny module: train_loss every step, val_loss (a key that first appears after the
    first epoch, so CSVLogger rewrites the file with a wider header) and epoch, hparams from save_hyperparameters."""
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(L.LightningModule):
        def __init__(self, lr: float = 0.05, hidden: int = 3):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Linear(hidden, 1))

        def training_step(self, batch, _i):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _i):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, 2), torch.randn(16, 1))
    logger = CSVLogger(str(tmp_path / "logs"), name="tiny", flush_logs_every_n_steps=1)
    trainer = L.Trainer(max_epochs=2, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                        num_sanity_val_steps=0)
    trainer.fit(Tiny(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=8))
    metrics = Path(logger.log_dir) / "metrics.csv"
    header = metrics.read_text().splitlines()[0].split(",")
    assert {"epoch", "step", "train_loss", "val_loss"} <= set(header)
    tracker = LightningCsvTracker(str(tmp_path / "logs"))
    assert isinstance(tracker, Tracker)
    rs = read_runset(tracker, Selection(), None)
    run = rs.runs.iloc[0]
    assert run["run_id"] == "tiny/version_0" and run["name"] == "tiny" and run["state"] == "finished"
    assert run["config.lr"] == 0.05 and run["config.hidden"] == 3
    expected = expected_from_csv(metrics)
    assert_history_is(rs, "tiny/version_0", expected)
    assert by_step(rs)["train_loss"].notna().sum() == 8  # 2 epochs x 4 batches
    assert by_step(rs)["val_loss"].notna().sum() == 2
    last = max(s for s, v in expected.items() if "val_loss" in v)
    assert run["summary.val_loss"] == expected[last]["val_loss"]


@pytest.mark.needs_lightning
def test_csvlogger_hyperparams_late_keys_and_a_clash(tmp_path: Path):
    import argparse

    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(str(tmp_path), name="exp", flush_logs_every_n_steps=1)
    logger.log_hyperparams({"lr": 1e-3, "optim": {"name": "adam", "betas": [0.9, 0.99]},
                            "ns": argparse.Namespace(depth=4)})
    for step in range(4):
        metrics = {"loss": 1.0 / (step + 1)}
        if step >= 2:
            metrics["val_loss"] = 2.0 / (step + 1)  # first appears midway: the file is rewritten with a wider header
        logger.log_metrics(metrics, step=step)
    logger.log_metrics({"loss": 9.0}, step=3)  # step 3 again, another value
    logger.finalize("success")
    rs = read_lightning(tmp_path)
    run = rs.runs.iloc[0]
    assert run["config.lr"] == 1e-3 and run["config.optim.name"] == "adam" and run["config.optim.betas"] == [0.9, 0.99]
    assert run["config.ns.depth"] == 4  # the Namespace read as plain data, never constructed
    assert warned(rs, "hparams.yaml", "python/object:argparse.Namespace", "plain data")
    h = by_step(rs)
    assert h["loss"].tolist() == [1.0, 0.5, 1 / 3, 9.0]
    assert h["val_loss"].iloc[:2].isna().all() and h["val_loss"].iloc[2:].tolist() == [2 / 3, 0.5]
    assert warned(rs, "metrics.csv", "logged twice with different values", "'loss': 0.25 then 9.0")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_file_with_several_header_lines_is_read_by_the_header_above_each_row(tmp_path: Path):
    """An older writer appended a new header line when keys changed (and here also reordered them)."""
    write(tmp_path / "exp" / "version_0" / "hparams.yaml", "lr: 0.01\n")
    path = write(tmp_path / "exp" / "version_0" / "metrics.csv",
                 "step,train_loss\n0,1.0\n1,0.9\n"
                 "epoch,step,train_loss,val_loss\n0,2,0.8,1.1\n,3,0.7,\n"
                 "val_loss,step\n1.0,4\n")
    rs = read_lightning(tmp_path)
    assert rs.warnings == []
    assert_history_is(rs, "exp/version_0", {0: {"train_loss": 1.0}, 1: {"train_loss": 0.9},
                                           2: {"epoch": 0.0, "train_loss": 0.8, "val_loss": 1.1},
                                           3: {"train_loss": 0.7}, 4: {"val_loss": 1.0}})
    assert rs.runs["config.lr"].tolist() == [0.01] and path.exists()


def test_rows_that_fit_no_header_are_skipped_with_a_warning_never_misaligned(tmp_path: Path):
    path = write(tmp_path / "v" / "version_0" / "metrics.csv",
                 "step,train_loss\n0,1.0\n1,0.9,1.2\n2\n3,0.7\n4,0.6")  # too wide, too narrow, last line cut off
    rs = read_lightning(tmp_path)
    misfit = warned(rs, str(path), "2 line(s) whose field count matches no header line", "line(s) 3, 4")
    assert len(misfit) == 1
    assert warned(rs, str(path), "line 6 has no line end")
    assert_history_is(rs, "v/version_0", {0: {"train_loss": 1.0}, 3: {"train_loss": 0.7}})
    # a short row alone (pandas would pad it with empty cells, reading it as step 1, loss 0.9 and no acc)
    short = write(tmp_path / "w" / "version_0" / "metrics.csv", "step,loss,acc\n0,1.0,0.5\n1,0.9\n2,0.8,0.4\n")
    rs = read_lightning(tmp_path / "w")
    assert warned(rs, str(short), "1 line(s) whose field count matches no header line", "line(s) 3")
    assert_history_is(rs, "w/version_0", {0: {"loss": 1.0, "acc": 0.5}, 2: {"loss": 0.8, "acc": 0.4}})


def test_text_cells_empty_files_and_missing_columns_are_warned(tmp_path: Path):
    text = write(tmp_path / "a" / "version_0" / "metrics.csv", "step,loss\n0,1.0\n1,tensor(0.5)\n2,nan\n3,inf\n")
    write(tmp_path / "b" / "version_0" / "metrics.csv", "")
    nostep = write(tmp_path / "c" / "version_0" / "metrics.csv", "epoch,loss\n0,1.0\n")
    for name in "abc":
        write(tmp_path / name / "version_0" / "hparams.yaml", "x: 1\n")
    rs = read_lightning(tmp_path)
    assert warned(rs, str(text), "'loss'", "1 value(s) that are not numbers", "'tensor(0.5)'")
    h = by_step(rs, "a/version_0")["loss"]
    assert h.loc[0] == 1.0 and np.isnan(h.loc[1]) and np.isnan(h.loc[2]) and h.loc[3] == np.inf
    assert warned(rs, "b/version_0", "the file is empty")
    assert warned(rs, str(nostep), "no 'step' column")
    assert sorted(rs.runs["run_id"]) == ["a/version_0", "b/version_0", "c/version_0"]


def test_missing_hparams_or_metrics_and_shared_names(tmp_path: Path):
    write(tmp_path / "exp" / "version_0" / "metrics.csv", "step,loss\n0,1.0\n")
    write(tmp_path / "exp" / "version_1" / "metrics.csv", "step,loss\n0,2.0\n")
    write(tmp_path / "exp" / "version_1" / "hparams.yaml", "lr: 0.1\n")
    write(tmp_path / "early" / "version_0" / "hparams.yaml", "lr: 0.2\n")  # killed before the first flush
    rs = read_lightning(tmp_path)
    runs = rs.runs.set_index("run_id")
    assert sorted(runs.index) == ["early/version_0", "exp/version_0", "exp/version_1"]
    assert runs.loc["exp/version_0", "name"] == runs.loc["exp/version_1", "name"] == "exp"
    assert warned(rs, "1 run(s) have no hparams.yaml", str(tmp_path / "exp" / "version_0" / "hparams.yaml"),
                  "kept with no config")
    assert warned(rs, "run 'early/version_0'", "metrics.csv is missing", "kept with no history")
    assert warned(rs, "shared by several folders", "'exp'", "exp/version_0, exp/version_1")
    assert runs.loc["early/version_0", "config.lr"] == 0.2
    # a metrics.csv file or a version folder given directly: one run, named by its experiment
    one = read_lightning(tmp_path / "exp" / "version_1" / "metrics.csv")
    assert one.runs[["run_id", "name"]].values.tolist() == [["exp/version_1", "exp"]]
    assert read_lightning(tmp_path / "exp" / "version_1").runs["run_id"].tolist() == ["exp/version_1"]
    with pytest.raises(UserError, match="holds no metrics.csv or hparams.yaml"):
        (tmp_path / "void").mkdir()
        read_lightning(tmp_path / "void")
    with pytest.raises(UserError, match="tracker.path is not set"):
        read_lightning("")


@pytest.mark.needs_lightning
def test_the_demo_sweep_through_csvlogger_gives_the_local_minima(ref: Path, tmp_path: Path):
    root = tmp_path / "lightning_logs"
    assert demo.main([*DEMO_ARGS, "--tracker", "lightning_csv", "--tracker-arg", f"path={root}"]) == 0
    assert len(list(root.glob("*/version_0/metrics.csv"))) == N_RUNS
    rs = read_lightning(root)
    assert rs.warnings == []
    assert_same_runs(rs)
    assert (rs.runs["run_id"] == rs.runs["name"] + "/version_0").all()
    cfg = sweep().history.groupby("run_name")[["lr", "bs", "seed"]].first()
    runs = rs.runs.set_index("name")
    for key in ("lr", "bs", "seed"):
        assert (runs[f"config.{key}"] == cfg[key]).all()
    out = run_py(["tracker=lightning_csv", f"tracker.path={root}"], tmp_path, "lightning")
    assert_same_results(out, ref)


# ============================================================================================ DVCLive
@pytest.mark.needs_dvclive
def test_a_real_dvclive_run(tmp_path: Path, quiet_dvc):
    from dvclive import Live

    with Live(str(tmp_path / "runs" / "exp1" / "dvclive"), save_dvc_exp=False, dvcyaml=False) as live:
        live.log_params({"lr": 0.01, "model": {"depth": 2, "act": "gelu"}})
        for step in range(4):
            live.log_metric("train/loss", 1.0 / (step + 1), timestamp=True)
            live.log_metric("acc", 0.1 * step)
            if step >= 2:
                live.log_metric("val/loss", 2.0 / (step + 1))  # first appears midway
            if step == 3:
                live.log_metric("grad_norm", float("nan"))  # DVCLive writes it as text 'nan'
            live.next_step()
    rs = read_dvclive(tmp_path / "runs")
    run = rs.runs.iloc[0]
    assert run["run_id"] == "exp1/dvclive" and run["name"] == "exp1"
    assert run["config.lr"] == 0.01 and run["config.model.depth"] == 2 and run["config.model.act"] == "gelu"
    h = by_step(rs)
    assert h.index.tolist() == [0, 1, 2, 3]
    assert h["train/loss"].tolist() == [1.0, 0.5, 1 / 3, 0.25] and h["acc"].tolist() == [0.0, 0.1, 0.2, 0.1 * 3]
    assert h["val/loss"].iloc[:2].isna().all() and h["val/loss"].iloc[2:].tolist() == [2 / 3, 0.5]
    assert np.isnan(h.loc[3, "grad_norm"]) and not warned(rs, "not numbers")
    assert run["summary.train/loss"] == 0.25 and run["summary.val/loss"] == 0.5 and run["summary.step"] == 3
    assert pd.notna(run["created_at"])  # the earliest timestamp logged
    assert rs.warnings == []


@pytest.mark.needs_dvclive
def test_faults_dvclive_itself_writes(tmp_path: Path, quiet_dvc):
    """A metric logged without, then with, a timestamp (DVCLive appends a 3-field row under a 2-field header), a
    metric logged twice at one step, a text value, no log_params (no params.yaml), killed before metrics.json."""
    from dvclive import Live

    folder = tmp_path / "run"
    live = Live(str(folder), save_dvc_exp=False, dvcyaml=False)
    live.log_metric("loss", 1.0)
    live.next_step()
    live.log_metric("loss", 0.5, timestamp=True)
    live.log_metric("loss", 0.4)  # step 1 again
    live.log_metric("note", "diverging?")  # DVCLive takes text
    live.next_step()
    live.log_metric("note", 3.0)
    live.log_metric("acc", 0.5, timestamp=True)
    live.next_step()
    live.log_metric("acc", 0.6)  # a 2-field row under the 3-field header
    live.end()
    lines = (folder / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["step", "loss"] and len(lines[2].split("\t")) == 3  # the faults are real
    acc = (folder / "plots" / "metrics" / "acc.tsv").read_text().splitlines()
    assert acc[0].split("\t") == ["timestamp", "step", "acc"] and len(acc[2].split("\t")) == 2
    (folder / "metrics.json").unlink()  # as if killed before the summary was written
    rs = read_dvclive(tmp_path)
    h = by_step(rs)
    assert h.loc[0, "loss"] == 1.0 and h.loc[1, "loss"] == 0.4
    assert h["acc"].dropna().to_dict() == {2: 0.5, 3: 0.6}
    assert warned(rs, "loss.tsv", "logged twice with different values", "0.5 then 0.4")
    assert warned(rs, "note.tsv", "not numbers", "'diverging?'") and h.loc[2, "note"] == 3.0
    assert warned(rs, "1 run(s) have no params.yaml", str(folder / "params.yaml"))
    run = rs.runs.iloc[0]
    assert run["summary.loss"] == 0.4 and run["summary.note"] == 3.0 and run["summary.acc"] == 0.6  # as logged
    assert not warned(rs, "field count")  # the timestamped row was put in its columns, not skipped


def test_dvclive_files_damaged_by_hand(tmp_path: Path):
    plots = tmp_path / "run" / "plots" / "metrics"
    write(plots / "loss.tsv", "step\tloss\n0\t1.0\n1\t0.9\t7\t8\n2\t0.8\n3\t0.")  # 4 fields; last line cut off
    write(plots / "odd.tsv", "step\tone\ttwo\n0\t1\t2\n")
    write(tmp_path / "run" / "params.yaml", "lr: [unclosed\n")
    write(tmp_path / "run" / "metrics.json", '{"loss": 0.8, "train": {"acc": "nan"}, "step": 2}')
    rs = read_dvclive(tmp_path / "run")
    assert rs.runs["run_id"].tolist() == ["run"]
    assert by_step(rs)["loss"].to_dict() == {0: 1.0, 2: 0.8}
    assert warned(rs, "loss.tsv", "1 line(s) whose field count matches no header line", "line(s) 3")
    assert warned(rs, "loss.tsv", "line 5 has no line end")
    assert warned(rs, "odd.tsv", "expected the columns", "metric 'odd' not read")
    assert warned(rs, "params.yaml", "not readable as YAML")
    run = rs.runs.iloc[0]
    assert run["summary.loss"] == 0.8 and np.isnan(run["summary.train/acc"])
    with pytest.raises(UserError, match="holds no DVCLive folders"):
        read_dvclive(plots / "..")  # plots/ itself holds no run (a run folder is its parent)
    with pytest.raises(UserError, match="is a file"):
        read_dvclive(plots / "loss.tsv")


@pytest.mark.needs_dvclive
def test_the_demo_sweep_through_live_gives_the_local_minima(ref: Path, tmp_path: Path, quiet_dvc):
    root = tmp_path / "runs"
    assert demo.main([*DEMO_ARGS, "--tracker", "dvclive", "--tracker-arg", f"path={root}"]) == 0
    assert len(list(root.glob("*/plots/metrics/train_loss.tsv"))) == N_RUNS
    assert not (tmp_path / "dvc.yaml").exists()  # the writer keeps DVC's files out of the working directory
    rs = read_dvclive(root)
    assert rs.warnings == []
    assert_same_runs(rs)
    cfg = sweep().history.groupby("run_name")[["lr", "bs", "seed"]].first()
    runs = rs.runs.set_index("name")
    for key in ("lr", "bs", "seed"):
        assert (runs[f"config.{key}"] == cfg[key]).all()
    out = run_py(["tracker=dvclive", f"tracker.path={root}"], tmp_path, "dvclive")
    assert_same_results(out, ref)


@pytest.mark.needs_dvclive
def test_writing_inside_a_git_repo_leaves_no_dvc_repo_behind(tmp_path, monkeypatch):
    """DVCLive's Live runs `dvc init` in an enclosing git repo; the toolkit's writer must not touch the user's repo."""
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    writer = DvcLiveTracker(path=str(tmp_path / "runs")).start_run("lr-0.001-bs-32-seed-0", {"lr": 0.001})
    writer.log_metrics({"train_loss": 3.0}, 1)
    writer.finish("finished")
    assert not (tmp_path / ".dvc").exists() and not (tmp_path / ".dvcignore").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert ".dvc" not in status
