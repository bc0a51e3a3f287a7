"""History cache: file layout, atomic/corrupt files, and the MLflow adapter's use of it on a real store."""
from __future__ import annotations

import pandas as pd
import pandas.testing as pdt
import pytest

from toolkit.cache import HistoryCache, keys_hash, safe_name

KEYS = ["loss", "acc"]


def _frame(steps: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"step": range(steps), "loss": [float(s) for s in range(steps)], "acc": [0.5] * steps})


def test_safe_names_are_unique_and_file_safe():
    assert safe_name("abc123") == "abc123"
    weird = [safe_name(x) for x in ("a/b", "a:b", "../..", "a b", "a" * 300)]
    assert len(set(weird)) == 5
    assert all("/" not in w and not w.startswith(".") and len(w) <= 80 for w in weird)
    assert keys_hash(["b", "a"]) == keys_hash(["a", "b", "a"]) != keys_hash(["a"])


def test_roundtrip_layout_and_settings(tmp_path):
    assert HistoryCache.from_settings({"enabled": False, "dir": str(tmp_path)}, "mlflow", "p") is None
    cache = HistoryCache.from_settings({"enabled": True, "dir": str(tmp_path)}, "mlflow", "my/exp")
    path = cache.save("run:1", KEYS, _frame(), version="v1")
    assert path == tmp_path / "mlflow" / safe_name("my/exp") / safe_name("run:1") / f"{keys_hash(KEYS)}.parquet"
    hit = cache.load("run:1", ["acc", "loss"])
    assert hit.version == "v1" and hit.last_step == 4
    pdt.assert_frame_equal(hit.frame, _frame()[["step", "acc", "loss"]])
    assert cache.load("run:1", ["loss"]) is None  # another key set is another file
    assert HistoryCache(tmp_path, "mlflow", "my/exp", refresh=True).load("run:1", KEYS) is None


def test_corrupt_and_leftover_files_are_ignored(tmp_path):
    cache = HistoryCache(tmp_path, "mlflow", "exp")
    path = cache.save("r1", KEYS, _frame(), version="v1")
    (path.parent / f".{path.name}.abc.tmp").write_bytes(b"half a parquet")  # a write killed midway
    assert cache.load("r1", KEYS) is not None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    assert cache.load("r1", KEYS) is None
    path.write_bytes(b"")
    assert cache.load("r1", KEYS) is None
    cache.save("r1", KEYS, _frame(3), version="v2")
    assert cache.load("r1", KEYS).last_step == 2


def test_progress_bars_only_on_a_terminal(monkeypatch):
    import io
    import sys

    from toolkit.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    with progress_bar(3, "fetching runs") as bar:
        assert not bar.disable and bar.total == 3
        bar.update(3)
    assert "fetching runs" in sys.stderr.getvalue()
    with progress_bar(3, "fetching runs", enabled=False) as bar:  # progress=false
        assert bar.disable
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, CI
    with progress_bar(3, "fetching runs") as bar:
        assert bar.disable
        bar.update(3)
    assert sys.stderr.getvalue() == ""


# ---------------------------------------------------------------- the MLflow adapter with the cache
pytest.importorskip("mlflow")

