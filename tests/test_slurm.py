"""The shipped SLURM job scripts (examples/slurm/) on a real one-node SLURM (Debian's slurm-wlm and munge,
started by devtools.services.slurm_cluster), with the study on PostgreSQL and runs on a real `mlflow server`:
an array job of workers and its dependent finalize job, a task requeued mid-trial (`scontrol requeue`), and a
task killed outright (`scancel --signal=KILL`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from devtools.audit import audit
from devtools.commands import ROOT, TINY, pipeline_env, wait_for_running_trial, wait_for_saved_epoch
from devtools.services import ONE_EPOCH_SPACE, Slurm, mlflow_server, postgres_database, slurm_cluster
from pipeline.search.resume import RESUMED_FROM_EPOCH, RESUMED_FROM_TRIAL
from pipeline.search.study import trial_name
from pipeline.tracking.tracker import WORKER
from tests.conftest import champion_by_the_rule, write_space

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
SCRIPTS = ROOT / "examples" / "slurm"
HEARTBEAT = ["search.heartbeat_interval=1", "search.grace_period=2", "search.pruner=none"]


class OnSlurm:
    """Jobs submitted from one project directory, to one SLURM, PostgreSQL study database and MLflow server."""

    def __init__(self, slurm: Slurm, cwd: Path, storage: str, tracking_uri: str) -> None:
        self.slurm, self.cwd, self.storage, self.tracking_uri = slurm, cwd, storage, tracking_uri
        self.client = MlflowClient(tracking_uri, tracking_uri)

    def env(self, workers: int) -> dict[str, str]:
        return pipeline_env(
            **self.slurm.env(),
            WORKERS=str(workers),
            OPTUNA_STORAGE=self.storage,
            MLFLOW_TRACKING_URI=self.tracking_uri,
            PYTHON=sys.executable,
        )

    def submit(self, workers: int, *overrides: str) -> tuple[str, str]:
        """examples/slurm/submit.sh with `overrides`: the workers' array job id and the finalize job's."""
        done = subprocess.run(
            [str(SCRIPTS / "submit.sh"), *TINY, f"search.space={self.cwd / 'space.yaml'}", *overrides],
            cwd=self.cwd, env=self.env(workers), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        _, workers_id, _, finalize_id = done.stdout.replace(",", "").split()
        return workers_id, finalize_id

    def states(self, job: str) -> dict[str, str]:
        """Each task's JobState (`12_1: COMPLETED`), from scontrol (it keeps ended jobs for MinJobAge)."""
        found = {}
        for record in self.slurm.run("scontrol", "-o", "show", "job", job).splitlines():
            fields = dict(field.split("=", 1) for field in record.split() if "=" in field)
            task = fields.get("ArrayTaskId")
            found[f"{fields['ArrayJobId']}_{task}" if task and task != "N/A" else fields["JobId"]] = fields["JobState"]
        return found

    def wait(self, job: str, timeout: float = 300) -> dict[str, str]:
        """Each task's final state, once none is pending, running or being requeued."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.states(job)
            if states and all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for s in states.values()):
                return states
            time.sleep(1)
        logs = "".join(p.read_text()[-2000:] for p in self.cwd.glob("slurm-*.out"))
        raise TimeoutError(f"job {job} not done after {timeout}s: {self.states(job)}\n{logs}")

    def release_when_requeued(self, task: str, timeout: float = 120) -> None:
        """Once the requeued task waits again, let it start now: SLURM holds a requeued job for two minutes
        (its BeginTime), which only slows the test down."""
        deadline = time.monotonic() + timeout
        while self.states(task.split("_")[0]).get(task) != "PENDING":
            assert time.monotonic() < deadline, f"task {task} not requeued after {timeout}s: {self.states(task)}"
            time.sleep(0.5)
        self.slurm.run("scontrol", "update", f"JobId={task}", "StartTime=now")

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)

    def running_trial(self, study: str, job: str) -> int:
        """The number of a trial that the first task of array job `job` runs, once one runs."""
        in_job = f"slurm-{job}_"
        return wait_for_running_trial(self.storage, study, lambda w: w.startswith(in_job), _Alive(self, f"{job}_1"))


@pytest.fixture(scope="module")
def on_slurm(tmp_path_factory):
    assert shutil.which("slurmctld"), "SLURM is not installed: apt-get install slurm-wlm munge (.ci/run does)"
    cwd = tmp_path_factory.mktemp("slurm-project")
    (cwd / "space.yaml").write_text(ONE_EPOCH_SPACE)
    with (
        slurm_cluster(tmp_path_factory.mktemp("slurm")) as slurm,
        postgres_database("pipeline_optuna") as optuna_db,
        postgres_database("pipeline_mlflow") as mlflow_db,
        mlflow_server(mlflow_db, cwd / "artifacts", cwd / "mlflow-server.log") as url,
    ):
        yield OnSlurm(slurm, cwd, optuna_db, url)


def test_an_array_job_of_three_workers_fills_one_study_and_its_finalize_job_registers_the_best(on_slurm):
    study = ["search.study_name=array", "registry.name=array", "search.n_trials=1", "trainer.num_train_epochs=1"]
    workers, finalize = on_slurm.submit(3, *study)
    assert set(on_slurm.wait(workers).values()) == {"COMPLETED"}
    assert on_slurm.wait(finalize) == {finalize: "COMPLETED"}
    trials = on_slurm.study("array").trials
    assert sorted(t.number for t in trials) == [0, 1, 2] and {t.state for t in trials} == {TrialState.COMPLETE}
    tasks = {t.user_attrs[WORKER].split("@")[0] for t in trials}
    assert tasks == {f"slurm-{workers}_{task}" for task in (1, 2, 3)}  # one trial per array task
    result = audit(on_slurm.study("array"), on_slurm.client, "ag_news")
    assert result.consistent, result.summary() + f" {result.disagreements} {result.running_runs}"
    assert on_slurm.client.search_model_versions("name = 'array'")
    champion_by_the_rule(on_slurm.tracking_uri, "array")
    assert (on_slurm.cwd / f"slurm-{finalize}-finalize.out").is_file()


def three_epoch_study(on_slurm: OnSlurm, name: str) -> list[str]:
    directory = on_slurm.cwd / name
    directory.mkdir()
    space = write_space(directory, {"num_train_epochs": {"type": "categorical", "choices": [3]}})
    rows = "dataset.max_train_samples=480"  # epochs long enough to requeue or kill one mid-way
    return [f"search.study_name={name}", f"registry.name={name}", f"search.space={space}", rows, *HEARTBEAT]


def test_a_requeued_task_continues_its_trial_from_its_last_saved_epoch(on_slurm):
    study = three_epoch_study(on_slurm, "requeued")
    workers, finalize = on_slurm.submit(1, *study, "search.n_trials=1", "trainer.num_train_epochs=3")
    number = on_slurm.running_trial("requeued", workers)
    states = on_slurm.cwd / "mlruns" / "checkpoints" / "requeued" / "resume"
    saved = wait_for_saved_epoch(states, _Alive(on_slurm, f"{workers}_1"), trial=trial_name(number))
    on_slurm.slurm.run("scontrol", "requeue", f"{workers}_1")
    on_slurm.release_when_requeued(f"{workers}_1")
    assert on_slurm.wait(workers, timeout=400) == {f"{workers}_1": "COMPLETED"}
    assert on_slurm.wait(finalize) == {finalize: "COMPLETED"}
    # The requeue's SIGTERM reached the worker (the script's exec) and it finished the epoch in training first.
    said = (on_slurm.cwd / f"slurm-{workers}_1.out").read_text()
    assert "SIGTERM: finishing the epoch in training, saving it, then stopping" in said, said[-3000:]
    trials = on_slurm.study("requeued").trials
    interrupted, resumed = trials[number], trials[-1]
    assert f"stopped after saving epoch {resumed.user_attrs[RESUMED_FROM_EPOCH]} of trial {number}" in said
    assert interrupted.state == TrialState.FAIL and resumed.state == TrialState.COMPLETE
    assert resumed.user_attrs[RESUMED_FROM_TRIAL] == number
    assert resumed.user_attrs[RESUMED_FROM_EPOCH] >= saved["epoch"] >= 1
    assert sorted(resumed.intermediate_values) == [1, 2, 3]
    result = audit(on_slurm.study("requeued"), on_slurm.client, "ag_news")
    assert result.consistent, result.summary() + f" {result.disagreements} {result.running_runs}"


def test_a_task_killed_outright_has_its_trial_failed_and_retried_by_a_later_task(on_slurm):
    study = three_epoch_study(on_slurm, "killed")
    workers, finalize = on_slurm.submit(1, *study, "search.n_trials=1", "trainer.num_train_epochs=3")
    number = on_slurm.running_trial("killed", workers)
    states = on_slurm.cwd / "mlruns" / "checkpoints" / "killed" / "resume"
    wait_for_saved_epoch(states, _Alive(on_slurm, f"{workers}_1"), trial=trial_name(number))
    on_slurm.slurm.run("scancel", "--signal=KILL", "--full", f"{workers}_1")
    assert on_slurm.wait(workers)[f"{workers}_1"] in ("FAILED", "CANCELLED")  # SLURM says which signal ended it
    on_slurm.wait(finalize)  # its best trial died with the worker: it may find none complete
    time.sleep(3)  # past grace_period since the killed worker's last heartbeat
    later, finalize = on_slurm.submit(1, *study, "search.n_trials=1", "trainer.num_train_epochs=3")
    assert on_slurm.wait(later) == {f"{later}_1": "COMPLETED"}
    assert on_slurm.wait(finalize) == {finalize: "COMPLETED"}
    trials = on_slurm.study("killed").trials
    assert trials[number].state == TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get(RESUMED_FROM_TRIAL) == number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs[WORKER].startswith(f"slurm-{later}_1@")
    result = audit(on_slurm.study("killed"), on_slurm.client, "ag_news")
    assert result.consistent and not result.running_runs, result.summary() + f" {result.disagreements}"


class _Alive:
    """`wait_for_saved_epoch`'s process, for a SLURM task: alive while it is pending or running."""

    def __init__(self, on_slurm: OnSlurm, task: str) -> None:
        self.on_slurm, self.task = on_slurm, task

    def poll(self) -> int | None:
        state = self.on_slurm.states(self.task.split("_")[0]).get(self.task)
        return None if state in ("PENDING", "RUNNING", "CONFIGURING", None) else 1


