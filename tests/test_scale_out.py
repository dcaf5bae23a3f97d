"""Scale-out against real services: workers sharing one Optuna study on PostgreSQL, a real `mlflow server`
(PostgreSQL backend, proxied artifacts), workers and finalize commands started at the same instant in
several rounds, racing parent-run creators, SIGKILL mid-trial."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from optuna.trial import TrialState
from transformers import BertForSequenceClassification

from devtools.audit import audit
from devtools.commands import TINY, start_pipeline, wait_for_running_trial, wait_for_saved_epoch
from devtools.services import ONE_EPOCH_SPACE, mlflow_server, postgres_database
from pipeline.schema import RegistryConfig, SearchConfig, TrackingConfig
from pipeline.search import internals as search_internals
from pipeline.search import storage
from pipeline.search.resume import RESUMED_FROM_EPOCH, RESUMED_FROM_TRIAL
from pipeline.search.study import best_trial, trial_name
from pipeline.tracking.promotion import Rule
from pipeline.tracking.registry import TRIAL_RUN_TAG
from pipeline.tracking.tracker import ROLE_TAG, STATE_TAG, TRIAL_TAG, WORKER, Tracker
from pipeline.training.speed import Speed
from tests.conftest import champion_by_the_rule, save_small_bert, write_space
from tests.test_promotion import add_version, answers

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
FAST = ["trainer.num_train_epochs=1"]
START_LEARNING_RATE = 0.001  # TINY's trainer.learning_rate, inside the space: a new study's start


class Cluster:
    """One PostgreSQL database per service, an MLflow server on the other, workers in one directory."""

    def __init__(self, cwd: Path, storage: str, tracking_uri: str) -> None:
        self.cwd, self.storage, self.tracking_uri = cwd, storage, tracking_uri
        self.client = MlflowClient(tracking_uri, tracking_uri)

    def start(self, name: str, *overrides: str, space: str = "space.yaml") -> subprocess.Popen:
        """`python -m pipeline` against the shared services, output in `name`.log."""
        shared = [f"search.storage={self.storage}", f"tracking.uri={self.tracking_uri}", *FAST]
        shared.append(f"search.space={self.cwd / space}")
        return start_pipeline(self.cwd, *TINY, *shared, *overrides, log=self.cwd / f"{name}.log")

    def wait(self, name: str, process: subprocess.Popen, timeout: float = 400) -> None:
        assert process.wait(timeout=timeout) == 0, (self.cwd / f"{name}.log").read_text()[-3000:]

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)

    def runs(self, role: str, study: str) -> list:
        experiment = self.client.get_experiment_by_name("ag_news")
        query = f"tags.`{ROLE_TAG}` = '{role}' AND tags.`pipeline.study` = '{study}'"
        return self.client.search_runs([experiment.experiment_id], query)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cluster")
    (cwd / "space.yaml").write_text(ONE_EPOCH_SPACE)
    wider = save_small_bert(cwd / "wider")
    (cwd / BACKBONES_SPACE).write_text(ONE_EPOCH_SPACE + f"model: {{type: categorical, choices: [tiny, {wider}]}}\n")
    with postgres_database("pipeline_optuna") as optuna_db, postgres_database("pipeline_mlflow") as mlflow_db:
        with mlflow_server(mlflow_db, cwd / "artifacts", cwd / "mlflow-server.log") as url:
            yield Cluster(cwd, optuna_db, url)


ROUNDS = 3
BACKBONES_SPACE = "backbones.yaml"  # the last round's space: two backbones as well as the training values


def started_together(
    cluster: Cluster, names: list[str], *overrides: str, space: str = "space.yaml"
) -> dict[str, subprocess.Popen]:
    """One process per name, released by one barrier: the same instant, not one after another."""
    barrier, started = threading.Barrier(len(names)), {}

    def launch(name: str) -> None:
        barrier.wait(timeout=60)
        started[name] = cluster.start(name, *overrides, space=space)

    threads = [threading.Thread(target=launch, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started


@pytest.fixture(scope="module")
def three_workers(cluster):
    """Three rounds, each a new study and registered model: 3 workers x 1 trial started at the same
    instant, then finalize (two at the same instant in the first round). The last round's study spans two
    backbones (the tiny model and a wider one in a directory)."""
    for round_ in range(ROUNDS):
        study = [f"search.study_name=shared{round_}", f"registry.name=ag_news{round_}"]
        space = BACKBONES_SPACE if round_ == ROUNDS - 1 else "space.yaml"
        names = [f"r{round_}-worker{i}" for i in range(3)]
        for name, process in started_together(cluster, names, *study, "search.n_trials=1", space=space).items():
            cluster.wait(name, process)
        names = [f"r{round_}-finalize{i}" for i in range(2 if round_ == 0 else 1)]
        for name, process in started_together(cluster, names, *study, "mode=finalize", space=space).items():
            cluster.wait(name, process)
    return cluster


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_three_workers_share_one_study_with_distinct_trials(three_workers, round_):
    trials = three_workers.study(f"shared{round_}").trials
    assert sorted(t.number for t in trials) == list(range(3))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs[WORKER] for t in trials}) == 3  # each worker ran one trial
    # Workers that start together still sample apart (trial 0 is the enqueued starting point).
    assert len({t.params["learning_rate"] for t in trials[1:]}) == 2


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_all_trials_are_child_runs_of_one_parent_on_the_server(three_workers, round_):
    (parent,) = three_workers.runs("study", f"shared{round_}")
    children = three_workers.runs("trial", f"shared{round_}")
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in children) == list(range(3))
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.info.status for r in children} == {"FINISHED"}
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in three_workers.study(f"shared{round_}").trials}
    assert sorted(by_run) == sorted(r.info.run_id for r in children)
    assert parent.info.status == "FINISHED"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_concurrent_finalize_leaves_one_champion_on_the_best_version(three_workers, round_):
    client, name = three_workers.client, f"ag_news{round_}"
    versions = client.search_model_versions(f"name = '{name}'")
    # Each worker's final step registers the best trial it sees, unless another worker already did. The
    # last worker sees every trial, so the finalize commands (started after it) find the best registered.
    best = best_trial(three_workers.study(f"shared{round_}"))
    assert best.user_attrs["mlflow_run_id"] in {v.tags[TRIAL_RUN_TAG] for v in versions}
    assert 1 <= len(versions) <= 3
    for log in three_workers.cwd.glob(f"r{round_}-finalize*.log"):
        assert f"already registered as models:/{name}/" in log.read_text()
    champion = champion_by_the_rule(three_workers.tracking_uri, name)  # None: no version beat the majority class
    holders = [v.version for v in versions if "champion" in client.get_model_version(name, v.version).aliases]
    assert holders == ([champion] if champion else [])


def test_workers_on_a_study_over_backbones_each_train_the_backbone_their_trial_drew(three_workers):
    study, name, wider = three_workers.study(f"shared{ROUNDS - 1}"), f"ag_news{ROUNDS - 1}", three_workers.cwd / "wider"
    trials = study.trials
    # The starting values were queued once per backbone, though three workers opened the new study at once.
    started = Counter(t.params["model"] for t in trials if t.params["learning_rate"] == START_LEARNING_RATE)
    assert started == {"tiny": 1, str(wider): 1}, [t.params for t in trials]
    assert len({t.user_attrs[WORKER] for t in trials}) == 3
    wider_params = sum(p.numel() for p in BertForSequenceClassification.from_pretrained(wider).parameters())
    for trial in trials:  # each trained, and measured, the model its trial drew
        measured = Speed.of(trial.user_attrs).model_params
        assert (measured == wider_params) == (trial.params["model"] == str(wider)), (trial.number, measured)
    best = best_trial(study)
    # Workers finishing together may each register the best trial they see: every such version is its backbone.
    versions = [
        v
        for v in three_workers.client.search_model_versions(f"name = '{name}'")
        if v.tags[TRIAL_RUN_TAG] == best.user_attrs["mlflow_run_id"]
    ]
    assert versions and all(f"base model `{Path(best.params['model']).name}`" in v.description for v in versions)


def test_racing_creators_of_a_parent_run_settle_on_one(cluster):
    trackers = [Tracker(TrackingConfig(uri=cluster.tracking_uri, experiment="ag_news")) for _ in range(4)]
    with ThreadPoolExecutor(len(trackers)) as pool:
        chosen = set(pool.map(lambda tracker: tracker.study_run("race"), trackers))
    assert [r.info.run_id for r in cluster.runs("study", "race")] == list(chosen)


def all_at_once(trackers: list[Tracker], rounds: int, act: Callable[[int, Tracker, int], object]) -> list[Exception]:
    """Every tracker calls `act(index, tracker, round)` at the same moment, round after round (each round a
    new race); returns what they raised."""
    start = threading.Barrier(len(trackers))

    def worker(pair: tuple[int, Tracker]) -> Exception | None:
        index, tracker = pair
        try:
            for round_ in range(rounds):
                start.wait(timeout=60)
                act(index, tracker, round_)
        except threading.BrokenBarrierError:  # another worker failed
            return None
        except Exception as err:
            start.abort()
            return err
        return None

    with ThreadPoolExecutor(len(trackers)) as pool:
        return [err for err in pool.map(worker, enumerate(trackers)) if err is not None]


def test_workers_setting_one_tag_on_the_shared_parent_at_once_all_succeed(cluster):
    """Each worker's final step tags the shared parent run; MLflow's insert races between them."""
    trackers = [Tracker(TrackingConfig(uri=cluster.tracking_uri, experiment="ag_news")) for _ in range(6)]
    parent = trackers[0].study_run("tagged")
    # Several fresh keys: each one is a new race on the insert.
    errors = all_at_once(
        trackers, 5, lambda i, tracker, key: tracker.set_tag(parent, f"pipeline.race{key}", f"worker{i}")
    )
    assert errors == []
    tags = cluster.client.get_run(parent).data.tags
    assert {tags[f"pipeline.race{key}"] for key in range(5)} <= {f"worker{i}" for i in range(6)}


def test_workers_logging_the_study_params_at_once_all_succeed_and_the_first_values_stay(cluster):
    """Each worker records the study's params on the shared parent run as it starts (the CI failure of the
    three-worker fixture): MLflow's store reads the run's params, then inserts, so a worker that loses the
    race hits a duplicate key; MLflow params never change, so the first writer's values stay."""
    trackers = [Tracker(TrackingConfig(uri=cluster.tracking_uri, experiment="ag_news")) for _ in range(6)]
    parent = trackers[0].study_run("params")
    # Each round new keys (a new race); the workers disagree on one value, as two command lines can.
    errors = all_at_once(
        trackers,
        5,
        lambda i, tracker, key: tracker.log_new_params(parent, {f"same{key}": "shared", f"own{key}": f"worker{i}"}),
    )
    assert errors == []
    params = cluster.client.get_run(parent).data.params
    assert {params[f"same{key}"] for key in range(5)} == {"shared"}
    assert {params[f"own{key}"] for key in range(5)} <= {f"worker{i}" for i in range(6)}
    trackers[1].log_new_params(parent, {"own0": "later", "added": "later"})  # a later invocation adds only new keys
    params = cluster.client.get_run(parent).data.params
    assert params["own0"] != "later" and params["added"] == "later"


