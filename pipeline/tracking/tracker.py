"""MLflow: one experiment through an explicit client, the parent run per study, the trial runs' states
(repaired after a killed worker), and writes that survive racing workers and a slow server."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import optuna
import requests
from mlflow.entities import DatasetInput, Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from omegaconf import DictConfig
from optuna.trial import TrialState

from pipeline.errors import PipelineError
from pipeline.runtime import distributed, sqlite
from pipeline.runtime.interrupts import HeldDuringWrites
from pipeline.schema import TrackingConfig
from pipeline.search import resume
from pipeline.search.study import trial_name
from pipeline.tracking import internals
from pipeline.tracking.outbox import Outbox

ROLE_TAG = "pipeline.role"  # study | trial | train
STUDY_TAG = "pipeline.study"
TRIAL_TAG = "pipeline.trial"
STATE_TAG = "pipeline.state"  # running | complete | pruned | failed | interrupted | resumed
ERROR_TAG = "pipeline.error"
RUN_ID_ATTR = "mlflow_run_id"  # on each Optuna trial
WORKER = "pipeline.worker"  # host:pid that ran a trial: an Optuna user attribute and an MLflow tag
SETTLE_S = 1.0  # how long a new parent run waits for racing creators' runs to become visible
LOG_BATCH_MAX = 1000  # metrics MLflow takes in one log_batch call
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # read by MLflow at each download
# At most 10 s per request, 2 retries 1 s and 2 s apart: about 35 s before a call to a dead server fails.
SERVER_CALL_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}

# Optuna's final trial state -> (MLflow status, state tag). A pruned trial is a normal outcome.
TRIAL_END = {
    TrialState.COMPLETE: (RunStatus.FINISHED, "complete"),
    TrialState.PRUNED: (RunStatus.FINISHED, "pruned"),
    TrialState.FAIL: (RunStatus.FAILED, "failed"),
}
INTERRUPTED = (RunStatus.KILLED, "interrupted")  # a FAIL trial whose worker was interrupted (Ctrl-C, SIGTERM)
RESUMED = (RunStatus.KILLED, "resumed")  # a FAIL trial that a later trial retries (resume.retry)


class Tracker:
    """One MLflow experiment, through an explicit client (no global active-run state between jobs)."""

    def __init__(self, cfg: TrackingConfig) -> None:
        self.uri, self.system_metrics = cfg.uri, cfg.system_metrics
        check_reachable(cfg.uri)
        if cfg.uri.startswith(("http://", "https://")):
            bound_server_calls()
        self.outbox = Outbox(cfg.uri, cfg.max_outage_s)
        uri = sqlite.absolute(cfg.uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        with sqlite.creation_lock(uri):  # the client creates a new database's tables
            # Every write with interrupts held: Ctrl-C inside a SQLite write left the database locked for the
            # cleanup that marks the run KILLED (pipeline/runtime/interrupts.py).
            self.client = HeldDuringWrites(MlflowClient(uri, uri))
            self.experiment_id = self._experiment(cfg)

    def _experiment(self, cfg: TrackingConfig) -> str:
        try:
            found = self.client.get_experiment_by_name(cfg.experiment)
        except Exception as err:
            raise PipelineError(f"tracking.uri={cfg.uri}: unreachable ({str(err).splitlines()[0][:200]})") from None
        if found is not None:
            return found.experiment_id
        local = cfg.uri.startswith("sqlite:")  # a tracking server chooses its own artifact store
        location = Path(cfg.artifact_dir).resolve().as_uri() if local else None
        try:
            return self.client.create_experiment(cfg.experiment, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # another worker created it first
            return self.client.get_experiment_by_name(cfg.experiment).experiment_id

    def study_run(self, study_name: str) -> str:
        """The parent run of a study: found by tag, else created (racing workers settle on the oldest).

        A creator deletes only its own run when it lost the race, never one another worker may already use."""
        found = self._study_runs(study_name)
        if found:
            return found[0].info.run_id
        mine = self.client.create_run(
            self.experiment_id,
            run_name=study_name,
            tags={ROLE_TAG: "study", STUDY_TAG: study_name},
        ).info.run_id
        time.sleep(SETTLE_S)
        oldest = self._study_runs(study_name)[0].info.run_id
        if oldest != mine:
            self.client.set_terminated(mine, "KILLED")
            self.client.delete_run(mine)
        return oldest

    def _study_runs(self, study_name: str) -> list:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{ROLE_TAG}` = 'study' AND tags.`{STUDY_TAG}` = '{study_name}'",
            max_results=100,
        )
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def new_run(self, name: str, role: str, parent_id: str | None = None, **tags: str) -> str:
        tags = {ROLE_TAG: role, MLFLOW_RUN_NAME: name, **tags}
        if parent_id:
            tags[MLFLOW_PARENT_RUN_ID] = parent_id
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    @contextlib.contextmanager
    def running(self, run_id: str) -> Iterator[str]:
        """Mark `run_id` RUNNING for the block; FINISHED, KILLED (interrupt) or FAILED after it."""
        self.client.update_run(run_id, status="RUNNING")
        with ended_as_the_block_ends(self.client, run_id):
            yield run_id

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        """Set a tag, also when another worker sets the same one on a shared run at the same moment."""
        again_on_lost_race(lambda: self.client.set_tag(run_id, key, value))

    def log_inputs(self, run_id: str, inputs: list[DatasetInput]) -> None:
        """Link datasets to a run, also when another worker logs the same dataset at the same moment."""
        again_on_lost_race(lambda: self.client.log_inputs(run_id, datasets=inputs))

    def log_new_params(self, run_id: str, params: dict[str, str]) -> None:
        """Log the params `run_id` does not have yet: MLflow params never change, so the first writer's
        values stay, also when another worker logs the same keys on a shared run at the same moment."""

        def write() -> None:
            existing = self.client.get_run(run_id).data.params
            new = [Param(k, v) for k, v in params.items() if k not in existing]
            if new:
                self.client.log_batch(run_id, params=new)

        again_on_lost_race(write)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0, timestamp: int | None = None) -> None:
        """One batch; with the `timestamp` the values were made at, a write retried after a lost answer (a
        server killed mid-request) is the same row again, which MLflow's store keeps once."""
        stamp = timestamp if timestamp is not None else int(time.time() * 1000)
        batch = [Metric(key, float(value), stamp, step) for key, value in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)

    def copy_metrics(self, source: str, target: str, last_epoch: int, last_step: int) -> None:
        """The per-epoch metrics of `source` up to `last_epoch` (the training loss up to `last_step`), into
        `target`: a resumed trial's run shows the whole curve."""
        for key in self.client.get_run(source).data.metrics:
            last = last_step if key.endswith("train_loss") else last_epoch
            history = [
                Metric(key, m.value, m.timestamp, m.step)
                for m in self.client.get_metric_history(source, key)
                if m.step <= last
            ]
            for start in range(0, len(history), LOG_BATCH_MAX):
                self.client.log_batch(target, metrics=history[start : start + LOG_BATCH_MAX])

    def trial_runs(self, parent_id: str, status: str | None = None) -> list:
        query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' AND tags.`{ROLE_TAG}` = 'trial'"
        if status:
            query += f" AND attributes.status = '{status}'"
        return self.client.search_runs([self.experiment_id], query, max_results=10000)

    def trial_run_of(self, parent_id: str, number: int) -> str | None:
        """The MLflow run of trial `number` of the study under `parent_id`, by its tags."""
        runs = [r for r in self.trial_runs(parent_id) if r.data.tags.get(TRIAL_TAG) == str(number)]
        return min(runs, key=lambda r: r.info.start_time).info.run_id if runs else None

    def close_trial_runs(self, parent_id: str, study: optuna.Study, interrupted: bool = False) -> None:
        """End every RUNNING trial run whose Optuna trial has ended (after a trial, a crash or a SIGKILL),
        and give a failed run to a trial that failed before its run began (e.g. in model_init)."""
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        retried = resume.retried(study)
        for run in self.trial_runs(parent_id, status="RUNNING"):
            trial = trials.get(int(run.data.tags.get(TRIAL_TAG, -1)))
            if trial is None or trial.state in (TrialState.RUNNING, TrialState.WAITING):
                continue
            self._end_trial_run(run.info.run_id, trial, interrupted, trial.number in retried)
        with_runs = {run.data.tags.get(TRIAL_TAG) for run in self.trial_runs(parent_id)}
        for trial in trials.values():
            if trial.state == TrialState.FAIL and str(trial.number) not in with_runs:
                tags = {TRIAL_TAG: str(trial.number), STUDY_TAG: study.study_name}
                run_id = self.new_run(trial_name(trial), "trial", parent_id, **tags)
                self._end_trial_run(run_id, trial, interrupted, trial.number in retried)

    def _end_trial_run(self, run_id: str, trial: optuna.trial.FrozenTrial, interrupted: bool, retried: bool) -> None:
        status, state = TRIAL_END[trial.state]
        error = trial.user_attrs.get("error")
        if retried and trial.state == TrialState.FAIL:  # its curve goes on in the retry's run
            status, state = RESUMED
        elif interrupted and trial.state == TrialState.FAIL:
            status, state = INTERRUPTED
        elif trial.state == TrialState.FAIL and error is None:
            error = "the worker stopped (killed or lost) during this trial; Optuna failed it after search.grace_period"
        self.set_tag(run_id, STATE_TAG, state)
        if error:
            self.set_tag(run_id, ERROR_TAG, error)
        self.client.set_terminated(run_id, RunStatus.to_string(status))


