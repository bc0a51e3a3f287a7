"""Single entry point: compose the config with Hydra and run the pipeline into the run folder.

The installed ``sweepkit`` command (``toolkit.cli:console``) does the same from any folder with the packaged configs.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from toolkit.cli import run_job


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run the configured tracker -> recipe -> analyses job."""
    run_job(cfg)


if __name__ == "__main__":
    from toolkit.cli import entry

    sys.exit(entry(main))
