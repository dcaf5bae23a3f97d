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

from pipeline import checks, data, model, progress, registry, torchrun, train
from pipeline.schema import Mode
from pipeline.space import Param, load_space, seeded_model_init
from pipeline.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    cfg: DictConfig
    space: list[Param]  # empty in mode=train
    tokenizer: Any
    tokenized: DatasetDict  # train, validation and test, tokenized
    labels: list[str]  # label names by id
    model_init: Callable
    data_fingerprint: str  # data.fingerprint of the splits
    split_digests: dict[str, str]  # each split's content digest
    tracker: Tracker  # rank 0's; under torchrun the other ranks write nowhere

    def trainer(self, params: dict[str, Any], callbacks: list, output_dir: Path | None = None) -> train.PipelineTrainer:
        """A Trainer with conf/trainer's values, `params` (a trial's, or the best trial's) over them."""
        params = dict(params)
        seed = params.pop("seed", self.cfg.seed)
        output_dir = output_dir or Path(self.cfg.output_dir) / "trainer"
        args = train.training_args(self.cfg.trainer, str(output_dir), seed, **torchrun.device_args(), **params)
        init = seeded_model_init(self.model_init, self.space) if self.space else self.model_init
        return train.build_trainer(args, init, self.tokenized, self.tokenizer, callbacks)


def prepare(cfg: DictConfig) -> Prepared:
    if not cfg.verbose:
        progress.quiet()
    checks.check_config(cfg)
    # Validates conf/trainer; under torchrun it also joins the process group.
    train.training_args(cfg.trainer, cfg.output_dir, cfg.seed, **torchrun.device_args())
    torchrun.check(cfg)
    space = load_space(cfg.search.space) if cfg.mode != Mode.train else []
    tokenizer = model.load_tokenizer(cfg.model)
    tokenizer.model_max_length = cfg.dataset.max_length  # saved with the model: predicting truncates as training did
    model.check_max_length(cfg.model, cfg.dataset.max_length)
    splits = data.load_splits(cfg.dataset, cfg.seed)
    labels = data.label_names(splits)
    model_init = model.make_model_init(cfg.model, labels)
    # Only now write anything: bad input above leaves no experiment, study or run behind.
    tracker = torchrun.tracker(cfg)
    identity = data.identify(splits)
    if torchrun.is_main():
        registry.check_data(tracker, cfg.registry.name, identity.fingerprint)
    tokenized = data.tokenize(splits, tokenizer, cfg.dataset.max_length)
    log.info("data: %s; labels: %s", {k: len(v) for k, v in splits.items()}, labels)
    return Prepared(cfg, space, tokenizer, tokenized, labels, model_init, identity.fingerprint, identity.splits, tracker)
