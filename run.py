"""Single entry point: compose the config with Hydra and run the pipeline into the run folder."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from toolkit.secrets import config_secrets, remember, scrub, scrub_file

log = logging.getLogger("run")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run the configured tracker -> recipe -> analyses job."""
    from toolkit import pipeline
    from toolkit.multirun import write_job_record

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
        log.error(scrub(error))
        print(f"error: {scrub(error)}", file=sys.stderr)
        if not multirun:
            sys.exit(pipeline.exit_code(status))
        return
    print(f"results: {run_dir}")


if __name__ == "__main__":
    from toolkit.cli import entry

    sys.exit(entry(main))
