"""What every mode starts from, made once: the config checked, the data loaded, split, fingerprinted and
tokenized, the model's init, and the tracker. Cheap checks come first, so bad input fails before any
training, and nothing is recorded until the input has passed them."""

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
from pipeline.data.profile import Profile, profile
from pipeline.data.read import label_names
from pipeline.data.splits import (
    Duplicates,
    drop_duplicates,
    find_duplicates,
    load_splits,
    majority_class,
    texts,
    tokenize,
)
from pipeline.runtime import distributed
from pipeline.schema import Mode, check_config
from pipeline.search.space import Param, load_space, seeded_model_init
from pipeline.tracking import registry
from pipeline.tracking.promotion import row_ids
from pipeline.tracking.tracker import Tracker, open_tracker
from pipeline.training import model
from pipeline.training.args import training_args
from pipeline.training.trainer import PipelineTrainer, Resumer, build_trainer

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    cfg: DictConfig
    space: list[Param]  # empty in mode=train
    tokenizer: Any
    tokenized: DatasetDict  # train, validation and test, tokenized
    labels: list[str]  # label names by id
    model_init: Callable
    data_fingerprint: str  # data/fingerprint.py's fingerprint of the splits
    split_digests: dict[str, str]  # each split's content digest
    tracker: Tracker  # rank 0's; under torchrun the other ranks write nowhere
    duplicates: Duplicates  # texts in more than one split, counted before any were dropped
    test_rows: list[str]  # each test row's name (promotion.row_ids), for comparing versions row by row
    majority: str  # the training split's most common label: the baseline every model must beat
    profile: Profile  # the training split's profile, kept with each version (data/profile.py)

    def trainer(
        self, params: dict[str, Any], callbacks: list, output_dir: Path | None = None, resumer: Resumer | None = None
    ) -> PipelineTrainer:
        """A Trainer with conf/trainer's values, `params` (a trial's, or the best trial's) over them."""
        params = dict(params)
        seed = params.pop("seed", self.cfg.seed)
        output_dir = output_dir or Path(self.cfg.output_dir) / "trainer"
        args = training_args(self.cfg.trainer, str(output_dir), seed, **distributed.device_args(), **params)
        init = seeded_model_init(self.model_init, self.space) if self.space else self.model_init
        return build_trainer(args, init, self.tokenized, self.tokenizer, callbacks, resumer)


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
    tokenizer = model.load_tokenizer(cfg.model)
    tokenizer.model_max_length = cfg.dataset.max_length  # saved with the model: predicting truncates as training did
    model.check_max_length(cfg.model, cfg.dataset.max_length)
    splits = load_splits(cfg.dataset, cfg.seed)
    duplicates = find_duplicates(splits)
    duplicates.warn(cfg.dataset.drop_duplicates)
    if cfg.dataset.drop_duplicates:
        splits = drop_duplicates(splits)
    labels = label_names(splits)
    model_init = model.make_model_init(cfg.model, labels)
    # Only now write anything: bad input above leaves no experiment, study or run behind.
    tracker = open_tracker(cfg)
    identity = identify(splits)
    if distributed.is_main():
        registry.check_data(tracker, cfg.registry.name, identity.fingerprint)
    tokenized = tokenize(splits, tokenizer, cfg.dataset.max_length)
    log.info("data: %s; labels: %s", {k: len(v) for k, v in splits.items()}, labels)
    return Prepared(
        cfg,
        space,
        tokenizer,
        tokenized,
        labels,
        model_init,
        identity.fingerprint,
        identity.splits,
        tracker,
        duplicates,
        row_ids(texts(splits["test"])),
        labels[majority_class(splits["train"])],
        profile(texts(splits["train"]), [labels[i] for i in splits["train"]["label"]], tokenizer),
    )
