"""Training arguments from conf/trainer, compute_metrics, and the Trainer (with optional FGM)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
from datasets import DatasetDict
from sklearn.metrics import accuracy_score, f1_score
from transformers import (
    DataCollatorWithPadding,
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)

from pipeline.errors import PipelineError
from pipeline.interrupts import deferring

# What the pipeline decides, whatever conf/trainer says: per-epoch evaluation (the search objective and
# MLflow's per-epoch curves), no per-trial checkpoints (only the best trial's weights are kept, by
# search.KeepBestTrial), MLflow through our own trial-aware callback, and raw losses so NaN is seen.
FIXED_ARGS: dict[str, Any] = {
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "report_to": "none",
    "logging_nan_inf_filter": False,
}

# TrainingArguments accepts 0 or negative values here and fails (or trains nothing) much later.
POSITIVE_ARGS = ("per_device_train_batch_size", "per_device_eval_batch_size", "num_train_epochs", "learning_rate")


@dataclass
class PipelineArguments(TrainingArguments):
    """TrainingArguments plus the pipeline's own training options, set (and searched) like the rest."""

    # Adversarial training, FGM (Miyato et al., 2017): every step also trains on the batch with the word
    # embeddings moved this far (L2 norm) along the loss gradient. 0 turns it off; on, a step costs ~2x.
    fgm_epsilon: float = 0.0


# The pipeline's own keys, named in errors beside "a TrainingArguments field".
OWN_ARGS = ", ".join(sorted(set(PipelineArguments.__dataclass_fields__) - set(TrainingArguments.__dataclass_fields__)))


def training_args(trainer_cfg: dict[str, Any], output_dir: str, seed: int, **overrides: Any) -> PipelineArguments:
    """PipelineArguments from conf/trainer; a misspelt or invalid field is a one-line error."""
    fields = {**trainer_cfg, **overrides, **FIXED_ARGS, "output_dir": output_dir, "seed": seed}
    unknown = sorted(set(fields) - set(PipelineArguments.__dataclass_fields__))
    if unknown:
        raise PipelineError(f"trainer.{unknown[0]}: not a transformers.TrainingArguments field (or {OWN_ARGS})")
    for key in POSITIVE_ARGS:
        if not isinstance(fields.get(key, 1), (int, float)) or fields.get(key, 1) <= 0:
            raise PipelineError(f"trainer.{key}={fields[key]}: must be a positive number")
    if not isinstance(fields.get("fgm_epsilon", 0), (int, float)) or fields.get("fgm_epsilon", 0) < 0:
        raise PipelineError(f"trainer.fgm_epsilon={fields['fgm_epsilon']}: must be 0 (off) or a positive number")
    try:
        return PipelineArguments(**fields)
    except (ValueError, TypeError) as err:
        raise PipelineError(f"trainer: {str(err).splitlines()[0]}") from None


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    predicted = np.argmax(prediction.predictions, axis=-1)
    return {
        "accuracy": float(accuracy_score(prediction.label_ids, predicted)),
        "f1_macro": float(f1_score(prediction.label_ids, predicted, average="macro")),
    }


def objective(metrics: dict[str, float]) -> float:
    """What the search maximises: validation accuracy (not the Trainer's default sum of all metrics)."""
    return metrics["eval_accuracy"]


def training_done(state: TrainerState) -> bool:
    """All steps trained: the trial completes (the Trainer also calls on_train_end just before a prune)."""
    return state.global_step >= state.max_steps


class PipelineTrainer(Trainer):
    """A Trainer that reports to Optuna once per epoch and records why a trial failed."""

    @property
    def trial(self) -> optuna.Trial | None:
        """The Optuna trial being trained, None outside a search."""
        return getattr(self, "_trial", None)

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

    def training_step(self, model, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.args.fgm_epsilon > 0:
            # The same step again on nudged embeddings: its gradients add to the clean ones (the
            # Trainer's own backward, so gradient accumulation and DDP stay right); the loss logged is
            # the clean one.
            with nudged_embeddings(self.model, self.args.fgm_epsilon):
                super().training_step(model, inputs, num_items_in_batch)
        return loss

    def train(self, *args: Any, trial: optuna.Trial | None = None, **kwargs: Any):
        try:
            return super().train(*args, trial=trial, **kwargs)
        except Exception as err:
            # Optuna keeps no failure reason; MLflow's trial run shows this one.
            if isinstance(trial, optuna.Trial) and not isinstance(err, optuna.TrialPruned):
                trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:1000])
            raise


@contextmanager
def nudged_embeddings(model, epsilon: float) -> Iterator[None]:
    """The word embeddings moved by `epsilon` (L2 norm) along their gradient, restored exactly on exit."""
    weight = model.get_input_embeddings().weight
    grad = weight.grad
    norm = grad.norm() if grad is not None else None
    if norm is None or norm == 0 or not torch.isfinite(norm):
        yield  # nothing to follow; NanLossGuard reports a non-finite loss
        return
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.add_(grad, alpha=epsilon / norm.item())
    try:
        yield
    finally:
        with torch.no_grad():
            weight.copy_(saved)


class NanLossGuard(TrainerCallback):
    """Fail a trial at the first non-finite training loss instead of training on garbage."""

    def on_log(self, args, state, control, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at step {state.global_step}")


def build_trainer(
    args: PipelineArguments,
    model_init: Callable,
    tokenized: DatasetDict,
    tokenizer,
    callbacks: list[TrainerCallback] = (),
) -> PipelineTrainer:
    return PipelineTrainer(
        model_init=model_init,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[NanLossGuard(), *callbacks],
    )
