"""Every use of transformers' private API (the Trainer's hooks and attributes, a model's weight init), in one
place: `tests/test_internals.py` fails loudly when an upgrade of transformers changes one."""

from __future__ import annotations

import logging

import optuna
import torch
from transformers import PreTrainedModel, Trainer, TrainerState
from transformers.trainer_pt_utils import LengthGroupedSampler

from pipeline.runtime.interrupts import deferring
from pipeline.training.sampling import length_grouped_or_random


def current_trial(trainer: Trainer) -> optuna.Trial | None:
    """The Optuna trial `trainer` is training (transformers keeps it in `_trial`), None outside a search."""
    return getattr(trainer, "_trial", None)


def objective_value(trainer: Trainer) -> float | None:
    """The objective the trial last reported (set by the Trainer's hyperparameter search), if any."""
    return getattr(trainer, "objective", None)


def init_weights(model: PreTrainedModel, module_name: str) -> None:
    """Initialise the weights of one submodule (a new classification head) as the model's class does."""
    model._init_weights(model.get_submodule(module_name))


def forget_model_inputs(trainer: Trainer) -> None:
    """Make the Trainer read the next model's input names afresh (it keeps the first model's forward
    signature, and drops dataset columns by it): a search over backbones changes the model between trials."""
    trainer._signature_columns = None


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
    epoch (pipeline/training/sampling.py), through the Trainer's private sampler hook."""

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if not isinstance(sampler, LengthGroupedSampler):
            return sampler
        rows = train_dataset if train_dataset is not None else self.train_dataset
        return length_grouped_or_random(sampler, rows, self.args.group_by_length_min_batches, self.args.world_size)


class HeldLoadReport:
    """transformers' "LOAD REPORT" table, held back for the block: on every run it lists the classifier head
    fine-tuning adds. Printed after all if loading fails (transformers' error points at the table)."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("transformers.modeling_utils")
        self.records: list[logging.LogRecord] = []

    def __call__(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" not in record.getMessage():
            return True
        self.records.append(record)
        return False

    def __enter__(self) -> HeldLoadReport:
        self.logger.addFilter(self)
        return self

    def __exit__(self, failed: type | None, *_: object) -> None:
        self.logger.removeFilter(self)
        if failed is not None:
            self.release()

    def release(self) -> None:
        for record in self.records:
            self.logger.handle(record)
        self.records.clear()