def test_workers_logging_the_same_new_dataset_at_once_all_succeed(cluster):
    """Each worker's runs log the study's splits as inputs (the CI failure of the three-worker fixture): MLflow's
    store looks up the dataset, then inserts it, so a worker that loses the race hits a duplicate key."""
    trackers = [Tracker(TrackingConfig(uri=cluster.tracking_uri, experiment="ag_news")) for _ in range(6)]
    runs = [tracker.new_run(f"inputs{i}", "test") for i, tracker in enumerate(trackers)]

    def log(i: int, tracker: Tracker, round_: int) -> None:
        dataset = Dataset(f"race{round_}", f"digest{round_}", "local", '{"uri": "train.csv"}')  # a new row each round
        tracker.log_inputs(runs[i], [DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, "train")])])

    assert all_at_once(trackers, 5, log) == []
    for run in runs:
        assert sorted(i.dataset.name for i in cluster.client.get_run(run).inputs.dataset_inputs) == [
            f"race{r}" for r in range(5)
        ]


def test_workers_promoting_the_champion_of_a_new_model_at_once_all_succeed(cluster):
    """Workers' final steps each point the alias (the CI failure of the three-worker fixture): on a new
    registered model the first alias is an insert, and MLflow's store reads then inserts, so a writer that
    loses the race hits a duplicate key. Each version's test answers are artifacts on the server: version 2
    is clearly better than 1, version 3 is not better than 2 (test_promotion.py's rows)."""
    trackers = [Tracker(TrackingConfig(uri=cluster.tracking_uri, experiment="ag_news")) for _ in range(6)]
    names = [f"promoted{i}" for i in range(5)]  # each model a new race on the alias insert
    for name in names:
        cluster.client.create_registered_model(name)
        for right in (range(150), [*range(150), *range(160, 175)], range(158)):
            add_version(trackers[0], answers(set(right)), name=name)

    def promote(i: int, tracker: Tracker, n: int) -> None:
        Rule(tracker, RegistryConfig(name=names[n])).promote()

    errors = all_at_once(trackers, len(names), promote)
    assert errors == []
    assert [cluster.client.get_model_version_by_alias(name, "champion").version for name in names] == ["2"] * 5


