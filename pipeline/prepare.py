"""What every mode starts from, made once: the config checked, the data loaded, split, fingerprinted and
tokenized, the model's init (each backbone's, in a search over `model`), and the tracker. Cheap checks come
first, so bad input fails before any training, and nothing is recorded until the input has passed them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import DatasetDict
from omegaconf import DictConfig

from pipeline import console
from pipeline.data.fingerprint import identify
from pipeline.data.profile import Profile
from pipeline.data.read import label_names
from pipeline.data.splits import (
    Duplicates,
    drop_duplicates,
    find_duplicates,
    load_splits,
    majority_class,
    texts,
)
from pipeline.runtime import distributed
from pipeline.schema import BACKBONE, Mode, check_config, space_path
from pipeline.search.space import Param, backbone_choices, load_space, seeded_model_init
from pipeline.tracking import registry
from pipeline.tracking.promotion import row_ids
from pipeline.tracking.tracker import Tracker, open_tracker
from pipeline.training.args import training_args
from pipeline.training.backbone import Backbone, load_backbones, tokenize_splits
from pipeline.training.trainer import PipelineTrainer, Resumer, build_trainer

log = logging.getLogger(__name__)
SPEED_TEXTS = 512  # validation texts a trial's speed is timed on: a small part of a trial's time


@dataclass
class Prepared:
    cfg: DictConfig
    space: list[Param]  # empty in mode=train
    backbones: dict[str, Backbone]  # the configured model, or each one the space searches over
    labels: list[str]  # label names by id
    data_fingerprint: str  # data/fingerprint.py's fingerprint of the splits
    split_digests: dict[str, str]  # each split's content digest
    tracker: Tracker  # rank 0's; under torchrun the other ranks write nowhere
    duplicates: Duplicates  # texts in more than one split, counted before any were dropped
    test_rows: list[str]  # each test row's name (promotion.row_ids), for comparing versions row by row
    majority: str  # the training split's most common label: the baseline every model must beat
    speed_texts: list[str]  # validation texts a trial's speed is measured on (training/speed.py)

    def backbone(self, params: dict[str, Any] | None = None) -> Backbone:
        """The backbone `params` (a trial's) name, else the configured model (or the space's first choice)."""
        name = (params or {}).get(BACKBONE)
        return self.backbones[name] if name is not None else next(iter(self.backbones.values()))

    @property
    def tokenized(self) -> DatasetDict:
        """The splits in the first backbone's tokenizer (every backbone has the same rows)."""
        return self.backbone().tokenized

    @property
    def tokenizer(self) -> Any:
        return self.backbone().tokenizer

    @property
    def model_init(self) -> Callable:
        return self.backbone().model_init

    @property
    def profile(self) -> Profile:
        return self.backbone().profile

    def trainer(
        self, params: dict[str, Any], callbacks: list, output_dir: Path | None = None, resumer: Resumer | None = None
    ) -> PipelineTrainer:
        """A Trainer with conf/trainer's values, `params` (a trial's, or the best trial's) over them; in a
        search over backbones (`params` empty) each trial trains the backbone it draws."""
        params = dict(params)
        seed = params.pop("seed", self.cfg.seed)
        backbone = self.backbone({BACKBONE: params.pop(BACKBONE)} if BACKBONE in params else None)
        output_dir = output_dir or Path(self.cfg.output_dir) / "trainer"
        args = training_args(self.cfg.trainer, str(output_dir), seed, **distributed.device_args(), **params)
        init, tokenized, tokenizer = self._inputs(backbone)
        backbone_of = self._backbone_of if len(self.backbones) > 1 else None
        return build_trainer(args, init, tokenized, tokenizer, callbacks, resumer, backbone_of)

    def _inputs(self, backbone: Backbone) -> tuple[Callable, DatasetDict, Any]:
        init = seeded_model_init(backbone.model_init, self.space) if self.space else backbone.model_init
        return init, backbone.tokenized, backbone.tokenizer

    def _backbone_of(self, trial: Any) -> tuple[Callable, DatasetDict, Any]:
        """A trial's backbone: the `model` it draws (the same value Optuna hands back on every draw)."""
        choice = next(p for p in self.space if p.name == BACKBONE).suggest(trial)
        return self._inputs(self.backbones[choice])


def prepare(cfg: DictConfig) -> Prepared:
    if not cfg.verbose:
        console.quiet()
    # Read once, now: MLflow's set_tracking_uri rewrites MLFLOW_TRACKING_URI, which this key interpolates.
    cfg.tracking.uri = cfg.tracking.uri
    check_config(cfg)
    # Validates conf/trainer; under torchrun it also joins the process group.
    training_args(cfg.trainer, cfg.output_dir, cfg.seed, **distributed.device_args())
    distributed.check(cfg)
    space = load_space(cfg.search.space) if cfg.mode != Mode.train else []
    splits = load_splits(cfg.dataset, cfg.seed)
    duplicates = find_duplicates(splits)
    duplicates.warn(cfg.dataset.drop_duplicates)
    if cfg.dataset.drop_duplicates:
        splits = drop_duplicates(splits)
    labels = label_names(splits)
    names, where = ordered(backbone_choices(space), cfg.model.name), f"{space_path(cfg.search.space)}: {BACKBONE}"
    found = load_backbones(names, cfg.model, cfg.dataset.max_length, labels, where)
    # Only now write anything: bad input above leaves no experiment, study or run behind.
    tracker = open_tracker(cfg)
    identity = identify(splits)
    if distributed.is_main():
        registry.check_data(tracker, cfg.registry.name, identity.fingerprint)
    tokenize_splits(found, splits, labels, cfg.dataset.max_length)
    log.info("data: %s; labels: %s", {k: len(v) for k, v in splits.items()}, labels)
    return Prepared(
        cfg,
        space,
        found,
        labels,
        identity.fingerprint,
        identity.splits,
        tracker,
        duplicates,
        row_ids(texts(splits["test"])),
        labels[majority_class(splits["train"])],
        texts(splits["validation"])[:SPEED_TEXTS],
    )


def ordered(choices: tuple[str, ...], configured: str) -> tuple[str, ...]:
    """The space's backbones, the configured model first when it is one of them (trial 0 trains it)."""
    return tuple(sorted(choices, key=lambda name: name != configured))
