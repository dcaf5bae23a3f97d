"""The Trainer the pipeline trains with: per-epoch reports to Optuna, shuffled length-grouped batches, a
failed trial's reason kept, interrupted trials resumed, a non-finite loss stopping a trial, and adversarial
training on the word embeddings (FGM, Miyato et al., 2017) when `trainer.fgm_epsilon` is set."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import optuna
import torch
from datasets import DatasetDict
from transformers import DataCollatorWithPadding, TrainerCallback

from pipeline.training import internals
from pipeline.training.args import PipelineArguments
from pipeline.training.internals import EpochReports, ShuffledLengthGroups
from pipeline.training.metrics import OBJECTIVE, compute_metrics


def objective(metrics: dict[str, float]) -> float:
    """What the search maximises: validation accuracy (not the Trainer's default sum of all metrics)."""
    return metrics[OBJECTIVE]


class Resumer(Protocol):
    """What continues interrupted trials (search/resume.py's ResumableTrials)."""

    def begin(self, trial: optuna.Trial, distributed: bool) -> str | None: ...  # the checkpoint to resume from

    def drop(self, trial: optuna.Trial) -> None: ...  # a failed trial's saved states


# A trial's backbone: its model_init, tokenized splits and tokenizer (a search over `model`, prepare.Prepared).
BackboneOf = Callable[[Any], tuple[Callable, DatasetDict, Any]]


class PipelineTrainer(EpochReports, ShuffledLengthGroups):
    """A Trainer that reports to Optuna once per epoch, shuffles length-grouped batches, records why a trial
    failed, trains with FGM when asked, and, given a `resumer` (in a search), continues interrupted trials;
    given `backbone_of`, each trial trains the model (and data in its tokenizer) the trial drew."""

    def __init__(
        self, *args: Any, resumer: Resumer | None = None, backbone_of: BackboneOf | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.resumer, self.backbone_of = resumer, backbone_of

    def use_backbone(self, trial: Any) -> None:
        """The trial's model, splits and tokenizer in place of the last trial's."""
        self.model_init, tokenized, tokenizer = self.backbone_of(trial)
        self.train_dataset, self.eval_dataset = tokenized["train"], tokenized["validation"]
        self.processing_class, self.data_collator = tokenizer, DataCollatorWithPadding(tokenizer)
        self.callback_handler.processing_class = tokenizer  # what callbacks get (the kept weights save it)
        internals.forget_model_inputs(self)

    def training_step(self, model, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        clean_step = super().training_step
        loss = clean_step(model, inputs, num_items_in_batch)
        if self.args.fgm_epsilon > 0:  # the loss logged is the clean step's
            step_again_nudged(lambda: clean_step(model, inputs, num_items_in_batch), self.model, self.args.fgm_epsilon)
        return loss

    def train(self, *args: Any, trial: optuna.Trial | None = None, **kwargs: Any):
        if self.model_init is not None:  # a new model for this training: the last one's memory goes first
            internals.release_previous_model(self)
        if trial is not None and self.backbone_of is not None:
            self.use_backbone(trial)
        try:
            if isinstance(trial, optuna.Trial) and self.resumer is not None:
                kwargs["resume_from_checkpoint"] = self.resumer.begin(trial, self.args.world_size > 1)
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
    resumer: Resumer | None = None,
    backbone_of: BackboneOf | None = None,
) -> PipelineTrainer:
    return PipelineTrainer(
        model_init=model_init,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[NanLossGuard(), *callbacks, *([resumer] if resumer is not None else [])],
        resumer=resumer,
        backbone_of=backbone_of,
    )


def step_again_nudged(step: Callable[[], torch.Tensor], model, epsilon: float) -> None:
    """Run the training `step` once more on embeddings moved `epsilon` along their gradient: its gradients
    add to the clean step's (the Trainer's own backward, so gradient accumulation and DDP stay right)."""
    with nudged_embeddings(model, epsilon):
        step()


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
