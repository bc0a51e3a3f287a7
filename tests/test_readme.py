"""Every command and Python block of README.md runs as written, in order, in one temporary folder.

Shell commands come from ```bash blocks (backslash continuations joined, comment lines skipped, ``VAR=value cmd``
prefixes and ``&&`` chains kept as one command) and run with ``bash -c``; ```python blocks run as a script. Files
written by one command are there for the next, as for a reader going down the README. ``python``/``python3`` are
this interpreter, ``run.py`` and ``conf/`` are linked from the repository. A command that needs what only the
user has (the network, a server, an account, a cluster, a GPU, a downloaded file) is skipped by ``SKIP_RULES``; one
whose extra is not installed is skipped by ``EXTRAS``. ``pytest tests/test_readme.py -rs`` lists the skips.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TIMEOUT_S = 300

# (pattern searched in the command, why it is skipped): keep this short, so that almost every command runs
SKIP_RULES: list[tuple[str, str]] = [
    (r"\bpip install\b|-m venv\b", "installs packages (CI does the install; the test runs in the installed env)"),
    (r"https?://", "needs a server or the network"),
    (r"tracker\.entity=", "needs a W&B account"),
    (r"hydra/launcher=slurm", "needs a SLURM cluster"),
    (r"recipe\.loader=porian", "needs Porian et al.'s results file (a download)"),
    (r"^(?!.*analysis\.spectral\.(device=cpu|checkpoint=)).*experiment=spectral_bench",
     "the full spectral benchmark is sized for a GPU"),
]

# (pattern, module the command needs): an extra that is not installed skips the command instead of failing it
EXTRAS: list[tuple[str, str]] = [
    (r"tracker[= ]mlflow|adapters\.mlflow|\bimport mlflow", "mlflow"),
    (r"tracker[= ]wandb|adapters\.wandb|\bimport wandb", "wandb"),
    (r"\btorch\b|spectral|fira", "torch"),  # fira_similarity reads the runs that the torch toy writes
    (r"hydra/launcher=joblib", "hydra_plugins.hydra_joblib_launcher"),
    (r"tracker[= ]tensorboard|publish=tensorboard", "tensorboard"),
    (r"tracker[= ]aim|publish=aim", "aim"),
    (r"lightning_csv|lightning_logs", "lightning"),  # written by Lightning's CSVLogger, then read back
    (r"tracker[= ]dvclive|dvc_runs", "dvclive"),
    (r"publish=mlflow", "mlflow"),
]


@dataclass(frozen=True)
class Snippet:
    kind: str  # "bash" or "python"
    text: str
    line: int  # line of README.md where it starts

    def label(self) -> str:
        first = self.text.strip().splitlines()[0] if self.kind == "bash" else f"python block: {self.text.strip().splitlines()[0]}"
        return f"README.md:{self.line}: {first[:110]}"


def bash_commands(block: str, first_line: int) -> list[Snippet]:
    """The commands of a bash block: continuations joined, blank and comment lines skipped."""
    out: list[Snippet] = []
    pending, start = "", first_line
    for offset, raw in enumerate(block.splitlines()):
        line = raw.rstrip()
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = first_line + offset
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        out.append(Snippet("bash", (pending + line.strip()).strip(), start))
        pending = ""
    if pending:
        out.append(Snippet("bash", pending.strip(), start))
    return out


FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def extract(text: str) -> list[Snippet]:
    """Every bash command and every python block of a markdown text, in order."""
    snippets: list[Snippet] = []
    for m in FENCE.finditer(text):
        lang, body = m.group(1).lower(), m.group(2)
        first = text.count("\n", 0, m.start(2)) + 1
        if lang in ("bash", "sh", "shell"):
            snippets.extend(bash_commands(body, first))
        elif lang == "python":
            snippets.append(Snippet("python", body, first))
    return snippets


def skip_reason(snippet: Snippet) -> str | None:
    """Why the snippet cannot run here (None: it runs)."""
    for pattern, reason in SKIP_RULES:
        if re.search(pattern, snippet.text):
            return reason
    for pattern, module in EXTRAS:
        if re.search(pattern, snippet.text):
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"extra not installed: {module}"
    return None


SNIPPETS = extract(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shared folder (run.py and conf/ linked in), the environment, and the first failure so far."""
    root = tmp_path_factory.mktemp("readme")
    (root / "run.py").symlink_to(REPO / "run.py")
    (root / "conf").symlink_to(REPO / "conf", target_is_directory=True)
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
        wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_", "SWEEPKIT_"))}
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "MPLBACKEND": "Agg",
        "SWEEPKIT_CACHE_DIR": str(root / ".cache" / "sweepkit"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    })
    return {"root": root, "env": env, "failed": None}


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


