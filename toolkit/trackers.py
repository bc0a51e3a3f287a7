"""The trackers the toolkit knows: one per file in conf/tracker/, built from a name and settings."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from toolkit.settings import register_schemas

    names = tracker_names()
    if name not in names:
        raise UserError(f"unknown tracker '{name}'; expected one of {', '.join(names)}")
    register_schemas(CONF_DIR)
    overrides = [f"tracker={name}", "recipe=none", "analysis=[]"] + [_override(k, v) for k, v in dict(options or {}).items()]
    saved = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    if saved is not None:
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides).tracker
    except UserError:
        raise
    except Exception as exc:
        from toolkit.cli import config_error_line

        raise UserError(f"tracker {name}: {config_error_line(exc)}") from None
    finally:
        if saved is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(saved)


def make_tracker(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The tracker ``tracker=<name>`` gives, with ``options`` as its settings."""
    from toolkit.pipeline import build_tracker

    return build_tracker(tracker_config(name, options))
