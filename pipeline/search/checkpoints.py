"""The best trials' weights on disk: saved when a trial beats its backbone's best, one kept per backbone (one in
a study of one model), reused by the final step. Per backbone, because a latency budget picks the most accurate
trial of a backbone within it (search/study.best_trial), which need not be the study's most accurate."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import optuna
from transformers import TrainerCallback

from pipeline.search.study import trial_name
from pipeline.training import internals
from pipeline.training.internals import training_done
from pipeline.training.speed import backbone_of
from pipeline.training.trainer import PipelineTrainer


class KeepBestTrial(TrainerCallback):
    """Save a finished trial's weights when it beats its backbone's best, and drop the weights it displaces,
    so disk holds one checkpoint per backbone however many trials run; the final step reuses the pick's
    instead of retraining, whatever latency budget picks it."""

    def __init__(self, trainer: PipelineTrainer, study: optuna.Study, directory: str) -> None:
        self.trainer, self.study, self.directory = trainer, study, Path(directory)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs: Any) -> None:
        trial = internals.current_trial(self.trainer)
        value = internals.objective_value(self.trainer)
        if not isinstance(trial, optuna.Trial) or value is None:
            return
        if not training_done(state):  # a trial about to be pruned is no candidate
            return
        bests = best_of_each_backbone(self.study)
        previous = bests.get(backbone_of(trial))
        if previous is not None and value <= previous.value:
            return
        target = self.directory / trial_name(trial)
        staging = self.directory / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        processing_class.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # a checkpoint directory is either whole or absent
        # The previous best of this backbone stays until this trial is told COMPLETE; the next save removes it.
        kept = {target.name} | {trial_name(t) for t in bests.values()}
        for path in self.directory.glob("trial-*"):
            if path.name not in kept:
                shutil.rmtree(path, ignore_errors=True)


def best_of_each_backbone(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """Each backbone's most accurate completed trial (the earliest of equals), as search/study.best_trial ranks."""
    best: dict[str, optuna.trial.FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        held = best.get(backbone_of(trial))
        if held is None or (trial.value, -trial.number) > (held.value, -held.number):
            best[backbone_of(trial)] = trial
    return best


def checkpoint_for(trial: optuna.trial.FrozenTrial, directory: str) -> Path | None:
    """The kept weights of `trial`, if this machine has them."""
    path = Path(directory) / trial_name(trial)
    return path if (path / "config.json").is_file() else None


_CHECKPOINT = re.compile(r"^\.?trial-(\d+)(\.partial)?$")


def drop_checkpoints(study: optuna.Study, directory: str) -> None:
    """Remove kept weights (and a killed save's `.partial` leftovers) of every finished trial but each backbone's
    best (which another budget may pick later).

    KeepBestTrial keeps the previous best until the new one is COMPLETE, and a killed worker may leave
    a partial save; a trial still running (another worker's) keeps its files."""
    finished = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    kept = {t.number for t in best_of_each_backbone(study).values()}
    for path in Path(directory).glob("*trial-*"):
        found = _CHECKPOINT.match(path.name)
        if found and int(found.group(1)) in finished and int(found.group(1)) not in kept:
            shutil.rmtree(path, ignore_errors=True)
