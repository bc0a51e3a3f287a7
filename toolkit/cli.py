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
from pathlib import Path
from typing import Any

from toolkit.errors import UserError, interrupt
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
    """The user's own config folders: ``--config-dir``/``-cd`` and the local folders of ``hydra.searchpath=[file://...]``."""
    dirs: list[str] = []
    for i, arg in enumerate(argv):
        key, _, value = arg.lstrip("+").partition("=")
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(argv[i + 1])
        elif arg.startswith("--config-dir="):
            dirs.append(value)
        elif key == "hydra.searchpath":
            dirs += re.findall(r"file://([^,\]'\"]+)", value)
    return [os.path.abspath(os.path.expanduser(d)) for d in dirs]


def _config_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from composing the config (Hydra's or OmegaConf's own errors)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (HydraException, OmegaConfBaseException)):
            return True
        seen = seen.__cause__ or seen.__context__
    return not _JOB_STARTED and _raised_in(exc, ("omegaconf", "hydra"))  # e.g. an override under a null node


_JOB_STARTED = False  # set when the job starts: an error before it comes from composing the config


def _raised_in(exc: BaseException, packages: tuple[str, ...]) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is code of one of ``packages``."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", "")) if tb is not None else ""
    return module.split(".")[0] in packages


def _failed_override(exc: BaseException) -> str | None:
    """The command-line override Hydra was applying when ``exc`` was raised, if any."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        override = tb.tb_frame.f_locals.get("override")
        line = getattr(override, "input_line", None)
        found = str(line) if line else found
        tb = tb.tb_next
    return found


def config_error_line(exc: BaseException) -> str:
    """One line for an error of composing the config."""
    from toolkit.settings import one_line

    text = one_line(exc)
    override = _failed_override(exc)
    if override and not _raised_in(exc, ("hydra",)) and isinstance(exc, AssertionError):
        key = override.split("=", 1)[0].lstrip("+~")
        text = (f"cannot apply {override}: a node above {key} is null here (a node such as "
                f"analysis.regressions.minima is null unless its analysis is selected); select that analysis, or set "
                f"the whole node (e.g. '{key.rsplit('.', 1)[0]}={{...}}')")
    elif override and override not in text:
        text = f"{text} (override {override})"
    if "OverrideParseException" in type(exc).__name__ or "mismatched input" in text or "no viable alternative" in text \
            or "LexerNoViableAlt" in text:
        text += _QUOTE_HINT
    return text


def compose_config(overrides: Sequence[str] = (), who: str = "config", with_hydra: bool = False) -> Any:
    """The config ``python run.py <overrides>`` composes (conf/ plus any ``hydra.searchpath`` folder), also inside a
    running Hydra app (whose state is put back); an error is one line ``<who>: ...``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from toolkit.settings import register_schemas

    args = prepare_argv(overrides)
    register_schemas(CONF_DIR, *searchpath_dirs(args))
    saved = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=args, return_hydra_config=with_hydra)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{who}: {config_error_line(exc)}") from None
    finally:  # initialize_config_dir puts back a copy of the singleton: the app's state goes into that one
        if saved is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(saved)


def entry(hydra_main: Callable[[], None], argv: Sequence[str] | None = None) -> int:
    """Run Hydra's main with the toolkit's argument fixes and error handling; return the exit status."""
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing and exiting 1: the errors are ours
    try:
        return _entry(hydra_main, argv, user_wants_trace=bool(saved))
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def _entry(hydra_main: Callable[[], None], argv: Sequence[str] | None, user_wants_trace: bool) -> int:
    from toolkit.extras import require_launcher
    from toolkit.settings import register_schemas

    args = prepare_argv(sys.argv[1:] if argv is None else argv)
    sys.argv[1:] = args
    protect_console(args)  # Hydra prints overrides (values included) on some errors
    signal.signal(signal.SIGTERM, interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupt)
    try:
        user_dirs = searchpath_dirs(args)
        _HELP_DIRS[:] = user_dirs
        register_help_resolver()
        register_schemas(CONF_DIR, *user_dirs)
        require_launcher(args)
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


# --------------------------------------------------------------------------------------------- the job and --help

_HELP_DIRS: list[str] = []  # the user's config folders of this command (listed by --help beside the packaged ones)
HELP_GROUPS = ("tracker", "recipe", "analysis", "experiment", "publish", "hydra/launcher")


def config_group_options(dirs: Sequence[str | os.PathLike] = ()) -> dict[str, list[str]]:
    """``{group: [option, ...]}`` of the toolkit's config groups in the packaged folder and ``dirs`` (the schema/*
    groups that type them are not options), Hydra's launchers included."""
    found: dict[str, set[str]] = {g: set() for g in HELP_GROUPS}
    for folder in (CONF_DIR, *dirs):
        for group in HELP_GROUPS:
            found[group].update(p.stem for p in (Path(folder) / group).glob("*.yaml"))
    try:  # launchers Hydra and its plugins keep in the ConfigStore (basic, joblib, submitit_local, ...)
        from hydra.core.config_store import ConfigStore

        found["hydra/launcher"].update(n.rpartition(".")[0] or n for n in ConfigStore.instance().list("hydra/launcher"))
    except Exception:  # no such group in the store: the folders' launchers only
        pass
    return {g: sorted(v) for g, v in found.items() if v}


def help_groups() -> str:
    """The config groups as --help lists them: one line per group with its options."""
    opts = config_group_options(_HELP_DIRS)
    width = max(len(g) for g in opts)
    return "\n".join(f"  {g + ':':<{width + 1}} {', '.join(v)}" for g, v in opts.items())


def register_help_resolver() -> None:
    """``${sweepkit_help_groups:}``, used by conf/hydra/help/sweepkit.yaml."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("sweepkit_help_groups"):
        OmegaConf.register_new_resolver("sweepkit_help_groups", help_groups, use_cache=False)


def run_job(cfg: object) -> None:
    """The job of ``python run.py`` and ``sweepkit``: run the pipeline into Hydra's run folder and report."""
    import logging

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from toolkit import pipeline
    from toolkit.multirun import write_job_record
    from toolkit.secrets import config_secrets, remember, scrub_file

    global _JOB_STARTED
    _JOB_STARTED = True
    log = logging.getLogger("run")
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:  # secrets set in the config (not only on the command line) are scrubbed from messages too
        remember(config_secrets(OmegaConf.to_container(cfg, resolve=True)))
    except Exception:  # an interpolation that does not resolve: the pipeline reports it
        remember(config_secrets(OmegaConf.to_container(cfg, resolve=False)))
    if multirun:  # Hydra saves the composed config, secrets included, at the sweep root
        scrub_file(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    status = pipeline.run(cfg, run_dir)
    error = pipeline.error_line(status, run_dir)
    if multirun:  # the gather callback reports failed jobs; exiting here would stop Hydra before it runs
        write_job_record(run_dir, list(hydra_cfg.overrides.task), error, pipeline.exit_code(status))
    if error:
        log.error(scrub(error), extra={"console": False})
        print(f"error: {scrub(error)}", file=sys.stderr)
        if not multirun:
            sys.exit(pipeline.exit_code(status))
        return
    print(f"results: {run_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``sweepkit`` console script: ``python run.py`` with the packaged configs, from any folder."""
    import hydra

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.lstrip("+").startswith("hydra.job.name=") for a in args):
        args.append("hydra.job.name=run")  # the log is run.log, as with run.py (Hydra names it after the caller)
    hydra_main = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(run_job)
    return entry(hydra_main, args)


def console() -> None:
    """Entry point of the installed ``sweepkit`` command."""
    sys.exit(main())
