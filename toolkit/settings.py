"""Typed settings: one dataclass per part, the single source of its defaults and types.

Each part (tracker, recipe, analysis) declares a dataclass of its settings (``settings_type``). ``register_schemas``
puts every part named by a ``_target_`` under ``conf/`` into Hydra's ConfigStore as ``schema/<group>/<name>``, and
each yaml file takes it as its schema (``defaults: [/schema/<group>/<name>@_here_, _self_]``), so a typo'd key, a
wrong type or an unknown choice fails when the config is composed. ``as_settings`` applies the same checks to plain
mappings (notebooks, tests). Ranges are declared on the fields (``bounded``) and checked when the settings are made;
checks that span fields or parse a value run in ``__post_init__``.
"""
from __future__ import annotations

import dataclasses
import enum
import operator
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, TypeVar

from toolkit.errors import UserError
from toolkit.runset import Selection

T = TypeVar("T")


def _conf_dir() -> Path:
    """The config folder: ``sweepkit/conf`` in an installed wheel (package data), else the checkout's ``conf/``."""
    root = Path(__file__).resolve().parents[1]
    packaged = root / "sweepkit" / "conf"
    return packaged if (packaged / "config.yaml").is_file() else root / "conf"


CONF_DIR = _conf_dir()
GROUPS = ("tracker", "recipe", "analysis")
SCHEMA_GROUP = "schema"


class Choice(str, enum.Enum):
    """A string option with a fixed set of values (checked at compose time); compares equal to its value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


_BOUNDS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def bounded(default: Any, expected: str, **bounds: float) -> Any:
    """A settings field whose value (null passes) meets ``bounds`` (gt, ge, lt, le); ``expected`` says so in words."""
    return field(default=default, metadata={"bounds": bounds, "expected": expected})


def at_least(default: Any, low: float, what: str = "a count") -> Any:
    """A number field >= ``low``."""
    return bounded(default, f"{what} >= {low}", ge=low)


def boot_count(default: int) -> Any:
    """A bootstrap's replicate count (0 switches it off)."""
    return bounded(default, "a count >= 0 (0 switches it off)", ge=0)


def ci_level(default: float = 0.95) -> Any:
    """A confidence level in (0, 1)."""
    return bounded(default, "a level in (0, 1)", gt=0, lt=1)


def check_bounds(obj: Any, who: str, prefix: str = "") -> None:
    """A one-line error (``fail``) for the first field outside its bounds, in ``obj`` or a plain dataclass inside it."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is not None and not all(_BOUNDS[op](value, low) for op, low in f.metadata.get("bounds", {}).items()):
            raise fail(who, prefix + f.name, value, f.metadata["expected"])
        if dataclasses.is_dataclass(value) and not hasattr(value, "who"):  # parts with a ``who`` check themselves
            check_bounds(value, who, f"{prefix}{f.name}.")


@dataclass
class Settings:
    """Base of every part's settings: ``_target_`` names the code behind the config (set by the yaml file); ``who``
    names the part in errors."""

    who: ClassVar[str] = ""
    _target_: Optional[str] = None

    def __post_init__(self) -> None:
        check_bounds(self, self.who or type(self).__name__)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly settings (for summary.json), without ``_target_``."""
        out = _plain(dataclasses.asdict(self))
        out.pop("_target_", None)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def fail(who: str, key: str, value: Any, expected: str) -> UserError:
    """The one-line error of a bad setting: who, the key, the value given and what is allowed."""
    return UserError(f"{who}: {key}={value!r}; expected {expected}")


def one_line(exc: BaseException) -> str:
    """An OmegaConf/Hydra error as one line: its message, the cause's, and the key it concerns."""
    parts: list[str] = []
    for cur in [c for c in (exc, exc.__cause__) if c is not None]:
        if isinstance(cur, UserError):
            return str(cur)
        for line in str(cur).splitlines():
            line = line.strip()
            if not line or "$VALUE" in line or line.startswith(
                    ("object_type=", "reference_type=", "See https://", "Set the environment")):
                continue
            if line.startswith("full_key:"):
                line = f"(key {line.split(':', 1)[1].strip()})"
            if line not in parts:
                parts.append(line)
    text = re.sub(r"\s+", " ", " ".join(parts) or type(exc).__name__)
    text = text.split(" Config search path:")[0]
    return text.replace("Error merging override", "bad override")[:600]


