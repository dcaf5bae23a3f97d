"""What serving would see of a trained model: texts per second and milliseconds per text classifying validation
texts as `pipeline.predict` does (training/inference.py's batches, on the device it trained on, in predict's
precision there), its parameters and its size on disk. `TrialSpeed` measures each trial after its last epoch
and keeps the figures on the trial (Optuna user attributes), where the final step's latency budget reads them;
under a budget it also sets the trial's constraint, from which TPE learns where the fast trials are."""

from __future__ import annotations

import copy
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from transformers import PreTrainedModel, TrainerCallback

from pipeline.schema import BACKBONE
from pipeline.training import inference, precision
from pipeline.training.internals import current_trial, training_done

TEXTS_PER_S = "predict_texts_per_s"
MS_PER_TEXT = "predict_ms_per_text"
METRICS = (TEXTS_PER_S, MS_PER_TEXT, "model_params", "model_size_mb")  # also each trial's MLflow metrics
DEVICE = "predict_device"  # where the figures were measured
BUDGET_CONSTRAINT = "ms_per_text_over_budget"  # Optuna's constraint under a budget: feasible at 0 or below


@dataclass(frozen=True)
class Speed:
    predict_texts_per_s: float
    predict_ms_per_text: float
    model_params: int
    model_size_mb: float  # its weights as saved (float32)
    predict_device: str  # `cpu (bfloat16; Intel(R) Xeon(R) ..., 2 threads)`, `cuda:0 (bfloat16; NVIDIA H200)`

    @classmethod
    def of(cls, attrs: dict[str, Any]) -> Speed | None:
        """The speed a trial recorded (None: a trial that did not finish, or from before speeds were measured)."""
        fields = cls.__dataclass_fields__
        return cls(**{k: attrs[k] for k in fields}) if all(k in attrs for k in fields) else None

    def line(self) -> str:
        """`2.10 ms/text (476 texts/s) on cpu (bfloat16; ...), 22.7M parameters, 87 MB`."""
        return (
            f"{self.predict_ms_per_text:.2f} ms/text ({self.predict_texts_per_s:,.0f} texts/s) on "
            f"{self.predict_device}, {self.model_params / 1e6:.1f}M parameters, {self.model_size_mb:.0f} MB"
        )


def measure(model: PreTrainedModel, tokenizer, texts: list[str]) -> Speed:
    """Classify `texts` once to warm up, then time it again: steady serving, not the first call's set-up."""
    dtype = precision.inference_dtype(model.device)
    served = copy.deepcopy(model).to(dtype)  # the trained model stays as it is
    inference.probabilities(served, tokenizer, texts[: inference.BATCH_SIZE])
    started = time.perf_counter()
    inference.probabilities(served, tokenizer, texts)
    elapsed = time.perf_counter() - started
    del served
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return Speed(
        round(len(texts) / elapsed, 1),
        round(1000 * elapsed / len(texts), 4),
        sum(p.numel() for p in model.parameters()),
        round(size / 2**20, 1),
        f"{model.device} ({str(dtype).removeprefix('torch.')}; {machine(model.device)})",
    )


def machine(device: torch.device) -> str:
    """The processor a speed was measured on: the GPU's name, or the CPU's and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "CPU")
    return f"{name}, {torch.get_num_threads()} threads"


def backbone_of(trial: optuna.trial.FrozenTrial) -> str:
    """The backbone a trial trained (`model` in a space over backbones; '' where the study has one model)."""
    return str(trial.params.get(BACKBONE, ""))


def backbone_ms(trials: Iterable[optuna.trial.FrozenTrial], extra: tuple[str, float] | None = None) -> dict[str, float]:
    """Each backbone's milliseconds per text: the median over its measured trials (and `extra`, a backbone's new
    figure). The speed is the model's: a trial's learning rate or epochs do not change it, and one trial's figure
    is a draw with a few percent of timing noise (two MiniLM trials: 1.86 and 2.06 ms), so a budget judges the
    backbone, never one lucky trial of it."""
    measured = defaultdict(list)
    for trial in trials:
        if speed := Speed.of(trial.user_attrs):
            measured[backbone_of(trial)].append(speed.predict_ms_per_text)
    if extra is not None:
        measured[extra[0]].append(extra[1])
    return {backbone: statistics.median(values) for backbone, values in measured.items()}


class TrialSpeed(TrainerCallback):
    """After a trial's last epoch, its model's speed on `texts`, kept on the trial (`Speed.of` reads it), and
    with a `budget` (ms per text) the trial's constraint. A trial stopped early (pruned) is not measured and
    sets none."""

    def __init__(self, trainer, texts: list[str], budget: float | None = None) -> None:
        self.trainer, self.texts, self.budget = trainer, texts, budget

    def on_train_end(self, args, state, control, **kwargs: Any) -> None:
        trial = current_trial(self.trainer)
        # Not on a torchrun replica (rank 0 measures), nor before a prune: the Trainer calls this then too.
        if not isinstance(trial, optuna.Trial) or not self.texts or not training_done(state):
            return
        speed = measure(self.trainer.model, self.trainer.processing_class, self.texts)
        for name, value in asdict(speed).items():
            trial.set_user_attr(name, value)
        if self.budget is not None:  # the backbone's median so far, as the final step's pick judges it
            complete = trial.study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
            backbone = backbone_of(trial)
            ms = backbone_ms(complete, (backbone, speed.predict_ms_per_text))[backbone]
            trial.set_constraint(BUDGET_CONSTRAINT, ms - self.budget)
