"""tracker=tensorboard: event files written by the real PyTorch SummaryWriter (and TF2-style files built with the
tensorboard package's own protos, TensorFlow not being installed here) read completely into a RunSet.

Covered: the CRC32C against tensorboard's reference implementation; our framing read by tensorboard's own loader;
simple_value and scalar-tensor scalars; more than 10,000 points per tag (EventAccumulator's default reservoir keeps
10,000); restarts merged on the step; a torn tail; bad CRCs in the middle; no event files; hparams through
add_hparams, the hparams plugin in the run's own file and Lightning's hparams.yaml; the history cache; parallel
parsing; the write side; and the demo sweep giving the same RunSet, Table and minima as the local writer and the
same minima as the local CSV of that sweep.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorboard")

from adapters import tensorboard as tb  # noqa: E402
from toolkit.errors import MissingExtraError, UserError  # noqa: E402
from toolkit.protocol import read_runset  # noqa: E402
from toolkit.runset import Selection  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def summary_writer(folder):
    """The real torch.utils.tensorboard.SummaryWriter (skips without torch)."""
    pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder), max_queue=100000, flush_secs=3600)


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("events.out.tfevents.*"))


def read(path, **kwargs):
    """A fresh tracker's RunSet of the log dir (cache off unless a cache dir is given)."""
    cache = kwargs.pop("cache", None)
    tracker = tb.TensorBoardTracker(path=str(path), **kwargs)
    tracker.configure({"enabled": cache is not None, "dir": str(cache) if cache else None, "refresh": False}, False)
    return tracker, read_runset(tracker, Selection(), None)


def history_of(runset, run_id: str) -> pd.DataFrame:
    return runset.history[runset.history["run_id"] == run_id].reset_index(drop=True)


# --------------------------------------------------------------------------------------------- CRC and framing
def test_crc32c_matches_tensorboards_reference_implementation():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as ref_crc, masked_crc32c as ref_masked

    rng = np.random.default_rng(0)
    for length in (0, 1, 3, 4, 7, 8, 9, 255, 256, 257, 511, 512, 513, 1000, 70001):
        data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        assert tb.crc32c(data) == ref_crc(data), length
        assert tb.masked_crc32c(data) == ref_masked(data), length
    buf = rng.integers(0, 256, 50_000, dtype=np.uint8)
    starts = rng.integers(0, 45_000, 400)
    lengths = rng.integers(0, 900, 400)
    starts[:4], lengths[:4] = [0, 1, 2, 3], [0, 5, 300, 2000]  # lanes at the very start, long ones cut into lanes
    got = tb.crc32c_many(buf, starts, lengths)
    raw = buf.tobytes()
    assert [int(g) for g in got] == [ref_crc(raw[s:s + n]) for s, n in zip(starts, lengths)]


