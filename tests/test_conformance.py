"""Every part named by a ``_target_`` under conf/ imports, implements its protocol and is typed by its schema."""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Optional

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import EXTRAS, installed
from toolkit.errors import UserError
from toolkit.protocol import Analysis, Recipe, Tracker, TrackerBase, protocol_problems
from toolkit.settings import CONF_DIR, Settings, part_targets, register_schemas

PROTOCOLS = {"tracker": Tracker, "recipe": Recipe, "analysis": Analysis}
PARTS = sorted(part_targets(CONF_DIR).items())


def _target(group_name_target):
    (group, name), target = group_name_target
    return group, name, target


@pytest.mark.parametrize("part", PARTS, ids=[f"{g}/{n}" for (g, n), _ in PARTS])
def test_every_target_imports_and_implements_its_protocol(part):
    group, name, target = _target(part)
    from hydra.utils import get_object

    module = target.rpartition(".")[0]
    try:
        obj = get_object(target)
    except ImportError as exc:
        extra = next((e for e, m in EXTRAS.items() if m.split(".")[0] in str(exc)), None)
        if extra and not installed(EXTRAS[extra]):
            pytest.skip(f"{module} needs the {extra} extra")
        raise
    assert protocol_problems(obj, PROTOCOLS[group]) == [], f"{group}/{name}: {target}"


def test_the_check_catches_a_part_that_breaks_its_protocol():
    class NoRun:
        name = "x"
        settings_type = Settings

        def required_columns(self, settings):
            return ()

    class UntypedSettings:
        settings_type = dict

        def metric_keys(self, s): ...
        def needs_tracker(self, s): ...
        def build(self, r, s): ...

    assert any("run" in p for p in protocol_problems(NoRun, Analysis))
    assert protocol_problems(UntypedSettings, Recipe) == ["settings_type is not a dataclass derived from toolkit.settings.Settings"]


@pytest.mark.parametrize("part", PARTS, ids=[f"{g}/{n}" for (g, n), _ in PARTS])
def test_every_config_file_is_typed_by_its_schema_and_documents_its_defaults(part):
    group, name, target = _target(part)
    schemas = register_schemas(CONF_DIR)
    if (group, name) not in schemas:
        pytest.skip(f"{target} cannot be imported here (a missing extra)")
    settings_type = schemas[(group, name)]
    path = CONF_DIR / group / f"{name}.yaml"
    text = path.read_text()
    data = yaml.safe_load(text)
    assert f"/schema/{group}/{name}@_here_" in data["defaults"] and data["defaults"][-1] == "_self_", path
    if group == "analysis":
        assert text.startswith(f"# @package analysis.{name}\n"), path
    defaults = OmegaConf.to_container(OmegaConf.structured(settings_type), enum_to_str=True)
    documented = {}
    for line in text.splitlines():
        m = re.match(r"^# ([a-z_0-9]+): (.+)$", line)
        if m and m.group(1) in defaults:
            documented[m.group(1)] = yaml.safe_load(m.group(2))
    for key, value in documented.items():
        assert value == defaults[key], f"{path}: '# {key}: {value}' but the default is {defaults[key]!r}"
    overridden = set(data) - {"defaults", "_target_"}
    assert overridden <= set(defaults), f"{path}: keys not in {settings_type.__name__}: {overridden - set(defaults)}"


def constructor_problems(cls: type) -> list[str]:
    """Where a tracker class does not build itself from its settings through TrackerBase's constructor."""
    if not (isinstance(cls, type) and issubclass(cls, TrackerBase)):
        return [f"{getattr(cls, '__name__', cls)} does not derive from toolkit.protocol.TrackerBase"]
    fields = {f.name for f in dataclasses.fields(cls.settings_type)} - {"_target_"}
    problems = []
    for klass in cls.__mro__[:cls.__mro__.index(TrackerBase)]:
        init = vars(klass).get("__init__")
        repeated = sorted(fields & set(inspect.signature(init).parameters)) if init is not None else []
        if repeated:
            problems.append(f"{klass.__name__}.__init__ repeats the settings {', '.join(repeated)}")
    return problems


