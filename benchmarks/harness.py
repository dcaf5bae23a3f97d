"""Shared setup for the benchmarks: the real config, AG News from ../shared, timing and the result line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devtools/, beside the installed pipeline
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import transformers  # noqa: E402
from datasets import DatasetDict  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from pipeline import schema  # noqa: E402
from pipeline.data.read import label_names  # noqa: E402
from pipeline.data.splits import load_splits, tokenize  # noqa: E402
from pipeline.training import model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
AG_NEWS_DIR = ROOT.parent / "shared" / "data" / "ag_news_csv"

transformers.logging.set_verbosity_error()
schema.store_in_hydra()


def config(*overrides: str):
    """The pipeline's own composed config (its defaults are what the benchmarks measure)."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"dataset.data_dir={AG_NEWS_DIR}", "output_dir=/tmp/bench", *overrides])


@dataclass
class Prepared:
    """What the pipeline prepares once per run: splits, tokenizer, tokenized splits, model_init."""

    splits: DatasetDict
    tokenizer: object
    tokenized: DatasetDict
    model_init: Callable


def prepare(cfg) -> Prepared:
    tokenizer = model.load_tokenizer(cfg.model)
    splits = load_splits(cfg.dataset, cfg.seed)
    tokenized = tokenize(splits, tokenizer, cfg.dataset.max_length)
    return Prepared(splits, tokenizer, tokenized, model.make_model_init(cfg.model, label_names(splits)))


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(_fmt(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def result_line(**values: float | str) -> None:
    """The one machine-readable line each benchmark ends with."""
    print("result: " + " ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in values.items()))
    sys.stdout.flush()


def env() -> dict[str, str]:
    """The environment for the real command in a subprocess: offline, this checkout first on the path."""
    found = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return found | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def machine() -> str:
    import torch

    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
