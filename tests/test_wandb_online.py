"""W&B online path against a test double of wandb.Api: W&B's cloud API cannot be reached from here.

The double mimics the public API's shapes: ``api.runs(path, filters=, per_page=)`` returns a lazy paginator that
loads one page per request and resumes after the loaded pages when iterated again; ``run.scan_history(keys=[k])``
returns only the rows where all requested keys are present; ``api.projects(entity)`` lists projects.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from adapters.wandb import WandbTracker
from adapters import wandb_online as online
from toolkit.errors import UserError
from toolkit.protocol import read_runset
from toolkit.runset import Selection

SECRET = "planted-fake-key-0123456789abcdef"


class FakeHTTPError(Exception):
    """Looks like requests.HTTPError: carries ``response.status_code``."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or f"{code} Server Error for url: https://api.wandb.ai/graphql")
        self.response = type("Response", (), {"status_code": code})()


def logged_rows(i: int, n_steps: int) -> list[dict[str, Any]]:
    """What fake run ``i`` logged: loss every step, norm every 5th step, acc only in even runs every 3rd."""
    rows = []
    for step in range(n_steps):
        row: dict[str, Any] = {"_step": step, "loss": 2.0 / (step + 1) + i, "_runtime": step * 0.1}
        if step % 5 == 0:
            row["norm"] = float(step * (i + 1))
        if i % 2 == 0 and step % 3 == 1:
            row["acc"] = step / n_steps
        rows.append(row)
    return rows


