"""Every option of every analysis and recipe, given a wrong-typed value or a key that does not exist, is one line
``error: ...`` with exit status 2, and the run folder holds no half-written (.partial) folder."""
from __future__ import annotations

import dataclasses
import enum
import io
import sys
import typing
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from toolkit.settings import CONF_DIR, register_schemas

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = register_schemas(CONF_DIR)
PARTS = sorted(k for k in SCHEMAS if k[0] in ("recipe", "analysis"))


def _wrong(tp: typing.Any) -> str | None:
    """A value of the wrong type for a field of type ``tp`` (None: the field takes anything)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return _wrong(inner[0]) if len(inner) == 1 else None
    if tp is bool or tp is int or tp is float:
        return "not_a_number"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "no_such_choice"
    if origin in (list, typing.List):
        item = args[0] if args else typing.Any
        return "[[1,2]]" if item in (str, int, float) else "not_a_list"
    if origin in (dict, typing.Dict):
        return "not_a_mapping"
    if tp is str:
        return "[1,2]"
    return None


def leaf_options(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, wrong value) for every typed leaf of a settings dataclass."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, str]] = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += leaf_options(tp, f"{prefix}{f.name}.")
            continue
        bad = _wrong(tp)
        if bad is not None:
            out.append((f"{prefix}{f.name}", bad))
    return out


CASES = []
for group, name in PARTS:
    base = [f"recipe={name}"] if group == "recipe" else [f"analysis=[{name}]"]
    node = "recipe" if group == "recipe" else f"analysis.{name}"
    for key, bad in leaf_options(SCHEMAS[(group, name)]):
        CASES.append(pytest.param(base, f"{node}.{key}={bad}", key, id=f"{node}.{key}"))
    CASES.append(pytest.param(base, f"{node}.no_such_option=1", "no_such_option", id=f"{node}.no_such_option"))


def _run(argv: list[str]) -> tuple[int, str]:
    """``python run.py ARGV`` in this process (Hydra composes afresh each time): exit status and stderr."""
    import runpy

    err, out = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = [str(ROOT / "run.py"), *argv]
    code = 0
    try:
        with redirect_stderr(err), redirect_stdout(out):
            runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()
    return code, err.getvalue()


def test_the_sweep_covers_every_part():
    assert {n for g, n in PARTS if g == "analysis"} >= {"minima", "regressions", "scaling_laws", "correlations"}
    assert {n for g, n in PARTS if g == "recipe"} >= {"lr_bs_sweep", "lr_table", "scaling_table", "metric_family"}
    assert len(CASES) > 60


@pytest.mark.parametrize("base, override, key", CASES)
def test_a_wrong_value_or_unknown_key_is_one_line_and_exit_2(tmp_path, base, override, key):
    out = tmp_path / "OUT"
    code, err = _run([*base, override, f"hydra.run.dir={out}"])
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key.split(".")[-1] in errors[0], err[-2000:]
    if out.exists():
        assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