@pytest.mark.parametrize("part", [p for p in PARTS if p[0][0] == "tracker"], ids=lambda p: p[0][1])
def test_tracker_constructor_is_its_schema(part):
    group, name, target = _target(part)
    from hydra.utils import get_object

    try:
        cls = get_object(target)
    except ImportError:
        pytest.skip(f"{target} needs an extra")
    assert constructor_problems(cls) == [], target


@dataclasses.dataclass
class TwoSettings(Settings):
    """The settings of the small trackers the constructor tests build."""

    path: Optional[str] = None
    retries: int = 3


def test_the_constructor_check_catches_a_signature_that_repeats_the_settings():
    class Repeats(TrackerBase):
        settings_type = TwoSettings

        def __init__(self, path=None, retries=3):
            super().__init__(path=path, retries=retries)

    class Extends(TrackerBase):
        settings_type = TwoSettings

        def __init__(self, *args, hook=None, **kwargs):
            super().__init__(*args, **kwargs)

    class Plain:
        settings_type = TwoSettings

    assert constructor_problems(Repeats) == ["Repeats.__init__ repeats the settings path, retries"]
    assert constructor_problems(Extends) == []
    assert constructor_problems(Plain) == ["Plain does not derive from toolkit.protocol.TrackerBase"]


def test_the_tracker_constructor_takes_its_settings_positionally_or_by_keyword():
    class Two(TrackerBase):
        settings_type = TwoSettings

        def setup(self, settings):
            self.root = Path(settings.path or ".")

    two = Two(Path("runs"), retries="5")
    assert (two.settings.path, two.settings.retries, two.root, two.warnings) == ("runs", 5, Path("runs"), [])
    assert Two().settings == TwoSettings()
    with pytest.raises(TypeError, match="multiple values for argument 'path'"):
        Two("a", path="b")
    with pytest.raises(TypeError, match="at most 2 positional"):
        Two("a", 1, 2)
    with pytest.raises(UserError, match="retries"):
        Two(retries="many")
    with pytest.raises(UserError, match="bogus"):
        Two(bogus=1)


def test_the_worked_example_in_the_architecture_doc_adds_an_analysis(tmp_path):
    """The docs' 'Adding a part' example, as written, is one module and one config file that run end to end."""
    import json
    import os
    import subprocess
    import sys

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    section = doc[doc.index("### Adding a part"):]
    module = re.search(r"```python\n# analyses/loss_at_end.py\n(.*?)```", section, re.S).group(1)
    config = re.search(r"```yaml\n# conf/analysis/loss_at_end.yaml\n(.*?)```", section, re.S).group(1)
    (tmp_path / "pkg" / "analyses").mkdir(parents=True)
    (tmp_path / "pkg" / "loss_at_end_example.py").write_text(module)
    (tmp_path / "conf" / "analysis").mkdir(parents=True)
    (tmp_path / "conf" / "analysis" / "loss_at_end.yaml").write_text(
        config.replace("analyses.loss_at_end.LossAtEnd", "loss_at_end_example.LossAtEnd"))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": f"{tmp_path / 'pkg'}{os.pathsep}{root}"}
    base = [sys.executable, str(root / "run.py"), "analysis=[minima,loss_at_end]", "analysis.minima.plots=false",
            "analysis.minima.bootstrap.n=0", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]
    ok = subprocess.run([*base, f"hydra.run.dir={tmp_path / 'out'}"], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "loss_at_end" / "summary.json").read_text())
    assert summary["n_runs"] > 0 and summary["settings"] == {"last_steps": 1}
    bad = subprocess.run([*base, "analysis.loss_at_end.last_steps=0", f"hydra.run.dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert "loss_at_end: last_steps=0; expected a count >= 1" in bad.stderr, bad.stderr[-2000:]
    assert not (tmp_path / "bad" / "minima").exists()  # caught before any work
