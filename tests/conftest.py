"""Shared fixtures: the real config composed with tiny overrides, tiny data, the real entry point."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipeline import schema

ROOT = Path(__file__).resolve().parent.parent
AG_NEWS_DIR = ROOT.parent / "shared" / "data" / "ag_news_csv"
CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
# Small and fast: the tiny random BERT, a few hundred real AG News rows, short sequences.
TINY = [
    "model=tiny",
    f"dataset.data_dir={AG_NEWS_DIR}",
    "dataset.max_train_samples=96",
    "dataset.max_eval_samples=40",
    "dataset.max_length=48",
    "trainer.logging_steps=5",
    "trainer.learning_rate=0.001",
]

schema.register()

# Each test session starts on empty datasets and Hugging Face caches (set before anything imports datasets,
# which reads them once), so that nothing passes only because a cache is warm; subprocesses inherit them.
CACHE_DIR = Path(tempfile.mkdtemp(prefix="pipeline-tests-cache-"))
os.environ["HF_HOME"] = str(CACHE_DIR / "hf")
os.environ["HF_DATASETS_CACHE"] = str(CACHE_DIR / "datasets")


@pytest.fixture(scope="session", autouse=True)
def _empty_caches():
    yield
    shutil.rmtree(CACHE_DIR, ignore_errors=True)

# A shell starts background jobs (`cmd &`, nohup) with SIGINT ignored, and children inherit that. The
# interrupt tests send SIGINT to this process and to the entry points it starts, so give it back
# Python's handler: the tests then behave the same however pytest was launched.
signal.signal(signal.SIGINT, signal.default_int_handler)


def compose_config(*overrides: str):
    """The real conf/ composed as Hydra's entry point would, with `overrides`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def free_port() -> int:
    """A loopback port nothing listens on (until something binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pipeline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # The Hub is unreachable here: fail at once instead of retrying for a minute.
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # this checkout
    env.update(extra)
    return env


def run_pipeline(cwd: Path, *overrides: str, module: str = "pipeline", timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """Run `python -m pipeline OVERRIDES` in `cwd` (where mlruns/ and outputs/ land)."""
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env=pipeline_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def write_ag_news_release(directory: Path, rows: dict[str, list[tuple[int, str, str]]]) -> Path:
    """A directory in the AG News CSV release format: no header, every field quoted."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split, split_rows in rows.items():
        with open(directory / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL).writerows(split_rows)
    return directory


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    """12 train and 8 test rows per class, with the release's escapes."""
    def rows(n: int) -> list[tuple[int, str, str]]:
        return [(c + 1, f"{CLASSES[c]} title {i}", f"Costs \\$5 at  #39;shop #39;\\ line{i}") for c in range(4) for i in range(n)]

    return write_ag_news_release(tmp_path / "ag_news", {"train": rows(12), "test": rows(8)})