def as_settings(cls: type[T], given: Any = None, who: str | None = None, **overrides: Any) -> T:
    """Settings of type ``cls`` from None, a mapping, a DictConfig or an instance, checked like a composed config."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(given, cls) and not overrides:
        return given
    who = who or cls.__name__
    try:
        parts: list[Any] = [OmegaConf.structured(cls)]
        if isinstance(given, cls):
            parts.append(OmegaConf.structured(given))
        elif isinstance(given, (Mapping, DictConfig)):
            parts.append(given)
        elif given is not None:
            raise UserError(f"{who}: settings should be a mapping, got {type(given).__name__}")
        if overrides:
            parts.append(overrides)
        return check_types(OmegaConf.to_object(OmegaConf.merge(*parts)), who)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise UserError(f"{who}: {one_line(exc)}") from None


def unknown_keys(node: Any, cls: type, prefix: str = "") -> list[str]:
    """Keys of a config node that its dataclass does not have (added with Hydra's ``+key=``), nested ones too."""
    from omegaconf import DictConfig

    if not isinstance(node, (DictConfig, Mapping)) or not dataclasses.is_dataclass(cls):
        return []
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    found = []
    for key in node.keys():
        sub = hints.get(key)
        if key not in fields:
            found.append(f"{prefix}{key}")
        elif isinstance(sub, type) and dataclasses.is_dataclass(sub):
            found += unknown_keys(node.get(key), sub, f"{prefix}{key}.")
    return found


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not evaluate: no nested check
        return {}


def check_known_keys(node: Any, cls: type, who: str) -> None:
    """A one-line UserError when ``node`` holds keys ``cls`` does not have."""
    extra = unknown_keys(node, cls)
    if extra:
        names = ", ".join(f.name for f in dataclasses.fields(cls) if not f.name.startswith("_"))
        raise UserError(f"{who}: unknown key(s) {', '.join(extra)}; {cls.__name__} has: {names}")


def type_problems(value: Any, tp: Any, key: str) -> list[str]:
    """Where ``value`` does not have type ``tp``, down to list items and mapping values (OmegaConf checks the top
    level of an override only: ``by=[[1,2]]`` reaches a ``List[str]`` field unchecked)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is None:
        return []
    if origin is typing.Union:
        if value is None and type(None) in args:
            return []
        inner = [a for a in args if a is not type(None)]
        return type_problems(value, inner[0], key) if len(inner) == 1 else []
    if origin in (list, typing.List):
        if not isinstance(value, (list, tuple)):
            return [f"{key}={value!r} (expected a list)"]
        return [p for i, v in enumerate(value) for p in type_problems(v, args[0] if args else Any, f"{key}[{i}]")]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            return [f"{key}={value!r} (expected a mapping)"]
        return [p for k, v in value.items() for p in type_problems(v, args[1] if len(args) > 1 else Any, f"{key}.{k}")]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not dataclasses.is_dataclass(value):
            return [f"{key}={value!r} (expected a mapping)"]
        hints = _hints(tp)
        return [p for f in dataclasses.fields(tp) if not f.name.startswith("_")
                for p in type_problems(getattr(value, f.name), hints.get(f.name, Any), f"{key}.{f.name}".lstrip("."))]
    if isinstance(tp, type):
        ok = isinstance(value, tp) or (tp is float and isinstance(value, int) and not isinstance(value, bool))
        return [] if ok else [f"{key}={value!r} (expected {tp.__name__})"]
    return []


def check_types(obj: Any, who: str) -> Any:
    """``obj`` (a settings dataclass instance) unchanged, or a one-line UserError naming the first mistyped value."""
    problems = type_problems(obj, type(obj), "")
    if problems:
        raise UserError(f"{who}: {problems[0]}")
    return obj


def settings_of(node: Any, cls: type[T], who: str | None = None) -> T:
    """The settings object of a composed config node (a typed DictConfig), checked; ``cls`` when untyped."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    who = who or cls.__name__
    check_known_keys(node, cls, who)
    if isinstance(node, DictConfig) and OmegaConf.get_type(node) is cls:
        try:
            return check_types(OmegaConf.to_object(node), who)  # type: ignore[return-value]
        except OmegaConfBaseException as exc:
            raise UserError(f"{who}: {one_line(exc)}") from None
    return as_settings(cls, node, who=who)


# --------------------------------------------------------------------------------------------- registration


def part_targets(conf_dir: str | Path) -> dict[tuple[str, str], str]:
    """``{(group, name): _target_}`` of every tracker, recipe and analysis config file under ``conf_dir``."""
    import yaml

    found: dict[tuple[str, str], str] = {}
    for group in GROUPS:
        for path in sorted((Path(conf_dir) / group).glob("*.yaml")):
            data = yaml.safe_load(path.read_text()) or {}
            target = data.get("_target_") if isinstance(data, dict) else None
            if target:
                found[(group, path.stem)] = str(target)
    return found


def locate(target: str, what: str) -> Any:
    """The class or function a ``_target_`` names (Hydra's locator), or a one-line error naming it."""
    from hydra.utils import get_object

    try:
        return get_object(target)
    except ImportError as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, ModuleNotFoundError) and cause.name and not target.startswith(cause.name):
            from toolkit.errors import missing_extra

            raise missing_extra(cause.name, what) from None
        raise UserError(f"{what}: _target_ '{target}' cannot be imported: {one_line(cause)}") from None


