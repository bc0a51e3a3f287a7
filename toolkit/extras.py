"""Optional extras checked before Hydra runs: a ``hydra/launcher=<name>`` whose plugin is not installed.

Hydra itself would answer ``Could not find 'hydra/launcher/joblib'`` (the plugin ships that config); this says which
extra brings it, in one line, before any work.
"""
from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence

from toolkit.errors import MissingExtraError, extra_line
from toolkit.settings import CONF_DIR

# launcher name -> (modules it needs, the pip extra that brings them)
LAUNCHERS: dict[str, tuple[tuple[str, ...], str]] = {
    "joblib": (("hydra_plugins.hydra_joblib_launcher", "joblib"), "launchers"),
    "submitit_local": (("hydra_plugins.hydra_submitit_launcher", "submitit"), "launchers"),
    "submitit_slurm": (("hydra_plugins.hydra_submitit_launcher", "submitit"), "launchers"),
}
_OVERRIDE = re.compile(r"^\+{0,2}hydra/launcher=(?P<names>.+)$")
_BASE = re.compile(r"^\s*-\s*(?:override\s+)?(?:/?hydra/launcher/?:?\s*)?(?P<name>[A-Za-z0-9_]+)\s*$")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def launcher_base(name: str) -> str:
    """The Hydra launcher a project config ``conf/hydra/launcher/<name>.yaml`` builds on (its first default), else name."""
    path = CONF_DIR / "hydra" / "launcher" / f"{name}.yaml"
    if name in LAUNCHERS or not path.is_file():
        return name
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("defaults:"):
            for entry in lines[i + 1:]:
                if entry.strip().startswith("#") or not entry.strip():
                    continue
                m = _BASE.match(entry)
                return m["name"] if m and m["name"] != "_self_" else name
    return name


def missing_launcher_line(argv: Sequence[str]) -> str | None:
    """The one line (without ``error:``) for a ``hydra/launcher=<name>`` override whose plugin is not importable."""
    for arg in argv:
        m = _OVERRIDE.match(arg.strip())
        if not m:
            continue
        for name in (n.strip().strip("'\"") for n in m["names"].split(",")):
            modules, extra = LAUNCHERS.get(launcher_base(name), ((), ""))
            if any(not _installed(module) for module in modules):
                return extra_line(extra, f"hydra/launcher={name}")
    return None


def require_launcher(argv: Sequence[str]) -> None:
    """Raise a one-line MissingExtraError when a ``hydra/launcher=<name>`` override's plugin is not installed."""
    line = missing_launcher_line(argv)
    if line:
        raise MissingExtraError(line)
