"""Many workers on one study (sampler seeds, SQLite warning, retry of a dead worker's trial) and the
torchrun rules, without services."""

import logging
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from devtools.commands import pipeline_env
from pipeline.errors import PipelineError
from pipeline.runtime import distributed
from pipeline.schema import SearchConfig
from pipeline.search import storage
from pipeline.search.space import Param, hp_space
from pipeline.search.study import TrialSeededSampler, fail_stale_trials, warn_on_shared_sqlite
from tests.conftest import compose_config

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
SPACE = [Param("learning_rate", "float", low=1e-5, high=1e-3, log=True)]


def sampled(storage: str, order: list[int]) -> dict[int, float]:
    """Two workers (two Study objects with the same seed) asking for trials in turn."""
    a, b = (
        optuna.load_study(
            study_name="s", storage=storage, sampler=TrialSeededSampler(optuna.samplers.RandomSampler, 42)
        )
        for _ in range(2)
    )
    values = {}
    for worker in order:
        trial = (a, b)[worker].ask()
        values[trial.number] = hp_space(SPACE)(trial)["learning_rate"]
    return values


def test_workers_with_one_seed_sample_apart_and_replay_by_trial_number(tmp_path):
    first, second = (f"sqlite:///{tmp_path}/{n}.db" for n in ("a", "b"))
    for url in (first, second):
        optuna.create_study(study_name="s", storage=url)
    together = sampled(first, [0, 1, 0, 1])
    assert len(set(together.values())) == 4  # seed + len(trials) would repeat draws across workers
    assert sampled(second, [1, 1, 1, 1]) == together  # which worker asked does not matter


def test_sqlite_shared_by_running_workers_warns(tmp_path, caplog):
    cfg = SearchConfig(storage=f"sqlite:///{tmp_path}/o.db", study_name="s")
    study = optuna.create_study(study_name="s", storage=cfg.storage)
    assert not warn_on_shared_sqlite(cfg, study)
    study.ask()  # another worker's trial, RUNNING
    with caplog.at_level(logging.WARNING):
        assert warn_on_shared_sqlite(cfg, study)
    assert "PostgreSQL" in caplog.text and "journal" in caplog.text


def test_a_dead_workers_trial_is_retried_unless_outside_the_space(tmp_path):
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db")
    study = optuna.create_study(study_name="s", storage=rdb)
    study.enqueue_trial({"learning_rate": 0.5})  # a starting point outside the space
    for _ in range(2):
        hp_space(SPACE)(study.ask())
    retry = storage.RetryStaleTrial(max_retry=1)
    study_id = rdb.get_study_id_from_name("s")
    for trial in study.get_trials(states=[TrialState.RUNNING]):
        trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        rdb.set_trial_state_values(trial_id, TrialState.FAIL)
        retry(study, rdb.get_trial(trial_id))
    waiting = study.get_trials(states=[TrialState.WAITING])
    assert [t.params["learning_rate"] for t in waiting] == [study.trials[1].params["learning_rate"]]


KILLED_BEFORE_ITS_FIRST_BEAT = """
import os, signal, sys
import optuna
from pipeline.schema import SearchConfig
from pipeline.search import storage
rdb = storage.open_storage(SearchConfig(storage=sys.argv[1], heartbeat_interval=1, grace_period=1))
optuna.create_study(study_name="s", storage=rdb).ask()  # RUNNING; heartbeats begin only inside optimize
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_worker_killed_before_its_trials_first_heartbeat_leaves_a_trial_the_next_run_fails_and_retries(tmp_path):
    """Optuna's stale check skips a RUNNING trial without a heartbeat: it stayed RUNNING for ever."""
    url = f"sqlite:///{tmp_path}/o.db"
    killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_ITS_FIRST_BEAT, url], env=pipeline_env(), timeout=120)
    assert killed.returncode == -signal.SIGKILL
    rdb = storage.open_storage(SearchConfig(storage=url, heartbeat_interval=1, grace_period=1))
    study = optuna.load_study(study_name="s", storage=rdb)
    fail_stale_trials(study)  # within the grace period: a live worker's trial could look the same
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    time.sleep(1.5)
    fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]  # failed, and retried


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_pruning_under_torchrun_is_refused_before_training(monkeypatch, pruner):
    cfg = compose_config(f"search.pruner={pruner}")
    distributed.check(cfg)  # one process: fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PipelineError, match="search.pruner=none"):
        distributed.check(cfg)
    distributed.check(compose_config("search.pruner=none"))
    distributed.check(compose_config(f"search.pruner={pruner}", "mode=train"))