TOKEN_ENV = "SWEEPKIT_RUN_TOKEN"


def run_token() -> str:
    """A short random token, the same for a process and the processes it starts (Hydra's launchers)."""
    import os
    import secrets

    return os.environ.setdefault(TOKEN_ENV, secrets.token_hex(3))


def register_resolvers() -> None:
    """The config's own resolvers (``${run_token:}``)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("run_token"):
        OmegaConf.register_new_resolver("run_token", run_token)


def register_schemas(*conf_dirs: str | Path) -> dict[tuple[str, str], type]:
    """Put the settings dataclass of every part under the config folders into Hydra's ConfigStore
    (``schema/<group>/<name>``); the first folder holding a name wins, as on Hydra's search path."""
    from hydra.core.config_store import ConfigStore

    register_resolvers()
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunSettings)
    schemas: dict[tuple[str, str], type] = {}
    targets: dict[tuple[str, str], str] = {}
    for conf_dir in conf_dirs:
        for key, target in part_targets(conf_dir).items():
            targets.setdefault(key, target)
    for (group, name), target in targets.items():
        try:
            part = locate(target, f"{group} {name}")
        except UserError:
            continue  # a part whose extra is missing: composing it fails with the import error, others still work
        settings_type = getattr(part, "settings_type", None)
        if settings_type is None or not dataclasses.is_dataclass(settings_type):
            continue  # the conformance test names such a part
        store.store(group=f"{SCHEMA_GROUP}/{group}", name=name, node=settings_type)
        schemas[(group, name)] = settings_type
    return schemas


# --------------------------------------------------------------------------------------------- shared nodes


@dataclass
class CacheSettings:
    """The history cache of the remote trackers."""

    enabled: bool = True
    dir: str = ".cache/sweepkit"
    refresh: bool = False


@dataclass
class PublishSettings:
    """publish=<tracker>: send a finished run's results to a tracker as one run (conf/publish/<tracker>.yaml,
    ``toolkit.publish``). ``settings`` is that tracker's own node (conf/tracker/<tracker>.yaml, typed by its schema)."""

    tracker: Optional[str] = None
    settings: Any = None
    name: Optional[str] = None


@dataclass
class RunSettings:
    """The top level of the composed config (the parts' nodes are typed by their own schemas)."""

    title: str = "Sweep analysis"
    progress: bool = True
    cache: CacheSettings = field(default_factory=CacheSettings)
    select: Selection = field(default_factory=Selection)
    tracker: Any = None
    recipe: Any = None
    analysis: Any = field(default_factory=dict)
    publish: Optional[PublishSettings] = None
