"""Preemptible trials: each running trial's state at its last finished epoch on disk, and an interrupted
trial retried with its parameters, continuing from that epoch.

The state is the Trainer's own checkpoint (weights, optimizer, scheduler, RNG states, trainer state) under
`search.checkpoint_dir/resume/trial-N/`, with a marker written last: a checkpoint without one is a save
that was killed, and the previous one is still whole. Optuna queues the retry (a dead worker's trial once
its heartbeat is stale, an interrupted one at once); `Trainer.train(resume_from_checkpoint=...)` continues it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from transformers import TrainerCallback

from pipeline.runtime.interrupts import Interrupted, deferring
from pipeline.search.study import trial_name
from pipeline.training.internals import training_done

log = logging.getLogger(__name__)
RESUME_DIR = "resume"
MARKER = "pipeline_resume.json"  # written last, atomically: its checkpoint is whole
SAVED_EPOCH = "resume_epoch"  # trial user attribute: the last epoch whose state is on disk
RESUMED_FROM_EPOCH = "resumed_from_epoch"
RESUMED_FROM_TRIAL = "resumed_from_trial"


def states_dir(checkpoint_dir: str) -> Path:
    """Where running trials keep their state: the search Trainer's output_dir."""
    return Path(checkpoint_dir) / RESUME_DIR


@dataclass
class Resume:
    """What a retried trial continues from."""

    trial: int  # the interrupted trial's number
    epoch: int  # its last finished epoch (0: from scratch)
    global_step: int  # the optimizer steps trained by then
    checkpoint: str | None  # the state to load; None: from scratch
    earlier: FrozenTrial  # the interrupted trial (its per-epoch values)


class ResumableTrials(TrainerCallback):
    """Given to the search's Trainer (`build_trainer(resumer=...)`): at the end of every epoch but the last, the
    Trainer saves the trial's state to `directory` (its output_dir); then the marker is written, older states of
    the trial removed, and the trial records the epoch. A retried trial's training starts from the interrupted
    trial's state (`begin`, which the Trainer calls as each trial's training starts)."""

    def __init__(self, directory: Path, finish_epoch_on_term: bool = False) -> None:
        self.directory = Path(directory)
        self.trial: optuna.Trial | None = None  # the trial in training
        self.resumed: Resume | None = None  # what it continues from
        self.finish_epoch_on_term = finish_epoch_on_term
        self.terminated = False  # a SIGTERM came while finish_epoch_on_term held it
        self._handler: Any = None

    def begin(self, trial: optuna.Trial, distributed: bool) -> str | None:
        """The checkpoint a retried trial resumes from (None: from the start), its values carried over."""
        self.trial = trial
        self.resumed = plan(trial, self.directory, distributed)
        if self.resumed is None:
            return None
        carry_over(trial, self.resumed)
        return self.resumed.checkpoint

    def on_epoch_end(self, args, state, control, **kwargs: Any) -> None:
        if isinstance(self.trial, optuna.Trial) and not training_done(state) and args.world_size == 1:
            control.should_save = True  # the Trainer saves after evaluating (a pruned trial saves nothing)

    @deferring  # an Optuna write
    def on_save(self, args, state, control, **kwargs: Any) -> None:
        trial = self.trial
        if not isinstance(trial, optuna.Trial) or not args.should_save:
            return
        folder = self.directory / trial_name(trial)
        newest = folder / f"checkpoint-{state.global_step}"
        epoch = round(state.epoch or 0)
        marker = {"trial": trial.number, "epoch": epoch, "global_step": state.global_step, "params": trial.params}
        staging = newest / f".{MARKER}.partial"
        staging.write_text(json.dumps(marker, sort_keys=True, default=str))
        os.replace(staging, newest / MARKER)
        for older in folder.glob("checkpoint-*"):
            if older != newest:
                shutil.rmtree(older, ignore_errors=True)
        trial.set_user_attr(SAVED_EPOCH, epoch)
        if self.terminated:
            raise Interrupted(f"SIGTERM: stopped after saving epoch {epoch} of trial {trial.number}")

    def on_train_begin(self, args, state, control, **kwargs: Any) -> None:
        # The previous trial's state goes now that Optuna has recorded its end (removed at its on_train_end,
        # a SIGKILL before Optuna heard of it would waste a finished training).
        trial = self.trial
        if isinstance(trial, optuna.Trial):
            drop_states(trial.study, self.directory)
        if self.finish_epoch_on_term and threading.current_thread() is threading.main_thread():
            self._handler = signal.signal(signal.SIGTERM, self._hold_term)

    def on_train_end(self, args, state, control, **kwargs: Any) -> None:
        if self._handler is not None:
            signal.signal(signal.SIGTERM, self._handler)
            self._handler = None
        if self.terminated and isinstance(self.trial, optuna.Trial):
            self.trial.study.stop()  # the trial completes; no next one starts (check_terminated)

    def _hold_term(self, signum: int, frame) -> None:
        if self.terminated:  # a second SIGTERM: at once
            raise Interrupted("SIGTERM (twice)")
        self.terminated = True
        log.warning("SIGTERM: finishing the epoch in training, saving it, then stopping (search.finish_epoch_on_term)")

    def check_terminated(self) -> None:
        """After the search returned: a held SIGTERM stops the run here, before the final step."""
        if self.terminated:
            raise Interrupted("SIGTERM: stopped after the trial in training completed")

    def drop(self, trial: optuna.Trial) -> None:
        """Remove the states of a trial that failed (it is not retried) and of those it retried."""
        for number in [trial.number, *(frozen(trial.study, trial.number).system_attrs.get("retry_history") or [])]:
            shutil.rmtree(self.directory / trial_name(number), ignore_errors=True)


