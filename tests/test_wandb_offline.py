"""W&B offline reader and writer against real run folders written by the wandb package (no network)."""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("wandb")

from adapters.wandb import WandbTracker, mongo_match  # noqa: E402
from adapters.wandb_offline import (  # noqa: E402
    BLOCK_LEN,
    CorruptRunFile,
    encode_records,
    find_run_files,
    history_frame,
    read_run_file,
    split_records,
)
from toolkit.errors import UserError  # noqa: E402
from toolkit.protocol import Tracker, read_runset  # noqa: E402
from toolkit.runset import Selection  # noqa: E402
from wandb_fixtures import KILLED_STEPS, N_STEPS, SPECS, metric_values, wandb_sweep  # noqa: E402,F401

KEYS = ["train_loss", "output_norm", "grad_norm"]


@pytest.fixture(scope="module")
def runset(wandb_sweep):  # noqa: F811
    """The sweep read back through the protocol."""
    folder, _ = wandb_sweep
    tracker = WandbTracker(path=str(folder), progress=False)
    return read_runset(tracker, Selection(), KEYS)


def test_is_a_tracker() -> None:
    assert isinstance(WandbTracker(path="."), Tracker)
    assert WandbTracker.name == "wandb"


def test_runs_table_config_summary_state(runset, wandb_sweep) -> None:  # noqa: F811
    _, logged = wandb_sweep
    runs = runset.runs.set_index("name")
    assert set(runs.index) == {s[0] for s in SPECS} | {"killed"}
    for name, lr, bs, seed, stride, status in SPECS:
        row = runs.loc[name]
        assert row["run_id"] == logged[name]["run_id"]
        assert row["config.lr"] == lr and row["config.bs"] == bs and row["config.seed"] == seed
        assert row["config.optim.name"] == "adamw" and row["config.optim.beta2"] == 0.95
        assert row["state"] == status
        last = logged[name]["rows"][-1]
        assert row["summary.train_loss"] == last["train_loss"]
        last_norm = [r["output_norm"] for r in logged[name]["rows"] if "output_norm" in r][-1]
        assert row["summary.output_norm"] == last_norm
        assert isinstance(row["created_at"], pd.Timestamp)
    assert not any(c.startswith("summary._") or c.startswith("config._") for c in runset.runs.columns)


def test_full_history_equals_what_was_logged(runset, wandb_sweep) -> None:  # noqa: F811
    _, logged = wandb_sweep
    for name, *_ in SPECS:
        info = logged[name]
        got = runset.history[runset.history["run_id"] == info["run_id"]].reset_index(drop=True)
        want = pd.DataFrame(info["rows"]).reindex(columns=["step", *KEYS])
        assert len(got) == N_STEPS
        assert got["step"].tolist() == want["step"].tolist()
        for key in KEYS:  # exact values, NaN where the key was not logged at that step
            np.testing.assert_array_equal(got[key].to_numpy(), want[key].to_numpy(dtype=float), err_msg=f"{name} {key}")


def test_killed_run_kept_and_flagged(runset, wandb_sweep) -> None:  # noqa: F811
    _, logged = wandb_sweep
    killed = runset.runs.set_index("name").loc["killed"]
    assert killed["state"] == "crashed"
    hist = runset.history[runset.history["run_id"] == logged["killed"]["run_id"]]
    assert len(hist) >= KILLED_STEPS
    steps = hist["step"].tolist()
    assert steps == list(range(len(steps)))  # the readable prefix, no holes
    for step, value in zip(steps, hist["train_loss"]):
        assert value == metric_values(9, step)["train_loss"]
    assert any("killed" in w and "crashed" in w for w in runset.warnings)