def test_a_worker_whose_table_another_worker_committed_first_still_opens_the_storage():
    """The CI failure `relation "studies" already exists`: another worker commits a table of a new database
    after this one checked that it is missing and before its CREATE."""
    with postgres_database("pipeline_race") as url:
        rival, raced = sqlalchemy.create_engine(url), []

        def rival_commits_first(table, connection, **kw) -> None:
            if not raced:  # the first attempt only; the retry finds the table
                raced.append(table.name)
                with rival.begin() as other:
                    table.create(other)

        sqlalchemy.event.listen(search_internals.schema().tables["studies"], "before_create", rival_commits_first)
        try:
            rdb = storage.open_storage(SearchConfig(storage=url))
        finally:
            sqlalchemy.event.remove(search_internals.schema().tables["studies"], "before_create", rival_commits_first)
            rival.dispose()
        assert raced == ["studies"]
        assert optuna.create_study(storage=rdb, study_name="after-the-race").study_name == "after-the-race"
        rdb.engine.dispose()


def test_a_worker_that_waits_on_another_workers_uncommitted_schema_still_opens_the_storage():
    """PostgreSQL blocks a CREATE on a rival's uncommitted one, then fails it with a unique violation."""
    with postgres_database("pipeline_race") as url:
        rival = sqlalchemy.create_engine(url)
        with ThreadPoolExecutor(1) as pool, rival.connect() as other:
            with other.begin():
                search_internals.schema().create_all(other)
                opening = pool.submit(storage.open_storage, SearchConfig(storage=url))
                time.sleep(1.5)  # long enough for the opener to block on our CREATE TYPE
                assert not opening.done()
            rdb = opening.result(timeout=60)
        rival.dispose()
        assert optuna.create_study(storage=rdb, study_name="after-the-wait").study_name == "after-the-wait"
        rdb.engine.dispose()


