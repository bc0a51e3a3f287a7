"""Readers facing damaged or ambiguous input: duplicate rows, stale caches, lost files and lines, FIFOs.

Every test here failed on the code before the change it covers (each says what the old code did).
"""
from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest

from adapters.local import METRICS, LocalSettings, LocalTracker
from toolkit.errors import UserError
from toolkit.protocol import read_runset
from toolkit.runset import Selection


def _wide(runs=("a", "b"), steps=(10, 20, 30), offset=0.0) -> pd.DataFrame:
    rows = []
    for i, run in enumerate(runs):
        for j, step in enumerate(steps):
            rows.append({"run_name": run, "step": step, "lr": 1e-3 * (i + 1), "loss": 3.0 - 0.1 * j - 0.01 * i + offset})
    return pd.DataFrame(rows)


def _read(path, keys=("loss",), **kw):
    return read_runset(LocalTracker(str(path), **kw), Selection(), list(keys) if keys else None)


def _no_hang(fn, *fifos: Path, timeout: float = 30.0):
    """``fn()`` in a thread; a read blocked on a FIFO is unblocked (a writer opens and closes it) and fails the test."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        for fifo in fifos:  # EOF for the blocked reader, so the thread ends
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(10)
        pytest.fail(f"reading hung for {timeout:.0f} s (a FIFO was opened for reading)")
    if "error" in out:
        raise out["error"]
    return out.get("value")


# ----------------------------------------------------------------------------------------------- 1. duplicate rows
# Old code: repeated (run, step) rows were merged by groupby().last() in file order, conflicting or not, silently.
def test_conflicting_rows_of_one_file_are_a_one_line_error(tmp_path: Path):
    frame = _wide()
    again = frame[(frame["run_name"] == "a") & (frame["step"] == 20)].assign(loss=2.5)
    path = tmp_path / "sweep.csv"
    pd.concat([frame, again], ignore_index=True).to_csv(path, index=False)
    with pytest.raises(UserError) as err:
        _read(path)
    text = str(err.value)
    assert "\n" not in text
    for part in ("sweep.csv", "run 'a'", "step 20", "'loss'", "2.9", "2.5", "on_conflict"):
        assert part in text, (part, text)


def test_overlapping_exports_in_a_folder_name_both_files(tmp_path: Path):
    folder = tmp_path / "exports"
    folder.mkdir()
    _wide(steps=(10, 20, 30)).to_csv(folder / "part1.csv", index=False)
    _wide(steps=(30, 40), offset=0.5).to_parquet(folder / "part2.parquet", index=False)  # step 30 again, other loss
    with pytest.raises(UserError) as err:
        _read(folder)
    text = str(err.value)
    assert "part1.csv" in text and "part2.parquet" in text and "step 30" in text and "\n" not in text


def test_identical_duplicate_rows_are_dropped_with_a_count(tmp_path: Path):
    frame = _wide()
    path = tmp_path / "twice.csv"
    pd.concat([frame, frame.iloc[:4]], ignore_index=True).to_csv(path, index=False)  # 4 rows exported twice
    frame.to_csv(tmp_path / "once.csv", index=False)
    rs = _read(path)
    pdt.assert_frame_equal(rs.history, _read(tmp_path / "once.csv").history)
    assert any("4" in w and "identical" in w and "twice.csv" in w for w in rs.warnings), rs.warnings


@pytest.mark.parametrize("policy, expected", [("first", 2.9), ("last", 2.5), ("mean", 2.7)])
def test_on_conflict_policies_merge_and_warn(tmp_path: Path, policy: str, expected: float):
    frame = _wide()
    again = frame[(frame["run_name"] == "a") & (frame["step"] == 20)].assign(loss=2.5)
    path = tmp_path / "sweep.csv"
    pd.concat([frame, again], ignore_index=True).to_csv(path, index=False)
    rs = _read(path, on_conflict=policy)
    hist = rs.history.set_index(["run_id", "step"])
    assert hist.loc[("a", 20), "loss"] == pytest.approx(expected) and len(hist) == 6
    assert any("1" in w and "conflict" in w and "run 'a'" in w and "step 20" in w for w in rs.warnings), rs.warnings
    assert LocalSettings().on_conflict == "error"
    with pytest.raises(UserError, match="on_conflict"):
        LocalTracker(str(path), on_conflict="median")


def test_complementary_rows_at_one_step_still_merge_quietly(tmp_path: Path):
    frame = _wide()
    extra = pd.DataFrame([{"run_name": "a", "step": 20, "lr": 1e-3, "eval": 5.0}])  # an eval row logged apart
    path = tmp_path / "sweep.csv"
    pd.concat([frame, extra], ignore_index=True).to_csv(path, index=False)
    rs = _read(path, keys=("loss", "eval"))
    row = rs.history.set_index(["run_id", "step"]).loc[("a", 20)]
    assert row["loss"] == pytest.approx(2.9) and row["eval"] == 5.0
    assert not any("conflict" in w or "identical" in w for w in rs.warnings)


def test_run_folder_that_relogs_a_step_keeps_the_newest_value_and_says_so(tmp_path: Path):
    tracker = LocalTracker(str(tmp_path))
    writer = tracker.start_run("resumed")
    for step in range(4):
        writer.log_metrics({"loss": 10.0 - step}, step)
    for step in range(2, 4):  # resumed from a checkpoint at step 2: logs those steps again
        writer.log_metrics({"loss": 5.0 - step}, step)
    writer.finish()
    rs = _read(tmp_path)
    assert rs.history["loss"].tolist() == [10.0, 9.0, 3.0, 2.0]
    assert any(writer.run_id in w and "step 2" in w and "8.0 then 3.0" in w for w in rs.warnings), rs.warnings


# ----------------------------------------------------------------------------------------------- 3. lost data
def _run_folder(root: Path, run_id: str, lines: list[str] | None) -> Path:
    run = root / run_id
    run.mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"run_id": run_id, "name": run_id, "state": "finished"}))
    if lines is not None:
        (run / METRICS).write_text("".join(line + "\n" for line in lines))
    return run


def test_run_folder_without_metrics_file_is_a_warning(tmp_path: Path):
    # Old code: _metrics_bytes returned b"" for a missing file; the run had no history and nobody was told.
    _run_folder(tmp_path, "ok", ['{"step": 0, "loss": 1.0}'])
    _run_folder(tmp_path, "lost", None)
    rs = _read(tmp_path)
    assert sorted(rs.runs["run_id"]) == ["lost", "ok"]
    assert any("lost" in w and METRICS in w for w in rs.warnings), rs.warnings


@pytest.mark.parametrize("n_keys", [1, 300])  # narrow lines (pyarrow first) and wide lines (json line by line)
def test_garbage_line_in_the_middle_is_a_warning_naming_file_and_line(tmp_path: Path, n_keys: int):
    # Old code: the line was skipped without a word (json.loads failed -> continue).
    extra = {f"k{i}": 0.5 for i in range(n_keys - 1)}
    lines = [json.dumps({"step": 0, "loss": 3.0, **extra}), json.dumps({"step": 1, "loss": 2.0, **extra}),
             "#@! not json at all", json.dumps({"step": 3, "loss": 1.0, **extra})]
    run = _run_folder(tmp_path, "r1", lines)
    _run_folder(tmp_path, "r2", [json.dumps({"step": 0, "loss": 9.0, **extra})])
    rs = _read(tmp_path)
    hist = rs.history[rs.history["run_id"] == "r1"]
    assert hist["step"].tolist() == [0, 1, 3] and hist["loss"].tolist() == [3.0, 2.0, 1.0]
    assert any(str(run / METRICS) in w and "line 3" in w for w in rs.warnings), rs.warnings
    assert not any("cut short" in w for w in rs.warnings)


def test_torn_last_line_keeps_the_lines_before_it(tmp_path: Path):
    run = _run_folder(tmp_path, "killed", ['{"step": 0, "loss": 3.0}', '{"step": 1, "loss": 2.0}'])
    with open(run / METRICS, "a") as fh:
        fh.write('{"step": 2, "lo')
    rs = _read(tmp_path)
    assert rs.history["step"].tolist() == [0, 1]
    assert not any("line 3" in w and "not JSON" in w for w in rs.warnings)  # a torn end is not a garbage line


@pytest.mark.parametrize("n_keys", [1, 300])
def test_string_value_in_metrics_file_is_a_warning_naming_file_line_key_and_value(tmp_path: Path, n_keys: int):
    # Old code: the string became NaN in _finish_history (to_numeric errors="coerce"), silently.
    extra = {f"k{i}": 0.5 for i in range(n_keys - 1)}
    lines = [json.dumps({"step": s, "loss": v, **extra}) for s, v in ((0, 3.0), (1, 2.0), (2, 1.5))]
    lines.insert(2, json.dumps({"step": 3, "loss": "abc", **extra}))
    run = _run_folder(tmp_path, "r1", lines)
    rs = _read(tmp_path)
    hist = rs.history.set_index("step")
    assert hist.loc[0, "loss"] == 3.0 and hist.loc[2, "loss"] == 1.5
    assert 3 not in hist.index or math.isnan(hist.loc[3, "loss"])
    assert any(str(run / METRICS) in w and "line 3" in w and "'loss'" in w and "'abc'" in w for w in rs.warnings), \
        rs.warnings


def test_string_value_in_a_wide_csv_is_the_same_warning(tmp_path: Path):
    # Old code: the column turned into text: NaN when asked for, left out of the history when keys=None, silently.
    frame = _wide().astype({"loss": object})
    frame.loc[4, "loss"] = "abc"  # run b, step 20
    frame["phase"] = ["warmup", None, "decay"] * 2  # text that varies within runs: not a metric, no warning
    path = tmp_path / "sweep.csv"
    frame.to_csv(path, index=False)
    rs = _read(path, keys=None)
    assert "loss" in rs.history.columns
    hist = rs.history.set_index(["run_id", "step"])
    assert hist.loc[("b", 10), "loss"] == pytest.approx(2.99) and math.isnan(hist.loc[("b", 20), "loss"])
    assert any("sweep.csv" in w and "run 'b'" in w and "'loss'" in w and "'abc'" in w for w in rs.warnings), \
        rs.warnings
    assert not any("'phase'" in w for w in rs.warnings)


# ----------------------------------------------------------------------------------------------- 4. FIFOs
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_as_tracker_path_is_a_one_line_error(tmp_path: Path):
    # Old code: pd.read_csv opened the FIFO and waited for a writer forever.
    fifo = tmp_path / "sweep.csv"
    os.mkfifo(fifo)
    with pytest.raises(UserError) as err:
        _no_hang(lambda: LocalTracker(str(fifo)).list_runs(Selection()), fifo)
    assert str(fifo) in str(err.value) and "expected" in str(err.value) and "\n" not in str(err.value)
    assert "is a FIFO (named pipe)" in str(err.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_as_a_folder_readers_path_is_named_as_a_fifo(tmp_path: Path):
    from adapters.lightning_csv import LightningCsvTracker

    fifo = tmp_path / "metrics.csv"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="is a FIFO \\(named pipe\\); expected a CSVLogger folder"):
        _no_hang(lambda: LightningCsvTracker(path=str(fifo)).list_runs(Selection()), fifo)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_inside_folders_is_skipped_with_a_warning(tmp_path: Path):
    folder = tmp_path / "files"
    folder.mkdir()
    _wide().to_csv(folder / "sweep.csv", index=False)
    os.mkfifo(folder / "pipe.csv")
    rs = _no_hang(lambda: _read(folder), folder / "pipe.csv")
    assert sorted(rs.runs["run_id"]) == ["a", "b"]
    assert any("pipe.csv" in w for w in rs.warnings), rs.warnings  # old code: skipped without a word
    runs = tmp_path / "runs"
    _run_folder(runs, "ok", ['{"step": 0, "loss": 1.0}'])
    piped = _run_folder(runs, "piped", None)
    os.mkfifo(piped / METRICS)  # old code: read_bytes() on it blocked
    rs = _no_hang(lambda: _read(runs), piped / METRICS)
    assert sorted(rs.runs["run_id"]) == ["ok", "piped"]
    assert any("piped" in w and METRICS in w for w in rs.warnings), rs.warnings


# ----------------------------------------------------------------------------------------------- W&B offline
def _wandb_run_file(path: Path, run_id: str, losses: list[float]) -> None:
    from adapters.wandb_offline import encode_records
    from wandb.proto import wandb_internal_pb2 as pb

    payloads = []
    rec = pb.Record()
    rec.run.run_id, rec.run.display_name = run_id, f"name-{run_id}"
    payloads.append(rec.SerializeToString())
    for step, loss in enumerate(losses):
        rec = pb.Record()
        rec.history.step.num = step
        item = rec.history.item.add()
        item.key, item.value_json = "loss", json.dumps(loss)
        payloads.append(rec.SerializeToString())
    rec = pb.Record()
    rec.exit.exit_code = 0
    payloads.append(rec.SerializeToString())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_records(payloads))


def test_wandb_run_folder_without_its_run_file_is_a_warning(tmp_path: Path):
    # Old code: find_run_files globbed run-*.wandb in each folder; a folder without one just vanished.
    pytest.importorskip("wandb")
    from adapters.wandb import WandbTracker

    root = tmp_path / "wandb"
    _wandb_run_file(root / "offline-run-20240101_000000-aaa111" / "run-aaa111.wandb", "aaa111", [3.0, 2.0])
    lost = root / "offline-run-20240101_000001-bbb222"
    (lost / "files").mkdir(parents=True)
    (lost / "files" / "wandb-summary.json").write_text("{}")
    rs = read_runset(WandbTracker(path=str(root), progress=False), Selection(), ["loss"])
    assert rs.runs["run_id"].tolist() == ["aaa111"]
    assert any("offline-run-20240101_000001-bbb222" in w and ".wandb" in w for w in rs.warnings), rs.warnings


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_wandb_fifos_are_an_error_or_a_warning_never_a_hang(tmp_path: Path):
    pytest.importorskip("wandb")
    from adapters.wandb import WandbTracker

    root = tmp_path / "wandb"
    _wandb_run_file(root / "offline-run-20240101_000000-aaa111" / "run-aaa111.wandb", "aaa111", [3.0, 2.0])
    piped = root / "offline-run-20240101_000001-ccc333" / "run-ccc333.wandb"
    piped.parent.mkdir(parents=True)
    os.mkfifo(piped)  # old code: read_bytes() on it blocked
    rs = _no_hang(lambda: read_runset(WandbTracker(path=str(root), progress=False), Selection(), ["loss"]), piped)
    assert rs.runs["run_id"].tolist() == ["aaa111"]
    assert any("run-ccc333.wandb" in w for w in rs.warnings), rs.warnings
    with pytest.raises(UserError) as err:
        _no_hang(lambda: WandbTracker(path=str(piped), progress=False).list_runs(Selection()), piped)
    assert str(piped) in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------- 2. stale cache
# (mlflow is an extra: without it these tests skip, the ones above still run)
def _mlflow_read(uri: str, cache_dir: Path | None, fast_path: str = "sql", refresh: bool = False):
    from adapters.mlflow import MlflowTracker

    tracker = MlflowTracker(uri=uri, experiment="resumed", fast_path=fast_path)
    tracker.configure(cache={"enabled": cache_dir is not None, "dir": str(cache_dir or ""), "refresh": refresh},
                      progress=False)
    return read_runset(tracker, Selection(), ["loss", "acc"]).normalized(), tracker


def _same(a, b) -> None:
    pdt.assert_frame_equal(a.history, b.history, check_exact=True)
    pdt.assert_frame_equal(a.runs, b.runs)


@pytest.fixture()
def running_store(tmp_path: Path):
    """A sqlite store with one finished run and one RUNNING run that logged steps 0..29 through MlflowClient."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from adapters.mlflow import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri=uri, experiment="resumed")
    done = tracker.start_run("done", {"lr": 0.1})
    for step in range(30):
        done.log_metrics({"loss": 5.0 - step / 10, "acc": step / 30}, step)
    done.finish()
    live = tracker.start_run("live", {"lr": 0.2})
    live.flush()
    client = MlflowClient(tracking_uri=uri)
    for step in range(30):
        client.log_metric(live.run_id, "loss", 4.0 - step / 10, step=step)
        client.log_metric(live.run_id, "acc", step / 30, step=step)
    return {"uri": uri, "run_id": live.run_id, "client": client}


