"""tracker=hf_trainer: Trainer output folders written by transformers itself, faults, and the demo sweep end to end.

The folders come from the real library where it is installed (the ``hf`` extra: transformers + accelerate): a real
``Trainer`` trains a tiny GPT-2 built from a config (no download) and saves checkpoints and its state;
``TrainerState(...).save_to_json`` writes the demo sweep. The fault tests write the same layout with the adapter's
own ``state_json`` (checked against ``TrainerState`` in ``test_the_writer_layout_is_trainer_states``), so they run
without the extra. The end-to-end helpers here (``reference``, ``run_py``, ``assert_same_results``) are used by
``test_lightning_dvclive.py`` too.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adapters.hf_trainer import STATE, HfTrainerTracker, state_json
from toolkit import demo
from toolkit.errors import UserError
from toolkit.protocol import Tracker, read_runset
from toolkit.runset import Selection

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-9
# the small demo sweep of tests/test_swap_trackers.py: 6 lrs x 2 batch sizes x 1 seed, 4 points a run, one diverged
GRID = dict(lr_log2=[-11, -10, -9, -8, -7, -6], batch_sizes=(32, 64), seeds=(0,), horizons_log2=(26, 27),
            log_every_tokens=2**25, n_diverged=1)
DEMO_ARGS = ["--seed", "0", "--lr-log2", "-11,-10,-9,-8,-7,-6", "--batch-sizes", "32,64", "--seeds", "0",
             "--horizons-log2", "26,27", "--log-every-tokens", str(2**25), "--n-diverged", "1", "--no-progress"]
RUN_ARGS = ["recipe=lr_bs_sweep", "recipe.seq_len=1024", "analysis=[minima]", "analysis.minima.max_loss=10",
            "analysis.minima.bootstrap.n=50", "analysis.minima.plots=false"]
N_RUNS = 12


# --------------------------------------------------------------------------------------------- e2e helpers
def env_for(tmp: Path) -> dict[str, str]:
    """run.py's environment: repo importable, cache and plots off-repo, trackers offline and silent."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    env.update(MPLBACKEND="Agg", SWEEPKIT_CACHE_DIR=str(tmp / "cache"), PYTHONPATH=str(ROOT), DVC_NO_ANALYTICS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def sweep() -> demo.DemoSweep:
    return demo.make_lr_bs_sweep(0, **GRID)


def run_py(overrides: list[str], tmp: Path, tag: str) -> Path:
    """``python run.py <overrides> <RUN_ARGS>`` (cwd under tmp); its run folder."""
    out = tmp / f"out-{tag}"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides, *RUN_ARGS, f"hydra.run.dir={out}"],
                          cwd=tmp, env=env_for(tmp), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{tag}: {proc.stderr[-3000:]}"
    assert f"results: {out}" in proc.stdout
    return out


def reference(tmp: Path) -> Path:
    """tracker=local on the sweep's wide CSV (full precision): the results every layout must give."""
    path = sweep().write(tmp / "sweep.csv", decimals=None)
    return run_py(["tracker=local", f"tracker.path={path}"], tmp, "local")


