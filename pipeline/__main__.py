"""Entry point: `python -m pipeline +experiment=ag_news [key=value ...]` (Hydra; `-m` for multirun)."""

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pipeline import schema
from pipeline.errors import PipelineError, one_line
from pipeline.runtime import interrupts, secrets, startup

schema.store_in_hydra()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    """One job: its registered model (a multirun's BestJob callback compares them), or None."""
    from pipeline.run import run  # heavy imports after Hydra has validated the config

    interrupts.stop_on_sigterm()
    secrets.redact_files(_hydra_files())
    try:
        return run(cfg)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        _to_log_file(f"error: {err}")
        sys.exit(startup.EXIT_BAD_INPUT)


def _to_log_file(line: str) -> None:
    """The error in the run's own log too (Hydra's file handler), so its directory says why it stopped."""
    # Built by hand, so the masking record factory (secrets.guard_process) never sees it: mask here.
    record = logging.LogRecord(__name__, logging.ERROR, __file__, 0, secrets.redact(line), None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _hydra_files() -> list[Path]:
    """The config files Hydra wrote for this job (and its multirun) before calling it."""
    hc = HydraConfig.get()
    files = list((Path(hc.runtime.output_dir) / hc.output_subdir).glob("*.yaml")) if hc.output_subdir else []
    if hc.mode == RunMode.MULTIRUN:
        files.append(Path(hc.sweep.dir) / "multirun.yaml")
    return files


def cli() -> None:
    """Hydra's main, with config errors on one line (exit 2) and an interrupt without a traceback."""
    startup.begin()  # before Hydra prints or logs anything
    startup.go_offline_if_unreachable()  # before pipeline.run imports huggingface_hub, which reads it once
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's multi-line report

    def composed_and_run() -> None:
        try:
            main()
        except (HydraException, OmegaConfBaseException) as err:
            if full_error:
                raise
            raise PipelineError(one_line(err)) from None
        except schema.StoppedByCheck as stopped:
            raise stopped.args[0] from None

    sys.exit(startup.exit_code(composed_and_run, "run the same command again to continue the study"))


if __name__ == "__main__":
    cli()
