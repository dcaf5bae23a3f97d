"""The real command, as tests and benchmarks run it: this checkout's `python -m pipeline`, offline, on
small real data (`TINY`: the tiny random BERT and a few hundred AG News rows from ../shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from pipeline.search import resume
from pipeline.tracking.tracker import WORKER

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
    # Named as without the caps (which would add `-train96-eval40`): tests and benchmarks name them so.
    "search.study_name=ag_news-tiny",
    "registry.name=ag_news",
]


def study_storage(cwd: Path) -> str:
    """The Optuna storage a command run in `cwd` uses by default (conf/config.yaml's search.storage)."""
    return f"sqlite:///{cwd}/mlruns/optuna.db"


def tracking_uri(cwd: Path) -> str:
    """The MLflow store a command run in `cwd` uses by default (conf/config.yaml's tracking.uri)."""
    return f"sqlite:///{cwd}/mlruns/mlflow.db"


def pipeline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # The Hub is unreachable here: fail at once instead of retrying for a minute.
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # this checkout
    env.update(extra)
    return env


def run_pipeline(
    cwd: Path, *overrides: str, module: str = "pipeline", timeout: float = 300, **popen
) -> subprocess.CompletedProcess:
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


def start_pipeline(cwd: Path, *overrides: str, log: Path) -> subprocess.Popen:
    """Start `python -m pipeline OVERRIDES` in `cwd`, in the background; its output goes to `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", *overrides],
            cwd=cwd,
            env=pipeline_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for_saved_epoch(states: Path, proc: subprocess.Popen, timeout: float = 240, trial: str = "trial-*") -> dict:
    """The marker of the first state of `trial` saved under `states` (search.checkpoint_dir/resume), as soon
    as it is written: the trial has finished an epoch and trains the next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker exited before it saved a trial's state"
        for marker in states.glob(f"{trial}/checkpoint-*/{resume.MARKER}"):
            return json.loads(marker.read_text())
        time.sleep(0.02)
    raise TimeoutError(f"no trial state saved under {states}")


def wait_for_running_trial(storage: str, study: str, worker: Callable[[str], bool], proc, timeout: float = 240) -> int:
    """The number of a RUNNING trial of `study` whose worker (`pipeline.worker`) `worker` accepts, once one
    runs; `proc` (anything with `poll()`) must stay alive meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker ended before its trial was seen running"
        try:
            running = optuna.load_study(study_name=study, storage=storage).get_trials(states=[TrialState.RUNNING])
        except KeyError:  # the study is not created yet
            running = []
        for trial in running:
            if worker(trial.user_attrs.get(WORKER, "")):
                return trial.number
        time.sleep(0.5)
    raise TimeoutError(f"no trial of that worker started running in study {study} within {timeout}s")