class FakeRun:
    """A public-API Run with a full logged history."""

    def __init__(self, i: int, n_steps: int = 250, state: str = "finished") -> None:
        self.id = f"run{i:03d}"
        self.name = f"lr{i % 3}-bs{i % 2}"
        self.state = state
        self.created_at = f"2024-01-{i % 28 + 1:02d}T10:00:00"
        self.tags = ["sweep", f"t{i % 2}"]
        self.config = {"lr": [1e-3, 3e-3, 1e-2][i % 3], "bs": [32, 64][i % 2], "optim": {"name": "adam"},
                       "_wandb": {"x": 1}}
        self.rows = logged_rows(i, n_steps)
        last: dict[str, Any] = {}
        for row in self.rows:
            last.update(row)
        self.summary_metrics = {**last, "_wandb": {"runtime": 1}}
        self._attrs = {"heartbeatAt": "2024-02-01T00:00:00"}
        self.scan_calls: list[dict[str, Any]] = []
        self.history_calls = 0
        self.failures: list[Exception] = []

    def scan_history(self, keys: list[str] | None = None, page_size: int = 1000, min_step: int = 0,
                     max_step: int | None = None) -> Any:
        self.scan_calls.append({"keys": keys, "page_size": page_size, "min_step": min_step})
        if self.failures:
            raise self.failures.pop(0)
        keys = keys or []
        for row in self.rows:
            if row["_step"] >= (min_step or 0) and all(k in row for k in keys):
                yield {k: row[k] for k in ["_step", *keys]}

    def history(self, keys: list[str] | None = None, pandas: bool = True, samples: int = 500) -> list[dict]:
        self.history_calls += 1
        rows = self.rows[:: max(1, len(self.rows) // 50)]
        return [{k: r[k] for k in ["_step", *(keys or r)] if k in r} for r in rows]


class FakeRuns:
    """A lazy paginator like wandb's Runs: one request per page, resumable after a failed page."""

    def __init__(self, runs: list[FakeRun], per_page: int, fail_pages: dict[int, list[Exception]]) -> None:
        self.all = runs
        self.per_page = per_page
        self.objects: list[FakeRun] = []
        self.index = -1
        self.pages_loaded = 0
        self.fail_pages = fail_pages

    def __iter__(self) -> "FakeRuns":
        self.index = -1
        return self

    def __next__(self) -> FakeRun:
        self.index += 1
        if self.index >= len(self.objects):
            start = len(self.objects)
            if start >= len(self.all):
                raise StopIteration
            page = start // self.per_page
            if self.fail_pages.get(page):
                raise self.fail_pages[page].pop(0)
            self.objects.extend(self.all[start:start + self.per_page])
            self.pages_loaded += 1
        return self.objects[self.index]

    @property
    def _length(self) -> int:
        return len(self.all)


class FakeApi:
    """The few wandb.Api methods the adapter uses."""

    def __init__(self, n_runs: int = 23, projects: tuple[str, ...] = ("sweep", "other")) -> None:
        self.runs_by_project = {"sweep": [FakeRun(i) for i in range(n_runs)]}
        self.projects_list = projects
        self.calls: list[dict[str, Any]] = []
        self.paginators: list[FakeRuns] = []
        self.fail_pages: dict[int, list[Exception]] = {}
        self.runs_errors: list[Exception] = []

    def runs(self, path: str, filters: dict | None = None, order: str = "+created_at", per_page: int = 50,
             lazy: bool = True) -> FakeRuns:
        self.calls.append({"path": path, "filters": filters, "per_page": per_page, "lazy": lazy})
        if self.runs_errors:
            raise self.runs_errors.pop(0)
        project = path.split("/")[-1]
        if project not in self.runs_by_project:
            raise ValueError(f"Could not find project {project}")
        pager = FakeRuns(self.runs_by_project[project], per_page, self.fail_pages)
        self.paginators.append(pager)
        return pager

    def projects(self, entity: str | None = None) -> list[Any]:
        return [type("Project", (), {"name": n})() for n in self.projects_list]


def tracker_for(api: FakeApi, **kwargs: Any) -> WandbTracker:
    """A tracker wired to the double, without backoff sleeps."""
    params = {"entity": "team", "project": "sweep", "per_page": 5, "backoff": 0.0, "retries": 3,
              "max_workers": 4, "progress": False, **kwargs}
    return WandbTracker(api_factory=lambda: api, **params)


def expected_frame(run: FakeRun, keys: list[str]) -> pd.DataFrame:
    """The full logged history of the keys, wide, NaN where not logged."""
    frame = pd.DataFrame(run.rows).rename(columns={"_step": "step"})
    frame = frame.reindex(columns=["step", *keys])
    return frame.dropna(subset=keys, how="all").reset_index(drop=True)


@pytest.fixture(autouse=True)
def _no_real_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline env; a real wandb.Api must never be constructed here."""
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
                       "WANDB_DIR": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "cfg")}.items():
        monkeypatch.setenv(key, value)
    try:
        import wandb

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("a real wandb.Api was constructed in a test")

        monkeypatch.setattr(wandb, "Api", refuse)
    except ImportError:
        pass


def test_pagination_lists_every_page() -> None:
    api = FakeApi(n_runs=23)
    tracker = tracker_for(api)
    runs = tracker.list_runs(Selection())
    assert len(runs) == 23 and runs["run_id"].is_unique
    assert api.paginators[0].pages_loaded == 5  # 23 runs at 5 per page
    assert api.calls[0]["per_page"] == 5 and api.calls[0]["path"] == "team/sweep" and api.calls[0]["lazy"] is False
    row = runs.set_index("run_id").loc["run004"]
    assert row["config.lr"] == 3e-3 and row["config.optim.name"] == "adam" and row["tags"] == "sweep,t0"
    assert row["summary.loss"] == api.runs_by_project["sweep"][4].rows[-1]["loss"]
    assert not [c for c in runs.columns if "._" in c or c.startswith("summary._")]
    assert isinstance(row["created_at"], pd.Timestamp) and row["created_at"].tz is not None


def test_filters_sweep_and_selection_pushed_down() -> None:
    api = FakeApi(n_runs=6)
    tracker = tracker_for(api, filters={"config.bs": 32}, sweep="abc123")
    runs = read_runset(tracker, Selection(state=["finished"], config={"bs": 32}), ["loss"]).runs
    sent = api.calls[0]["filters"]
    assert {"config.bs": 32} in sent["$and"] and {"sweep": "abc123"} in sent["$and"]
    assert {"state": {"$in": ["finished"]}} in sent["$and"]
    assert set(runs["config.bs"]) == {32}  # read_runset applies the Selection client-side as well


def test_full_history_key_by_key_joined_on_step() -> None:
    api = FakeApi(n_runs=4)
    tracker = tracker_for(api)
    keys = ["loss", "norm", "acc"]
    rs = read_runset(tracker, Selection(), keys)
    for run in api.runs_by_project["sweep"]:
        got = rs.history[rs.history["run_id"] == run.id].drop(columns="run_id").reset_index(drop=True)
        want = expected_frame(run, keys)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
        assert sorted(c["keys"][0] for c in run.scan_calls) == sorted(keys)
        assert all(len(c["keys"]) == 1 and c["page_size"] == 10000 for c in run.scan_calls)
        assert run.history_calls == 0  # never the 500-row sample
    assert any("never logged 'acc'" in w for w in rs.warnings)


def test_all_keys_from_summary_when_none() -> None:
    api = FakeApi(n_runs=2)
    tracker = tracker_for(api)
    history = tracker.read_history(tracker.list_runs(Selection()), None)
    assert set(history.columns) == {"run_id", "step", "loss", "norm", "acc"}


def test_retries_on_429_then_success() -> None:
    api = FakeApi(n_runs=12)
    api.fail_pages = {1: [FakeHTTPError(429)], 2: [TimeoutError("read timed out")]}
    api.runs_by_project["sweep"][3].failures = [FakeHTTPError(429), FakeHTTPError(503)]
    tracker = tracker_for(api)
    runs = tracker.list_runs(Selection())
    assert len(runs) == 12 and api.paginators[0].pages_loaded == 3  # resumed, no page fetched twice
    history = tracker.read_history(runs, ["loss"])
    assert len(history) == 12 * 250
    assert len(api.runs_by_project["sweep"][3].scan_calls) == 3


def test_failure_after_max_retries_is_one_line() -> None:
    api = FakeApi(n_runs=2)
    api.runs_by_project["sweep"][1].failures = [FakeHTTPError(429, "429 Too Many Requests\nretry later")] * 10
    tracker = tracker_for(api, retries=2)
    runs = tracker.list_runs(Selection())
    with pytest.raises(UserError) as info:
        tracker.read_history(runs, ["loss"])
    message = str(info.value)
    assert "\n" not in message and "after 3 attempts" in message and "run001" in message


def test_backoff_grows_exponentially(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(online.time, "sleep", sleeps.append)
    monkeypatch.setattr(online.random, "random", lambda: 1.0)
    calls = iter([FakeHTTPError(500), FakeHTTPError(502), FakeHTTPError(429), "ok"])

    def flaky() -> str:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert online.with_retries(flaky, "x", retries=5, backoff=0.5, max_backoff=1.5) == "ok"
    assert sleeps == [0.5, 1.0, 1.5]
    with pytest.raises(UserError, match="HTTP 401"):
        online.with_retries(lambda: (_ for _ in ()).throw(FakeHTTPError(401)), "x", 5, 0.0)


def test_no_api_key_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    started = time.perf_counter()
    with pytest.raises(UserError, match="no API key") as info:
        WandbTracker(entity="team", project="sweep").list_runs(Selection())
    assert time.perf_counter() - started < 3
    assert "\n" not in str(info.value)


@pytest.mark.needs_wandb
def test_no_network_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    started = time.perf_counter()
    with pytest.raises(UserError, match="cannot reach") as info:
        WandbTracker(project="sweep", connect_timeout=1.0).list_runs(Selection())
    assert time.perf_counter() - started < 3 and SECRET not in str(info.value)


def test_slow_api_construction_is_bounded() -> None:
    def slow() -> FakeApi:
        time.sleep(3)
        return FakeApi()

    started = time.perf_counter()
    with pytest.raises(UserError, match="longer than"):
        WandbTracker(project="sweep", timeout=0.3, api_factory=slow).list_runs(Selection())
    assert time.perf_counter() - started < 2


def test_secret_never_in_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", SECRET)

    def leaky() -> FakeApi:
        raise RuntimeError(f"login failed for api_key={SECRET}")

    with pytest.raises(UserError) as info:
        WandbTracker(project="sweep", api_factory=leaky).list_runs(Selection())
    assert SECRET not in str(info.value) and "***" in str(info.value)
    api = FakeApi(n_runs=1)
    api.runs_by_project["sweep"][0].failures = [FakeHTTPError(500, f"boom {SECRET}")] * 5
    tracker = tracker_for(api, retries=1)
    with pytest.raises(UserError) as info:
        tracker.read_history(tracker.list_runs(Selection()), ["loss"])
    assert SECRET not in str(info.value)
    assert all(SECRET not in w for w in tracker.warnings)


def test_wrong_project_lists_projects() -> None:
    api = FakeApi(n_runs=2, projects=("sweep", "baselines"))
    with pytest.raises(UserError, match="project 'swep' not found.*baselines, sweep"):
        tracker_for(api, project="swep").list_runs(Selection())


def test_missing_project_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_PROJECT", raising=False)  # the tracker takes its project from there too
    with pytest.raises(UserError, match="tracker.project"):
        WandbTracker(api_factory=FakeApi).list_runs(Selection())


def test_sample_mode_uses_sampled_history_and_warns() -> None:
    api = FakeApi(n_runs=1)
    tracker = tracker_for(api, sample=True)
    rs = read_runset(tracker, Selection(), ["loss"])
    run = api.runs_by_project["sweep"][0]
    assert run.history_calls == 1 and not run.scan_calls
    assert 0 < len(rs.history) < 250 and any("sample" in w for w in rs.warnings)


def test_cache_never_refetches_finished_runs(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    api = FakeApi(n_runs=3)
    settings = {"enabled": True, "dir": str(tmp_path / "cache")}
    first = tracker_for(api)
    first.configure(cache=settings, progress=False)
    a = first.read_history(first.list_runs(Selection()), ["loss", "norm"])
    calls = sum(len(r.scan_calls) for r in api.runs_by_project["sweep"])
    second = tracker_for(api)
    second.configure(cache=settings, progress=False)
    b = second.read_history(second.list_runs(Selection()), ["loss", "norm"])
    assert sum(len(r.scan_calls) for r in api.runs_by_project["sweep"]) == calls
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False)
    assert np.isfinite(b["loss"]).all()


def test_running_run_fetched_past_cached_step(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    api = FakeApi(n_runs=1)
    run = api.runs_by_project["sweep"][0]
    run.state, full = "running", run.rows
    run.rows = full[:100]
    settings = {"enabled": True, "dir": str(tmp_path / "cache")}
    tracker = tracker_for(api)
    tracker.configure(cache=settings, progress=False)
    tracker.read_history(tracker.list_runs(Selection()), ["loss"])
    run.rows, run._attrs = full, {"heartbeatAt": "later"}
    history = tracker.read_history(tracker.list_runs(Selection()), ["loss"])
    assert run.scan_calls[-1]["min_step"] == 100
    assert history["step"].tolist() == list(range(250))


def test_config_file_builds_tracker() -> None:
    from toolkit.trackers import make_tracker

    tracker = make_tracker("wandb", {"path": "somewhere"})
    assert isinstance(tracker, WandbTracker) and tracker.is_offline
