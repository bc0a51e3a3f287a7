"""MLflow adapter against a real sqlite store and a real `mlflow server` (no mocks of MLflow)."""
from __future__ import annotations

import math
import time

import numpy as np
import pandas.testing as pdt
import pytest

pytest.importorskip("mlflow")

import adapters.mlflow as mlflow_adapter  # noqa: E402
import adapters.mlflow_rest as mlflow_rest  # noqa: E402
from adapters.mlflow import MlflowTracker  # noqa: E402
from adapters.mlflow_rest import plan_bulk_chunks  # noqa: E402
from mlflow_fixtures import EXPERIMENT, KEYS, N_STEPS, free_port, mlflow_server, mlflow_store  # noqa: E402,F401
from toolkit.errors import UserError  # noqa: E402
from toolkit.protocol import read_runset  # noqa: E402
from toolkit.runset import Selection  # noqa: E402

FAKE_TOKEN = "fake-token-7c1d9e2b44"


def _read(uri: str, fast_path: str = "auto", selection: Selection | None = None, keys=KEYS, experiment=EXPERIMENT,
          **kw):
    tracker = MlflowTracker(uri=uri, experiment=experiment, fast_path=fast_path, **kw)
    tracker.configure(cache={"enabled": False}, progress=False)
    return read_runset(tracker, selection or Selection(), list(keys) if keys else keys), tracker


def _assert_same(a, b) -> None:
    a, b = a.normalized(), b.normalized()
    pdt.assert_frame_equal(a.runs, b.runs)
    pdt.assert_frame_equal(a.history, b.history)
    assert a.warnings == b.warnings


@pytest.fixture(scope="module")
def reference(mlflow_store):
    """The sweep as read straight from the sqlite store."""
    return _read(mlflow_store["uri"], "sql")[0]


def test_store_read_directly(reference, mlflow_store):
    runs, hist = reference.runs, reference.history
    assert sorted(runs["run_id"]) == sorted(mlflow_store["run_ids"])
    assert len(hist) == 6 * N_STEPS and list(hist.columns) == ["run_id", "step", "loss", "acc"]
    by_name = runs.set_index("name")
    first = by_name.loc["lr0.001-bs32-0"]
    assert first["config.lr"] == pytest.approx(1e-3) and first["config.bs"] == 32
    assert first["config.optim.name"] == "adamw" and bool(first["config.optim.warmup"]) is True
    assert by_name.loc["lr0.01-bs32-2", "state"] == "failed"
    assert by_name.loc["lr0.001-bs64-3", "tags"] == "best"
    assert str(runs["created_at"].dtype).startswith("datetime64")
    assert set(reference.summary_keys) == {"loss", "acc"}
    run0 = by_name.loc["lr0.001-bs32-0", "run_id"]
    at10 = hist[(hist["run_id"] == run0) & (hist["step"] == 10)]
    assert at10["loss"].tolist() == [-1.0]  # logged twice at step 10: the newer value wins
    run1 = by_name.loc["lr0.003-bs32-1", "run_id"]
    assert math.isnan(hist[(hist["run_id"] == run1) & (hist["step"] == 7)]["loss"].iloc[0])
    last = by_name.loc["lr0.01-bs64-5", "run_id"]
    assert hist[hist["run_id"] == last]["acc"].isna().all()
    assert any("never logged 'acc'" in w for w in reference.warnings)


def test_store_via_client_matches(reference, mlflow_store):
    _assert_same(_read(mlflow_store["uri"], "client")[0], reference)


@pytest.mark.server
@pytest.mark.parametrize("fast_path", ["rest", "client"])
def test_server_paths_match(reference, mlflow_server, fast_path):
    runset, tracker = _read(mlflow_server, fast_path)
    _assert_same(runset, reference)
    assert tracker.fast_path == fast_path


@pytest.mark.server
@pytest.mark.parametrize("cap, truncated", [(700, 0), (250, 11)])
def test_bulk_cap_chunking_against_server(reference, mlflow_server, cap, truncated):
    runset, tracker = _read(mlflow_server, "rest", bulk_cap=cap)
    _assert_same(runset, reference)
    # cap 700: two 300-step runs per request, never full; cap 250: each run alone is still too big, the full
    # answer is detected and the run read page by page (5 runs x 2 keys + 1 run x 1 key = 11)
    assert tracker.stats["truncated"] == truncated


