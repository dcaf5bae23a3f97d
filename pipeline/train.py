"""Training arguments from conf/trainer, compute_metrics, and the Trainer the pipeline trains with."""
from __future__ import annotations

import math
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import torch
from datasets import DatasetDict
from sklearn.metrics import accuracy_score, f1_score
from transformers import (
    DataCollatorWithPadding,
    EvalPrediction,
    TrainerCallback,
    TrainingArguments,
)

from pipeline import fgm, precision, trainer_internals
from pipeline.errors import PipelineError
from pipeline.trainer_internals import EpochReports, ShuffledLengthGroups, current_trial

# What the pipeline decides, whatever conf/trainer says: per-epoch evaluation (the search objective and
# MLflow's per-epoch curves), no per-trial checkpoints (only the best trial's weights are kept, by
# checkpoints.KeepBestTrial), MLflow through our own trial-aware callback, and raw losses so NaN is seen.
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

    fgm_epsilon: float = field(default=0.0, metadata={"help": (
        "adversarial training (FGM, `pipeline/fgm.py`): each step also trains on word embeddings moved this far "
        "along the loss gradient; about 2x the time per step"), "shown": "`0.0` (off)"})
    group_by_length_min_batches: int = field(default=100, metadata={"help": (
        "`train_sampling_strategy: group_by_length` groups only an epoch of at least this many optimizer steps "
        "(batches, on one device without gradient accumulation); a shorter one trains on random batches: there "
        "grouping saves seconds and costs accuracy (`pipeline/batch_order.py`)")})


def own_fields() -> dict[str, dataclasses.Field]:
    """The pipeline's own `trainer.*` keys (beside TrainingArguments' fields), for the config table."""
    fields = PipelineArguments.__dataclass_fields__
    return {f"trainer.{name}": f for name, f in fields.items() if name not in TrainingArguments.__dataclass_fields__}


# The pipeline's own keys, named in errors beside "a TrainingArguments field".
OWN_ARGS = ", ".join(sorted(name.split(".", 1)[1] for name in own_fields()))


def training_args(trainer_cfg: dict[str, Any], output_dir: str, seed: int, **overrides: Any) -> PipelineArguments:
    """PipelineArguments from conf/trainer; a misspelt or invalid field is a one-line error."""
    fields = {**trainer_cfg, **overrides, **FIXED_ARGS, "output_dir": output_dir, "seed": seed}
    fields |= precision.training_fields(fields.get("bf16", False), fields.get("tf32"))
    precision.attention_without_cudnn()  # batches padded to their own longest text: a new length nearly every step
    if not torch.cuda.is_available():  # pinning needs an accelerator; without one torch warns at every trial
        fields.setdefault("dataloader_pin_memory", False)
    unknown = sorted(set(fields) - set(PipelineArguments.__dataclass_fields__))
    if unknown:
        raise PipelineError(f"trainer.{unknown[0]}: not a transformers.TrainingArguments field (or {OWN_ARGS})")
    for key in POSITIVE_ARGS:
        if not isinstance(fields.get(key, 1), (int, float)) or fields.get(key, 1) <= 0:
            raise PipelineError(f"trainer.{key}={fields[key]}: must be a positive number")
    if not isinstance(fields.get("fgm_epsilon", 0), (int, float)) or fields.get("fgm_epsilon", 0) < 0:
        raise PipelineError(f"trainer.fgm_epsilon={fields['fgm_epsilon']}: must be 0 (off) or a positive number")
    min_batches = fields.get("group_by_length_min_batches", 0)
    if not isinstance(min_batches, int) or isinstance(min_batches, bool) or min_batches < 0:
        raise PipelineError(f"trainer.group_by_length_min_batches={min_batches}: must be a whole number, 0 or more (0: always group)")
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


OBJECTIVE = "eval_accuracy"  # what the search maximises, as the Trainer and MLflow name it


def objective(metrics: dict[str, float]) -> float:
    """What the search maximises: validation accuracy (not the Trainer's default sum of all metrics)."""
    return metrics[OBJECTIVE]


class PipelineTrainer(EpochReports, ShuffledLengthGroups):
    """A Trainer that reports to Optuna once per epoch, shuffles length-grouped batches, records why a trial
    failed, and trains with FGM when asked."""

    @property
    def trial(self) -> optuna.Trial | None:
        """The Optuna trial being trained, None outside a search."""
        return current_trial(self)

    def training_step(self, model, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        clean_step = super().training_step
        loss = clean_step(model, inputs, num_items_in_batch)
        if self.args.fgm_epsilon > 0:  # the loss logged is the clean step's
            fgm.step_again_nudged(lambda: clean_step(model, inputs, num_items_in_batch), self.model, self.args.fgm_epsilon)
        return loss

    resumer: Any = None  # resume.ResumableTrials, in a search: trials save their state each epoch, retries resume

    def train(self, *args: Any, trial: optuna.Trial | None = None, **kwargs: Any):
        if self.model_init is not None:  # a new model for this training: the last one's memory goes first
            trainer_internals.release_previous_model(self)
        try:
            if isinstance(trial, optuna.Trial) and self.resumer is not None:
                kwargs["resume_from_checkpoint"] = self.resumer.begin(trial)
            return super().train(*args, trial=trial, **kwargs)
        except Exception as err:
            if isinstance(trial, optuna.Trial) and not isinstance(err, optuna.TrialPruned):
                # Optuna keeps no failure reason; MLflow's trial run shows this one.
                trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:1000])
                if self.resumer is not None:
                    self.resumer.drop(trial)  # a failed trial is not retried
            raise


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