from adapters.mlflow import MlflowTracker  # noqa: E402
from mlflow_fixtures import write_sweep  # noqa: E402
from toolkit.protocol import read_runset  # noqa: E402
from toolkit.runset import Selection  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store: three finished runs and one running run (its writer is returned to log more)."""
    root = tmp_path_factory.mktemp("cache_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    write_sweep(uri, experiment="cached", n_runs=3, n_steps=50)
    writer = MlflowTracker(uri=uri, experiment="cached").start_run("live", {"lr": 0.1})
    for step in range(20):
        writer.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 100}, step)
    writer.flush()
    return {"uri": uri, "writer": writer}


def _read(store, cache_dir, refresh=False, fast_path="sql"):
    tracker = MlflowTracker(uri=store["uri"], experiment="cached", fast_path=fast_path)
    tracker.configure(cache={"enabled": True, "dir": str(cache_dir), "refresh": refresh}, progress=False)
    return read_runset(tracker, Selection(), KEYS), tracker


def _uncached(store):
    tracker = MlflowTracker(uri=store["uri"], experiment="cached")
    return read_runset(tracker, Selection(), KEYS)


def _same(a, b):
    pdt.assert_frame_equal(a.normalized().history, b.normalized().history)
    pdt.assert_frame_equal(a.normalized().runs, b.normalized().runs)


def test_second_read_fetches_nothing_and_refresh_forces(store, tmp_path):
    first, t1 = _read(store, tmp_path)
    assert t1.stats["fetched_runs"] == 4 and t1.stats["queries"] >= 1
    second, t2 = _read(store, tmp_path)
    assert t2.stats["fetched_runs"] == 0 and t2.stats["queries"] == 0 and t2.stats["cached_runs"] == 4
    _same(first, second)
    _same(second, _uncached(store))
    third, t3 = _read(store, tmp_path, refresh=True)
    assert t3.stats["fetched_runs"] == 4
    _same(third, first)


def test_running_run_fetches_only_new_steps(store, tmp_path):
    _read(store, tmp_path)
    writer = store["writer"]
    for step in range(20, 30):
        writer.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 100}, step)
    writer.flush()
    runset, tracker = _read(store, tmp_path)
    assert tracker.stats["fetched_runs"] == 1 and tracker.stats["incremental_runs"] == 1
    assert tracker.stats["cached_runs"] == 3
    _same(runset, _uncached(store))
    live = runset.runs.loc[runset.runs["name"] == "live", "run_id"].iloc[0]
    assert runset.history.loc[runset.history["run_id"] == live, "step"].max() == 29
    writer.finish()
    finished, after_finish = _read(store, tmp_path)
    _same(finished, _uncached(store))
    # its state changed, not one of its points: checked against the store (a count per key), not fetched again
    assert after_finish.stats["fetched_runs"] == 0 and after_finish.stats["verified_runs"] == 1
    _, settled = _read(store, tmp_path)
    assert settled.stats["fetched_runs"] == 0  # a finished run is never fetched twice


def test_corrupt_cache_file_is_refetched(store, tmp_path):
    first, _ = _read(store, tmp_path)
    files = sorted((tmp_path / "mlflow" / "cached").rglob("*.parquet"))
    assert len(files) == 4
    files[0].write_bytes(files[0].read_bytes()[:100])
    again, tracker = _read(store, tmp_path)
    assert tracker.stats["fetched_runs"] == 1 and tracker.stats["cached_runs"] == 3
    _same(again, first)


def test_client_path_uses_the_same_cache(store, tmp_path):
    first, _ = _read(store, tmp_path, fast_path="client")
    second, tracker = _read(store, tmp_path, fast_path="sql")
    assert tracker.stats["fetched_runs"] == 0
    _same(first, second)


def test_key_that_starts_late_in_a_running_run_is_read_in_full(tmp_path):
    uri = f"sqlite:///{tmp_path / 'late.db'}"
    writer = MlflowTracker(uri=uri, experiment="late").start_run("live", {"lr": 0.1})
    for step in range(20):
        writer.log_metrics({"loss": float(step)}, step)
    writer.flush()

    def read(cache: bool):
        tracker = MlflowTracker(uri=uri, experiment="late")
        tracker.configure(cache={"enabled": cache, "dir": str(tmp_path / "cache")}, progress=False)
        return read_runset(tracker, Selection(), KEYS), tracker

    read(True)
    for step in (5, 10, 15):  # an eval metric logged late, at steps the cache already covers for `loss`
        writer.log_metrics({"acc": step / 100}, step)
    for step in range(20, 25):
        writer.log_metrics({"loss": float(step)}, step)
    writer.flush()
    runset, tracker = read(True)
    assert tracker.stats["incremental_runs"] == 1
    _same(runset, read(False)[0])
    assert runset.history["acc"].notna().sum() == 3 and runset.history["step"].max() == 24