def test_truncated_file_keeps_prefix(wandb_sweep) -> None:  # noqa: F811
    _, logged = wandb_sweep
    folder = logged["truncated"]["folder"]
    tracker = WandbTracker(path=str(folder), progress=False)
    rs = read_runset(tracker, Selection(), ["train_loss"])
    assert rs.runs["state"].tolist() == ["crashed"]
    n = len(rs.history)
    assert 0 < n < N_STEPS
    want = [metric_values(0, s)["train_loss"] for s in range(n)]
    assert rs.history["train_loss"].tolist() == want
    assert any("damaged" in w for w in rs.warnings)


def test_malformed_file_skipped_with_warning(runset) -> None:
    assert any("run-badhdr1.wandb" in w and "skipped" in w for w in runset.warnings)
    assert "badhdr1" not in set(runset.runs["run_id"])
    with pytest.raises(CorruptRunFile):
        split_records(b"NOTWANDB" + b"\0" * 100)


def test_selection_and_filters(wandb_sweep) -> None:  # noqa: F811
    folder, logged = wandb_sweep
    tracker = WandbTracker(path=str(folder), progress=False)

    def selected(selection: Selection) -> pd.DataFrame:  # read_runset applies the selection (list_runs may not)
        return selection.apply(tracker.list_runs(selection))

    assert set(selected(Selection(config={"bs": 32}))["name"]) == {"lr1e-3_bs32", "lr3e-3_bs32"}
    assert set(selected(Selection(state=["crashed", "failed"]))["name"]) == {"killed", "lr1e-2_bs64"}
    assert set(selected(Selection(name_regex="^lr1e"))["name"]) == {"lr1e-3_bs32", "lr1e-2_bs64"}
    rid = logged["lr3e-3_bs32"]["run_id"]
    assert selected(Selection(run_ids=[rid]))["name"].tolist() == ["lr3e-3_bs32"]
    mongo = WandbTracker(path=str(folder), filters={"$and": [{"config.lr.value": {"$gte": 3e-3}},
                                                              {"state": {"$ne": "crashed"}}]}, progress=False)
    assert set(mongo.list_runs(Selection())["name"]) == {"lr3e-3_bs32", "lr1e-2_bs64"}
    as_selection = WandbTracker(path=str(folder), filters={"config": {"lr": 0.01}}, progress=False)
    assert as_selection.list_runs(Selection())["name"].tolist() == ["lr1e-2_bs64"]
    assert selected(Selection(config={"lr": 0.5})).empty


def test_all_keys_when_none(wandb_sweep) -> None:  # noqa: F811
    folder, _ = wandb_sweep
    tracker = WandbTracker(path=str(folder), progress=False)
    runs = tracker.list_runs(Selection())
    history = tracker.read_history(runs, None)
    assert set(history.columns) == {"run_id", "step", *KEYS}


def test_single_run_folder_and_file(wandb_sweep) -> None:  # noqa: F811
    folder, logged = wandb_sweep
    file = next(p for p in find_run_files(folder) if logged["lr1e-3_bs32"]["run_id"] in p.name)
    for path in (file, file.parent):
        runs = WandbTracker(path=str(path), progress=False).list_runs(Selection())
        assert runs["name"].tolist() == ["lr1e-3_bs32"]
    with pytest.raises(UserError, match="does not exist"):
        WandbTracker(path=str(folder / "nope")).list_runs(Selection())
    empty = folder.parent / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(UserError, match="no W&B runs"):
        WandbTracker(path=str(empty)).list_runs(Selection())


def test_record_framing_roundtrip_and_corruption(wandb_sweep) -> None:  # noqa: F811
    folder, logged = wandb_sweep
    data = next(p for p in find_run_files(folder) if logged["lr3e-3_bs32"]["run_id"] in p.name).read_bytes()
    records, problem = split_records(data)
    assert problem is None and encode_records(records) == data  # our framing is byte-identical to wandb's
    big = [bytes([i % 251]) * n for i, n in enumerate([10, BLOCK_LEN * 2 + 17, 5, BLOCK_LEN - 14, 3])]
    assert split_records(encode_records(big)) == (big, None)
    small = encode_records([b"abc", b"defgh"])
    assert split_records(small + b"\0" * 20) == ([b"abc", b"defgh"], None)  # zero fill is not damage
    got, problem = split_records(small[:-2])
    assert got == [b"abc"] and problem
    got, problem = split_records(small[:-9])  # cut inside the last chunk's header
    assert got == [b"abc"] and "torn" in problem
    framed = bytearray(encode_records(big))
    framed[BLOCK_LEN + 100] ^= 0xFF  # flip a byte inside the multi-block record: its checksum fails
    got, problem = split_records(bytes(framed))
    assert got == big[:1] and "checksum" in problem
    assert zlib.crc32(b"") == 0


