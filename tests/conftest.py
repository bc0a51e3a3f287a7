"""One marker per optional extra: a test marked ``needs_<extra>`` is skipped (with the pip command) without it."""
from __future__ import annotations

import importlib.util

import pytest

# extra -> the module that extra brings
EXTRAS = {
    "mlflow": "mlflow",
    "wandb": "wandb",
    "torch": "torch",
    "tensorboard": "tensorboard",
    "launchers": "hydra_plugins.hydra_joblib_launcher",
    "aim": "aim",
    "hf": "transformers",
    "lightning": "lightning",
    "dvclive": "dvclive",
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def pytest_configure(config: pytest.Config) -> None:
    for extra in EXTRAS:
        config.addinivalue_line("markers", f"needs_{extra}: needs the '{extra}' extra (skipped without it)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for extra, module in EXTRAS.items():
            if item.get_closest_marker(f"needs_{extra}") and not installed(module):
                item.add_marker(pytest.mark.skip(reason=f"needs the {extra} extra: pip install -e '.[{extra}]'"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """With ``pytest -n``, the tests of one file share a worker: README snippets build on each other, and a file's
    fixtures (servers, sweeps) start once."""
    if config.getoption("dist") == "load":
        from xdist.scheduler import LoadFileScheduling

        return LoadFileScheduling(config, log)
    return None
