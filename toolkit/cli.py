"""The command line around Hydra: argument fixes, the schema registry, one-line errors and honest exit codes.

Exit status: 0 when everything ran, 2 for bad input (a config that does not compose, a bad setting, bad data),
1 for a bug (its traceback goes to the log), 130 when interrupted (Ctrl-C or SIGTERM).
"""
from __future__ import annotations

import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Sequence

from toolkit.errors import UserError
from toolkit.secrets import protect_console, scrub
from toolkit.settings import CONF_DIR

# keys under these nodes are the user's own (config keys of their runs): added or overridden alike
_OPEN_NODES = re.compile(r"^(select\.config\.[^=]+)=")
_QUOTE_HINT = ("; quote a value holding spaces or any of ^$|()[]{}=,: for Hydra inside shell quotes, "
               "e.g. \"select.name_regex='^lr-'\"")


def prepare_argv(argv: Sequence[str]) -> list[str]:
    """The overrides as Hydra should see them: ``select.config.<key>=...`` may add a key the file does not list."""
    return [("++" + arg) if _OPEN_NODES.match(arg) else arg for arg in argv]


def searchpath_dirs(argv: Sequence[str]) -> list[str]:
    """The local folders of a ``hydra.searchpath=[file://...]`` override (the user's own config folders)."""
    dirs: list[str] = []
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "hydra.searchpath":
            dirs += [m for m in re.findall(r"file://([^,\]'\"]+)", value)]
    return dirs


def _config_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from composing the config (Hydra's or OmegaConf's own errors)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (HydraException, OmegaConfBaseException)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def config_error_line(exc: BaseException) -> str:
    """One line for an error of composing the config."""
    from toolkit.settings import one_line

    text = one_line(exc)
    if "OverrideParseException" in type(exc).__name__ or "mismatched input" in text or "no viable alternative" in text \
            or "LexerNoViableAlt" in text:
        text += _QUOTE_HINT
    return text


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def entry(hydra_main: Callable[[], None], argv: Sequence[str] | None = None) -> int:
    """Run Hydra's main with the toolkit's argument fixes and error handling; return the exit status."""
    saved = os.environ.get("HYDRA_FULL_ERROR")
    user_wants_trace = bool(saved)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing and exiting 1: the errors are ours
    try:
        return _entry(hydra_main, argv, user_wants_trace)
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def _entry(hydra_main: Callable[[], None], argv: Sequence[str] | None, user_wants_trace: bool) -> int:
    from toolkit.settings import register_schemas

    args = prepare_argv(sys.argv[1:] if argv is None else argv)
    sys.argv[1:] = args
    protect_console(args)  # Hydra prints overrides (values included) on some errors
    signal.signal(signal.SIGTERM, _terminate)
    try:
        register_schemas(CONF_DIR, *searchpath_dirs(args))
        hydra_main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was left (status.json says so)", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:
        if user_wants_trace:
            raise
        if _config_error(exc):
            print(f"error: {scrub(config_error_line(exc))}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):  # the run folder cannot be made (a file in its place, no permission)
            where = f" {exc.filename}" if exc.filename else ""
            print(f"error: cannot write{where}: {exc.strerror or exc} (choose another hydra.run.dir)", file=sys.stderr)
            return 2
        sys.stderr.write(scrub(traceback.format_exc()))
        print(f"error: bug: {scrub(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return 1
    return 0
