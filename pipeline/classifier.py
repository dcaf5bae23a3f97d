"""A trained classifier loaded once, from a saved directory or a `models:/` (or `runs:/`) URI, onto its device
(a CUDA GPU when there is one), and applied in length-sorted batches without gradients: every class's
probability for each text. Also the options that load and apply it, which `pipeline.predict` and
`pipeline.evaluate` share."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from pipeline.data.profile import Profile
from pipeline.errors import PipelineError, did_you_mean
from pipeline.runtime import sqlite
from pipeline.schema import RegistryConfig, TrackingConfig
from pipeline.training import inference, precision
from pipeline.training.inference import BATCH_SIZE

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Classifier:
    model: PreTrainedModel
    tokenizer: object
    labels: list[str]  # by class id
    quantized: bool = False  # int8 Linear layers (CPU)
    profile: Profile | None = None  # a registered version's training data (data/profile.py), else None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def where(self) -> str:
        """Where it runs, for the terminal: `cuda:0 (NVIDIA H200, bfloat16)`, `cpu (float32)`."""
        kind = "int8 quantized" if self.quantized else str(self.model.dtype).removeprefix("torch.")
        name = f"{torch.cuda.get_device_name(self.device)}, " if self.device.type == "cuda" else ""
        return f"{self.device} ({name}{kind})"

    def probabilities(self, texts: list[str], batch_size: int = BATCH_SIZE, progress: bool = False) -> np.ndarray:
        """Rows of class probabilities, in the order of `texts` (training/inference.py)."""
        return inference.probabilities(self.model, self.tokenizer, texts, batch_size, progress)

    def label_of(self, probabilities: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Each row's most likely label and its probability."""
        best = probabilities.argmax(axis=1)
        return [self.labels[i] for i in best], probabilities[np.arange(len(best)), best]


def device_for(choice: str, quantize: bool = False) -> torch.device:
    """`--device`: `auto` is the GPU where torch sees one, else the CPU; `--quantize` runs on the CPU."""
    if choice not in DEVICES:
        raise PipelineError(f"--device={choice}: choose one of {', '.join(DEVICES)}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device=cuda: torch sees no CUDA device here; use --device=auto or --device=cpu")
    if quantize and choice == "cuda":
        raise PipelineError(
            "--quantize with --device=cuda: int8 quantization runs on the CPU only; use --device=cpu "
            "(or auto), or drop --quantize"
        )
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() and not quantize else "cpu"
    return torch.device(choice)


def load(
    uri: str, tracking_uri: str, quantize: bool = False, device: str = "auto", precision_choice: str = "auto"
) -> Classifier:
    """The model at `uri`: a directory `save_pretrained` wrote, or an MLflow model URI in `tracking_uri`, on
    `device` (auto, cpu or cuda: `device_for`), in `precision_choice` (auto: bf16 where that device has it, fp32 or
    bf16); `quantize`: its Linear layers in int8 (dynamic quantization, on the CPU)."""
    target = device_for(device, quantize)
    dtype = _dtype(precision_choice, target)
    precision.attention_without_cudnn()  # texts batched by length: a new length nearly every batch
    if not sys.stderr.isatty():  # "Loading weights" redrawn as lines in a log or a pipe
        transformers.utils.logging.disable_progress_bar()
    profile = None
    if Path(uri).is_dir():
        model, tokenizer = AutoModelForSequenceClassification.from_pretrained(uri), AutoTokenizer.from_pretrained(uri)
    elif uri.startswith(("models:/", "runs:/")):
        model, tokenizer = _from_mlflow(uri, tracking_uri)
        profile = _training_profile(uri, tracking_uri)
    else:
        raise PipelineError(
            f"{uri}: neither a model directory nor a models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ URI"
        )
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    model = quantized(model) if quantize else model.to(target, dtype)
    return Classifier(model, tokenizer, labels, quantize, profile)


PRECISIONS = ("auto", "fp32", "bf16")


def _dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice not in PRECISIONS:
        raise PipelineError(f"--precision={choice}: choose one of {', '.join(PRECISIONS)}")
    if choice == "auto":
        return precision.inference_dtype(device)
    return torch.bfloat16 if choice == "bf16" else torch.float32


def quantized(model: PreTrainedModel) -> PreTrainedModel:
    """Dynamic int8 quantization of the Linear layers: weights int8, activations quantized per batch."""
    with warnings.catch_warnings():  # torch.ao's quantization is deprecated in favour of torchao, not yet removed
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)


def _from_mlflow(uri: str, tracking_uri: str):
    import mlflow

    check_store(tracking_uri)
    logging.getLogger("mlflow.transformers").setLevel(logging.WARNING)  # "... resolved as file:///..." per load
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        components = mlflow.transformers.load_model(uri, return_type="components")
    except Exception as err:  # no such model, version or alias; an unreachable server
        raise PipelineError(
            f"cannot load {uri} from --tracking-uri={tracking_uri}: {str(err).splitlines()[0].rstrip('.')}"
            f"{_registered_names(uri, tracking_uri)}"
        ) from None
    return components["model"], components["tokenizer"]


