"""User-facing errors: one line, naming the file, run or column and what was expected."""
from __future__ import annotations

# the pip extra that brings each optional top-level module
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb", "google": "wandb", "torch": "torch", "tensorboard": "tensorboard",
          "hydra_plugins": "launchers", "joblib": "launchers", "submitit": "launchers",
          "aim": "aim", "aimrocks": "aim",
          "transformers": "hf", "accelerate": "hf", "lightning": "lightning", "pytorch_lightning": "lightning",
          "dvclive": "dvclive"}


class UserError(Exception):
    """Bad input from the user; printed as one line without a traceback."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency group is not installed."""


def missing_extra(module: str, what: str = "") -> MissingExtraError:
    """The one-line error for a missing optional module, naming the pip extra that brings it."""
    top = module.split(".")[0]
    extra = EXTRAS.get(top, "all")
    prefix = f"{what}: " if what else ""
    return MissingExtraError(f"{prefix}'{top}' is not installed: pip install 'sweepkit[{extra}]' (or pip install -e '.[{extra}]')")


def require_extra(module: str, extra: str):
    """Import ``module`` or raise a one-line error naming the pip extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"'{module}' is not installed: pip install 'sweepkit[{extra}]' (or pip install -e '.[{extra}]')"
        ) from exc