def test_a_dead_workers_trial_is_resumed_from_its_last_epoch_by_another_worker(cluster):
    """A preempted machine: SIGKILL after the trial's first epoch; a worker started later resumes it."""
    (cluster.cwd / "resumable").mkdir()
    space = write_space(
        cluster.cwd / "resumable",
        {
            "learning_rate": {"type": "categorical", "choices": [0.001]},
            "num_train_epochs": {"type": "categorical", "choices": [3]},
        },
    )
    command = [
        "search.study_name=preempted",
        "registry.name=preempted",
        f"search.space={space}",
        "search.n_trials=1",
        "trainer.num_train_epochs=3",
        "dataset.max_train_samples=480",
        "search.heartbeat_interval=1",
        "search.grace_period=2",
    ]
    victim = cluster.start("preempted", *command)
    saved = wait_for_saved_epoch(cluster.cwd / "mlruns" / "checkpoints" / "preempted" / "resume", victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    time.sleep(3)  # past grace_period since the victim's last heartbeat
    cluster.wait("heir", cluster.start("heir", *command))

    interrupted, resumed = cluster.study("preempted").trials
    assert (interrupted.state, resumed.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert resumed.user_attrs[RESUMED_FROM_TRIAL] == 0 and resumed.user_attrs[RESUMED_FROM_EPOCH] == saved["epoch"]
    assert sorted(resumed.intermediate_values) == [1, 2, 3]
    assert f"trial 1 resumes trial 0 from its epoch {saved['epoch']}" in (cluster.cwd / "heir.log").read_text()
    result = audit(cluster.study("preempted"), cluster.client, "ag_news")
    assert result.consistent, result.summary() + f" {result.disagreements} {result.running_runs}"


def test_a_worker_killed_mid_trial_leaves_a_failed_trial_and_no_running_run(cluster):
    # Three epochs, killed once the first is saved: the kill lands mid-trial, not as the trial completes.
    (cluster.cwd / "killed").mkdir()
    space = write_space(cluster.cwd / "killed", {"num_train_epochs": {"type": "categorical", "choices": [3]}})
    study = ["search.study_name=killed", f"search.space={space}", "trainer.num_train_epochs=3"]
    fast_heartbeat = ["search.heartbeat_interval=1", "search.grace_period=2", "search.pruner=none"]
    victim = cluster.start("victim", *study, "search.n_trials=2", *fast_heartbeat)
    survivor = cluster.start("survivor", *study, "search.n_trials=2", *fast_heartbeat)
    victim_trial = wait_for_running_trial(cluster.storage, "killed", lambda w: w.endswith(f":{victim.pid}"), victim)
    states = cluster.cwd / "mlruns" / "checkpoints" / "killed" / "resume"
    wait_for_saved_epoch(states, victim, trial=trial_name(victim_trial))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    completed = {t.number for t in cluster.study("killed").trials if t.state == TrialState.COMPLETE}
    cluster.wait("survivor", survivor)
    time.sleep(3)  # past grace_period since the victim's last heartbeat
    cluster.wait("finalize-killed", cluster.start("finalize-killed", *study, "mode=finalize", *fast_heartbeat))

    trials = {t.number: t for t in cluster.study("killed").trials}
    assert trials[victim_trial].state == TrialState.FAIL
    assert completed <= {n for n, t in trials.items() if t.state == TrialState.COMPLETE}
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) >= 2  # the survivor's trials
    runs = {int(r.data.tags[TRIAL_TAG]): r for r in cluster.runs("trial", "killed")}
    # Retried by the next run (resume.retry), so its run ends KILLED as resumed, not FAILED.
    assert runs[victim_trial].info.status == "KILLED" and runs[victim_trial].data.tags[STATE_TAG] == "resumed"
    assert "RUNNING" not in {r.info.status for r in runs.values()}