@pytest.mark.parametrize("index", range(len(SNIPPETS)), ids=[f"{i:02d}" for i in range(len(SNIPPETS))])
def test_readme_snippet(index: int, workdir: dict) -> None:
    snippet = SNIPPETS[index]
    reason = skip_reason(snippet)
    if reason:
        pytest.skip(f"{snippet.label()}: {reason}")
    if workdir["failed"] is not None:
        pytest.skip(f"{snippet.label()}: an earlier README snippet failed ({workdir['failed']})")
    root = workdir["root"]
    if snippet.kind == "bash":
        argv = ["bash", "-c", snippet.text]
    else:
        script = root / f".readme_block_{snippet.line}.py"
        script.write_text(snippet.text, encoding="utf-8")
        argv = [sys.executable, str(script)]
    try:
        proc = subprocess.run(argv, cwd=root, env=workdir["env"], capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        workdir["failed"] = snippet.label()
        pytest.fail(f"{snippet.label()}\ntook longer than {TIMEOUT_S} s")
    if proc.returncode != 0:
        workdir["failed"] = snippet.label()
        shown = snippet.text if snippet.kind == "bash" else snippet.text.strip()
        pytest.fail(f"{snippet.label()}\nexit status {proc.returncode}\n--- command ---\n{shown}\n"
                    f"--- stderr (tail) ---\n{_tail(proc.stderr)}\n--- stdout (tail) ---\n{_tail(proc.stdout, 10)}",
                    pytrace=False)


def test_extraction_rules() -> None:
    text = (
        "intro\n\n```bash\n# a comment\nA=1 python run.py x=1 \\\n    y=2\n\n"
        "python3 -m venv .venv && . .venv/bin/activate\n```\n\n```python\nprint(1)\n```\n\n```\nnot shell\n```\n"
    )
    got = extract(text)
    assert [(s.kind, s.text, s.line) for s in got] == [
        ("bash", "A=1 python run.py x=1 y=2", 5),
        ("bash", "python3 -m venv .venv && . .venv/bin/activate", 8),
        ("python", "print(1)\n", 12),
    ]
    assert skip_reason(got[1]) and skip_reason(got[0]) is None
    assert skip_reason(Snippet("bash", "python run.py experiment=spectral_bench", 1))
    spectral_cpu = Snippet("bash", "python run.py experiment=spectral_bench analysis.spectral.device=cpu", 1)
    assert skip_reason(spectral_cpu) in (None, "extra not installed: torch")


def test_readme_has_the_commands_it_should() -> None:
    bash = [s.text for s in SNIPPETS if s.kind == "bash"]
    assert bash[0] == "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python run.py"
    assert bash[1] == 'pip install -e ".[dev]" && pytest -n auto'
    assert sum(s.kind == "python" for s in SNIPPETS) >= 2
    runnable = [s for s in SNIPPETS if not any(re.search(p, s.text) for p, _ in SKIP_RULES)]
    assert len(runnable) >= 0.75 * len(SNIPPETS), "the skip rules skip too much of the README"
    assert not any("tracker.select." in t for t in bash)
