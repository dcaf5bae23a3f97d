"""Every use of the Trainer's private API (and of a study's private storage handle), in one place:
`tests/test_trainer_internals.py` fails loudly when an upgrade of transformers or Optuna changes one."""
from __future__ import annotations

import optuna
import torch
from transformers import Trainer, TrainerState
from transformers.trainer_pt_utils import LengthGroupedSampler

from pipeline.batch_order import length_grouped_or_random
from pipeline.interrupts import deferring


def current_trial(trainer: Trainer) -> optuna.Trial | None:
    """The Optuna trial `trainer` is training (transformers keeps it in `_trial`), None outside a search."""
    return getattr(trainer, "_trial", None)


def objective_value(trainer: Trainer) -> float | None:
    """The objective the trial last reported (set by the Trainer's hyperparameter search), if any."""
    return getattr(trainer, "objective", None)


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study was opened on, to hand it to `Trainer.hyperparameter_search`."""
    return study._storage


def release_previous_model(trainer: Trainer) -> None:
    """Drop every reference to the last training's model, optimizer and scheduler before `model_init` makes
    the next trial's model: left to the Trainer, they stay on the GPU (held by the Trainer, its callback
    handler and its Accelerator) until the new model is already there. Resets the GPU's peak-memory count, so
    each trial's `system/gpu_peak_memory_allocated_megabytes` is its own."""
    trainer.model = trainer.model_wrapped = None
    trainer.optimizer = trainer.lr_scheduler = None
    handler = trainer.callback_handler
    handler.model = handler.optimizer = handler.lr_scheduler = handler.train_dataloader = None
    trainer.accelerator.free_memory()  # its prepared models and optimizers; gc and the CUDA cache emptied
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def training_done(state: TrainerState) -> bool:
    """All steps trained: the trial completes (the Trainer also calls on_train_end just before a prune)."""
    return state.global_step >= state.max_steps


class EpochReports(Trainer):
    """Report to Optuna once per epoch, at the epoch number, through the Trainer's private report hook."""

    @deferring  # an Optuna write
    def _report_to_hp_search(self, trial, step: int, metrics: dict[str, float]) -> None:
        # The Trainer reports at global_step; with batch size searched, step N means different amounts of
        # data per trial. Reporting at the epoch makes the pruner compare trials after equal training.
        epoch = round(self.state.epoch or 0)
        if isinstance(trial, optuna.Trial) and training_done(self.state):
            # Training is over: pruning now saves nothing and would discard a finished model, so the
            # last report only records the value (later trials are judged against it).
            self.objective = self.compute_objective(metrics)
            trial.report(self.objective, epoch)
            return
        super()._report_to_hp_search(trial, epoch, metrics)


class ShuffledLengthGroups(Trainer):
    """`group_by_length` trains on length-grouped batches in shuffled order, or on random batches in a short
    epoch (pipeline/batch_order.py), through the Trainer's private sampler hook."""

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if not isinstance(sampler, LengthGroupedSampler):
            return sampler
        rows = train_dataset if train_dataset is not None else self.train_dataset
        return length_grouped_or_random(sampler, rows, self.args.group_by_length_min_batches, self.args.world_size)
