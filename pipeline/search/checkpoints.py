"""The best trial's weights on disk: saved when a trial beats the study's best, one kept, reused by the final step."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import optuna
from transformers import TrainerCallback

from pipeline.errors import PipelineError
from pipeline.search.study import best_trial, trial_name
from pipeline.training import internals
from pipeline.training.internals import training_done
from pipeline.training.trainer import PipelineTrainer


class KeepBestTrial(TrainerCallback):
    """Save a finished trial's weights when it beats the study's best, and drop the weights it displaces,
    so disk holds one checkpoint however many trials run; the final step reuses it instead of retraining."""

    def __init__(self, trainer: PipelineTrainer, study: optuna.Study, directory: str) -> None:
        self.trainer, self.study, self.directory = trainer, study, Path(directory)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs: Any) -> None:
        trial = internals.current_trial(self.trainer)
        value = internals.objective_value(self.trainer)
        if not isinstance(trial, optuna.Trial) or value is None:
            return
        if not training_done(state):  # a trial about to be pruned is no candidate
            return
        previous = self._best()
        if previous is not None and value <= previous.value:
            return
        target = self.directory / trial_name(trial)
        staging = self.directory / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        processing_class.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # a checkpoint directory is either whole or absent
        self._drop_all_but(target.name, previous)

    def _best(self) -> optuna.trial.FrozenTrial | None:
        try:
            return best_trial(self.study)
        except PipelineError:
            return None

    def _drop_all_but(self, keep: str, previous: optuna.trial.FrozenTrial | None) -> None:
        # The previous best stays until this trial is told COMPLETE; the next save removes it.
        kept = {keep, trial_name(previous)} if previous else {keep}
        for path in self.directory.glob("trial-*"):
            if path.name not in kept:
                shutil.rmtree(path, ignore_errors=True)


def checkpoint_for(trial: optuna.trial.FrozenTrial, directory: str) -> Path | None:
    """The kept weights of `trial`, if this machine has them."""
    path = Path(directory) / trial_name(trial)
    return path if (path / "config.json").is_file() else None


_CHECKPOINT = re.compile(r"^\.?trial-(\d+)(\.partial)?$")


def drop_checkpoints(study: optuna.Study, best: optuna.trial.FrozenTrial, directory: str) -> None:
    """Remove kept weights (and a killed save's `.partial` leftovers) of every finished trial but `best`.

    KeepBestTrial keeps the previous best until the new one is COMPLETE, and a killed worker may leave
    a partial save; a trial still running (another worker's) keeps its files."""
    finished = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    for path in Path(directory).glob("*trial-*"):
        found = _CHECKPOINT.match(path.name)
        if found and int(found.group(1)) in finished and int(found.group(1)) != best.number:
            shutil.rmtree(path, ignore_errors=True)