def test_a_multirun_through_the_submitit_launcher_runs_each_job_on_slurm_and_names_the_best(on_slurm):
    """`hydra/launcher=submitit_slurm`: one SLURM job per config, and the multirun's best-job line, which each
    job leaves in its output directory for the launching process to read."""
    services = [f"search.storage={on_slurm.storage}", f"tracking.uri={on_slurm.tracking_uri}"]
    command = [sys.executable, "-m", "pipeline", "-m", "hydra/launcher=submitit_slurm", *TINY, *services]
    sweep = ["search.n_trials=1", "trainer.num_train_epochs=1", "search.study_name=submitit-a,submitit-b"]
    env = pipeline_env(**on_slurm.slurm.env())
    done = subprocess.run([*command, *sweep], cwd=on_slurm.cwd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    (best,) = [line for line in done.stdout.splitlines() if line.startswith("multirun: best job of 2: model=tiny")]
    assert re.search(r"study=submitit-[ab] validation accuracy [\d.]+, test accuracy [\d.]+ \(95% ", best), best
    for name in ("submitit-a", "submitit-b"):
        (trial,) = on_slurm.study(name).trials
        assert trial.state == TrialState.COMPLETE and trial.user_attrs[WORKER].startswith("slurm-")
    assert len(list(on_slurm.cwd.glob("multirun/*/.submitit/*/*_log.out"))) == 2  # each job's own SLURM log