def registered_version(uri: str, tracking_uri: str) -> ModelVersion | None:
    """The model version a models:/ URI names (None for a directory or runs:/ URI)."""
    if not uri.startswith("models:/"):
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, tracking_uri)
    name, _, rest = uri.removeprefix("models:/").partition("/")
    if "@" in name:
        name, alias = name.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    return client.get_model_version(name, rest)


def _training_profile(uri: str, tracking_uri: str) -> Profile | None:
    """The training profile of the version a models:/ URI names, where it was kept."""
    version = registered_version(uri, tracking_uri)
    if version is None:
        return None
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import registry  # with the Trainer: only where a registered model is loaded

    return registry.training_profile(MlflowClient(tracking_uri, tracking_uri), version)


def _registered_names(uri: str, tracking_uri: str) -> str:
    """For a models:/ URI whose name is not registered: the names that are (a quick try registers
    `NAME-train400`, the full data `NAME`), the closest first; for an alias no version holds, the versions."""
    if not uri.startswith("models:/"):
        return ""
    name = re.split(r"[@/]", uri.removeprefix("models:/"), maxsplit=1)[0]
    from mlflow.tracking import MlflowClient

    try:
        names = sorted(m.name for m in MlflowClient(tracking_uri).search_registered_models())
    except Exception:  # the store itself failed: its error above says so
        return ""
    if name in names:
        try:
            return _versions_instead(uri, name, tracking_uri)
        except Exception:  # the store failed now: its error above says enough
            return ""
    return f"; registered models here: {', '.join(names) or 'none'}{did_you_mean(name, names)}"


def _versions_instead(uri: str, name: str, tracking_uri: str) -> str:
    """For a models:/NAME@ALIAS URI whose alias no version holds: the versions to name instead."""
    if "@" not in uri:
        return ""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, tracking_uri)
    alias = uri.split("@", 1)[1]
    if alias in client.get_registered_model(name).aliases:
        return ""
    versions = sorted((int(v.version) for v in client.search_model_versions(f"name = '{name}'")), reverse=True)
    if not versions:
        return ""
    why = ""
    if alias == RegistryConfig.alias:  # the alias the pipeline moves, by its rule
        why = " (a version takes it only when it beats the majority class and the version holding it"
        why += ": docs/uncertainty.md)"
    listed = f" (versions: {', '.join(map(str, versions))})" if len(versions) > 1 else ""
    return f"; no version of {name} holds {alias}{why}; use models:/{name}/{versions[0]}{listed}"


def check_store(tracking_uri: str) -> None:
    """A mistyped local store would be created empty by MLflow: refuse one that does not exist."""
    path = sqlite.path_of(tracking_uri)
    if path is not None and not path.is_file():
        raise PipelineError(
            f"--tracking-uri={tracking_uri}: no such file; run from the directory that holds mlruns/, or give the "
            "store's path (sqlite:///PATH/mlflow.db) or server (http://HOST:PORT)"
        )


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that apply a trained model to users' rows."""
    parser.add_argument(
        "--text-columns", default="text", help="the file's text columns, joined with a space (default: text)"
    )
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="texts per batch (default: %(default)s)")
    parser.add_argument(
        "--device",
        default="auto",
        help=(
            "where the model runs: auto (a CUDA GPU where torch sees one, else the CPU), cpu or cuda; "
            "bf16 where the device has it (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--precision",
        default="auto",
        help=(
            "the weights' precision: auto (bf16 where the device computes it natively: a CUDA GPU with bf16, a CPU "
            "with AVX512-BF16 or AMX; else fp32), fp32 (scores to full precision) or bf16 (faster where native; "
            "scores keep about 3 significant digits, so close ones tie) (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--quantize",
        action="store_true",
        help=(
            "int8 dynamic quantization of the Linear layers, on the CPU (--device auto picks the CPU); on a CPU with "
            "bf16 it measured no faster and about a point less accurate (docs/performance.md): check it on your data "
            "with pipeline.evaluate --quantize"
        ),
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", TrackingConfig.uri),
        help="MLflow tracking/registry URI for models:/ URIs (default: %(default)s)",
    )


def check_options(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise PipelineError(f"--batch-size={args.batch_size}: must be at least 1")


def text_columns(args: argparse.Namespace) -> list[str]:
    return [c.strip() for c in args.text_columns.split(",") if c.strip()]


def from_options(args: argparse.Namespace) -> Classifier:
    """The model at the command's URI, loaded as its options say."""
    return load(args.uri, args.tracking_uri, args.quantize, args.device, args.precision)