@pytest.mark.parametrize("new_steps", [False, True])
@pytest.mark.parametrize("fast_path", ["sql", "client"])
def test_running_run_that_relogs_earlier_steps_is_never_served_stale(running_store, tmp_path: Path, new_steps: bool,
                                                                     fast_path: str):
    # Old code: the version (status, end time, latest metrics) does not change when earlier steps are logged again,
    # so the cache served the old values; with new later steps, only steps past the cached last step were fetched.
    uri, run_id, client = running_store["uri"], running_store["run_id"], running_store["client"]
    cache = tmp_path / "cache"
    first, _ = _mlflow_read(uri, cache, fast_path)
    for step in range(10, 20):  # resumed from the checkpoint at step 10: logs those steps again
        client.log_metric(run_id, "loss", -float(step), step=step)
    if new_steps:
        for step in range(30, 35):
            client.log_metric(run_id, "loss", -float(step), step=step)
            client.log_metric(run_id, "acc", 1.0, step=step)
    cached, tracker = _mlflow_read(uri, cache, fast_path)
    fresh, _ = _mlflow_read(uri, None, fast_path)
    _same(cached, fresh)
    _same(_mlflow_read(uri, cache, fast_path, refresh=True)[0], fresh)
    live = fresh.history[fresh.history["run_id"] == run_id].set_index("step")
    assert live.loc[15, "loss"] == -15.0 and live.loc[9, "loss"] == pytest.approx(3.1)
    assert tracker.stats["cached_runs"] >= 1  # the finished run still comes from the cache
    if fast_path == "sql":  # the store says which steps changed: fetched from step 10 on, not in full
        assert tracker.stats["incremental_runs"] == 1 and tracker.stats["fetched_runs"] == 1
    again, settled = _mlflow_read(uri, cache, fast_path)  # nothing changed since: equal, and the finished run cached
    _same(again, fresh)
    assert settled.stats["cached_runs"] >= 1


