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

from pipeline.search.study import best_of_each_backbone, trial_name
from pipeline.training import internals
from pipeline.training.internals import training_done
from pipeline.training.speed import backbone_of
from pipeline.training.trainer import PipelineTrainer


class KeepBestTrial(TrainerCallback):
    """Save a finished trial's weights when it beats its backbone's best, and drop the finished trials' weights
    that are no backbone's best, so disk holds a checkpoint per backbone (and those of trials still running)
    however many trials run; the final step reuses the pick's instead of retraining, whatever budget picks it."""

    def __init__(self, trainer: PipelineTrainer, study: optuna.Study, directory: str) -> None:
        self.trainer, self.study, self.directory = trainer, study, Path(directory)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs: Any) -> None:
        trial = internals.current_trial(self.trainer)
        value = internals.objective_value(self.trainer)
        if not isinstance(trial, optuna.Trial) or value is None:
            return
        if not training_done(state):  # a trial about to be pruned is no candidate
            return
        previous = best_of_each_backbone(self.study).get(backbone_of(trial))
        if previous is not None and value <= previous.value:
            return
        target = self.directory / trial_name(trial)
        staging = self.directory / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        processing_class.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # a checkpoint directory is either whole or absent
        drop_checkpoints(self.study, str(self.directory))  # this trial's stays: it is not finished yet


def checkpoint_for(trial: optuna.trial.FrozenTrial, directory: str) -> Path | None:
    """The kept weights of `trial`, if this machine has them."""
    path = Path(directory) / trial_name(trial)
    return path if (path / "config.json").is_file() else None


_CHECKPOINT = re.compile(r"^\.?trial-(\d+)(\.partial)?$")


def drop_checkpoints(study: optuna.Study, directory: str, keep: optuna.trial.FrozenTrial | None = None) -> None:
    """Remove kept weights (and a killed save's `.partial` leftovers) of every finished trial but each backbone's
    best (which another budget may pick later) and `keep` (the final step's pick, whatever finished since).

    KeepBestTrial saves before its trial is COMPLETE, and a killed worker may leave a partial save; a trial
    still running (another worker's) keeps its files."""
    finished = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    kept = {t.number for t in best_of_each_backbone(study).values()} | ({keep.number} if keep else set())
    for path in Path(directory).glob("*trial-*"):
        found = _CHECKPOINT.match(path.name)
        if found and int(found.group(1)) in finished and int(found.group(1)) not in kept:
            shutil.rmtree(path, ignore_errors=True)
