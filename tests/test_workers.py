"""Many workers on one study (sampler seeds, SQLite warning, retry of a dead worker's trial) and the
torchrun rules, without services."""
import logging

import optuna
import pytest
from optuna.trial import TrialState

from pipeline import storage, torchrun
from pipeline.errors import PipelineError
from pipeline.schema import SearchConfig
from pipeline.space import Param, hp_space
from pipeline.study import TrialSeededSampler, warn_on_shared_sqlite
from tests.conftest import compose_config

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
SPACE = [Param("learning_rate", "float", low=1e-5, high=1e-3, log=True)]


def sampled(storage: str, order: list[int]) -> dict[int, float]:
    """Two workers (two Study objects with the same seed) asking for trials in turn."""
    a, b = (optuna.load_study(study_name="s", storage=storage,
                              sampler=TrialSeededSampler(optuna.samplers.RandomSampler, 42)) for _ in range(2))
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
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/o.db")
    study.enqueue_trial({"learning_rate": 0.5})  # a starting point outside the space
    for _ in range(2):
        hp_space(SPACE)(study.ask())
    retry = storage.RetryStaleTrial(max_retry=1)
    for trial in study.get_trials(states=[TrialState.RUNNING]):
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        retry(study, study._storage.get_trial(trial._trial_id))
    waiting = study.get_trials(states=[TrialState.WAITING])
    assert [t.params["learning_rate"] for t in waiting] == [study.trials[1].params["learning_rate"]]


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_pruning_under_torchrun_is_refused_before_training(monkeypatch, pruner):
    cfg = compose_config(f"search.pruner={pruner}")
    torchrun.check(cfg)  # one process: fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PipelineError, match="search.pruner=none"):
        torchrun.check(cfg)
    torchrun.check(compose_config("search.pruner=none"))
    torchrun.check(compose_config(f"search.pruner={pruner}", "mode=train"))
