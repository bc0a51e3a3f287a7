"""publish=<tracker>: a finished run's results published back to a tracker as one run ``sweepkit/<title>``.

End to end through ``run.py`` in a subprocess on the bundled example sweep, published to a real MLflow sqlite store
and to real W&B offline run folders (WANDB_MODE=offline), then read back with the MLflow client and with the toolkit's
own W&B offline reader: the config (source, selection, command), the metrics (lr* of minima.csv, the regressions'
exponents and CIs, exactly), the artifacts (tables, figures, summaries, report). Fake keys are planted in the
environment (as tests/test_secrets.py does) and a URL password on the command line (in the title: the free text a
successful run carries into the published run's name, its config and the command line W&B records); none of them,
nor the marker they all carry, may appear in anything the tracker stored. An unreachable server (retries 0) and a
missing extra are warnings: exit 0, local results complete. The local tracker's write side is published to in
process (no extra needed), also with an analysis that fails. TensorBoard is tested once conf/tracker/tensorboard.yaml
exists.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from toolkit import pipeline
from toolkit.errors import UserError
from toolkit.publish import PublishTarget, resolve_publish, summary_metrics
from toolkit.runset import Selection
from toolkit.secrets import MASK
from toolkit.settings import CONF_DIR, register_schemas

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = register_schemas(CONF_DIR)
MARK = "zq7s3kr1t"  # in every planted value: a partial leak is caught too
ENV_SECRETS = {
    "WANDB_API_KEY": f"{MARK}wandbkey0123456789abcdef0123456789abcd",
    "MLFLOW_TRACKING_TOKEN": f"{MARK}-mlflow-token-5b1e9c",
    "MLFLOW_TRACKING_PASSWORD": f"{MARK}-mlflow-password-77d2",
}
URL_PASSWORD = f"{MARK}-url-password-4d1a"
TITLE = f"lr sweep http://alice:{URL_PASSWORD}@127.0.0.1:5000"
MASKED_TITLE = f"lr sweep http://alice:{MASK}@127.0.0.1:5000"
PLANTED = [*ENV_SECRETS.values(), URL_PASSWORD]
FAST = ["analysis=[minima,regressions]", "analysis.regressions.bootstrap.n=0", "analysis.minima.bootstrap.n=20",
        "analysis.minima.max_panels=4"]


def run_cli(tmp: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """run.py in a subprocess with the fake keys in its environment (no tracker URI or W&B setting of the caller's)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_"))}
    full.update(ENV_SECRETS, MPLBACKEND="Agg", SWEEPKIT_CACHE_DIR=str(tmp / "cache"), PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp, env=full, capture_output=True,
                          text=True, timeout=timeout)


def wandb_env(tmp: Path) -> dict[str, str]:
    """Offline W&B that keeps its own files under ``tmp`` (console capture left on: output.log is searched too)."""
    return {"WANDB_MODE": "offline", "WANDB_DISABLE_GIT": "true", "WANDB_DIR": str(tmp),
            "WANDB_CONFIG_DIR": str(tmp / ".wandb-config"), "WANDB_CACHE_DIR": str(tmp / ".wandb-cache"),
            "WANDB_DATA_DIR": str(tmp / ".wandb-data")}


def leaks(roots: Iterable[Path], texts: Iterable[str] = ()) -> list[str]:
    """Where a planted value or the marker appears: every file under ``roots`` (as bytes), and ``texts``."""
    found = []
    for root in roots:
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            data = path.read_bytes()
            found += [f"{path}: {v}" for v in PLANTED if v.encode() in data]
            found += [f"{path}: {MARK}"] if MARK.encode() in data.lower() else []
    for i, text in enumerate(texts):
        found += [f"output #{i}: {MARK}"] if MARK in text.lower() else []
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_lr_star(run_dir: Path) -> dict[str, float]:
    """``minima/lr_star/h_<horizon>/bs_<bs>`` -> lr of every row of the run's minima.csv (read here, independently)."""
    minima = pd.read_csv(run_dir / "minima" / "minima.csv")
    assert len(minima) >= 4 and list(minima.columns[:3]) == ["horizon", "bs", "lr"]
    return {f"minima/lr_star/h_{int(r.horizon)}/bs_{int(r.bs)}": float(r.lr) for r in minima.itertuples()}


def expected_exponents(run_dir: Path) -> dict[str, float]:
    """The regressions' alpha/beta/gamma with their CI bounds, from its summary.json."""
    fit = json.loads((run_dir / "regressions" / "summary.json").read_text())["lr_vs_bs_horizon"]
    out = {}
    for name in ("alpha", "beta", "gamma"):
        out[f"regressions/lr_vs_bs_horizon/{name}"] = fit[name]
        out[f"regressions/lr_vs_bs_horizon/{name}_ci_low"] = fit[f"{name}_ci"][0]
        out[f"regressions/lr_vs_bs_horizon/{name}_ci_high"] = fit[f"{name}_ci"][1]
    return out


def result_files(run_dir: Path) -> set[str]:
    """What must be published as artifacts: each analysis' CSVs, PNGs and summary.json, config.json, the reports."""
    names = {"config.json", "report.md", "report.html"}
    for adir in (run_dir / "minima", run_dir / "regressions"):
        names |= {f"{adir.name}.{p.name}" for p in adir.iterdir() if p.suffix in (".csv", ".png")}
        names.add(f"{adir.name}.summary.json")
    assert any(n.endswith(".png") for n in names) and any(n.endswith(".csv") for n in names)
    return names


@pytest.fixture()
def compose_cfg():
    def _compose(overrides: list[str]):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides)

    return _compose


