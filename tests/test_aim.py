"""tracker=aim against real Aim repositories written by the aim package (skipped without the aim extra).

Every repository here is written by ``aim.Run`` (directly, as a training job or accelerate's ``log_with="aim"``
would, or through ``AimTracker.start_run``) under pytest's tmp folders, and never indexed by ``aim up``: the reader
must get everything from the runs' own storage. The lock tests use real second processes: one holding a run open
(then killed with SIGKILL), one holding Aim's run-metadata lock as Aim does while registering a run.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.errors import UserError
from toolkit.protocol import read_runset
from toolkit.runset import Selection

pytestmark = pytest.mark.needs_aim

ROOT = Path(__file__).resolve().parents[1]
N_POINTS = 12_000  # more than 10,000 per metric: a sampled read would show
VAL_EVERY = 100


def _aim_run(repo: Path, **kwargs):
    import aim

    return aim.Run(repo=str(repo), system_tracking_interval=None, log_system_params=False,
                   capture_terminal_logs=False, **kwargs)


def _train_loss(steps: np.ndarray) -> np.ndarray:
    return 3.0 + np.exp(-steps / 3000.0) + 1e-3 * np.sin(steps)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict:
    """A repository as training jobs write it: runs of two experiments, contexts, tags, a failed and an archived run."""
    root = tmp_path_factory.mktemp("aim") / "repo"
    steps = np.arange(N_POINTS)
    loss = _train_loss(steps)

    run = _aim_run(root, experiment="sweep")
    run.name = "a"
    run["hparams"] = {"lr": 1e-3, "bs": 64, "optim": {"name": "adamw", "betas": [0.9, 0.95]}}
    run.add_tag("tuned")
    for s in steps:
        run.track(float(loss[s]), name="loss", step=int(s), context={"subset": "train"})
        run.track(1e-3 * (1 - s / N_POINTS), name="lr", step=int(s))
        if s % VAL_EVERY == 0:
            run.track(float(loss[s]) + 0.1, name="loss", step=int(s), context={"subset": "val"})
    run.report_successful_finish()
    run.close()
    a = run.hash

    run = _aim_run(root, experiment="sweep")  # closed without a status report: finished by its end time
    run.name = "b"
    run["hparams"] = {"lr": 2e-3, "bs": 32}
    for s in range(50):
        run.track(float(s), name="loss", step=s, context={"subset": "train"})
    run.track(7, name="tokens", step=0)  # an int metric
    run.close()
    b = run.hash

    run = _aim_run(root, experiment="other")  # no hparams: its params are the config, Aim's own left out
    run.name = "c"
    run["lr"] = 0.1
    run["model"] = {"width": 256}
    run["__system_params"] = {"executable": sys.executable}
    run.track(1.5, name="loss", step=3)
    run.close()
    c = run.hash

    run = _aim_run(root, experiment="sweep")  # promised progress that never came: Aim's failed run
    run.name = "d"
    run["hparams"] = {"lr": 8e-3, "bs": 64}
    for s in range(10):
        run.track(10.0 ** s, name="loss", step=s, context={"subset": "train"})
    run.report_progress(expect_next_in=5, block=True)
    run.close()
    d = run.hash

    run = _aim_run(root, experiment="sweep")
    run.name = "e-archived"
    run["hparams"] = {"lr": 1e-4, "bs": 64}
    run.track(9.0, name="loss", step=0, context={"subset": "train"})
    run.close()
    run.archived = True
    e = run.hash
    return {"path": root, "a": a, "b": b, "c": c, "d": d, "e": e, "loss": loss}


def tracker(path: Path, cache_dir: Path | None = None, **kwargs):
    from adapters.aim import AimTracker

    t = AimTracker(path=str(path), **kwargs)
    t.configure({"enabled": cache_dir is not None, "dir": str(cache_dir) if cache_dir else None, "refresh": False},
                progress=False)
    return t


def by_name(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.set_index("name")


# ------------------------------------------------------------------------------------------------ reading
def test_runs_config_state_and_tags(repo):
    t = tracker(repo["path"])
    runs = by_name(t.list_runs(Selection()))
    assert sorted(runs.index) == ["a", "b", "c", "d"]  # the archived run is left out ...
    warnings = t.take_warnings()
    assert any("1 archived run(s)" in w and str(repo["path"]) in w for w in warnings), warnings  # ... and said so
    assert runs.loc["a", "run_id"] == repo["a"]
    assert runs["state"].to_dict() == {"a": "finished", "b": "finished", "c": "finished", "d": "failed"}
    assert runs.loc["a", "config.lr"] == 1e-3 and runs.loc["a", "config.bs"] == 64
    assert runs.loc["a", "config.optim.name"] == "adamw" and runs.loc["a", "config.optim.betas"] == "[0.9, 0.95]"
    assert runs.loc["c", "config.lr"] == 0.1 and runs.loc["c", "config.model.width"] == 256
    assert not [c for c in runs.columns if "system" in c]
    assert runs.loc["a", "tags"] == "tuned" and runs.loc["b", "tags"] == ""
    assert str(runs["created_at"].dt.tz) == "UTC" and runs["created_at"].notna().all()
    assert runs.loc["a", "summary.loss/subset=train"] == pytest.approx(repo["loss"][-1])
    assert runs.loc["b", "summary.tokens"] == 7.0


def test_full_histories_with_contexts_folded_into_keys(repo):
    t = tracker(repo["path"])
    rs = read_runset(t, Selection(name_regex="^a$"), None)
    hist = rs.history
    assert set(rs.metric_keys) == {"loss/subset=train", "loss/subset=val", "lr"}
    assert len(hist) == N_POINTS and hist["step"].tolist() == list(range(N_POINTS))  # every point, none sampled
    np.testing.assert_array_equal(hist["loss/subset=train"].to_numpy(), repo["loss"])
    val = hist.dropna(subset=["loss/subset=val"])
    assert val["step"].tolist() == list(range(0, N_POINTS, VAL_EVERY))
    np.testing.assert_array_equal(val["loss/subset=val"].to_numpy(), repo["loss"][::VAL_EVERY] + 0.1)
    assert hist["lr"].notna().all()


def test_keys_select_columns_and_runs_lacking_a_key_are_said(repo):
    t = tracker(repo["path"])
    rs = read_runset(t, Selection(), ["loss/subset=train", "tokens"])
    assert rs.metric_keys == ["loss/subset=train", "tokens"]
    ids = {v: k for k, v in repo.items() if k in "abcd"}
    counts = rs.history.groupby(rs.history["run_id"].map(ids)).size().to_dict()
    assert counts == {"a": N_POINTS, "b": 50, "d": 10}  # c logged neither key
    assert any("never logged 'tokens'" in w for w in rs.warnings)


def test_fold_key():
    from adapters.aim import fold_key

    assert fold_key("loss", {}) == "loss"
    assert fold_key("loss", {"subset": "train"}) == "loss/subset=train"
    assert fold_key("loss", {"subset": "val", "rank": 0, "ds": {"name": "c4"}}) == "loss/ds.name=c4,rank=0,subset=val"
    assert fold_key("acc", {"top": 5, "ema": True}) == "acc/ema=true,top=5"


# ------------------------------------------------------------------------------------------------ selection
def test_query_and_experiment_narrow_the_runs_on_aims_side(repo):
    names = lambda t: sorted(t.list_runs(Selection())["name"])  # noqa: E731
    assert names(tracker(repo["path"], query="run.hparams.bs == 64")) == ["a", "d"]
    assert names(tracker(repo["path"], query="run.hparams.bs == 64 and 'tuned' in run.tags")) == ["a"]
    assert names(tracker(repo["path"], experiment="other")) == ["c"]
    assert names(tracker(repo["path"], query="run.archived == True")) == ["e-archived"]
    with pytest.raises(UserError, match="no experiment 'nope'.*experiments: other, sweep"):
        tracker(repo["path"], experiment="nope").list_runs(Selection())
    # select applies on top, in read_runset
    rs = read_runset(tracker(repo["path"], query="run.hparams.bs == 64"), Selection(state=["finished"]), ["lr"])
    assert rs.runs["name"].tolist() == ["a"]


@pytest.mark.parametrize("query, expected", [
    ("run.hparams.bs ==", "not a valid Aim query"),
    ("import os", "not a valid Aim query"),
    ("bs == 64", "failed on every run.*name 'bs' is not defined.*run.hparams.bs == 64"),
])
def test_a_bad_query_is_a_one_line_error(repo, query, expected):
    with pytest.raises(UserError, match=expected) as info:
        tracker(repo["path"], query=query).list_runs(Selection())
    assert "\n" not in str(info.value) and query in str(info.value)


def test_a_query_failing_on_some_runs_only_is_warned(repo):
    t = tracker(repo["path"], query="run.hparams.lr / run.hparams.bs > 0")  # c has no hparams: fails there
    assert sorted(t.list_runs(Selection())["name"]) == ["a", "b", "d"]
    assert any("failed on 1 run(s)" in w and repo["c"] in w for w in t.take_warnings())


def test_a_path_without_an_aim_repository_is_a_one_line_error(tmp_path):
    (tmp_path / "plain").mkdir()
    for path in (tmp_path / "plain", tmp_path / "missing"):
        with pytest.raises(UserError, match="expected an Aim repository") as info:
            tracker(path).list_runs(Selection())
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    from adapters.aim import AimTracker

    with pytest.raises(UserError, match="tracker.path is not set"):
        AimTracker()


def test_the_aim_folder_itself_is_accepted(repo):
    assert len(tracker(repo["path"] / ".aim").list_runs(Selection())) == 4


# ------------------------------------------------------------------------------------------------ cache
def test_a_reread_of_finished_runs_is_served_from_the_cache(repo, tmp_path):
    cache = tmp_path / "cache"
    first = tracker(repo["path"], cache)
    rs1 = read_runset(first, Selection(), None)
    assert first.stats["fetched_runs"] == 4 and first.stats["cached_runs"] == 0
    second = tracker(repo["path"], cache)
    rs2 = read_runset(second, Selection(), None)
    assert second.stats["cached_runs"] == 4 and second.stats["fetched_runs"] == 0 and second.stats["points"] == 0
    assert second.stats["listed_from_cache"] == 4  # no run opened at all
    pd.testing.assert_frame_equal(rs1.history, rs2.history)
    pd.testing.assert_frame_equal(rs1.runs, rs2.runs)
    assert rs1.warnings == rs2.warnings
    queried = tracker(repo["path"], cache, query="run.hparams.bs == 64")  # Aim evaluates a query on the runs
    assert sorted(read_runset(queried, Selection(), rs1.metric_keys).runs["name"]) == ["a", "d"]
    assert queried.stats["listed_from_cache"] == 0 and queried.stats["cached_runs"] == 2


RESUME = textwrap.dedent("""
    import sys, aim
    run = aim.Run(run_hash=sys.argv[2], repo=sys.argv[1], system_tracking_interval=None, capture_terminal_logs=False)
    run.track(-1.0, name="loss", step=2)  # a step logged again: Aim keeps the newest value
    run.track(5.0, name="loss", step=5)
    print("READY", flush=True)
    sys.stdin.readline()
    run.close()