def test_chunk_planner_stays_below_cap():
    est = {f"r{i:02d}": n for i, n in enumerate([30, 30, 50, 99, 100, 250, 1, 1])}
    chunks = plan_bulk_chunks(est, cap=100, max_runs=3)
    assert sorted(r for c in chunks for r in c) == sorted(est)
    for chunk in chunks:
        assert len(chunk) <= 3
        assert len(chunk) == 1 or sum(est[r] for r in chunk) < 100
    assert plan_bulk_chunks({}, cap=100) == []
    assert [len(c) for c in plan_bulk_chunks({f"r{i}": 1 for i in range(250)})] == [100, 100, 50]


@pytest.mark.parametrize("fast_path, filter_string", [("client", None), ("sql", "attributes.status != 'RUNNING'")])
def test_pagination_past_page_size(reference, mlflow_store, monkeypatch, fast_path, filter_string):
    monkeypatch.setattr(mlflow_adapter, "PAGE_SIZE", 2)  # search_runs pages (a sqlite store without a filter
    runset, _ = _read(mlflow_store["uri"], fast_path, filter_string=filter_string)  # string is listed in SQL)
    assert len(runset.runs) == 6
    _assert_same(runset, reference)


def test_selection_and_filter_string(mlflow_store):
    uri = mlflow_store["uri"]
    assert len(_read(uri, selection=Selection(name_regex=r"bs64"), keys=None)[0].runs) == 3
    assert len(_read(uri, selection=Selection(config={"lr": [0.001, "1e-2"]}))[0].runs) == 4
    assert _read(uri, selection=Selection(state=["failed"]))[0].runs["name"].tolist() == ["lr0.01-bs32-2"]
    assert _read(uri, selection=Selection(tags=["best"]))[0].runs["name"].tolist() == ["lr0.001-bs64-3"]
    ids = mlflow_store["run_ids"][:2]
    assert sorted(_read(uri, selection=Selection(run_ids=ids))[0].runs["run_id"]) == sorted(ids)
    runset, _ = _read(uri, filter_string="params.bs = '64' and metrics.loss < 100")
    assert sorted(runset.runs["config.bs"]) == [64, 64, 64]
    assert set(runset.history["run_id"]) == set(runset.runs["run_id"])
    with pytest.raises(UserError, match="filter_string"):
        _read(uri, filter_string="params.bs === 3")


def test_all_keys_when_none(mlflow_store):
    runset, _ = _read(mlflow_store["uri"], keys=None)
    assert set(runset.metric_keys) == {"loss", "acc"}


def test_wrong_experiment_lists_existing(mlflow_store):
    tracker = MlflowTracker(uri=mlflow_store["uri"], experiment="nope")
    with pytest.raises(UserError, match=r"no experiment 'nope'.*experiments: .*sweep") as info:
        tracker.list_runs(Selection())
    assert "\n" not in str(info.value)


def test_missing_sqlite_file_is_not_created(tmp_path):
    tracker = MlflowTracker(uri=f"sqlite:///{tmp_path / 'absent.db'}", experiment="x")
    with pytest.raises(UserError, match="no MLflow database"):
        tracker.list_runs(Selection())
    assert not (tmp_path / "absent.db").exists()


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="fast_path"):
        MlflowTracker(uri="sqlite:///x.db", fast_path="turbo")
    with pytest.raises(UserError, match="fast_path=sql"):
        MlflowTracker(uri="http://127.0.0.1:1", fast_path="sql")


def test_artifact_root_setting(tmp_path):
    store = f"sqlite:///{tmp_path / 'a.db'}"
    assert MlflowTracker(uri=store)._artifact_location("my exp").startswith((tmp_path / "mlruns").as_uri() + "/my_exp-")
    located = MlflowTracker(uri=store, artifact_root=str(tmp_path / "art"))._artifact_location("e")
    assert located == (tmp_path / "art" / "e").as_uri()
    assert MlflowTracker(uri=store, artifact_root="s3://bucket/x/")._artifact_location("e") == "s3://bucket/x/e"
    assert MlflowTracker(uri="http://127.0.0.1:1")._artifact_location("e") is None  # the server decides


