"""Keep API keys and tokens out of saved configs, logs and messages."""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# "token" but not "tokens", "tokenizer" or "per_token" (tokens_key, flops_per_token are settings); "auth" but
# not "author"
SECRET_KEY = re.compile(r"(api[_-]?key|(?<!per[_-])token(?!s|iz)|password|passwd|secret|credential|auth(?!or))",
                        re.IGNORECASE)
SECRET_ENV = ("WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME",
              "DATABRICKS_TOKEN", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN")
MASK = "***"
# the password of scheme://user:password@host, also as Hydra records overrides (http\://user\:password@host)
URL_CREDENTIALS = re.compile(r"(://[^:/@\s\\]+\\?:)[^@/\s]+@")
MIN_LENGTH = 6  # shorter values are not replaced in text (too likely to be ordinary words or numbers)
_remembered: set[str] = set()


def mask_config(config: Any) -> Any:
    """Return a copy of a nested config with secret-looking keys, and passwords in URLs, masked."""
    if isinstance(config, Mapping):
        return {k: (MASK if SECRET_KEY.search(str(k)) and v not in (None, "") else mask_config(v)) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [mask_config(v) for v in config]
    if isinstance(config, str):
        return URL_CREDENTIALS.sub(r"\1" + MASK + "@", config)
    return config


def _leaves(value: Any) -> Iterable[str]:
    if isinstance(value, (Mapping, list, tuple)):
        for v in value.values() if isinstance(value, Mapping) else value:
            yield from _leaves(v)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def config_secrets(config: Any) -> list[str]:
    """Values under secret-looking keys of a nested config, and passwords in URLs (what ``mask_config`` masks)."""
    if isinstance(config, Mapping):
        return [s for k, v in config.items() for s in (_leaves(v) if SECRET_KEY.search(str(k)) else config_secrets(v))]
    if isinstance(config, (list, tuple)):
        return [s for v in config for s in config_secrets(v)]
    if isinstance(config, str):
        return [m.group(0)[len(m.group(1)):-1] for m in URL_CREDENTIALS.finditer(config)]
    return []


def override_secrets(overrides: Iterable[str]) -> list[str]:
    """Values of secret-looking keys in Hydra ``key=value`` overrides (each alternative of a sweep too)."""
    found: list[str] = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if sep and SECRET_KEY.search(key):
            value = value.strip()
            found += [value, *(part.strip().strip("'\"") for part in value.split(",")), value.strip("'\"")]
    return found


def remember(values: Iterable[str]) -> None:
    """Treat these values as secrets from now on: ``scrub`` replaces them too."""
    _remembered.update(v for v in (str(x) for x in values) if len(v) >= MIN_LENGTH)


def secret_values() -> list[str]:
    """Values of known secret environment variables that are set, and remembered ones (longest first)."""
    env = {v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= MIN_LENGTH}
    return sorted(env | _remembered, key=len, reverse=True)


def scrub(text: str) -> str:
    """Replace any known secret value, and URL credentials, in a string."""
    for value in secret_values():
        text = text.replace(value, MASK)
    return URL_CREDENTIALS.sub(r"\1" + MASK + "@", text)


def scrub_file(path: str | os.PathLike) -> None:
    """Scrub a text file in place (atomically), if it exists and holds a secret."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    clean = scrub(text)
    if clean != text:
        from toolkit.outputs import atomic_write_text

        atomic_write_text(path, clean)


class ScrubbedStream:
    """A text stream that scrubs what is written to it (the console of run.py: Hydra prints overrides there)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub(text) if isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def protect_console(argv: Iterable[str]) -> None:
    """Remember the secret values given as command-line overrides and scrub stdout and stderr from now on."""
    remember(override_secrets(argv))
    if not isinstance(sys.stdout, ScrubbedStream) and sys.stdout is not None:
        sys.stdout = ScrubbedStream(sys.stdout)
    if not isinstance(sys.stderr, ScrubbedStream) and sys.stderr is not None:
        sys.stderr = ScrubbedStream(sys.stderr)


def mask_argument(item: str) -> str:
    """One ``key=value`` override (or any argument) with a secret-looking key's value and URL passwords masked."""
    key, sep, _ = str(item).partition("=")
    if sep and SECRET_KEY.search(key):
        return f"{key}={MASK}"
    return scrub(mask_config(str(item)))