""")
WRITE_ONE = textwrap.dedent("""
    import sys, aim
    run = aim.Run(repo=sys.argv[1], system_tracking_interval=None, capture_terminal_logs=False)
    run.name = "resumable"
    for s in range(5):
        run.track(float(s), name="loss", step=s)
    run.close()
    print(run.hash)
""")


def test_a_resumed_run_is_read_again_while_running_and_after_it_ends(tmp_path):
    """A finished run is cached; another process resumes it (it runs again): read in full, not from the cache;
    once it ends again its new version is cached."""
    path, cache = tmp_path / "repo", tmp_path / "cache"
    run_hash = subprocess.run([sys.executable, "-c", WRITE_ONE, str(path)], capture_output=True, text=True,
                              check=True, timeout=120).stdout.split()[-1]
    first = read_runset(tracker(path, cache), Selection(), ["loss"])
    assert first.history["step"].tolist() == [0, 1, 2, 3, 4]
    resumer = subprocess.Popen([sys.executable, "-c", RESUME, str(path), run_hash], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert resumer.stdout.readline().startswith("READY")
        t = tracker(path, cache)
        running = read_runset(t, Selection(), ["loss"])
        assert t.stats["cached_runs"] == 0 and running.runs["state"].tolist() == ["running"]
        assert running.history["loss"].tolist() == [0.0, 1.0, -1.0, 3.0, 4.0, 5.0]
        resumer.communicate("close\n", timeout=120)
    finally:
        if resumer.poll() is None:
            resumer.kill()
    t = tracker(path, cache)
    ended = read_runset(t, Selection(), ["loss"])
    assert t.stats["fetched_runs"] == 1 and t.stats["listed_from_cache"] == 0
    assert ended.runs["state"].tolist() == ["finished"]
    pd.testing.assert_frame_equal(ended.history, running.history)
    t = tracker(path, cache)
    again = read_runset(t, Selection(), ["loss"])
    assert t.stats["cached_runs"] == 1 and t.stats["listed_from_cache"] == 1
    pd.testing.assert_frame_equal(again.runs, ended.runs)


# ------------------------------------------------------------------------------------------------ write side
def test_the_writer_round_trips_config_metrics_artifacts_and_status(tmp_path):
    path = tmp_path / "repo"
    t = tracker(path, experiment="w")
    artifact = tmp_path / "notes.txt"
    artifact.write_text("hello")
    ok = t.start_run("ok", {"lr": 0.01, "model": {"depth": 4}}, tags=["x"])
    ok.log_config({"bs": 16})
    ok.log_metrics({"loss": 2.0, "acc": 0.5}, step=1)
    ok.log_metrics({"loss": 1.5}, step=2)
    ok.log_artifact(str(artifact))
    ok.finish()
    with pytest.raises(UserError, match="after finish"):
        ok.log_metrics({"loss": 1.0}, step=3)
    bad = t.start_run("bad")
    with pytest.raises(UserError, match="not a number"):
        bad.log_metrics({"loss": "x"}, step=0)
    with pytest.raises(UserError, match="not one of"):
        bad.finish("exploded")
    bad.log_metrics({"loss": 9.0}, step=0)
    bad.finish("failed")
    runs = by_name(tracker(path).list_runs(Selection()))
    assert runs["state"].to_dict() == {"ok": "finished", "bad": "failed"}
    assert runs.loc["ok", "config.lr"] == 0.01 and runs.loc["ok", "config.model.depth"] == 4
    assert runs.loc["ok", "config.bs"] == 16 and runs.loc["ok", "tags"] == "x"
    assert (path / "artifacts" / ok.run_id / "notes.txt").read_text() == "hello"
    hist = read_runset(tracker(path), Selection(name_regex="ok"), None).history
    assert hist[["step", "acc", "loss"]].to_numpy(na_value=-1).tolist() == [[1, 0.5, 2.0], [2, -1, 1.5]]


def test_demo_sweep_reads_back_like_the_local_tracker(tmp_path):
    """The demo sweep logged through tracker=aim gives the local writer's RunSet, Table and minima (as in
    tests/test_swap_trackers.py), and the same minima as tracker=local on that sweep's CSV."""
    import test_swap_trackers as swap

    env = swap._env(tmp_path)
    local_runs, aim_repo = tmp_path / "runs", tmp_path / "aimrepo"
    for name, arg in (("local", f"path={local_runs}"), ("aim", f"path={aim_repo}")):
        proc = subprocess.run([sys.executable, "-m", "toolkit.demo", *swap.DEMO_GRID, "--tracker", name,
                               "--tracker-arg", arg], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"logged {swap.N_RUNS} runs through {name}" in proc.stdout
    reference = swap.run_pipeline("local", ["tracker=local", f"tracker.path={local_runs}"], tmp_path)
    outcome = swap.run_pipeline("aim", ["tracker=aim", f"tracker.path={aim_repo}"], tmp_path)
    assert sorted(outcome.runset.runs["state"]) == ["failed"] + ["finished"] * (swap.N_RUNS - 1)
    swap.assert_same(outcome, reference)
    csv = tmp_path / "sweep.csv"  # the same sweep as a wide file, at full precision
    swap.demo.make_lr_bs_sweep(0, lr_log2=[-11, -10, -9, -8, -7, -6], batch_sizes=(32, 64), seeds=(0,),
                               horizons_log2=(26, 27), log_every_tokens=swap.LOG_EVERY, n_diverged=1
                               ).write(csv, decimals=None)
    from_csv = swap.run_pipeline("local-csv", ["tracker=local", f"tracker.path={csv}"], tmp_path)
    pd.testing.assert_frame_equal(outcome.minima, from_csv.minima, check_dtype=False, rtol=swap.RTOL)


# ------------------------------------------------------------------------------------------------ locks, faults
HOLD = textwrap.dedent("""
    import sys, time, aim
    run = aim.Run(repo=sys.argv[1], system_tracking_interval=None, log_system_params=False, capture_terminal_logs=False)
    run.name = "held"
    for s in range(500):
        run.track(float(s), name="loss", step=s)
    print("READY", run.hash, flush=True)
    time.sleep(600)
""")
HOLD_SDB_LOCK = textwrap.dedent("""
    import sys, time, aim
    repo = aim.Repo.from_path(sys.argv[1])
    repo._sdb_lock.acquire()  # Aim's run-metadata lock, as held while a run is registered or the repo upgraded
    print("READY", flush=True)
    time.sleep(600)
""")


def _start(script: str, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    return proc, line.split()[1] if len(line.split()) > 1 else ""


def _guarded(fn, limit: float = 120.0):
    """``fn()`` in a thread; a hang fails the test instead of stalling the suite (not a speed assertion)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), "the read hung"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_a_run_held_open_by_another_process_is_read_as_running_with_a_warning(tmp_path):
    path = tmp_path / "repo"
    done = _aim_run(path)
    done.name = "done"
    done.track(1.0, name="loss", step=0)
    done.close()
    holder, held = _start(HOLD, str(path))
    try:
        t = tracker(path)
        rs = _guarded(lambda: read_runset(t, Selection(), ["loss"]))
        runs = by_name(rs.runs)
        assert runs["state"].to_dict() == {"done": "finished", "held": "running"}
        assert len(rs.history[rs.history["run_id"] == held]) == 500  # what it tracked so far
        warning = next(w for w in rs.warnings if "still open in a running process" in w)
        assert str(path) in warning and held in warning and f"pid {holder.pid}" in warning
        writer = _guarded(lambda: tracker(path).start_run("beside"))  # writing beside it is not blocked either
        writer.finish()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the run stays open, its lock file stays behind
        holder.wait()
    t = tracker(path)
    rs = _guarded(lambda: read_runset(t, Selection(), ["loss"]))
    assert by_name(rs.runs).loc["held", "state"] == "running"
    warning = next(w for w in rs.warnings if "left open by a process that is gone" in w)
    assert str(path) in warning and held in warning


def test_a_held_metadata_lock_is_a_one_line_error_when_writing_not_a_hang(tmp_path):
    path = tmp_path / "repo"
    first = _aim_run(path)
    first.close()
    holder, _ = _start(HOLD_SDB_LOCK, str(path))
    try:
        chunks = set(os.listdir(path / ".aim" / "meta" / "chunks"))
        with pytest.raises(UserError, match="structured_db_lock") as info:
            _guarded(lambda: tracker(path, timeout=1.0).start_run("blocked"))
        assert str(path) in str(info.value) and "\n" not in str(info.value) and "tracker.timeout" in str(info.value)
        assert set(os.listdir(path / ".aim" / "meta" / "chunks")) == chunks  # nothing half-created
        assert len(_guarded(lambda: tracker(path).list_runs(Selection()))) == 1  # reading needs no such lock
    finally:
        holder.kill()
        holder.wait()


def test_opening_a_repository_upgraded_by_another_process_times_out(repo, tmp_path):
    """An older repository is upgraded under Aim's metadata lock (Aim waits 5 minutes for it); the reader gives up
    after tracker.timeout with a one-line error naming the repository and the lock."""
    path = tmp_path / "old"
    shutil.copytree(repo["path"], path)
    holder, _ = _start(HOLD_SDB_LOCK, str(path))
    try:
        (path / ".aim" / "VERSION").write_text("1.0\n")  # an older minor format: Aim patches it on open
        with pytest.raises(UserError, match="did not finish within 1 s") as info:
            _guarded(lambda: tracker(path, timeout=1.0).list_runs(Selection()))
        assert str(path) in str(info.value) and "structured_db_lock" in str(info.value)
        assert "\n" not in str(info.value)
    finally:
        holder.kill()
        holder.wait()


def test_a_run_folder_without_metadata_is_skipped_with_a_warning(repo, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(repo["path"], path)
    orphan = uuid.uuid4().hex[:24]
    shutil.copytree(path / ".aim" / "meta" / "chunks" / repo["b"], path / ".aim" / "meta" / "chunks" / orphan)
    t = tracker(path)
    assert sorted(t.list_runs(Selection())["name"]) == ["a", "b", "c", "d"]
    assert any("no entry in" in w and orphan in w for w in t.take_warnings())