def saved_state(directory: Path, trial: FrozenTrial) -> Path | None:
    """The newest whole state of `trial` on this machine, if any (saved for its parameters)."""
    marked = [
        m.parent
        for m in (directory / trial_name(trial)).glob(f"checkpoint-*/{MARKER}")
        if _marker(m.parent)["params"] == _jsonable(trial.params)
    ]
    return max(marked, key=lambda p: int(p.name.rsplit("-", 1)[1])) if marked else None


def plan(trial: optuna.Trial, directory: Path, distributed: bool) -> Resume | None:
    """For a retried trial, what it continues from (None: not a retry). Says so in one line when the
    interrupted trial's state is not on this machine, or under torchrun, and the retry starts afresh."""
    history = frozen(trial.study, trial.number).system_attrs.get("retry_history") or []
    if not history:
        return None
    earlier = frozen(trial.study, history[-1])
    checkpoint = saved_state(directory, earlier)
    marker = _marker(checkpoint) if checkpoint else None
    if marker is not None and distributed:
        log.warning(
            "trial %d retries trial %d from scratch: resuming from a saved epoch is off under torchrun",
            trial.number,
            earlier.number,
        )
    elif marker is not None:
        log.warning("trial %d resumes trial %d from its epoch %d", trial.number, earlier.number, marker["epoch"])
        return Resume(earlier.number, marker["epoch"], marker["global_step"], str(checkpoint), earlier)
    elif earlier.user_attrs.get(SAVED_EPOCH):  # saved, but on another machine's disk
        log.warning(
            "trial %d retries trial %d from scratch: its state at epoch %d is not in %s on this machine (put "
            "search.checkpoint_dir on storage every worker shares to resume there)",
            trial.number,
            earlier.number,
            earlier.user_attrs[SAVED_EPOCH],
            directory,
        )
    return Resume(earlier.number, 0, 0, None, earlier)


def carry_over(trial: optuna.Trial, resume: Resume) -> None:
    """The retried trial's attributes, and the interrupted trial's values of the epochs it continues from,
    so the pruner judges it on the whole curve."""
    trial.set_user_attr(RESUMED_FROM_TRIAL, resume.trial)
    trial.set_user_attr(RESUMED_FROM_EPOCH, resume.epoch)
    for step, value in sorted(resume.earlier.intermediate_values.items()):
        if step <= resume.epoch:
            trial.report(value, step)


def _marker(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / MARKER).read_text())


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def retry(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue an interrupted trial again with its parameters (Optuna's retry of a stale trial, without
    copying its attributes: those of the new attempt are its own). A retry that saved no newer epoch than it
    started from is not retried again, so a trial that kills its worker every time runs at most twice."""
    history = trial.system_attrs.get("retry_history") or []
    progressed = trial.user_attrs.get(SAVED_EPOCH, 0) > trial.user_attrs.get(RESUMED_FROM_EPOCH, 0)
    if history and not progressed:
        log.warning(
            "trial %d is not retried: it was a retry, and it was interrupted before finishing an epoch", trial.number
        )
        return False
    system_attrs = {
        "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
        "retry_history": [*history, trial.number],
    }
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs=system_attrs,
        )
    )
    return True


def retry_interrupted(study: optuna.Study, trial: optuna.Trial | None) -> None:
    """Queue the trial an interrupt stopped (Optuna has just failed it)."""
    if not isinstance(trial, optuna.Trial):
        return
    ended = frozen(study, trial.number)
    if ended.state == TrialState.FAIL and retry(study, ended):
        log.warning("trial %d was interrupted; the same command again continues it", trial.number)


def frozen(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial `number` as stored (a live optuna.Trial does not show its system attributes)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def retried(study: optuna.Study) -> set[int]:
    """Numbers of the trials some later trial retries."""
    return {n for t in study.get_trials(deepcopy=False) for n in t.system_attrs.get("retry_history") or []}


def drop_states(study: optuna.Study, directory: Path) -> None:
    """Remove the states no trial will resume from: keep those of running trials and of the trials a
    waiting or running retry continues."""
    trials = study.get_trials(deepcopy=False)
    wanted = {t.number for t in trials if t.state == TrialState.RUNNING}
    for t in trials:
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            wanted |= set(t.system_attrs.get("retry_history") or [])
    for path in directory.glob("trial-*"):
        if int(path.name.split("-", 1)[1]) not in wanted:
            shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty (another worker's trial has just saved), or gone
        directory.rmdir()