class ReplicaTracker(Tracker):
    """The tracker of a rank other than 0: creates, logs and ends nothing."""

    def __init__(self) -> None:  # no client: this process never talks to MLflow
        self.uri, self.client, self.experiment_id, self.system_metrics = None, None, None, False
        self.outbox = Outbox("no tracking (a torchrun replica)", 0)  # what rank 0 alone sends

    def study_run(self, study_name: str) -> str:
        return ""

    def new_run(self, name: str, role: str, parent_id: str | None = None, **tags: str) -> str:
        return ""

    @contextlib.contextmanager
    def running(self, run_id: str) -> Iterator[str]:
        yield run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0, timestamp: int | None = None) -> None:
        pass

    def close_trial_runs(self, parent_id: str, study, interrupted: bool = False) -> None:
        pass


def open_tracker(cfg: DictConfig) -> Tracker:
    """The run's tracker: rank 0's writes to MLflow; under torchrun the other ranks write nowhere."""
    return Tracker(cfg.tracking) if distributed.is_main() else ReplicaTracker()


@contextlib.contextmanager
def ended_as_the_block_ends(client: MlflowClient, run_id: str) -> Iterator[None]:
    """End `run_id` after the block: FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED (an error)."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run_id, status)


def artifact_text(client: MlflowClient, run_id: str, path: str) -> str:
    """A small text artifact of `run_id` (a few kB: MLflow's download bar would only add a line)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[PROGRESS_BAR_ENV], before = "false", os.environ.get(PROGRESS_BAR_ENV)
        try:
            return Path(client.download_artifacts(run_id, path, tmp)).read_text(encoding="utf-8")
        finally:
            if before is None:
                os.environ.pop(PROGRESS_BAR_ENV)
            else:
                os.environ[PROGRESS_BAR_ENV] = before


def again_on_lost_race(write: Callable[[], object]) -> None:
    """`write`, once more if it lost a race: MLflow's store reads, then inserts (a tag, a dataset row, a
    param), so a worker writing the same row at the same moment gets a duplicate key, or for a param the
    store's refusal of the value the winner committed in between; the row exists then, and the second call
    updates, links or skips it."""
    try:
        write()
    except mlflow.exceptions.MlflowException as err:
        if not (internals.duplicate_key(err) or internals.param_changed(err)):
            raise
        write()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail at once on a tracking server that does not answer: MLflow's own client retries with
    backoff for minutes (right for a blip mid-sweep, wrong for a typo at the start)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except requests.RequestException as err:
        raise PipelineError(
            f"tracking.uri={uri}: no tracking server answers ({type(err).__name__}); start it "
            "(mlflow server) or use a local store, e.g. tracking.uri=sqlite:///mlruns/mlflow.db"
        ) from None


def bound_server_calls() -> None:
    """A call to the tracking server gives up within about half a minute (MLflow's defaults: a 120 s
    timeout and 7 retries with backoff, minutes per call); the outbox retries writes across an outage.
    Values the user set in the environment win."""
    for key, value in SERVER_CALL_LIMITS.items():
        os.environ.setdefault(key, value)
    # urllib3 warns at each of those retries; the outbox says once that the server is away, and when it is back.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
