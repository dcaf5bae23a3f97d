"""The Trainer callbacks that write to MLflow: per-epoch metrics of a training, and inside a search one run
per trial, each through the tracker's outbox, so training never waits on the tracking server."""

from __future__ import annotations

import time
from typing import Any

import optuna
import psutil
import torch
from mlflow.entities import DatasetInput, Param
from transformers import TrainerCallback

from pipeline.runtime.interrupts import deferring
from pipeline.search import resume
from pipeline.search.study import trial_name, worker_name
from pipeline.tracking.outbox import RunRef
from pipeline.tracking.tracker import (
    RUN_ID_ATTR,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    WORKER,
    Tracker,
)
from pipeline.training import speed
from pipeline.training.internals import current_trial
from pipeline.training.metrics import OBJECTIVE

LINK_WAIT_S = 30.0  # how long a trial's end waits for its run to be created, with the server up
GPU_PEAK_METRIC = "system/gpu_peak_memory_allocated_megabytes"  # per training: a trial's, or the final model's


def system_metrics() -> dict[str, float]:
    """The machine at an epoch's end, under MLflow's system-metric names (the UI groups them as System)."""
    memory = psutil.virtual_memory()
    found = {
        "system/cpu_utilization_percentage": psutil.cpu_percent(interval=None),  # since the previous call
        "system/system_memory_usage_megabytes": (memory.total - memory.available) / 2**20,
        "system/process_memory_rss_megabytes": psutil.Process().memory_info().rss / 2**20,
    }
    if torch.cuda.is_available():  # the most this training has held on the GPU so far (reset as it starts)
        found[GPU_PEAK_METRIC] = torch.cuda.max_memory_allocated() / 2**20
    return found


class EpochMetrics(TrainerCallback):
    """Log eval metrics once per epoch (step = epoch) and the training loss, to one MLflow run, through
    the tracker's outbox: training never waits on the tracking server."""

    def __init__(self, tracker: Tracker, run: RunRef | None, prefix: str = "") -> None:
        self.tracker, self.run, self.prefix = tracker, run, prefix

    @deferring
    def on_evaluate(self, args, state, control, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self.run is None or not state.is_world_process_zero:
            return
        epoch = round(state.epoch or 0)
        logged = {
            self.prefix + k: v for k, v in (metrics or {}).items() if k in (OBJECTIVE, "eval_loss", "eval_f1_macro")
        }
        if self.tracker.system_metrics:
            logged |= system_metrics()
        self._send_metrics(logged, epoch)

    @deferring
    def on_log(self, args, state, control, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self.run is not None and state.is_world_process_zero and "loss" in (logs or {}):
            self._send_metrics({self.prefix + "train_loss": logs["loss"]}, state.global_step)

    def _send_metrics(self, metrics: dict[str, float], step: int) -> None:
        run, made = self.run, int(time.time() * 1000)  # stamped now: the outbox may send it much later, or twice
        self.tracker.outbox.send(lambda: self.tracker.log_metrics(run.id, metrics, step=step, timestamp=made))


class TrialRuns(EpochMetrics):
    """Inside a search: one nested MLflow run per Optuna trial, named `trial-N`, with its params.

    Replaces transformers' MLflowCallback, which is not trial-aware. A trial's run is ended from the
    state Optuna recorded, when the next trial starts or the search ends (Tracker.close_trial_runs).
    Its writes go through the outbox; while the tracking server is away, the run is created when it is back."""

    def __init__(
        self,
        tracker: Tracker,
        parent_id: str,
        trainer,
        fixed: dict[str, Any],
        inputs: list[DatasetInput] = (),
        resumer: resume.ResumableTrials | None = None,
    ) -> None:
        super().__init__(tracker, None)
        self.parent_id, self.trainer, self.fixed, self.resumer = parent_id, trainer, fixed, resumer
        self.inputs = list(inputs)  # what each trial trains and is judged on: the runs table's Dataset column

    @deferring
    def on_train_begin(self, args, state, control, **kwargs: Any) -> None:
        trial = current_trial(self.trainer)
        if not isinstance(trial, optuna.Trial):
            return
        trial.set_user_attr(WORKER, worker_name())
        run, tracker, params, study = RunRef(), self.tracker, {**self.fixed, **trial.params}, trial.study
        tags = {TRIAL_TAG: str(trial.number), STATE_TAG: "running", STUDY_TAG: study.study_name, WORKER: worker_name()}

        def create() -> None:
            run.id = tracker.new_run(trial_name(trial), "trial", self.parent_id, **tags)

        tracker.outbox.send(lambda: tracker.close_trial_runs(self.parent_id, study))
        tracker.outbox.send(create)
        tracker.outbox.send(lambda: _link(trial, run.id))
        tracker.outbox.send(
            lambda: tracker.client.log_batch(run.id, params=[Param(k, str(v)) for k, v in params.items()])
        )
        if self.inputs:
            tracker.outbox.send(lambda: tracker.log_inputs(run.id, self.inputs))
        resumed = self.resumer.resumed if self.resumer is not None else None
        if resumed is not None and resumed.epoch:
            tracker.outbox.send(lambda: self._carry(run, resumed))
        self.run = run

    def _carry(self, run: RunRef, resumed: resume.Resume) -> None:
        earlier = self.tracker.trial_run_of(self.parent_id, resumed.trial)
        if earlier is not None:
            self.tracker.copy_metrics(earlier, run.id, resumed.epoch, resumed.global_step)

    @deferring
    def on_train_end(self, args, state, control, **kwargs: Any) -> None:
        """Log the trial's speed (training/speed.py's TrialSpeed measured it just before), and link the trial
        to its run while the trial still runs (Optuna refuses attributes on an ended trial), should the outbox
        not have done it yet; not waiting while the server is away."""
        trial = current_trial(self.trainer)
        if not isinstance(trial, optuna.Trial) or self.run is None:
            return
        measured = {name: trial.user_attrs[name] for name in speed.METRICS if name in trial.user_attrs}
        if measured:
            self._send_metrics(measured, 0)
        if self.run.id is None and not self.tracker.outbox.away:
            self.tracker.outbox.wait_sent(LINK_WAIT_S)
        if self.run.id is not None and trial.user_attrs.get(RUN_ID_ATTR) != self.run.id:
            trial.set_user_attr(RUN_ID_ATTR, self.run.id)


def _link(trial: optuna.Trial, run_id: str) -> None:
    """Record the trial's MLflow run on the trial; a trial that ended before its run was created (the
    tracking server was away) is found by its run's tags instead (Tracker.trial_run_of)."""
    try:
        trial.set_user_attr(RUN_ID_ATTR, run_id)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
