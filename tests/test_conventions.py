"""What users expect of a command-line tool: the tracker's own environment variables, one line per error (printed
once, no doubled prefix), one line naming the extra when an optional package is missing, README examples that run
on the data the README supplies."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import extras
from toolkit.errors import ConsoleOnce, MissingExtraError, UserError, missing_extra, missing_extra_from, require_extra

REPO = Path(__file__).resolve().parents[1]
DOUBLED = re.compile(r"\b([A-Za-z_][\w.&=]*): \1: ")
TINY = ["--lr-log2", "-11,-10,-9,-8", "--batch-sizes", "32,64", "--seeds", "0", "--horizons-log2", "26,27",
        "--log-every-tokens", "33554432", "--no-progress"]

# a meta-path finder that refuses the modules named in SWEEPKIT_TEST_BLOCK, as if they were not installed
BLOCKER = '''
import os, sys
_blocked = tuple(m for m in os.environ.get("SWEEPKIT_TEST_BLOCK", "").split(",") if m)
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in _blocked):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None
sys.meta_path.insert(0, _Refuse())
'''


def _env(tmp: Path, block: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_", "SWEEPKIT_"))}
    site = tmp / "_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    env.update({"PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "SWEEPKIT_TEST_BLOCK": block,
                "SWEEPKIT_CACHE_DIR": str(tmp / ".cache"), "MPLBACKEND": "Agg", "HOME": str(tmp),
                "NETRC": str(tmp / "no-netrc"), "WANDB_DIR": str(tmp), "WANDB_CONFIG_DIR": str(tmp / ".wandb-config")})
    return env


def _run(args: list[str], tmp: Path, block: str = "", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=tmp, env=_env(tmp, block) | env, capture_output=True,
                          text=True, timeout=120)


def _run_py(tmp: Path, *overrides: str, block: str = "", **env: str) -> subprocess.CompletedProcess:
    return _run([str(REPO / "run.py"), *overrides, f"hydra.run.dir={tmp / 'out'}"], tmp, block, **env)


# ---------------------------------------------------------------------------------------------- 1. env variables
def test_wandb_entity_and_project_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.wandb import WandbTracker
    from toolkit.trackers import tracker_config

    monkeypatch.setenv("WANDB_ENTITY", "team-from-env")
    monkeypatch.setenv("WANDB_PROJECT", "project-from-env")
    node = tracker_config("wandb")
    assert (node.entity, node.project) == ("team-from-env", "project-from-env")
    assert tracker_config("wandb", {"project": "given"}).project == "given"  # the setting wins over the variable
    tracker = WandbTracker()
    assert tracker.run_path == "team-from-env/project-from-env"
    monkeypatch.delenv("WANDB_ENTITY")
    monkeypatch.delenv("WANDB_PROJECT")
    node = tracker_config("wandb")
    assert (node.entity, node.project) == (None, None)


def test_mlflow_reads_its_variables_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.trackers import tracker_config

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "exp-from-env")
    node = tracker_config("mlflow")
    assert (node.uri, node.experiment) == ("sqlite:///from-env.db", "exp-from-env")


def test_no_project_is_said_first_before_the_api_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from adapters.wandb import WandbTracker
    from toolkit.runset import Selection

    for key in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with pytest.raises(UserError) as info:
        WandbTracker().list_runs(Selection())
    message = str(info.value)
    assert "WANDB_PROJECT" in message and "tracker.project" in message and "API key" not in message
    assert "\n" not in message
    monkeypatch.setenv("WANDB_PROJECT", "p")  # with a project, the next thing said is the missing key
    with pytest.raises(UserError, match="no API key"):
        WandbTracker().list_runs(Selection())


def test_run_py_without_a_project_says_so_in_one_line(tmp_path: Path) -> None:
    proc = _run_py(tmp_path, "tracker=wandb")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tracker=wandb: no project"), proc.stderr
    assert "WANDB_PROJECT" in lines[0] and "tracker.project" in lines[0]


# ------------------------------------------------------------------------------ 2. every error once, no "x: x:"
def test_console_filter_drops_only_marked_records() -> None:
    records = [logging.LogRecord("run", logging.ERROR, __file__, 1, "said by the error line", None, None),
               logging.LogRecord("run", logging.WARNING, __file__, 1, "a warning", None, None)]
    records[0].console = False
    assert [ConsoleOnce().filter(r) for r in records] == [False, True]


@pytest.mark.parametrize("overrides, message", [
    (["analysis.minima.horizons=[3]"], "minima: horizon 2^1.58 is not within horizon_tolerance"),
    (["analysis=[scaling_laws]"], "scaling_laws: missing column(s) N, D, C, loss"),
    (["tracker.path=no-such-file.csv"], "no-such-file.csv does not exist"),
])
def test_an_error_is_printed_once_without_a_doubled_prefix(tmp_path: Path, overrides: list[str], message: str) -> None:
    proc = _run_py(tmp_path, *overrides)
    assert proc.returncode == 2, proc.stderr
    console = proc.stdout + proc.stderr
    assert console.count(message) == 1, console
    assert not DOUBLED.search(console), DOUBLED.search(console)
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    log = (tmp_path / "out" / "run.log").read_text(encoding="utf-8")
    assert message in log and not DOUBLED.search(log)  # the log keeps the record, without the doubled name


# ------------------------------------------------------------------------------------- 3. a missing extra: one line
def test_missing_extra_messages() -> None:
    assert str(missing_extra("google.protobuf", "tracker=wandb", "wandb")) == \
        "tracker=wandb needs the wandb extra: pip install 'sweepkit[wandb]'"
    assert str(missing_extra("lightning.pytorch.loggers")) == \
        "the lightning extra is not installed (no module 'lightning'): pip install 'sweepkit[lightning]'"
    with pytest.raises(MissingExtraError, match=r"^spectral needs the torch extra: pip install 'sweepkit\[torch\]'$"):
        require_extra("sweepkit_no_such_module", "torch", "spectral")
    try:
        import google_no_such_module  # noqa: F401
    except ModuleNotFoundError as exc:
        assert missing_extra_from(exc) is None  # not a module any extra brings: stays a bug
    nested = RuntimeError("wrapped")
    nested.__cause__ = ModuleNotFoundError("No module named 'aimrocks'", name="aimrocks")
    assert "sweepkit[aim]" in str(missing_extra_from(nested))


def test_hf_unpickling_names_the_hf_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from adapters.hf_trainer import HfTrainerTracker

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'sweepkit\[hf\]'"):
        HfTrainerTracker(path=str(tmp_path))._unpickled_args(tmp_path / "training_args.bin")


def _offline_run_folder(root: Path) -> Path:
    from adapters.wandb_offline import encode_records

    folder = root / "wandb" / "offline-run-20240101_000000-abc123"
    folder.mkdir(parents=True)
    (folder / "run-abc123.wandb").write_bytes(encode_records([]))
    return root / "wandb"


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_wandb_offline_reading_without_the_extra_is_one_line(tmp_path: Path) -> None:
    path = _offline_run_folder(tmp_path)
    line = _one_error_line(_run_py(tmp_path, "tracker=wandb", f"tracker.path={path}", block="wandb,google"))
    assert line == "error: tracker=wandb needs the wandb extra: pip install 'sweepkit[wandb]'"


@pytest.mark.parametrize("tracker, args, block, extra", [
    ("wandb", ["offline=true", "path=wb"], "wandb,google", "wandb"),
    ("mlflow", ["uri=sqlite:///m.db", "experiment=x"], "mlflow", "mlflow"),
    ("tensorboard", ["path=tb"], "tensorboard", "tensorboard"),
    ("aim", ["path=aimrepo"], "aim,aimrocks", "aim"),
    ("lightning_csv", ["path=ll"], "lightning,pytorch_lightning", "lightning"),
    ("dvclive", ["path=dv"], "dvclive", "dvclive"),
])
def test_writing_without_the_extra_is_one_line(tmp_path: Path, tracker: str, args: list[str], block: str,
                                               extra: str) -> None:
    argv = ["-m", "toolkit.demo", *TINY, "--tracker", tracker] + [x for a in args for x in ("--tracker-arg", a)]
    line = _one_error_line(_run(argv, tmp_path, block))
    assert re.fullmatch(rf"error: .*\b{extra} extra\b.*: pip install 'sweepkit\[{extra}\]'", line), line


def test_spectral_and_the_toy_without_torch_are_one_line(tmp_path: Path) -> None:
    proc = _run_py(tmp_path, "experiment=spectral_bench", "analysis.spectral.device=cpu", block="torch")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert re.fullmatch(r"error: .*torch extra.*pip install 'sweepkit\[torch\]'.*", proc.stderr.strip()), proc.stderr
    line = _one_error_line(_run(["-m", "toolkit.examples.fira_toy", "--out", "fira", "--steps", "2"], tmp_path, "torch"))
    assert line.endswith("pip install 'sweepkit[torch]'"), line


def test_missing_launcher_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert extras.launcher_base("slurm") == "submitit_slurm"  # conf/hydra/launcher/slurm.yaml builds on it
    assert extras.launcher_base("basic") == "basic"
    missing: set[str] = set()
    monkeypatch.setattr(extras, "_installed", lambda module: module not in missing)
    assert extras.missing_launcher_line(["-m", "hydra/launcher=joblib", "x=1"]) is None
    missing.add("hydra_plugins.hydra_joblib_launcher")
    expected = "hydra/launcher=joblib needs the launchers extra: pip install 'sweepkit[launchers]'"
    assert extras.missing_launcher_line(["-m", "hydra/launcher=joblib", "x=1"]) == expected
    assert extras.missing_launcher_line(["+hydra/launcher=joblib"]) == expected
    assert extras.missing_launcher_line(["hydra/launcher=slurm"]) is None
    assert extras.missing_launcher_line(["hydra/launcher=basic", "analysis=[minima]"]) is None
    missing.add("submitit")
    assert extras.missing_launcher_line(["hydra/launcher=slurm"]) == \
        "hydra/launcher=slurm needs the launchers extra: pip install 'sweepkit[launchers]'"
    with pytest.raises(MissingExtraError, match="launchers extra"):
        extras.require_launcher(["hydra/launcher=submitit_local"])


def test_a_missing_launcher_plugin_is_one_line_before_hydra_runs(tmp_path: Path) -> None:
    proc = _run([str(REPO / "run.py"), "-m", "hydra/launcher=joblib", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path,
                "hydra_plugins.hydra_joblib_launcher")
    assert _one_error_line(proc) == "error: hydra/launcher=joblib needs the launchers extra: pip install 'sweepkit[launchers]'"
    assert not (tmp_path / "sweep").exists()


# ---------------------------------------------------------------------- 5. the README's norm-transfer example runs
def test_the_long_demo_sweep_reaches_every_horizon_norm_transfer_asks_for() -> None:
    import yaml

    from toolkit.demo import make_long_sweep

    experiment = yaml.safe_load((REPO / "conf" / "experiment" / "norm_transfer.yaml").read_text(encoding="utf-8"))
    wanted = [int(h) for h in experiment["analysis"]["minima"]["horizons"]]
    assert max(wanted) == 2**33
    sweep = make_long_sweep()
    h = sweep.history
    tokens = h["step"] * h["bs"] * sweep.planted["seq_len"]
    every = sweep.planted["log_every_tokens"]
    for horizon in wanted:  # a logged step of every run, and so are the rows of the averaging window before it
        for at in (horizon, horizon - every, max(horizon - 2 * every, every)):
            assert set(h.loc[tokens == at, "run_name"]) == set(h["run_name"]), (horizon, at)
    assert h["run_name"].nunique() == 120 and len(h) == 120 * 256
    grid = sweep.planted["lr_log2"]
    for bs in sweep.planted["batch_sizes"]:  # the planted optimum stays inside the lr grid at every horizon
        for horizon in wanted:
            assert min(grid) + 1 <= sweep.optimal_log2_lr(horizon, bs) <= max(grid) - 1


def test_readme_uses_the_long_sweep_for_norm_transfer() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "python -m toolkit.demo --out long.csv --long\n" in text
    assert "python run.py experiment=norm_transfer tracker.path=long.csv" in text
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in text
