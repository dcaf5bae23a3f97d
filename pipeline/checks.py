"""Checks of the composed config that the schema's types cannot express, made before anything is read,
trained or recorded: each failure is one line naming the key and the fix."""
from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import PipelineError
from pipeline.schema import Mode

# Names that become directories (outputs/, checkpoints) and values in MLflow filter strings.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_KEYS = ("search.study_name", "registry.name", "registry.alias", "tracking.experiment", "dataset.name", "model.name")
MAX_SEED = 2**32 - 1  # numpy's limit; the Trainer seeds numpy
# Tracking URIs MLflow 3 can store to (a plain directory is refused).
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def check_config(cfg: DictConfig) -> None:
    for key in NAME_KEYS:
        check_name(key, str(OmegaConf.select(cfg, key)))
    if not cfg.dataset.text_columns:
        raise PipelineError("dataset.text_columns=[]: name at least one column, e.g. dataset.text_columns=[text]")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise PipelineError(f"seed={cfg.seed}: must be between 0 and {MAX_SEED}")
    for key in ("search.heartbeat_interval", "search.grace_period", "search.storage_retry_s"):
        if OmegaConf.select(cfg, key) <= 0:
            raise PipelineError(f"{key}={OmegaConf.select(cfg, key)}: must be a positive number of seconds")
    if cfg.mode == Mode.search and cfg.search.n_trials <= 0:
        raise PipelineError(
            f"search.n_trials={cfg.search.n_trials}: must be at least 1 (mode=finalize trains the best trial without searching)"
        )
    if cfg.search.timeout is not None and cfg.search.timeout <= 0:
        raise PipelineError(f"search.timeout={cfg.search.timeout}: must be a positive number of seconds, or null for none")
    scheme = cfg.tracking.uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in cfg.tracking.uri else ""
    if scheme not in TRACKING_SCHEMES:
        raise PipelineError(
            f"tracking.uri={cfg.tracking.uri}: not a tracking store MLflow can use; use sqlite:///PATH.db, "
            "http(s)://HOST:PORT (mlflow server) or a database URL (postgresql://...)"
        )


def check_name(key: str, value: str) -> None:
    if not _NAME.fullmatch(value) or ".." in value:
        raise PipelineError(
            f"{key}={value}: use letters, digits, '.', '_' and '-' only, starting with a letter or digit "
            "(it names directories and MLflow searches)"
        )