def test_typed_and_nested_values_in_history(tmp_path: Path) -> None:
    """History items with nested dicts, strings, NaN and media are turned into float columns or dropped."""
    from wandb.proto import wandb_internal_pb2 as pb

    payloads = []
    run = pb.Record()
    run.run.run_id, run.run.display_name = "abc", "synthetic"
    payloads.append(run.SerializeToString())
    for step, items in enumerate([{"a": "1.5", "b": '{"c": 2}', "img": '{"_type": "image-file"}'},
                                  {"a": "NaN", "t": '"text"', "b": '{"c": 3}'}]):
        rec = pb.Record()
        rec.history.step.num = step
        for key, value in items.items():
            item = rec.history.item.add()
            item.nested_key.append(key)
            item.value_json = value
        payloads.append(rec.SerializeToString())
    path = tmp_path / "run-abc.wandb"
    path.write_bytes(encode_records(payloads))
    parsed = read_run_file(path)
    assert parsed.state == "crashed" and parsed.name == "synthetic"
    frame = history_frame(parsed, None)
    assert list(frame.columns) == ["step", "a", "b.c", "t"]
    assert frame["a"].iloc[0] == 1.5 and math.isnan(frame["a"].iloc[1])
    assert frame["b.c"].tolist() == [2.0, 3.0] and frame["t"].isna().all()


def test_mongo_match_operators() -> None:
    doc = {"state": "finished", "tags": ["a", "b"], "config": {"lr": {"value": 0.1}}, "display_name": "x-1"}
    assert mongo_match(doc, {"tags": "a", "config.lr": 0.1})
    assert mongo_match(doc, {"$or": [{"state": "failed"}, {"display_name": {"$regex": "^x"}}]})
    assert not mongo_match(doc, {"config.lr.value": {"$lt": 0.1}})
    assert mongo_match(doc, {"config.missing": {"$exists": False}})
    with pytest.raises(UserError, match="not supported"):
        mongo_match(doc, {"state": {"$where": "1"}})


def test_writer_offline_roundtrip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Artifacts, log_config and a NaN survive the write side; several runs per process."""
    from wandb_fixtures import wandb_env

    for key, value in wandb_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    tracker = WandbTracker(project="w", path=str(tmp_path / "out" / "wandb"))
    writer = tracker.start_run("one", {"lr": 0.5})
    writer.log_config({"extra": {"depth": 4}})
    writer.log_metrics({"loss": 1.0}, step=0)
    writer.log_metrics({"loss": float("nan"), "acc": 0.5}, step=5)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    writer.log_artifact(str(note))
    with pytest.raises(UserError):
        writer.log_artifact(str(tmp_path / "missing.txt"))
    writer.finish()
    rs = read_runset(WandbTracker(path=str(tmp_path / "out"), progress=False), Selection(), ["loss", "acc"])
    row = rs.runs.iloc[0]
    assert row["name"] == "one" and row["state"] == "finished"
    assert row["config.lr"] == 0.5 and row["config.extra.depth"] == 4
    assert rs.history["step"].tolist() == [0, 5]
    assert rs.history["loss"].iloc[0] == 1.0 and math.isnan(rs.history["loss"].iloc[1])
    assert math.isnan(rs.history["acc"].iloc[0]) and rs.history["acc"].iloc[1] == 0.5
    assert list(Path(tmp_path / "out" / "wandb").glob("offline-run-*/files/note.txt"))