def test_unreachable_server_fails_fast_without_secrets(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-" + FAKE_TOKEN)
    port = free_port()
    for uri in (f"http://127.0.0.1:{port}", f"http://alice:hunter2secret@127.0.0.1:{port}"):
        tracker = MlflowTracker(uri=uri, experiment=EXPERIMENT, retries=1, backoff=0.05, timeout=2)
        started = time.monotonic()
        with pytest.raises(UserError) as info:
            tracker.list_runs(Selection())
        message = str(info.value)
        assert time.monotonic() - started < 10
        assert "\n" not in message and "after 2 tries" in message
        assert FAKE_TOKEN not in message and "hunter2secret" not in message


@pytest.mark.server
def test_server_killed_mid_fetch_resumes_from_cache(reference, mlflow_server, tmp_path, monkeypatch):
    cache = {"enabled": True, "dir": str(tmp_path / "cache"), "refresh": False}
    real_get = mlflow_rest.RestSource.get
    calls = {"n": 0}

    def flaky_get(self, endpoint, params):
        calls["n"] += 1
        if calls["n"] > 4:  # the server "dies" after four answers
            import requests

            raise requests.ConnectionError("connection refused")
        return real_get(self, endpoint, params)

    monkeypatch.setattr(mlflow_rest.RestSource, "get", flaky_get)
    tracker = MlflowTracker(uri=mlflow_server, experiment=EXPERIMENT, fast_path="rest", bulk_cap=700,
                            max_workers=1, retries=2, backoff=0.01)
    tracker.configure(cache=cache, progress=False)
    with pytest.raises(UserError, match="after 3 tries") as info:
        read_runset(tracker, Selection(), list(KEYS))
    assert "\n" not in str(info.value)
    monkeypatch.setattr(mlflow_rest.RestSource, "get", real_get)
    again = MlflowTracker(uri=mlflow_server, experiment=EXPERIMENT, fast_path="rest")
    again.configure(cache=cache, progress=False)
    runset = read_runset(again, Selection(), list(KEYS))
    _assert_same(runset, reference)
    assert again.stats["cached_runs"] >= 1 and again.stats["fetched_runs"] == 6 - again.stats["cached_runs"]


def test_writer_errors_name_the_run(tmp_path):
    """A bad value logged to an MLflow run is an error naming the run's name, as with every other writer."""
    tracker = MlflowTracker(uri=f"sqlite:///{tmp_path / 'n.db'}", experiment="names")
    writer = tracker.start_run("lr-0.01")
    with pytest.raises(UserError, match=r"^run 'lr-0.01': metric 'loss' at step 3 is not a number: 'high'$"):
        writer.log_metrics({"loss": "high"}, 3)
    writer.finish()


def test_writer_batches_params_and_statuses(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # artifacts must land beside the store, not in the current folder
    uri = f"sqlite:///{tmp_path / 'w.db'}"
    tracker = MlflowTracker(uri=uri, experiment="writes", flush_every=500)
    calls = []
    writer = tracker.start_run("wide", {"long": "x" * 7000, "nested": {"a": 1, "b": [1, 2]}, "none": None})
    real = writer.client.log_batch
    writer.client.log_batch = lambda run_id, **kw: calls.append(len(kw.get("metrics", ()))) or real(run_id, **kw)
    for step in range(600):
        writer.log_metrics({"m0": float(step), "m1": float(step + 1)}, step)
    assert calls == [1000]  # 500 steps flushed together, at most 1,000 metrics per call
    artifact = tmp_path / "notes.txt"
    artifact.write_text("hello")
    writer.log_artifact(str(artifact))
    writer.finish("killed")
    assert calls[-1:] == [200]
    with pytest.raises(UserError):
        writer.log_metrics({"m": "not a number"}, 9)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(writer.run_id)
    assert run.info.status == "KILLED" and len(run.data.params["long"]) == 6000
    assert run.data.params["nested.a"] == "1" and run.data.params["nested.b"] == "[1, 2]"
    assert [f.path for f in client.list_artifacts(writer.run_id)] == ["notes.txt"]
    assert (tmp_path / "mlruns" / "writes" / writer.run_id / "artifacts" / "notes.txt").is_file()
    assert list(cwd.iterdir()) == []
    with pytest.raises(UserError, match="status"):
        tracker.start_run("x").finish("exploded")
    runset = read_runset(MlflowTracker(uri=uri, experiment="writes"), Selection(name_regex="wide"), ["m0", "m1"])
    assert runset.history["m1"].tolist() == [float(s + 1) for s in range(600)]
    assert runset.runs["state"].tolist() == ["killed"]


# ---------------------------------------------------------------- the SQL fast path's plans and exactness
ODD_VALUES = [1e-300, 1e300, float("inf"), float("-inf"), -0.0, 5e-324, 1 / 3, -2.5, float("nan"), 0.1, 7.0]


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory):
    """Two runs with values SQL must not round (tiny, huge, infinite, subnormal), huge steps, re-logged steps and
    1,200 keys; three runs of another experiment log the same keys (so one run read alone is a small minority)."""
    from mlflow_fixtures import init_store

    uri = f"sqlite:///{tmp_path_factory.mktemp('odd') / 'odd.db'}"
    init_store(uri)
    wide = [f"layer{i:04d}/norm" for i in range(1200)]
    for exp, names in (("odd", ["a", "b"]), ("other", ["c", "d", "e"])):
        tracker = MlflowTracker(uri=uri, experiment=exp, flush_every=1000)
        for j, name in enumerate(names):
            writer = tracker.start_run(name, {"j": j})
            for step, value in enumerate(ODD_VALUES):
                writer.log_metrics({"odd": value, "smooth": 1.0 + step / 7}, step * 10**12)  # token-count steps
            writer.log_metrics({"smooth": -1.0}, 0)  # re-logged later: the newer value wins
            for step in range(3):
                writer.log_metrics({k: (i + 1) / 7 * (1 + step / 10) * (1 - j / 10) for i, k in enumerate(wide)}, step)
            writer.finish()
    return {"uri": uri, "keys": ["odd", "smooth", *wide]}


def _odd_read(odd_store, plan, selection, keys, monkeypatch):
    import adapters.mlflow_sql as mlflow_sql

    monkeypatch.setattr(mlflow_sql, "FORCE_PLAN", plan)
    runset, tracker = _read(odd_store["uri"], "sql", selection, keys=keys, experiment="odd")
    return runset.normalized(), tracker


def test_sql_rows_plan_matches_the_client(odd_store, monkeypatch):
    keys = ["odd", "smooth", odd_store["keys"][2], odd_store["keys"][-1]]
    tracker = MlflowTracker(uri=odd_store["uri"], experiment="odd", fast_path="client")
    tracker.configure(cache={"enabled": False}, progress=False)
    want = read_runset(tracker, Selection(), keys).normalized()
    got, _ = _odd_read(odd_store, "rows", Selection(), keys, monkeypatch)
    pdt.assert_frame_equal(got.history, want.history, check_exact=True)
    pdt.assert_frame_equal(got.runs, want.runs)


@pytest.mark.parametrize("plan", ["key", "run", None])
def test_sql_plans_read_exactly_what_rows_read(odd_store, plan, monkeypatch):
    selection = Selection(name_regex="^a$") if plan is None else Selection()
    want, _ = _odd_read(odd_store, "rows", selection, odd_store["keys"], monkeypatch)
    got, sql = _odd_read(odd_store, plan, selection, odd_store["keys"], monkeypatch)
    pdt.assert_frame_equal(got.history, want.history, check_exact=True)
    odd = got.history["odd"].to_numpy()
    assert np.array_equal(odd[~np.isnan(odd)][:3], [1e-300, 1e300, 1.7976931348623157e308])
    assert got.history["step"].max() == 10 * 10**12
    assert set(got.history.loc[got.history["step"] == 0, "smooth"]) == {-1.0}  # re-logged: the newer value
    if plan is not None:
        assert sql.stats["key_major" if plan == "key" else "run_major"] >= 1
        assert sql.stats["exact_rereads"] == 1  # 'odd' spans too many binades for one scale: read row by row
    else:
        assert sql.stats["run_major"] >= 1  # the run read holds a fifth of these keys' points: run-major


def test_sql_groups_too_long_for_sqlite_are_split(odd_store, monkeypatch):
    import adapters.mlflow_sql as mlflow_sql

    want, _ = _odd_read(odd_store, "rows", Selection(), odd_store["keys"], monkeypatch)
    monkeypatch.setattr(mlflow_sql, "LENGTH_LIMIT", 300)  # the 22 points of 'odd' over two runs no longer fit
    got, sql = _odd_read(odd_store, "key", Selection(), odd_store["keys"], monkeypatch)
    pdt.assert_frame_equal(got.history, want.history, check_exact=True)
    assert sql.stats["splits"] >= 1
