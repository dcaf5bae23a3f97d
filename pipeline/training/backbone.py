"""The models a run fine-tunes: one `Backbone` per model (its config, tokenizer, fresh-model factory, and its
tokenizer's view of the data). A search space listing `model` choices loads one per choice, checked before
anything is recorded; backbones with identical tokenizers share their tokenized splits and profile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.data.profile import Profile, profile
from pipeline.data.splits import texts, tokenize, tokenizer_identity
from pipeline.errors import PipelineError
from pipeline.schema import MODELS_DIR, ModelConfig
from pipeline.training import model


@dataclass
class Backbone:
    cfg: ModelConfig | DictConfig
    tokenizer: PreTrainedTokenizerBase
    model_init: Callable[[], PreTrainedModel]  # a fresh model: the base weights, a newly drawn head
    tokenized: DatasetDict | None = None  # train, validation and test in this tokenizer (`tokenize_splits`)
    profile: Profile | None = None  # the training split's profile in this tokenizer


def model_config(name: str, configured: DictConfig, where: str) -> ModelConfig | DictConfig:
    """A backbone's config: the configured `model` (with the command's overrides) under its own name, else
    conf/model/NAME.yaml, else a directory `save_pretrained` wrote."""
    if name == configured.name:
        return configured
    if (MODELS_DIR / f"{name}.yaml").is_file():
        return OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(MODELS_DIR / f"{name}.yaml"))
    if Path(name).is_dir():
        return OmegaConf.structured(ModelConfig(name=Path(name).name, name_or_path=name))
    known = ", ".join(sorted(p.stem for p in MODELS_DIR.glob("*.yaml")))
    raise PipelineError(f"{where}: {name} is neither a model in conf/model/ ({known}) nor a directory")


def load_backbones(
    names: tuple[str, ...], configured: DictConfig, max_length: int, labels: list[str], where: str
) -> dict[str, Backbone]:
    """Each named model (none: the configured one) with its tokenizer truncating at `max_length` and its init;
    a model with fewer positions than `max_length`, or one that does not load, fails here, before any training."""
    found = {}
    for name in names or (configured.name,):
        cfg = model_config(name, configured, where)
        tokenizer = model.load_tokenizer(cfg)
        tokenizer.model_max_length = max_length  # saved with the model: predicting truncates as training did
        model.check_max_length(cfg, max_length)
        found[name] = Backbone(cfg, tokenizer, model.make_model_init(cfg, labels))
    return found


def tokenize_splits(backbones: dict[str, Backbone], splits: DatasetDict, labels: list[str], max_length: int) -> None:
    """Each backbone's splits tokenized and its training split profiled, once per distinct tokenizer."""
    done: dict[str, Backbone] = {}
    for backbone in backbones.values():
        same = done.setdefault(tokenizer_identity(backbone.tokenizer), backbone)
        if same.tokenized is None:
            same.tokenized = tokenize(splits, backbone.tokenizer, max_length)
            train = splits["train"]
            same.profile = profile(texts(train), [labels[i] for i in train["label"]], backbone.tokenizer)
        backbone.tokenized, backbone.profile = same.tokenized, same.profile