# ------------------------------------------------------------------------------------------- end to end
@pytest.mark.needs_mlflow
def test_publish_to_mlflow_end_to_end(tmp_path):
    from mlflow import MlflowClient

    store = tmp_path / "store"
    uri = f"sqlite:///{store / 'results.db'}"
    out = tmp_path / "run"
    proc = run_cli(tmp_path, *FAST, f"title='{TITLE}'", "publish=mlflow", f"publish.settings.uri={uri}",
                   "publish.settings.experiment=results", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert status["publish"]["status"] == "published", status
    assert not [w for w in status["warnings"] if w.startswith("publish")]

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("results").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == f"sweepkit/{MASKED_TITLE}" and run.info.status == "FINISHED"
    assert status["publish"]["run_id"] == run.info.run_id
    params = run.data.params
    assert params["source.tracker"] == "local" and params["sweepkit.analyses"] == "minima,regressions"
    assert params["sweepkit.title"] == MASKED_TITLE and params["select.name_regex"] == "None"
    assert "publish=mlflow" in params["sweepkit.command"] and f"alice:{MASK}@" in params["sweepkit.command"]
    metrics = run.data.metrics
    lr_star = expected_lr_star(out)
    assert {k: metrics.get(k) for k in lr_star} == lr_star  # exactly the values of minima.csv
    assert {k: metrics.get(k) for k in expected_exponents(out)} == expected_exponents(out)
    assert metrics["minima/n_fitted"] == json.loads((out / "minima" / "summary.json").read_text())["n_fitted"]
    assert not [k for k in metrics if "/settings/" in k or "warnings" in k]

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert result_files(out) <= artifacts, result_files(out) - artifacts
    got = Path(client.download_artifacts(run.info.run_id, "minima.minima.csv", str(tmp_path / "dl")))
    assert got.read_text() == (out / "minima" / "minima.csv").read_text()
    report = Path(client.download_artifacts(run.info.run_id, "report.md", str(tmp_path / "dl"))).read_text()
    assert "published to mlflow" in report and run.info.run_id in report  # the uploaded report names its run
    assert run.info.run_id in (out / "report.md").read_text() and "results" in status["publish"]["target"]
    assert leaks([store, tmp_path / "dl"], [proc.stdout, proc.stderr]) == []


@pytest.mark.needs_wandb
def test_publish_to_wandb_offline_end_to_end(tmp_path):
    from adapters.wandb import WandbTracker

    folder = tmp_path / "wandb"
    out = tmp_path / "run"
    proc = run_cli(tmp_path, *FAST, f"title='{TITLE}'", "publish=wandb", f"publish.settings.path={folder}",
                   f"hydra.run.dir={out}", env=wandb_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert status["publish"]["status"] == "published", status

    tracker = WandbTracker(path=str(folder))  # the toolkit's own offline reader
    runs = tracker.list_runs(Selection())
    assert len(runs) == 1, runs
    run = runs.iloc[0]
    assert run["name"] == f"sweepkit/{MASKED_TITLE}" and run["state"] == "finished"
    assert run["run_id"] == status["publish"]["run_id"]
    assert run["config.source.tracker"] == "local" and run["config.sweepkit.analyses"] == "minima,regressions"
    assert "publish=wandb" in run["config.sweepkit.command"]
    lr_star, exponents = expected_lr_star(out), expected_exponents(out)
    assert {k: run[f"summary.{k}"] for k in lr_star} == lr_star
    assert {k: run[f"summary.{k}"] for k in exponents} == exponents
    history = tracker.read_history(runs, list(lr_star))
    assert history["step"].tolist() == [0]
    assert {k: history[k].iloc[0] for k in lr_star} == lr_star
    files = {p.name for p in folder.glob("*run-*/files/*")}
    assert result_files(out) <= files, result_files(out) - files
    assert leaks([folder], [proc.stdout, proc.stderr]) == []


@pytest.mark.needs_mlflow
def test_a_failed_publish_is_a_warning_and_the_local_results_stay(tmp_path):
    url = f"http://alice:{URL_PASSWORD}@127.0.0.1:{free_port()}"  # nothing listens there
    out = tmp_path / "run"
    proc = run_cli(tmp_path, "analysis=[minima]", "analysis.minima.bootstrap.n=20", "analysis.minima.max_panels=4",
                   "publish=mlflow", f"publish.settings.uri={url}", "publish.settings.retries=0",
                   "publish.settings.timeout=5", f"hydra.run.dir={out}", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"results: {out}" in proc.stdout
    status = json.loads((out / "status.json").read_text())
    assert status["analyses"]["minima"]["status"] == "ok" and status["error"] is None
    assert status["publish"]["status"] == "failed"
    warning = [w for w in status["warnings"] if w.startswith("publish:")]
    assert len(warning) == 1 and "127.0.0.1" in warning[0] and f"alice:{MASK}@" in warning[0], status["warnings"]
    assert "local results are complete" in warning[0]
    report = (out / "report.md").read_text()
    assert "not published to mlflow" in report and warning[0] in report
    assert (out / "minima" / "minima.csv").is_file() and (out / "report.html").is_file()
    assert leaks([tmp_path], [proc.stdout, proc.stderr]) == []


@pytest.mark.needs_wandb
def test_a_missing_extra_is_a_warning(tmp_path, monkeypatch, compose_cfg):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails as if the extra were not installed
    cfg = compose_cfg(["analysis=[minima]", "analysis.minima.plots=false", "analysis.minima.bootstrap.n=0",
                       "publish=wandb", f"publish.settings.path={tmp_path / 'wandb'}"])
    status = pipeline.run(cfg, tmp_path / "run")
    assert pipeline.exit_code(status) == 0 and status["publish"]["status"] == "failed"
    warning = [w for w in status["warnings"] if w.startswith("publish:")]
    assert len(warning) == 1 and "sweepkit[wandb]" in warning[0], status["warnings"]
    assert warning[0] in json.loads((tmp_path / "run" / "status.json").read_text())["warnings"]
    assert (tmp_path / "run" / "minima" / "minima.csv").is_file()
    assert not (tmp_path / "wandb").exists()


def test_publish_to_the_local_tracker_in_process_also_after_a_failed_analysis(tmp_path, compose_cfg):
    from adapters.local import LocalTracker

    published = tmp_path / "published"
    # scaling_laws needs columns the lr_bs_sweep table has not: it fails (input), minima's results are published
    cfg = compose_cfg(["analysis=[minima,scaling_laws]", "analysis.minima.bootstrap.n=20", "analysis.minima.plots=false",
                       "publish=local", f"publish.settings.path={published}", "publish.name=my-results"])
    status = pipeline.run(cfg, tmp_path / "run")
    assert pipeline.exit_code(status) == 2 and status["analyses"]["scaling_laws"]["status"] == "failed"
    assert status["publish"]["status"] == "published", status
    tracker = LocalTracker(path=str(published))
    runs = tracker.list_runs(Selection())
    assert runs["name"].tolist() == ["my-results"] and runs["state"].tolist() == ["failed"]  # partial results
    assert runs["config.sweepkit.failed"].tolist() == ["scaling_laws"]
    lr_star = expected_lr_star(tmp_path / "run")
    history = tracker.read_history(runs, list(lr_star))
    assert {k: history[k].iloc[0] for k in lr_star} == lr_star
    artifacts = {p.name for p in published.glob("*/artifacts/*")}
    assert {"minima.minima.csv", "minima.points.csv", "minima.summary.json", "report.md", "report.html",
            "config.json"} <= artifacts and not [a for a in artifacts if a.startswith("scaling_laws.")]


def test_publish_to_tensorboard_once_that_tracker_exists(tmp_path, compose_cfg):
    if not (CONF_DIR / "tracker" / "tensorboard.yaml").is_file():
        pytest.skip("conf/tracker/tensorboard.yaml does not exist yet")
    pytest.importorskip("tensorboard")
    pytest.importorskip("torch")  # the tensorboard tracker writes with torch's SummaryWriter
    if ("tracker", "tensorboard") not in SCHEMAS:
        pytest.skip("the tensorboard tracker's module does not import here")
    logdir = tmp_path / "tb"
    cfg = compose_cfg(["analysis=[minima]", "analysis.minima.bootstrap.n=20", "analysis.minima.plots=false",
                       "publish=tensorboard", f"publish.settings.path={logdir}"])
    status = pipeline.run(cfg, tmp_path / "run")
    assert pipeline.exit_code(status) == 0 and status["publish"]["status"] == "published", status
    from toolkit.trackers import make_tracker

    tracker = make_tracker("tensorboard", {"path": str(logdir)})  # read back with the tracker's own reader
    runs = tracker.list_runs(Selection())
    assert runs["name"].tolist() == ["sweepkit/Sweep analysis"]
    lr_star = expected_lr_star(tmp_path / "run")
    history = tracker.read_history(runs, list(lr_star))
    assert {k: history[k].dropna().iloc[0] for k in lr_star} == lr_star
    artifacts = {p.name for p in logdir.rglob("artifacts/*")}
    assert {"minima.minima.csv", "minima.summary.json", "report.md", "report.html", "config.json"} <= artifacts


def test_every_tracker_with_a_write_side_can_be_published_to():
    """conf/publish/<name>.yaml for each tracker of conf/tracker/ whose class has start_run (a new tracker needs
    its own: a copy of conf/publish/local.yaml with the name changed)."""
    import yaml

    from toolkit.settings import locate, part_targets

    missing = []
    for (group, name), target in part_targets(CONF_DIR).items():
        if group != "tracker":
            continue
        try:
            writes = hasattr(locate(target, name), "start_run")
        except UserError:
            writes = True  # its module needs an extra not installed here: the file is checked anyway
        path = CONF_DIR / "publish" / f"{name}.yaml"
        if not writes:
            continue
        if not path.is_file():
            missing.append(name)
            continue
        data = yaml.safe_load(path.read_text())
        assert data["tracker"] == name and data["defaults"] == [f"/tracker/{name}@settings", "_self_"], path
    assert missing == [], f"no conf/publish/<name>.yaml for {missing}"


# ------------------------------------------------------------------------------------------- settings and keys
def test_publish_is_off_by_default_and_each_file_types_its_trackers_settings(compose_cfg):
    assert compose_cfg([]).publish is None and pipeline.resolve(compose_cfg([])).publish is None
    for path in sorted((CONF_DIR / "publish").glob("*.yaml")):
        name = path.stem
        if ("tracker", name) not in SCHEMAS:
            continue  # its tracker does not exist (yet) or needs an extra whose module does not import here
        cfg = compose_cfg([f"publish={name}"])
        assert cfg.publish.tracker == name
        assert OmegaConf.get_type(cfg.publish.settings) is SCHEMAS[("tracker", name)]
        target = pipeline.resolve(cfg).publish
        assert isinstance(target, PublishTarget) and target.tracker == name and target.node["_target_"]
    assert compose_cfg(["publish=mlflow"]).publish.settings.experiment == "sweepkit"  # not the sweep's own


@pytest.mark.parametrize("override, key", [("publish.settings.urii=x", "urii"), ("publish.nme=x", "nme"),
                                           ("publish.settings.retries=lots", "retries")])
def test_a_bad_publish_setting_fails_when_composing(compose_cfg, override, key):
    with pytest.raises(Exception, match=key):
        compose_cfg(["publish=mlflow", override])


def test_publish_settings_are_checked_before_any_work(compose_cfg, tmp_path):
    with pytest.raises(UserError, match="not the wandb tracker's"):
        pipeline.resolve(compose_cfg(["publish=mlflow", "publish.tracker=wandb"]))
    with pytest.raises(UserError, match="unknown tracker 'nope'"):
        resolve_publish({"tracker": "nope"})
    with pytest.raises(UserError, match="publish.tracker"):
        resolve_publish({"settings": {"path": "x"}})
    # a plain mapping (a notebook): the tracker's file gives the rest, its schema checks the keys
    target = resolve_publish({"tracker": "local", "settings": {"path": str(tmp_path)}})
    assert target.node["_target_"] == "adapters.local.LocalTracker" and target.node["path"] == str(tmp_path)
    assert target.node["on_conflict"] == "error"
    with pytest.raises(UserError, match="pth"):
        resolve_publish({"tracker": "local", "settings": {"pth": "x"}})
    # through run.py: the run stops before any work
    proc = run_cli(tmp_path, "publish=local", "publish.settings.on_conflict=sometimes", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 2 and "on_conflict" in proc.stderr and not (tmp_path / "r" / "minima").exists()


def test_the_key_scheme_of_summaries(tmp_path):
    run = tmp_path / "run"
    for name, summary in {
        "fits": {"settings": {"n": 3}, "warnings": ["w"], "law": {"a": 0.5, "a_ci": [0.4, 0.6], "b_ci": [None, 1.0],
                                                                  "ok": True, "note": "x", "horizons": [1, 2]},
                 "n": 7, "nan": None, "odd key=1^2": 2.5},
        "minima": {"n_groups": 2},
    }.items():
        (run / name).mkdir(parents=True)
        (run / name / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame({"model": ["m1", "m1"], "horizon": [2**28, 3 * 10**8], "bs": [64, 128], "lr": [1e-3, 2e-3],
                  "loss": [3.1, 3.0], "lr_ci_low": [9e-4, None], "lr_ci_high": [1.1e-3, None]}
                 ).to_csv(run / "minima" / "minima.csv", index=False)
    (run / ".half.partial").mkdir()  # an unfinished analysis is not published
    (run / ".half.partial" / "summary.json").write_text('{"x": 1}')
    metrics, clashes = summary_metrics(run)
    assert metrics == {
        "fits/law/a": 0.5, "fits/law/a_ci_low": 0.4, "fits/law/a_ci_high": 0.6, "fits/law/b_ci_high": 1.0,
        "fits/n": 7.0, "fits/odd key_1_2": 2.5, "minima/n_groups": 2.0,
        "minima/lr_star/model_m1/h_268435456/bs_64": 1e-3, "minima/lr_star/model_m1/h_300000000/bs_128": 2e-3,
        "minima/lr_star_ci_low/model_m1/h_268435456/bs_64": 9e-4,
        "minima/lr_star_ci_high/model_m1/h_268435456/bs_64": 1.1e-3,
        "minima/loss_star/model_m1/h_268435456/bs_64": 3.1, "minima/loss_star/model_m1/h_300000000/bs_128": 3.0,
    }
    assert clashes == []