def test_our_framing_is_read_by_tensorboards_own_loader(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    payloads = [b"", b"x", os.urandom(300), os.urandom(5000)]
    path = tb.write_records(tmp_path / "events.out.tfevents.1.test", payloads)
    assert list(RawEventFileLoader(str(path)).Load()) == payloads
    framed = tb.read_records(path.read_bytes())
    assert framed.lengths.tolist() == [len(p) for p in payloads] and not framed.skipped and framed.torn is None


# --------------------------------------------------------------------------------------------- simple_value
def test_summary_writer_scalars_are_read_in_full_beyond_10000_points(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "logs" / "run-a"
    w = summary_writer(run)
    steps = np.arange(12_000)
    loss = 3.0 + np.sin(steps / 100.0)
    for s in steps:
        w.add_scalar("train/loss", loss[s], int(s))
        if s % 100 == 0:
            w.add_scalar("eval/loss", 2 * loss[s], int(s))
    w.close()
    tracker, rs = read(tmp_path / "logs")
    assert rs.runs["run_id"].tolist() == ["run-a"] and rs.runs["state"].tolist() == ["finished"]
    hist = history_of(rs, "run-a")
    assert hist["step"].tolist() == steps.tolist()
    np.testing.assert_array_equal(hist["train/loss"], loss.astype(np.float32).astype(float))  # simple_value: float32
    assert hist["eval/loss"].notna().sum() == 120
    assert rs.runs.loc[0, "summary.train/loss"] == pytest.approx(loss[-1], rel=1e-6)
    assert rs.runs.loc[0, "created_at"].year >= 2020
    default = EventAccumulator(str(run))  # what TensorBoard's own loader keeps by default: a sample
    default.Reload()
    assert len(default.Scalars("train/loss")) == 10_000 < len(hist)


# --------------------------------------------------------------------------------------------- TF2 scalar tensors
def _tf2_file(path: Path) -> dict[str, np.ndarray]:
    """An event file as TF2's summary writer lays it out, built with the tensorboard package's protos and framed by
    our writer: scalar tensors (float_val, double_val, tensor_content), the scalars plugin's metadata only with each
    tag's first point, an hparams session start, a histogram and a non-scalar tensor under the scalars plugin."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.hparams import metadata as hp_metadata
    from tensorboard.plugins.hparams import plugin_data_pb2

    def scalar(tag, value, dtype, first, content=False):
        t = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto())
        if content:
            t.tensor_content = np.asarray(value, "<f4" if dtype == types_pb2.DT_FLOAT else "<f8").tobytes()
        elif dtype == types_pb2.DT_FLOAT:
            t.float_val.append(value)
        else:
            t.double_val.append(value)
        v = summary_pb2.Summary.Value(tag=tag, tensor=t)
        if first:
            v.metadata.plugin_data.plugin_name = "scalars"
            v.metadata.summary_description = "written once per tag, as TF2 does"
        return v

    start = plugin_data_pb2.HParamsPluginData(session_start_info=plugin_data_pb2.SessionStartInfo(
        hparams={"lr": {"number_value": 3e-4}, "layers": {"number_value": 12}, "optimizer": {"string_value": "adamw"},
                 "tied": {"bool_value": True}}))
    events = [event_pb2.Event(wall_time=1000.0, file_version="brain.Event:2"),
              event_pb2.Event(wall_time=1000.5, step=0, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(
                  tag="_hparams_/session_start_info", metadata=hp_metadata.create_summary_metadata(start),
                  tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b""]))]))]
    loss = np.linspace(4.0, 2.0, 300).astype(np.float32)
    grad = np.geomspace(1.0, 1e-3, 300)
    lr = np.linspace(0.0, 3e-4, 300)
    for s in range(300):
        values = [scalar("loss", float(loss[s]), types_pb2.DT_FLOAT, s == 0),
                  scalar("grad_norm", float(grad[s]), types_pb2.DT_DOUBLE, s == 0),
                  scalar("lr", float(lr[s]), types_pb2.DT_DOUBLE, s == 0, content=True)]
        bad = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0], tensor_shape=tensor_shape_pb2.
                                     TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=2)]))
        odd = summary_pb2.Summary.Value(tag="pair", tensor=bad)
        if s == 0:
            odd.metadata.plugin_data.plugin_name = "scalars"
        values.append(odd)
        one = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0], tensor_shape=tensor_shape_pb2.
                                     TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
        values.append(scalar("vec1", 0.0, types_pb2.DT_FLOAT, s == 0))
        values[-1].tensor.CopyFrom(one)  # shape [1], not a scalar
        values.append(summary_pb2.Summary.Value(tag="weights", histo=summary_pb2.HistogramProto(min=0, max=1, num=3)))
        events.append(event_pb2.Event(wall_time=1001.0 + s, step=s, summary=summary_pb2.Summary(value=values)))
    tb.write_records(path, [e.SerializeToString() for e in events])
    return {"loss": loss.astype(float), "grad_norm": grad, "lr": lr}


def test_tf2_scalar_tensors_and_hparams_are_read(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    run = tmp_path / "logs" / "tf2"
    written = _tf2_file(run / "events.out.tfevents.1000.host.1.v2")
    tracker, rs = read(tmp_path / "logs")
    hist = history_of(rs, "tf2")
    assert hist["step"].tolist() == list(range(300))
    assert sorted(rs.metric_keys) == ["grad_norm", "loss", "lr"]  # no histogram, no 2-element tensor
    for key, values in written.items():
        np.testing.assert_array_equal(hist[key].to_numpy(), values)
    row = rs.runs.iloc[0]
    assert (row["config.lr"], row["config.layers"], row["config.optimizer"], row["config.tied"]) == \
        (3e-4, 12, "adamw", True)
    assert isinstance(row["config.layers"], (int, np.integer))
    assert row["created_at"] == pd.Timestamp(1000.0, unit="s", tz="UTC")
    assert any("'pair'" in w and "300 point(s)" in w for w in rs.warnings), rs.warnings
    assert any("'vec1'" in w and "300 point(s)" in w for w in rs.warnings), rs.warnings
    # TensorBoard's own loader agrees on every value it keeps (it keeps these tensors without sampling here)
    ea = EventAccumulator(str(run), size_guidance={"tensors": 0})
    ea.Reload()
    for key, values in written.items():
        theirs = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in ea.Tensors(key)]
        np.testing.assert_array_equal(theirs, hist[key].to_numpy())


# --------------------------------------------------------------------------------------------- restarts
def test_restarts_are_merged_on_the_step_keeping_the_later_wall_time(tmp_path):
    run = tmp_path / "logs" / "resumed"
    first = summary_writer(run)
    for s in range(100):
        first.add_scalar("loss", 10.0 + s, s, walltime=1000.0 + s)
    first.close()
    second = summary_writer(run)  # resumed from the checkpoint at step 60: steps 60..99 logged again, later
    for s in range(60, 150):
        second.add_scalar("loss", 20.0 + s, s, walltime=2000.0 + s)
    second.add_scalar("old", 1.0, 5, walltime=1.0)  # a point stamped earlier than the first file's
    second.close()
    third = summary_writer(run)  # a file that re-logs steps with an earlier clock loses to the later wall time
    third.add_scalar("old", 2.0, 5, walltime=500.0)
    third.add_scalar("loss", -1.0, 0, walltime=10.0)
    third.close()
    assert len(event_files(run)) == 3
    tracker, rs = read(tmp_path / "logs")
    hist = history_of(rs, "resumed")
    assert hist["step"].tolist() == list(range(150))
    loss = hist.set_index("step")["loss"]
    assert loss[0] == 10.0 and loss[59] == 69.0 and loss[60] == 80.0 and loss[99] == 119.0 and loss[149] == 169.0
    assert hist.set_index("step")["old"][5] == 2.0
    relog = [w for w in rs.warnings if "logged more than once" in w]
    assert len(relog) == 1 and "42 step(s)" in relog[0] and "3 event files" in relog[0], rs.warnings


# --------------------------------------------------------------------------------------------- damaged files
def _written_run(folder: Path, n: int = 200) -> Path:
    w = summary_writer(folder)
    for s in range(n):
        w.add_scalar("loss", float(s), s)
    w.close()
    (path,) = event_files(folder)
    return path


def test_a_torn_last_record_keeps_the_prefix_and_marks_the_run_crashed(tmp_path):
    logs = tmp_path / "logs"
    path = _written_run(logs / "killed")
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # killed mid-write: the last record's payload and CRC are cut
    cut_header = _written_run(logs / "killed-in-header")
    data = cut_header.read_bytes()
    framed = tb.read_records(data)
    cut_header.write_bytes(data[:int(framed.offsets[-1]) + 5])  # only 5 bytes of the last record's length field
    tracker, rs = read(logs)
    states = rs.runs.set_index("run_id")["state"].to_dict()
    assert states == {"killed": "crashed", "killed-in-header": "crashed"}
    for run_id in states:
        assert history_of(rs, run_id)["step"].tolist() == list(range(199)), run_id
    torn = [w for w in rs.warnings if "torn record" in w]
    assert len(torn) == 2 and any(path.name in w and "run is marked crashed" in w for w in torn), rs.warnings


def test_a_torn_older_file_of_a_resumed_run_does_not_mark_it_crashed(tmp_path):
    run = tmp_path / "logs" / "resumed"
    path = _written_run(run, 50)
    path.write_bytes(path.read_bytes()[:-3])
    w = summary_writer(run)
    for s in range(49, 80):
        w.add_scalar("loss", float(s), s)
    w.close()
    tracker, rs = read(tmp_path / "logs")
    assert rs.runs["state"].tolist() == ["finished"]
    assert history_of(rs, "resumed")["step"].tolist() == list(range(80))
    assert any("torn record" in w and "not marked crashed" in w for w in rs.warnings), rs.warnings


def test_bad_crcs_in_the_middle_skip_to_the_next_valid_record(tmp_path):
    path = _written_run(tmp_path / "logs" / "flipped", 300)
    data = bytearray(path.read_bytes())
    framed = tb.read_records(bytes(data))
    offs, lens = framed.offsets, framed.lengths
    data[int(offs[100]) + 12 + 3] ^= 0xFF  # a payload byte of record 100 (the point at step 99)
    data[int(offs[200]) + 2] ^= 0x01  # the length field of record 200 (step 199): found again by scanning
    path.write_bytes(bytes(data))
    tracker, rs = read(tmp_path / "logs")
    steps = history_of(rs, "flipped")["step"].tolist()
    assert steps == [s for s in range(300) if s not in (99, 199)]
    assert rs.runs["state"].tolist() == ["finished"]
    lost = int(16 + lens[100]) + int(16 + lens[200])
    (warning,) = [w for w in rs.warnings if "bad CRC" in w]
    assert path.name in warning and f"{lost} bytes" in warning and "2 stretch(es)" in warning, warning


def test_a_log_dir_without_event_files_is_a_one_line_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no events here")
    with pytest.raises(UserError) as err:
        read(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value) and "events.out.tfevents" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        read(tmp_path / "missing")
    with pytest.raises(UserError, match="tracker.path"):
        tb.TensorBoardTracker().list_runs(Selection())


# --------------------------------------------------------------------------------------------- hparams
def test_add_hparams_subfolder_becomes_the_runs_config_and_summary(tmp_path):
    run = tmp_path / "logs" / "lr-sweep" / "run-1"
    w = summary_writer(run)
    for s in range(20):
        w.add_scalar("loss", 5.0 - 0.1 * s, s)
    w.add_hparams({"lr": 0.001, "bs": 64, "optimizer": "adamw"}, {"hparam/final_loss": 3.1})
    w.close()
    assert [p.parent.parent for p in run.glob("*/events.out.tfevents.*")] == [run]  # torch wrote a sub-folder
    tracker, rs = read(tmp_path / "logs")
    assert rs.runs["run_id"].tolist() == ["lr-sweep/run-1"]
    row = rs.runs.iloc[0]
    assert (row["config.lr"], row["config.bs"], row["config.optimizer"]) == (0.001, 64, "adamw")
    assert row["summary.hparam/final_loss"] == pytest.approx(3.1) and row["summary.loss"] == pytest.approx(3.1)
    assert rs.metric_keys == ["loss"]  # the hparams metric is a summary, not a history


def test_lightning_hparams_yaml_is_the_config_and_wins_over_the_plugins_flattened_copy(tmp_path):
    run = tmp_path / "lightning_logs" / "version_0"
    w = summary_writer(run)
    w.add_scalar("val_loss", 2.5, 10)
    w.close()
    (run / "hparams.yaml").write_text("model:\n  d_model: 512\n  n_layers: 8\noptim:\n  lr: 0.0003\n"
                                      "  betas: [0.9, 0.95]\nname: gpt-small\nstarted: 2024-05-01\n")
    writer = tb.TensorBoardRunWriter(run, "version_0")  # the plugin copy Lightning adds, flattened with '/'
    writer.log_config({"model/d_model": 512, "optim/lr": 0.0003, "extra_only_here": 7})
    writer.finish()
    tracker, rs = read(tmp_path / "lightning_logs")
    row = rs.runs.iloc[0]
    assert row["config.model.d_model"] == 512 and row["config.optim.lr"] == 0.0003 and row["config.name"] == "gpt-small"
    assert row["config.optim.betas"] == [0.9, 0.95] and row["config.extra_only_here"] == 7
    assert row["config.started"] == "2024-05-01"  # a YAML date, kept as text (cacheable)
    assert "config.model/d_model" not in rs.runs.columns and "config.optim/lr" not in rs.runs.columns
    (run / "hparams.yaml").write_text("a: [unclosed\n")
    tracker, rs = read(tmp_path / "lightning_logs")
    assert any("hparams.yaml" in w and "not read" in w for w in rs.warnings), rs.warnings
    assert rs.runs.iloc[0]["config.model/d_model"] == 512  # the plugin's copy is what is left


# --------------------------------------------------------------------------------------------- layout
def test_the_log_dir_itself_may_be_one_run_and_artifacts_are_not_runs(tmp_path):
    run = tmp_path / "my-run"
    _written_run(run, 10)
    (run / "artifacts").mkdir()
    shutil.copy(event_files(run)[0], run / "artifacts" / event_files(run)[0].name)
    (run / "loss_train").mkdir()  # an add_scalars sub-folder: a run of its own, as TensorBoard shows it
    w = summary_writer(run / "loss_train")
    w.add_scalar("loss", 1.0, 0)
    w.add_scalar("loss", 0.5, 1)
    w.close()
    elsewhere = tmp_path / "elsewhere" / "linked"
    _written_run(elsewhere, 4)
    (run / "linked").symlink_to(elsewhere, target_is_directory=True)  # a run linked into the log dir counts
    (run / "loop").symlink_to(run, target_is_directory=True)  # a link back up the tree is followed once only
    tracker, rs = read(run)
    assert sorted(rs.runs["run_id"]) == ["linked", "loss_train", "my-run"]
    assert len(history_of(rs, "linked")) == 4
    picked = read_runset(tracker, Selection(name_regex="^my"), None)
    assert picked.runs["run_id"].tolist() == ["my-run"] and len(picked.history) == 10


# --------------------------------------------------------------------------------------------- cache, workers
def test_unchanged_runs_are_served_from_the_cache_and_changed_ones_parsed_again(tmp_path):
    logs, cache = tmp_path / "logs", tmp_path / "cache"
    for name in ("a", "b", "c"):
        _written_run(logs / name, 120)
    path = event_files(logs / "b")[0]
    path.write_bytes(path.read_bytes()[:-2])  # b is crashed: its state and warning come back from the cache too
    first_tracker, first = read(logs, cache=cache)
    assert first_tracker.stats == {"parsed": 3, "cached": 0}
    again_tracker, again = read(logs, cache=cache)
    assert again_tracker.stats == {"parsed": 0, "cached": 3}
    pd.testing.assert_frame_equal(again.runs, first.runs)
    pd.testing.assert_frame_equal(again.history, first.history)
    assert again.warnings == first.warnings and any("torn record" in w for w in again.warnings)
    w = summary_writer(logs / "c")  # c goes on: a new event file
    w.add_scalar("loss", 500.0, 500)
    w.close()
    third_tracker, third = read(logs, cache=cache)
    assert third_tracker.stats == {"parsed": 1, "cached": 2}
    assert history_of(third, "c")["step"].max() == 500
    subset = third_tracker.read_history(third.runs, ["loss"])
    assert subset.groupby("run_id").size().to_dict() == {"a": 120, "b": 119, "c": 121}
    w = summary_writer(logs / "c")  # the same tracker reads c again after it changed: what it holds is not stale
    w.add_scalar("loss", 7.0, 700)
    w.close()
    fourth = read_runset(third_tracker, Selection(), None)
    assert history_of(fourth, "c")["step"].max() == 700 and history_of(fourth, "a")["step"].max() == 119
    assert fourth.runs.set_index("run_id")["summary.loss"].to_dict() == {"a": 119.0, "b": 118.0, "c": 7.0}
    assert third_tracker.stats == {"parsed": 2, "cached": 4}  # c parsed again, a and b from the cache


def test_parsing_in_worker_processes_gives_the_same_runset(tmp_path):
    logs = tmp_path / "logs"
    for name in ("a", "b", "c"):
        _written_run(logs / name, 50)
    _, serial = read(logs, workers=1)
    # forking is only used when no other thread runs; earlier tests in this process may have left some (thread pools),
    # so the forked read runs in a fresh interpreter and hands its RunSet back as parquet files
    script = textwrap.dedent(f"""
        from adapters.tensorboard import TensorBoardTracker
        from toolkit.protocol import read_runset
        from toolkit.runset import Selection
        tracker = TensorBoardTracker(path={str(logs)!r}, workers=2)
        rs = read_runset(tracker, Selection(), None)
        assert tracker.last_workers == 2, tracker.warnings
        rs.runs.to_parquet({str(tmp_path / "runs.parquet")!r})
        rs.history.to_parquet({str(tmp_path / "history.parquet")!r})
    """)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "runs.parquet"), serial.runs, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "history.parquet"), serial.history, check_dtype=False)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name="some-other-thread", daemon=True)
    other.start()  # forking now could leave a lock it holds locked in the children: parsed in this process
    try:
        tracker, again = read(logs, workers=2)
    finally:
        stop.set()
        other.join()
    assert tracker.last_workers == 1 and any("tracker.workers=2" in w for w in again.warnings), again.warnings
    pd.testing.assert_frame_equal(again.history, serial.history)


def test_a_stale_row_count_never_gives_a_wrong_history(tmp_path):
    logs, cache = tmp_path / "logs", tmp_path / "cache"
    for name in ("a", "b"):
        _written_run(logs / name, 30)
    _, first = read(logs, cache=cache)
    tracker = tb.TensorBoardTracker(path=str(logs))
    tracker.configure({"enabled": True, "dir": str(cache), "refresh": False}, False)
    runs = tracker.list_runs(Selection())
    assert tracker.stats == {"parsed": 0, "cached": 2}
    tracker._metas["b"].rows += 5  # what the index said no longer matches the cached history
    pd.testing.assert_frame_equal(tracker.read_history(runs, None), first.history)
    pd.testing.assert_frame_equal(tracker.read_history(runs, ["loss"]), first.history)


def test_settings_are_checked():
    with pytest.raises(UserError, match=r"tracker: workers=0; expected an integer >= 1"):
        tb.TensorBoardTracker(path="x", workers=0)
    with pytest.raises(UserError, match="tracker: hparams_file=.a/b.yaml.; expected a file name"):
        tb.TensorBoardTracker(path="x", hparams_file="a/b.yaml")
    with pytest.raises(UserError, match="run name"):
        tb.TensorBoardTracker(path="x").start_run("../escape")


def test_a_missing_tensorboard_package_is_a_one_line_error_naming_the_extra(tmp_path, monkeypatch):
    _written_run(tmp_path / "logs" / "a", 3)
    tb._protos.cache_clear()
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    try:
        with pytest.raises(MissingExtraError, match=r"sweepkit\[tensorboard\]"):
            read(tmp_path / "logs")
    finally:
        tb._protos.cache_clear()


# --------------------------------------------------------------------------------------------- write side
def test_the_writer_round_trips_config_metrics_state_and_artifacts(tmp_path):
    pytest.importorskip("torch")
    logs = tmp_path / "tb"
    tracker = tb.TensorBoardTracker(path=str(logs))
    note = tmp_path / "note.txt"
    note.write_text("hello")
    values = [1 / 3, 2.0 ** -40, 1e300, 0.1]
    with tracker.start_run("sweep/good", {"optim": {"lr": 1e-3, "betas": [0.9, 0.95]}, "bs": 32, "flag": True,
                                          "none": None, "name": "x"}) as run:
        for step, v in enumerate(values):
            run.log_metrics({"loss": v, "acc": np.float32(0.5)}, step * 10)
        run.log_artifact(str(note))
        run.log_artifact(str(event_files(run.dir)[0]))  # an event file as an artifact is no run
    bad = tracker.start_run("sweep/bad", {"bs": 64})
    bad.log_metrics({"loss": 9.0}, 1)
    bad.finish("failed")
    alive = tracker.start_run("sweep/alive", {})
    alive.log_metrics({"loss": 1.0}, 1)
    alive.writer.flush()  # not finished: still running
    with pytest.raises(UserError, match="not a number"):
        alive.log_metrics({"loss": "abc"}, 2)
    assert (logs / "sweep" / "good" / "artifacts" / "note.txt").read_text() == "hello"
    _, rs = read(logs)
    runs = rs.runs.set_index("run_id")
    assert runs["state"].to_dict() == {"sweep/alive": "running", "sweep/bad": "failed", "sweep/good": "finished"}
    good = runs.loc["sweep/good"]
    assert good["config.optim.lr"] == 1e-3 and good["config.bs"] == 32
    assert good["config.flag"] == True and type(good["config.flag"]).__name__ in ("bool", "bool_")  # noqa: E712
    assert good["config.optim.betas"] == "[0.9, 0.95]" and good["config.name"] == "x"
    assert "config.none" not in runs.columns
    hist = history_of(rs, "sweep/good")
    assert hist["step"].tolist() == [0, 10, 20, 30]
    assert hist["loss"].tolist() == values  # double-precision tensors: exact
    alive.finish("killed")
    _, rs = read(logs)
    assert rs.runs.set_index("run_id").loc["sweep/alive", "state"] == "failed"


# --------------------------------------------------------------------------------------------- the demo sweep
def test_the_demo_sweep_gives_the_same_minima_as_the_local_writer_and_the_local_csv(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from test_swap_trackers import DEMO_GRID, N_RUNS, assert_same, comparable, log_demo, run_pipeline

    monkeypatch.chdir(tmp_path)
    logs, csv, runs = tmp_path / "tb", tmp_path / "sweep.csv", tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "toolkit.demo", *DEMO_GRID, "--tracker", "tensorboard",
                           "--tracker-arg", f"path={logs}", "--out", str(csv)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"logged {N_RUNS} runs through tensorboard" in proc.stdout
    log_demo("local", f"path={runs}")
    board = run_pipeline("tensorboard", ["tracker=tensorboard", f"tracker.path={logs}"], tmp_path)
    writer = run_pipeline("local", ["tracker=local", f"tracker.path={runs}"], tmp_path)
    from_csv = run_pipeline("local-csv", ["tracker=local", f"tracker.path={csv}"], tmp_path)
    assert len(comparable(board.runset)[0]) == N_RUNS and (board.runset.runs["state"] == "failed").sum() == 1
    assert_same(board, writer)  # the same runs, history, Table and minima as the local writer, to 1e-9
    mine, theirs = board.minima, from_csv.minima  # the CSV keeps 6 decimals: same fits, to its rounding
    assert list(mine.columns) == list(theirs.columns) and len(mine) == len(theirs) > 0
    floats = [c for c in mine.columns if mine[c].dtype.kind == "f" and theirs[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(mine.drop(columns=floats), theirs.drop(columns=floats), check_dtype=False)
    pd.testing.assert_frame_equal(mine[floats], theirs[floats], rtol=1e-3)
    assert (mine["method"] == "fit").all()
