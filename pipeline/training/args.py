"""TrainingArguments from conf/trainer: the pipeline's own options beside them, what it fixes whatever
conf/trainer says, and each invalid value as a one-line error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import TrainingArguments

from pipeline.errors import PipelineError
from pipeline.schema import TrainerOptions, own_fields
from pipeline.training import precision

# What the pipeline decides, whatever conf/trainer says: per-epoch evaluation (the search objective and
# MLflow's per-epoch curves), no per-trial checkpoints (only each backbone's best trial's weights are kept, by
# search/checkpoints.KeepBestTrial), MLflow through our own trial-aware callback, and raw losses so NaN is seen.
FIXED_ARGS: dict[str, Any] = {
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "report_to": "none",
    "logging_nan_inf_filter": False,
}

# TrainingArguments accepts 0 or negative values here and fails (or trains nothing) much later.
POSITIVE_ARGS = ("per_device_train_batch_size", "per_device_eval_batch_size", "num_train_epochs", "learning_rate")


@dataclass
class PipelineArguments(TrainingArguments, TrainerOptions):
    """TrainingArguments plus the pipeline's own training options (schema.TrainerOptions), set (and searched)
    like the rest."""


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
        raise PipelineError(
            f"trainer.group_by_length_min_batches={min_batches}: must be a whole number, 0 or more (0: always group)"
        )
    try:
        return PipelineArguments(**fields)
    except (ValueError, TypeError) as err:
        raise PipelineError(f"trainer: {str(err).splitlines()[0]}") from None