def test_relogged_step_with_an_older_timestamp_and_later_finish(running_store, tmp_path: Path):
    """Points whose timestamps are older than what was cached (clock skew, imported history) and a run that then
    finishes: every cached read equals a fresh read."""
    uri, run_id, client = running_store["uri"], running_store["run_id"], running_store["client"]
    cache = tmp_path / "cache"
    _mlflow_read(uri, cache)
    client.log_metric(run_id, "loss", 123.0, step=5, timestamp=1)  # older than every point: loses to the original
    client.log_metric(run_id, "acc", 0.75, step=3, timestamp=2**42)  # far newer (year 2109): wins
    cached, skewed = _mlflow_read(uri, cache)
    fresh, _ = _mlflow_read(uri, None)
    _same(cached, fresh)
    assert skewed.stats["fetched_runs"] == 1 and skewed.stats["incremental_runs"] == 0  # a point from the past
    assert fresh.history.set_index(["run_id", "step"]).loc[(run_id, 3), "acc"] == 0.75
    client.log_metric(run_id, "loss", -7.0, step=7)
    client.set_terminated(run_id, "FINISHED")
    cached, _ = _mlflow_read(uri, cache)
    _same(cached, _mlflow_read(uri, None)[0])
    _, settled = _mlflow_read(uri, cache)
    assert settled.stats["fetched_runs"] == 0 and settled.stats["queries"] == 0  # finished: the cache alone
