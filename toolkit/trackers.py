"""The trackers the toolkit knows: one per file in conf/tracker/, built from a name and settings."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolkit.cli import compose_config
from toolkit.errors import UserError
from toolkit.settings import CONF_DIR


def tracker_names() -> list[str]:
    """The names ``tracker=<name>`` accepts (conf/tracker/*.yaml)."""
    return sorted(p.stem for p in (CONF_DIR / "tracker").glob("*.yaml"))


def _override(key: str, value: Any) -> str:
    """A Hydra override for one setting: text quoted (so URIs and paths pass the grammar), null left bare."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        return f"tracker.{key}=null"
    if isinstance(value, (list, tuple)):
        return f"tracker.{key}=[" + ",".join(_quote(v) for v in value) + "]"
    if isinstance(value, str) and "," in value and not value.startswith(("[", "{")):
        return f"tracker.{key}=[" + ",".join(_quote(v.strip()) for v in value.split(",") if v.strip()) + "]"
    return f"tracker.{key}={_quote(value)}"


def _quote(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def tracker_config(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The composed ``tracker`` node of conf/tracker/<name>.yaml with ``options`` set (checked by its schema)."""
    names = tracker_names()
    if name not in names:
        raise UserError(f"unknown tracker '{name}'; expected one of {', '.join(names)}")
    overrides = [f"tracker={name}", "recipe=none", "analysis=[]"] + [_override(k, v) for k, v in dict(options or {}).items()]
    return compose_config(overrides, who=f"tracker {name}").tracker


def make_tracker(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The tracker ``tracker=<name>`` gives, with ``options`` as its settings."""
    from toolkit.pipeline import build_tracker

    return build_tracker(tracker_config(name, options))
