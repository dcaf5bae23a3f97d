"""What a run records about what made it: each invocation's config and command (one folder per invocation,
the latest also at the top), the run's params (model, data, search), and its splits as MLflow dataset inputs
(the Dataset column of the runs table)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from omegaconf import DictConfig, OmegaConf

from pipeline.runtime.secrets import redact
from pipeline.schema import Mode, searched_backbones, space_path
from pipeline.tracking.tracker import Tracker

INVOCATIONS_DIR = "invocations"
DIGEST_CHARS = 16  # MLflow keeps at most 36


def record(tracker: Tracker, run_id: str, cfg: DictConfig, split_digests: dict[str, str]) -> None:
    """The invocation's files, the run's params (the first invocation's stay: MLflow params never change)
    and its data."""
    if tracker.client is None:  # a torchrun replica: rank 0 records
        return
    log_invocation(tracker, run_id, cfg)
    tracker.log_new_params(run_id, {k: redact(v) for k, v in run_params(cfg).items()})
    tracker.log_inputs(run_id, dataset_inputs(cfg, split_digests))


def log_invocation(tracker: Tracker, run_id: str, cfg: DictConfig) -> None:
    """The resolved config and the exact command line, as `config.yaml` and `command.txt` artifacts:
    under `invocations/<UTC time>-<pid>/` for every invocation, and at the top for the latest."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
        (Path(tmp) / "command.txt").write_text(redact(command_line()) + "\n")
        tracker.client.log_artifacts(run_id, tmp)
        folder = f"{INVOCATIONS_DIR}/{time.strftime('%Y-%m-%d_%H-%M-%S', time.gmtime())}-{os.getpid()}"
        tracker.client.log_artifacts(run_id, tmp, folder)


def command_line() -> str:
    return shlex.join([Path(sys.executable).name, "-m", "pipeline", *sys.argv[1:]])


def run_params(cfg: DictConfig) -> dict[str, str]:
    """What the UI's Parameters table shows for a study or train run."""
    data = cfg.dataset
    params = {
        **model_source(cfg.model),
        "dataset": data.name,
        "data_source": data.data_dir or data.train_file or data.hub_id or "",
        "max_length": str(data.max_length),
        "seed": str(cfg.seed),
    }
    if cfg.mode != Mode.train:
        path = space_path(cfg.search.space)
        if backbones := searched_backbones(cfg.search.space):  # one study, whichever `model=` a command names
            params |= {"model": "searched", "model_source": ", ".join(backbones)}
        params |= {
            "search_space": cfg.search.space,
            "search_space_content": path.read_text(encoding="utf-8")[:6000] if path.is_file() else "",
            "n_trials": str(cfg.search.n_trials),
            "sampler": cfg.search.sampler.value,
            "pruner": cfg.search.pruner.value,
        }
    return params


def model_source(model: DictConfig) -> dict[str, str]:
    """A model's name and where its weights come from."""
    return {"model": model.name, "model_source": model.name_or_path or model.package or "tiny_config"}


def dataset_inputs(
    cfg: DictConfig, split_digests: dict[str, str], splits: tuple[str, ...] | None = None
) -> list[DatasetInput]:
    """The splits (all, or those named) as a run's inputs, each with its split as context."""
    return [
        DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, split)])
        for split, dataset in datasets(cfg, split_digests).items()
        if splits is None or split in splits
    ]


def datasets(cfg: DictConfig, split_digests: dict[str, str]) -> dict[str, Dataset]:
    """Each split as an MLflow dataset: its content digest and where its rows came from."""
    return {
        split: Dataset(f"{cfg.dataset.name}-{split}", digest[:DIGEST_CHARS], *_source(cfg.dataset, split))
        for split, digest in split_digests.items()
    }


def _source(data: DictConfig, split: str) -> tuple[str, str]:
    """(source type, source JSON) of a split: validation is carved from train, test too without a test file."""
    if data.data_dir:
        return "local", json.dumps({"uri": str(Path(data.data_dir) / ("test.csv" if split == "test" else "train.csv"))})
    if data.train_file:
        path = data.test_file if split == "test" and data.test_file else data.train_file
        return "local", json.dumps({"uri": str(path)})
    hub_split = data.hub_test_split if split == "test" and data.hub_test_split else data.hub_train_split
    return "hugging_face", json.dumps({"path": data.hub_id, "split": hub_split})
