"""A non-editable install: the wheel carries the configs and the example data, and ``sweepkit`` runs from any folder.

The wheel is installed into a fresh venv whose only link to this environment is the folder of its site-packages
(the dependencies, added as a plain path: its editable-install hooks do not run), so the installed package is what
runs, never this checkout.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _can_build_wheels() -> bool:
    """Whether this environment's setuptools can build a wheel by itself (>= 70.1, or the wheel package beside it)."""
    import importlib.util

    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's bin folder, a work folder outside the repository, the environment to run in)."""
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("SWEEPKIT_")}
    env["MPLBACKEND"] = "Agg"
    # this environment's setuptools builds the wheel when it can (no download); an old one without bdist_wheel (a bare
    # venv) builds in pip's isolated environment, as `pip install .` itself does
    isolation = ["--no-build-isolation"] if _can_build_wheels() else []
    build = _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", *isolation, "-q",
                  "-w", str(base / "dist")], cwd=base, env=env)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((base / "dist").glob("sweepkit-*.whl"))
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base, env=env)
    assert made.returncode == 0, made.stderr[-2000:]
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base, env=env)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site.stdout.strip(), "_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    inst = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=base, env=env)
    assert inst.returncode == 0, inst.stderr[-3000:]
    work = base / "work"
    work.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv / "bin", work, env


def test_the_installed_package_is_used(installed):
    bin_dir, work, env = installed
    code = "import sweepkit, toolkit.settings as s; print(sweepkit.__file__); print(s.CONF_DIR)"
    proc = _run([str(bin_dir / "python"), "-c", code], cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    module, conf = proc.stdout.split()
    venv = str(bin_dir.parent)
    assert module.startswith(venv) and conf.startswith(venv) and conf.endswith(os.path.join("sweepkit", "conf"))
    assert not module.startswith(str(ROOT)) and (Path(conf) / "config.yaml").is_file()


def test_sweepkit_command_runs_in_any_folder(installed):
    bin_dir, work, env = installed
    proc = _run([str(bin_dir / "sweepkit"), "analysis=[minima]"], cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = list(work.glob("outputs/*/*/minima/minima.csv"))  # hydra.run.dir is relative: under the current folder
    assert len(found) == 1, proc.stdout[-2000:]
    run_dir = found[0].parent.parent
    assert f"results: {run_dir}" in proc.stdout
    assert (run_dir / "run.log").is_file() and (run_dir / "report.html").is_file()
    assert len(found[0].read_text().splitlines()) == 1 + 24  # the bundled example: 6 horizons x 4 batch sizes


def test_own_config_folder_and_help(installed, tmp_path):
    bin_dir, work, env = installed
    own = tmp_path / "my_conf" / "analysis"
    own.mkdir(parents=True)
    (own / "my_minima.yaml").write_text("# @package analysis.my_minima\ndefaults:\n  - /schema/analysis/my_minima@_here_\n"
                                        "  - _self_\n_target_: analyses.minima.Minima\nplots: false\n")
    out = tmp_path / "run"
    proc = _run([str(bin_dir / "sweepkit"), "--config-dir", str(tmp_path / "my_conf"), "analysis=[my_minima]",
                 "analysis.my_minima.bootstrap.n=0", f"hydra.run.dir={out}"], cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "my_minima" / "minima.csv").is_file() and not (out / "my_minima" / "parabolas.png").exists()
    bad = _run([str(bin_dir / "sweepkit"), "--config-dir", str(tmp_path / "my_conf"), "analysis=[my_minima]",
                "analysis.my_minima.bootstrap.n=lots", f"hydra.run.dir={out}"], cwd=work, env=env)
    assert bad.returncode == 2 and "bootstrap.n" in bad.stderr  # the user's part is schema-checked too
    helped = _run([str(bin_dir / "sweepkit"), "--config-dir", str(tmp_path / "my_conf"), "--help"], cwd=work, env=env)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "sweepkit tracker.path=sweep.csv" in helped.stdout
    line = next(ln for ln in helped.stdout.splitlines() if ln.strip().startswith("analysis:"))
    assert "my_minima" in line and "minima" in line and "schema" not in helped.stdout
