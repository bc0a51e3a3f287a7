"""Secrets never reach the output folder or the console.

Fake keys are planted in the environment (WANDB_API_KEY, MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_PASSWORD), as
Hydra overrides under secret-looking keys (``+api_key``, ``+auth.password``, ``select.config.token``, which the
schemas refuse or keep, and ``tracker.api_key``) and in a URL (``http://user:PASSWORD@host``). Then ``run.py`` runs
end to end: a local tracker run on the bundled demo sweep, an MLflow run against a real sqlite store, failing runs
(composition errors, an unreachable server) and multiruns with a password in the tracker URL under every launcher. Every file under the
test's folder (run folders with config.json, status.json, run.log, report.md/html, summaries, CSVs, PNGs,
table.parquet as bytes and as cells, Hydra's files if any, the history cache) and the captured stdout/stderr are
searched for every planted value and for the marker every planted value carries.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pytest

from toolkit import secrets
from toolkit.secrets import MASK, ScrubbedStream, config_secrets, mask_config, override_secrets, scrub

ROOT = Path(__file__).resolve().parents[1]
MARK = "zq7s3kr1t"  # in every planted value, so a partial leak (a cut or re-quoted value) is caught too
ENV_SECRETS = {
    "WANDB_API_KEY": f"{MARK}wandbkey0123456789abcdef0123456789abcd",
    "MLFLOW_TRACKING_TOKEN": f"{MARK}-mlflow-token-5b1e9c",
    "MLFLOW_TRACKING_PASSWORD": f"{MARK}-mlflow-password-77d2",
}
OVERRIDE_SECRETS = {
    "api_key": f"{MARK}-override-apikey-3f9a",
    "password": f"{MARK}-override-password-0c1e",
    "token": f"{MARK}-override-token-c41d",
    "url_password": f"{MARK}-url-password-9e2b",
}
PLANTED = [*ENV_SECRETS.values(), *OVERRIDE_SECRETS.values()]
# keys no schema has: composing fails, and the message (which repeats the override) must not leak the value
REFUSED_OVERRIDES = [f"+api_key={OVERRIDE_SECRETS['api_key']}", f"+auth.password={OVERRIDE_SECRETS['password']}"]
# an open node (the runs' own config keys): composes, and the saved config masks it
PLANTED_OVERRIDES = [f"select.config.token={OVERRIDE_SECRETS['token']}"]
FAST = ["analysis=[minima]", "analysis.minima.bootstrap.n=20", "analysis.minima.max_panels=4"]
DEMO_GRID = ["--lr-log2", "-11,-10,-9,-8,-7,-6", "--batch-sizes", "32,64", "--seeds", "0", "--horizons-log2", "26,27",
             "--log-every-tokens", str(2**25), "--n-diverged", "1", "--no-progress"]


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    env.update(ENV_SECRETS, MPLBACKEND="Agg", SWEEPKIT_CACHE_DIR=str(tmp / "cache"), PYTHONPATH=str(ROOT))
    return env


def run_cli(tmp: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """run.py in a subprocess, with the fake keys in its environment and ``cwd`` under tmp."""
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp, env=_env(tmp), capture_output=True,
                          text=True, timeout=timeout)


def _needles(data: bytes) -> list[str]:
    low = data.lower()
    return [v for v in PLANTED if v.encode() in data] + ([MARK] if MARK.encode() in low else [])


def leaks(roots: Iterable[Path], texts: Iterable[str] = ()) -> list[str]:
    """Where a planted value (or the marker) appears: every file under ``roots`` (bytes; parquet cells too), texts."""
    found: list[str] = []
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            hits = _needles(path.read_bytes())
            if path.suffix == ".parquet":  # compressed pages could hide a string from a byte search
                frame = pd.read_parquet(path)
                hits += _needles((frame.astype(str).to_csv() + " ".join(map(str, frame.columns))).encode())
            found += [f"{path}: {h}" for h in dict.fromkeys(hits)]
    for i, text in enumerate(texts):
        found += [f"output #{i}: {h}" for h in _needles(text.encode())]
    return found


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_sqlite(tmp_path_factory) -> dict:
    """A real sqlite store with the demo sweep logged through the demo CLI, with the fake keys in the environment.

    Its own store (not the MLflow tests' session store: that one starts a server when a server test is selected).
    """
    pytest.importorskip("mlflow")
    from toolkit import demo

    root = tmp_path_factory.mktemp("secrets_store")
    uri, experiment = f"sqlite:///{root / 'mlflow.db'}", "secrets"
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for key, value in ENV_SECRETS.items():
            mp.setenv(key, value)
        mp.chdir(root)  # MLflow resolves a default artifact root against the working directory
        code = demo.main([*DEMO_GRID, "--tracker", "mlflow", "--tracker-arg", f"uri={uri}",
                          "--tracker-arg", f"experiment={experiment}"])
    assert code == 0, err.getvalue()[-2000:]
    return {"uri": uri, "experiment": experiment, "root": root, "output": [out.getvalue(), err.getvalue()]}


# ------------------------------------------------------------------------------------------- helpers, in process
def test_masking_and_scrubbing_helpers(monkeypatch):
    for key, value in ENV_SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(secrets, "_remembered", set())
    cfg = {"tracker": {"uri": f"http://alice:{OVERRIDE_SECRETS['url_password']}@h:5000", "api_key": "x" * 8,
                       "select": {"token": OVERRIDE_SECRETS["token"]}},
           "recipe": {"tokens_key": "tokens_seen", "author": "me", "flops_per_token": 6, "tokenizer": "gpt2"},
           "auth": {"password": OVERRIDE_SECRETS["password"]}}
    masked = mask_config(cfg)
    assert masked["tracker"]["uri"] == f"http://alice:{MASK}@h:5000"
    assert masked["tracker"]["api_key"] == MASK and masked["tracker"]["select"]["token"] == MASK
    assert masked["auth"] == MASK
    # settings that only look like secrets are kept: tokens_key (a metric name), flops_per_token, tokenizer, author
    assert masked["recipe"] == cfg["recipe"]
    assert set(config_secrets(cfg)) == {OVERRIDE_SECRETS["url_password"], "x" * 8, OVERRIDE_SECRETS["token"],
                                        OVERRIDE_SECRETS["password"]}
    assert OVERRIDE_SECRETS["api_key"] in override_secrets([f"+api_key={OVERRIDE_SECRETS['api_key']}", "a.b=3"])
    secrets.remember(config_secrets(cfg))
    text = f"{ENV_SECRETS['WANDB_API_KEY']} {OVERRIDE_SECRETS['token']} {OVERRIDE_SECRETS['password']} ok"
    assert scrub(text) == f"{MASK} {MASK} {MASK} ok"
    written: list[str] = []

    class Sink:
        def write(self, text):
            written.append(text)

        def isatty(self):
            return False

    stream = ScrubbedStream(Sink())
    stream.write(f"Error executing job with overrides: ['+tracker.token={OVERRIDE_SECRETS['token']}']\n")
    assert MARK not in "".join(written) and "+tracker.token=***" in written[0]
    assert stream.isatty() is False


# ------------------------------------------------------------------------------------------- run.py end to end
def test_local_run_on_the_bundled_demo_keeps_secrets_out(tmp_path):
    out = tmp_path / "out"
    # a selection on a secret-looking config key no run has: the run fails on its input, with the key named
    proc = run_cli(tmp_path, *PLANTED_OVERRIDES, *FAST, f"hydra.run.dir={tmp_path / 'sel'}")
    assert proc.returncode == 2 and "token" in proc.stderr, proc.stderr[-2000:]
    assert json.loads((tmp_path / "sel" / "config.json").read_text())["select"]["config"]["token"] == MASK
    assert leaks([tmp_path], [proc.stdout, proc.stderr]) == []
    proc = run_cli(tmp_path, *FAST, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"config.json", "status.json", "table.parquet", "report.html", "report.md", "minima/minima.csv",
            "minima/summary.json"} <= files_under(out)
    assert any(name.endswith(".png") for name in files_under(out))  # figures were made (and searched)
    assert not (out / ".hydra").exists()  # Hydra's unmasked copy of the config is switched off
    assert leaks([tmp_path], [proc.stdout, proc.stderr]) == []


def test_mlflow_run_against_a_sqlite_store_keeps_secrets_out(tmp_path, mlflow_sqlite):
    uri, experiment = mlflow_sqlite["uri"], mlflow_sqlite["experiment"]
    out = tmp_path / "out"
    proc = run_cli(tmp_path, "tracker=mlflow", f"tracker.uri={uri}", f"tracker.experiment={experiment}",
                   *FAST, "analysis.minima.max_loss=10", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "minima" / "minima.csv").is_file() and (out / "table.parquet").is_file()
    assert any((tmp_path / "cache").rglob("*")), "the MLflow history cache was not written (and not searched)"
    assert leaks([tmp_path, mlflow_sqlite["root"]], [proc.stdout, proc.stderr, *mlflow_sqlite["output"]]) == []


@pytest.mark.needs_mlflow
def test_failing_runs_keep_secrets_out_of_messages(tmp_path):
    uri = f"sqlite:///{tmp_path / 'never.db'}"  # the tracker fails before it opens the store
    outs = []
    # the schema refuses a key the tracker does not have; Hydra's message repeats the override, value included
    bad_key = run_cli(tmp_path, f"tracker.api_key={OVERRIDE_SECRETS['api_key']}", f"hydra.run.dir={tmp_path / 'a'}")
    assert bad_key.returncode == 2 and "api_key" in bad_key.stderr, bad_key.stderr[-2000:]
    outs.append(bad_key)
    for i, refused in enumerate(REFUSED_OVERRIDES):
        proc = run_cli(tmp_path, "tracker=mlflow", f"tracker.uri={uri}", refused, f"hydra.run.dir={tmp_path / f'b{i}'}")
        assert proc.returncode == 2 and refused.partition("=")[0][1:].split(".")[0] in proc.stderr, proc.stderr[-2000:]
        outs.append(proc)
    # bad input: an unreachable server with the password in its URL; the one-line error names the URL
    url = f"http://alice:{OVERRIDE_SECRETS['url_password']}@127.0.0.1:{free_port()}"
    down = run_cli(tmp_path, "tracker=mlflow", f"tracker.uri={url}", "tracker.experiment=secrets", "tracker.retries=0",
                   "tracker.timeout=5", f"hydra.run.dir={tmp_path / 'c'}")
    assert down.returncode == 2, down.stderr[-3000:]
    errors = [line for line in down.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0] and f"alice:{MASK}@" in errors[0], down.stderr[-2000:]
    outs.append(down)
    config = json.loads((tmp_path / "c" / "config.json").read_text())  # written before the tracker failed
    assert config["tracker"]["uri"].startswith(f"http://alice:{MASK}@")
    assert leaks([tmp_path], [text for p in outs for text in (p.stdout, p.stderr)]) == []


def test_multirun_keeps_secrets_out_of_the_sweep_folder(tmp_path):
    sweep = tmp_path / "multi"
    proc = run_cli(tmp_path, "-m", *FAST, "analysis.minima.plots=false",
                   "analysis.minima.horizons=[67108864],[134217728]", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"multirun.yaml", "sweep_summary.csv", "report.html", "0/job.json", "1/job.json",
            "0/config.json"} <= files_under(sweep)
    assert leaks([tmp_path], [proc.stdout, proc.stderr]) == []


@pytest.mark.parametrize("launcher", ["basic", "joblib", pytest.param("submitit_local", marks=pytest.mark.slow)])
def test_multirun_with_a_password_in_the_tracker_url(tmp_path, launcher):
    """Hydra records overrides with ':' escaped (http\\://user\\:password@host): still masked everywhere."""
    if launcher != "basic":
        pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    pytest.importorskip("mlflow")
    sweep = tmp_path / "multi"
    url = f"http://alice:{OVERRIDE_SECRETS['url_password']}@127.0.0.1:{free_port()}"
    proc = run_cli(tmp_path, "-m", f"hydra/launcher={launcher}", "tracker=mlflow", f"tracker.uri={url}",
                   "tracker.experiment=secrets", "tracker.retries=0", "tracker.timeout=2,3", f"hydra.sweep.dir={sweep}")
    assert proc.returncode != 0  # every job fails: the server is not there
    assert {"multirun.yaml", "sweep_summary.csv", "report.html", "0/job.json", "1/job.json"} <= files_under(sweep)
    assert "127.0.0.1" in (sweep / "sweep_summary.csv").read_text()
    assert leaks([tmp_path], [proc.stdout, proc.stderr]) == []
