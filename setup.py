"""Package discovery that pyproject.toml cannot express: conf/ (a top-level folder) ships as ``sweepkit.conf``.

Every other setting is in pyproject.toml; ``pip install .`` and ``pip install -e .`` both use this.
"""
from setuptools import find_namespace_packages, setup

CODE = ["toolkit", "toolkit.*", "adapters", "adapters.*", "analyses", "analyses.*", "sweepkit", "sweepkit.*"]
CONF = ["sweepkit.conf"] + [f"sweepkit.conf.{name}" for name in find_namespace_packages(where="conf")]

setup(packages=find_namespace_packages(include=CODE) + CONF, package_dir={"sweepkit.conf": "conf"})
