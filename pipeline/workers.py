"""Many processes on one study: per-trial sampler seeds, the SQLite warning, a worker's name."""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from pipeline.schema import SearchConfig

log = logging.getLogger(__name__)


def worker_name() -> str:
    """Which process ran a trial: kept on the trial and its MLflow run, to trace a worker that died."""
    return f"{socket.gethostname()}:{os.getpid()}"


def warn_on_shared_sqlite(cfg: SearchConfig, study: optuna.Study) -> bool:
    """Warn when another worker is running trials of a study kept in SQLite, which locks under
    concurrent writers. Call after heartbeats failed the trials of dead workers."""
    if not cfg.storage.startswith("sqlite"):
        return False
    if not study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
        return False
    log.warning(
        "search.storage=%s: another worker is running trials of study %s; SQLite locks under concurrent "
        "writers: share a study through PostgreSQL (search.storage=postgresql+psycopg://HOST/DB, "
        "pip install -e '.[postgres]') or Optuna's journal storage",
        cfg.storage, study.study_name,
    )
    return True


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a dead worker's trial, except one whose values lie outside the search space (the
    configured starting point may): Optuna cannot re-create it, and the error would stop the worker."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        try:
            super().__call__(study, trial)
        except ValueError as err:
            log.warning("trial %d failed (its worker died) and is not retried: %s", trial.number, err)


class TrialSeededSampler(BaseSampler):
    """A sampler built afresh for each trial with seed + trial number.

    Trial numbers come from the shared storage and never collide, so workers that start together draw
    different values, while one worker replaying a study draws the same ones."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._sampler = make(seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._sampler = self._make(self._seed + trial.number)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()