def assert_same_results(out: Path, ref: Path) -> None:
    """The same Table (but run_id, each layout's own) and the same minima.csv as the reference, to float tolerance."""
    def table(folder: Path) -> pd.DataFrame:
        t = pd.read_parquet(folder / "table.parquet").drop(columns="run_id")
        return t.sort_values(["name", "step"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(table(out), table(ref), check_dtype=False, rtol=RTOL)
    minima, ref_minima = pd.read_csv(out / "minima" / "minima.csv"), pd.read_csv(ref / "minima" / "minima.csv")
    assert len(ref_minima) == 6 and (ref_minima["method"] == "fit").all()
    pd.testing.assert_frame_equal(minima, ref_minima, check_dtype=False, rtol=RTOL)


def assert_same_runs(runset, names: dict[str, str] | None = None, loss_key: str = "train_loss") -> None:
    """Names, lr/bs/seed and every (name, step) value of train_loss/output_norm equal the sweep's."""
    hist = sweep().history
    ids = dict(zip(runset.runs["run_id"], runset.runs["name"]))
    got = runset.history.assign(name=runset.history["run_id"].map(ids))
    got = got.rename(columns={loss_key: "train_loss"})[["name", "step", "train_loss", "output_norm"]]
    want = hist.rename(columns={"run_name": "name"})[["name", "step", "train_loss", "output_norm"]]
    sort = ["name", "step"]
    pd.testing.assert_frame_equal(got.sort_values(sort).reset_index(drop=True),
                                  want.sort_values(sort).reset_index(drop=True), check_dtype=False, rtol=0)
    assert sorted(runset.runs["name"]) == sorted(hist["run_name"].unique())


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    return reference(tmp_path_factory.mktemp("hf_ref"))


def read(path, **kwargs):
    return read_runset(HfTrainerTracker(str(path), **kwargs), Selection(), None)


def write_state(folder: Path, log_history: list, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE).write_text(state_json(log_history, **fields))
    return folder / STATE


def warned(rs, *parts: str) -> list[str]:
    return [w for w in rs.warnings if all(p in w for p in parts)]


# --------------------------------------------------------------------------------------------- real Trainer
@pytest.fixture(scope="module")
def trainer_output(tmp_path_factory) -> Path:
    """A real Trainer run: tiny GPT-2 from a config, 6 steps, logs every 2, evaluates and saves every 3."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    out = tmp_path_factory.mktemp("hf_trainer") / "run-a"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=8, n_layer=1, n_head=2, bos_token_id=0,
                                       eos_token_id=0))
    data = [{"input_ids": torch.randint(0, 32, (16,)), "labels": torch.randint(0, 32, (16,))} for _ in range(24)]
    args = TrainingArguments(output_dir=str(out), learning_rate=1e-3, per_device_train_batch_size=4, max_steps=6,
                             logging_steps=2, eval_strategy="steps", eval_steps=3, save_steps=3, seed=0,
                             report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:8])
    trainer.train()
    trainer.save_state()
    return out


@pytest.mark.needs_hf
def test_a_real_trainer_output_folder(trainer_output: Path):
    log = json.loads((trainer_output / STATE).read_text())["log_history"]
    assert {"loss", "grad_norm", "learning_rate", "eval_loss", "train_runtime"} <= {k for e in log for k in e}
    tracker = HfTrainerTracker(str(trainer_output))
    assert isinstance(tracker, Tracker)
    rs = read_runset(tracker, Selection(), None)
    run = rs.runs.iloc[0]
    assert run["run_id"] == run["name"] == "run-a" and run["state"] == "finished"
    hist = rs.history
    assert hist["step"].tolist() == [2, 3, 4, 6]  # train logs at 2, 4, 6 and evals at 3, 6, merged by step
    by_step = {e["step"]: e for e in log if "loss" in e}
    assert hist.set_index("step")["loss"].dropna().to_dict() == {s: e["loss"] for s, e in by_step.items()}
    evals = {e["step"]: e["eval_loss"] for e in log if "eval_loss" in e}
    assert hist.set_index("step")["eval_loss"].dropna().to_dict() == evals
    assert "train_runtime" not in hist.columns and "train_loss" not in hist.columns  # the end dict is the summary
    end = next(e for e in log if "train_runtime" in e)
    assert run["summary.train_loss"] == end["train_loss"] and run["summary.train_runtime"] == end["train_runtime"]
    assert run["summary.global_step"] == 6 and run["summary.loss"] == by_step[6]["loss"]
    assert run["config.n_layer"] == 1 and run["config.model_type"] == "gpt2"  # config.json of the newest checkpoint
    assert "config.learning_rate" not in rs.runs.columns  # training_args.bin is a pickle: left unread by default
    assert warned(rs, "training_args.bin", "unpickle_training_args=true")
    assert not warned(rs, "logged twice")  # epoch repeats with the same value at step 6: no warning


@pytest.mark.needs_hf
def test_training_args_bin_is_read_only_when_allowed(trainer_output: Path):
    rs = read(trainer_output, unpickle_training_args=True)
    run = rs.runs.iloc[0]
    assert run["config.learning_rate"] == 1e-3 and run["config.per_device_train_batch_size"] == 4
    assert run["config.seed"] == 0 and run["config.max_steps"] == 6
    assert not warned(rs, "training_args.bin")
    if "config.hub_token" in rs.runs.columns:  # TrainingArguments.to_dict masks it; text under it is masked again
        assert rs.runs["config.hub_token"].iloc[0] in (None, "***")


@pytest.mark.needs_hf
def test_without_the_final_state_the_newest_checkpoint_is_read(trainer_output: Path, tmp_path: Path):
    run = tmp_path / "run-a"
    shutil.copytree(trainer_output, run)
    (run / STATE).unlink()
    rs = read(run)
    assert rs.runs["state"].tolist() == ["finished"]  # global_step reached max_steps
    assert rs.history["step"].tolist() == [2, 3, 4, 6]
    (run / "checkpoint-6" / STATE).unlink()  # killed while saving checkpoint-6
    rs = read(run)
    assert warned(rs, "checkpoint-6", "no trainer_state.json", "checkpoint-3")
    assert rs.runs["state"].tolist() == ["running"] and rs.history["step"].tolist() == [2, 3]


@pytest.mark.needs_hf
def test_the_writer_layout_is_trainer_states(tmp_path: Path):
    """state_json (the writer's and the fault tests' layout) is what TrainerState.save_to_json writes."""
    from transformers import TrainerState

    log = [{"loss": 2.5, "epoch": 0.5, "step": 1}, {"eval_loss": 2.4, "epoch": 0.5, "step": 1}]
    real = tmp_path / "real.json"
    TrainerState(global_step=1, max_steps=1, log_history=log).save_to_json(str(real))
    ours = state_json(log, global_step=1, max_steps=1)
    assert ours == real.read_text()
    assert TrainerState.load_from_json(str(real)).log_history == log


@pytest.mark.needs_hf
def test_a_demo_sweep_saved_by_trainer_state_gives_the_local_minima(ref: Path, tmp_path: Path):
    """The demo sweep as Trainer writes it (``loss`` and a custom ``output_norm`` per log, the end-of-training
    dict, TrainingArguments as JSON) reads back to the same Table and minima as tracker=local on its CSV."""
    pytest.importorskip("accelerate")
    from transformers import TrainerState, TrainingArguments

    hist = sweep().history
    root = tmp_path / "outputs"
    for name, run in hist.groupby("run_name", sort=False):
        folder = root / name
        folder.mkdir(parents=True)
        log = [{"epoch": float(i + 1) / len(run), "loss": float(r.train_loss), "output_norm": float(r.output_norm),
                "step": int(r.step)} for i, r in enumerate(run.itertuples())]
        last = int(run["step"].iloc[-1])
        log.append({"epoch": 1.0, "step": last, "total_flos": 0.0, "train_loss": float(run["train_loss"].mean()),
                    "train_runtime": 1.0, "train_samples_per_second": 1.0, "train_steps_per_second": 1.0})
        TrainerState(global_step=last, max_steps=last, log_history=log).save_to_json(str(folder / STATE))
        args = TrainingArguments(output_dir=str(folder), learning_rate=float(run["lr"].iloc[0]),
                                 per_device_train_batch_size=int(run["bs"].iloc[0]), seed=int(run["seed"].iloc[0]),
                                 max_steps=last, report_to=[])
        (folder / "training_args.json").write_text(args.to_json_string())
    rs = read(root)
    assert len(rs.runs) == N_RUNS and (rs.runs["state"] == "finished").all()
    assert_same_runs(rs, loss_key="loss")
    assert (rs.runs.set_index("name")["config.learning_rate"]
            == hist.groupby("run_name")["lr"].first()).all()
    # lr, bs and seed from the training arguments (the config wins over the run name in lr_bs_sweep)
    out = run_py(["tracker=hf_trainer", f"tracker.path={root}", "recipe.metrics.train_loss=loss",
                  "recipe.config_keys.bs=[per_device_train_batch_size]"], tmp_path, "hf")
    assert_same_results(out, ref)


# --------------------------------------------------------------------------------------------- the writer e2e
def test_the_demo_sweep_through_the_writer_gives_the_local_minima(ref: Path, tmp_path: Path):
    root = tmp_path / "outputs"
    assert demo.main([*DEMO_ARGS, "--tracker", "hf_trainer", "--tracker-arg", f"path={root}"]) == 0
    assert len(list(root.glob(f"*/{STATE}"))) == N_RUNS
    rs = read(root)
    assert_same_runs(rs)
    assert rs.warnings == []
    runs = rs.runs.set_index("name")
    cfg = sweep().history.groupby("run_name")[["lr", "bs", "seed"]].first()
    for key in ("lr", "bs", "seed"):
        assert (runs[f"config.{key}"] == cfg[key]).all()
    out = run_py(["tracker=hf_trainer", f"tracker.path={root}"], tmp_path, "hf-writer")
    assert_same_results(out, ref)


# --------------------------------------------------------------------------------------------- faults
def test_an_empty_log_history_is_a_warning_and_the_run_is_kept(tmp_path: Path):
    path = write_state(tmp_path / "sweep" / "empty", [], global_step=0, max_steps=10)
    write_state(tmp_path / "sweep" / "full", [{"loss": 1.0, "step": 1}], global_step=1, max_steps=1)
    rs = read(tmp_path / "sweep")
    assert sorted(rs.runs["run_id"]) == ["empty", "full"]
    assert warned(rs, str(path), "log_history is empty")
    assert rs.history["run_id"].tolist() == ["full"]


def test_a_checkpoint_without_trainer_state_falls_back_to_the_previous_one(tmp_path: Path):
    run = tmp_path / "run"
    write_state(run / "checkpoint-10", [{"loss": 2.0, "step": 5}, {"loss": 1.5, "step": 10}], global_step=10,
                max_steps=30)
    write_state(run / "checkpoint-20", [{"loss": 2.0, "step": 5}, {"loss": 1.5, "step": 10}, {"loss": 1.2, "step": 20}],
                global_step=20, max_steps=30)
    (run / "checkpoint-30").mkdir()  # killed while saving: weights, no trainer_state.json
    (run / "checkpoint-30" / "model.safetensors").write_bytes(b"")
    rs = read(run)
    assert warned(rs, "checkpoint-30", "no trainer_state.json", "checkpoint-20")
    assert rs.history["step"].tolist() == [5, 10, 20] and rs.runs["state"].tolist() == ["running"]
    # no readable source at all: skipped, said
    (run / "checkpoint-10" / STATE).unlink()
    (run / "checkpoint-20" / STATE).write_text('{"log_history": [')  # cut off mid-write
    empty = tmp_path / "nothing-here-yet"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no Trainer output folders"):
        read(empty)
    rs = read(tmp_path)
    assert warned(rs, "checkpoint-20", "not valid JSON") and warned(rs, "no readable trainer_state.json", "skipped")
    assert rs.runs.empty


def test_steps_only_an_older_checkpoint_holds_are_warned(tmp_path: Path):
    run = tmp_path / "run"
    write_state(run / "checkpoint-100", [{"loss": 3.0, "step": 50}, {"loss": 2.0, "step": 100}], global_step=100)
    write_state(run / "checkpoint-200", [{"loss": 3.1, "step": 50}, {"loss": 1.0, "step": 200}], global_step=200)
    rs = read(run)
    assert warned(rs, "checkpoint-100", "1 logged step(s)", "checkpoint-200", "steps 100")
    assert rs.history["step"].tolist() == [50, 200]
    assert not warned(read(run, check_checkpoints=False), "logged step(s)")


def test_entries_at_one_step_merge_and_a_clash_keeps_the_newest(tmp_path: Path):
    log = [{"loss": 2.0, "learning_rate": 1e-3, "epoch": 0.5, "step": 10},
           {"eval_loss": 2.2, "epoch": 0.5, "step": 10},  # an eval at the same step: merged, epoch repeats silently
           {"loss": 1.9, "epoch": 0.5, "step": 10},  # loss again, another value: the newest is kept, warned
           {"loss": 1.5, "step": 20}]
    path = write_state(tmp_path / "run", log, global_step=20, max_steps=20)
    rs = read(path.parent)
    h = rs.history.set_index("step")
    assert h.loc[10, "loss"] == 1.9 and h.loc[10, "eval_loss"] == 2.2 and h.loc[10, "learning_rate"] == 1e-3
    clash = warned(rs, str(path), "logged twice with different values")
    assert len(clash) == 1 and "'loss': 2.0 then 1.9" in clash[0] and "epoch" not in clash[0]


def test_entries_without_a_step_and_values_that_are_not_numbers_are_warned(tmp_path: Path):
    log = [{"loss": 2.0, "step": 1}, {"loss": 1.0}, {"loss": "oops", "step": 2}, {"loss": None, "acc": 0.5, "step": 3},
           "not a dict"]
    path = write_state(tmp_path / "run", log)
    rs = read(path.parent)
    assert warned(rs, str(path), "1 log_history entr(y/ies) without a whole-number 'step'")
    assert warned(rs, str(path), "'loss'", "not numbers", "'oops'")
    assert warned(rs, "not dicts")
    h = rs.history.set_index("step")
    assert h.loc[1, "loss"] == 2.0 and np.isnan(h.loc[2, "loss"]) and h.loc[3, "acc"] == 0.5


def test_config_files_flattened_secrets_masked_and_pickles_left_alone(tmp_path: Path):
    run = tmp_path / "run"
    write_state(run, [{"loss": 1.0, "step": 1}], global_step=1, max_steps=1, train_batch_size=8,
                trial_params={"lr": 0.01}, trial_name="trial-3")
    (run / "config.json").write_text(json.dumps({"n_layer": 2, "pad_token_id": 0, "rope": {"theta": 1e4}}))
    (run / "training_args.json").write_text(json.dumps({"learning_rate": 3e-4, "hub_token": "hf_secretvalue",
                                                        "seed": 1}))
    runs = read(run).runs.iloc[0]
    assert runs["config.n_layer"] == 2 and runs["config.rope.theta"] == 1e4 and runs["config.pad_token_id"] == 0
    assert runs["config.learning_rate"] == 3e-4 and runs["config.hub_token"] == "***"
    assert runs["config.lr"] == 0.01 and runs["config.trial_name"] == "trial-3" and runs["config.train_batch_size"] == 8
    (run / "training_args.json").unlink()
    (run / "training_args.bin").write_bytes(b"\x80\x04not really a pickle")
    rs = read(run)
    assert warned(rs, "training_args.bin", "a pickle", "not read") and "config.learning_rate" not in rs.runs


@pytest.mark.needs_hf
def test_an_unreadable_pickle_is_a_warning_when_unpickling_is_allowed(tmp_path: Path):
    run = tmp_path / "run"
    write_state(run, [{"loss": 1.0, "step": 1}])
    (run / "training_args.bin").write_bytes(b"\x80\x04not really a pickle")
    rs = read(run, unpickle_training_args=True)
    assert warned(rs, "training_args.bin", "cannot be unpickled") and len(rs.runs) == 1


def test_train_summary_history_keeps_the_end_dict_in_the_history(tmp_path: Path):
    log = [{"loss": 2.0, "step": 5}, {"train_loss": 2.0, "train_runtime": 9.0, "step": 5}]
    path = write_state(tmp_path / "run", log)
    assert "train_runtime" not in read(path.parent).history.columns
    rs = read(path.parent, train_summary="history")
    assert rs.history["train_runtime"].tolist() == [9.0] and rs.runs["summary.train_runtime"].tolist() == [9.0]
    with pytest.raises(UserError, match="train_summary"):
        HfTrainerTracker(str(path.parent), train_summary="nope")


def test_paths_the_reader_refuses(tmp_path: Path):
    with pytest.raises(UserError, match="tracker.path is not set"):
        HfTrainerTracker().list_runs(Selection())
    with pytest.raises(UserError, match="does not exist"):
        HfTrainerTracker(str(tmp_path / "missing")).list_runs(Selection())
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not trainer_state.json"):
        HfTrainerTracker(str(tmp_path / "notes.txt")).list_runs(Selection())
    # a single trainer_state.json and a single checkpoint folder are read as one run each
    path = write_state(tmp_path / "out" / "checkpoint-4", [{"loss": 1.0, "step": 4}], global_step=4, max_steps=8)
    assert read(path).runs["run_id"].tolist() == ["out/checkpoint-4"]
    assert read(path.parent).runs["run_id"].tolist() == ["out/checkpoint-4"]


def test_the_writer_refuses_a_folder_that_holds_a_run(tmp_path: Path):
    tracker = HfTrainerTracker(str(tmp_path))
    writer = tracker.start_run("a", {"lr": 1e-3})
    writer.log_metrics({"loss": 1.0}, 3)
    with pytest.raises(UserError, match="not a number"):
        writer.log_metrics({"loss": "x"}, 4)
    writer.finish()
    with pytest.raises(UserError, match="already holds a Trainer run"):
        tracker.start_run("a")
    with pytest.raises(UserError, match="after finish"):
        writer.log_metrics({"loss": 1.0}, 5)
    rs = read(tmp_path)
    assert rs.runs["config.lr"].tolist() == [1e-3] and rs.history["loss"].tolist() == [1.0]
