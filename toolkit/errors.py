"""User-facing errors: one line, naming the file, run or column and what was expected."""
from __future__ import annotations

import logging
from typing import Any

# the pip extra that brings each optional top-level module
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb", "google": "wandb", "torch": "torch", "tensorboard": "tensorboard",
          "hydra_plugins": "launchers", "joblib": "launchers", "submitit": "launchers",
          "aim": "aim", "aimrocks": "aim",
          "transformers": "hf", "accelerate": "hf", "lightning": "lightning", "pytorch_lightning": "lightning",
          "dvclive": "dvclive"}


_INTERRUPTED: list[int] = []  # the signals received (SIGTERM, SIGINT) since the process started


def _importing(frame: Any) -> bool:
    """Whether ``frame`` runs inside an import (a module being initialised)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def interrupt(signum: int, frame: Any = None) -> None:
    """Signal handler: remember the interruption, then raise KeyboardInterrupt where the code is.

    Inside an import the exception would leave a C extension half initialised (an ImportError now, a crash when the
    interpreter exits), so the signal is delivered again once the import is done.
    """
    _INTERRUPTED.append(int(signum))
    if _importing(frame):
        import os
        import threading

        again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        again.daemon = True
        again.start()
        return
    raise KeyboardInterrupt(f"signal {signum}")


def forget_interrupts() -> None:
    """Start a new run with no interruption remembered (a notebook process outlives a Ctrl-C)."""
    _INTERRUPTED.clear()


def interrupted() -> bool:
    """Whether an interrupting signal arrived (an exception raised around it, e.g. an import cut short, is not a bug)."""
    return bool(_INTERRUPTED)


class UserError(Exception):
    """Bad input from the user; printed as one line without a traceback."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency group is not installed."""


def extra_line(extra: str, what: str = "", module: str = "") -> str:
    """One line naming the pip extra: ``<what> needs the <extra> extra: pip install 'sweepkit[<extra>]'``."""
    if what:
        return f"{what} needs the {extra} extra: pip install 'sweepkit[{extra}]'"
    missing = f" (no module '{module}')" if module else ""
    return f"the {extra} extra is not installed{missing}: pip install 'sweepkit[{extra}]'"


def missing_extra(module: str, what: str = "", extra: str | None = None) -> MissingExtraError:
    """The one-line error for a missing optional module, naming the pip extra that brings it."""
    top = module.split(".")[0]
    return MissingExtraError(extra_line(extra or EXTRAS.get(top, "all"), what, top))


def require_extra(module: str, extra: str, what: str = "") -> Any:
    """Import ``module`` or raise a one-line error naming the pip extra to install (``what`` needs it).

    Any module missing on the way counts (a dependency of the extra's package too, e.g. wandb's protobuf).
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(getattr(exc, "name", None) or module, what, extra) from None


def missing_extra_from(exc: BaseException, what: str = "") -> MissingExtraError | None:
    """The one-line MissingExtraError for an ImportError of an optional module (in ``exc`` or its causes), else None.

    For the places that catch everything (the pipeline's guards, the command line): a ``ModuleNotFoundError`` of a
    module an extra brings is bad setup, not a bug.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MissingExtraError):
            return seen
        if isinstance(seen, ModuleNotFoundError) and seen.name and seen.name.split(".")[0] in EXTRAS:
            return missing_extra(seen.name, what)
        seen = seen.__cause__ or seen.__context__
    return None


class ConsoleOnce(logging.Filter):
    """For the console handler: drops records logged with ``extra={"console": False}`` (the run's ``error:`` line
    repeats them; they stay in run.log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record marked ``console=False``."""
        return getattr(record, "console", True) is not False
