"""Preemptible trials, tried on a user's CSV with a real process: SIGKILL after a finished epoch, SIGTERM in
the middle of one; the same command again continues the trial from its last finished epoch, with the curve
an uninterrupted run draws."""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from devtools.audit import audit
from devtools.commands import run_pipeline, start_pipeline, wait_for_saved_epoch
from pipeline.search.resume import RESUMED_FROM_EPOCH, RESUMED_FROM_TRIAL
from tests.conftest import default_study, mlflow_client, write_space

pytestmark = pytest.mark.slow  # servers, faults, or trainings of 20 s and more

STUDY = "local-tiny"
EPOCHS = 3
TOPICS = {"sport": "match goal team", "money": "bank market shares", "science": "lab study cells"}


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    """600 rows this machine has never seen, string labels: epochs of about a second with the tiny model."""
    token = uuid.uuid4().hex[:6]
    words = lambda i: " ".join(f"w{(i * j) % 97}" for j in range(20))  # noqa: E731
    rows = [(f"{topic} {token} item {i} {words(i)}", label) for label, topic in TOPICS.items() for i in range(200)]
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    pd.DataFrame(rows, columns=["body", "topic"]).to_csv(path, index=False)
    return path


def command(cwd: Path, reviews: Path, learning_rate: str = "0.001") -> list[str]:
    """The search; `learning_rate` is the experiment's starting value (the space holds 0.001 and 0.002)."""
    space = write_space(
        cwd,
        {
            "learning_rate": {"type": "categorical", "choices": [0.001, 0.002]},
            "num_train_epochs": {"type": "categorical", "choices": [EPOCHS]},
        },
    )
    return [
        "dataset=local",
        f"dataset.train_file={reviews}",
        "dataset.text_columns=[body]",
        "dataset.label_column=topic",
        "dataset.max_length=64",
        "model=tiny",
        f"trainer.learning_rate={learning_rate}",
        f"trainer.num_train_epochs={EPOCHS}",
        f"search.space={space}",
        "search.n_trials=1",
        "search.pruner=none",
        "search.heartbeat_interval=1",
        "search.grace_period=2",
    ]


def interrupted_then_rerun(
    cwd: Path,
    reviews: Path,
    sig: signal.Signals,
    after_save_s: float,
    *extra: str,
    resumed_epoch: int = 1,
    learning_rate: str = "0.001",
) -> optuna.Study:
    """The search, sent `sig` `after_save_s` after its first trial saved epoch 1, then the same command again."""
    cwd.mkdir()
    overrides = [*command(cwd, reviews, learning_rate), *extra]
    proc = start_pipeline(cwd, *overrides, log=cwd / "interrupted.log")
    saved = wait_for_saved_epoch(cwd / "mlruns" / "checkpoints" / STUDY / "resume", proc)
    time.sleep(after_save_s)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert saved["epoch"] == 1 and code == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    time.sleep(3)  # past search.grace_period: a SIGKILLed trial's heartbeat is stale
    again = run_pipeline(cwd, *overrides)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"trial 1 resumes trial 0 from its epoch {resumed_epoch}" in again.stdout + again.stderr
    # Its progress line shows the whole curve, earlier epochs included.
    assert re.search(
        rf"trial 1/1 \(#1\) .* by epoch: [0-9.]+ [0-9.]+ [0-9.]+ \| complete \(resumed #0 after epoch "
        rf"{resumed_epoch}\)",
        again.stdout,
    )
    return default_study(cwd, STUDY)


def per_epoch(cwd: Path, trial: optuna.trial.FrozenTrial, metric: str) -> list[tuple[int, float]]:
    history = mlflow_client(cwd).get_metric_history(trial.user_attrs["mlflow_run_id"], metric)
    return sorted((m.step, m.value) for m in history)


def assert_resumed(cwd: Path, study: optuna.Study, epoch: int = 1) -> optuna.trial.FrozenTrial:
    """Trial 1 continued trial 0 from `epoch`, with one unbroken curve in Optuna and MLflow."""
    interrupted, resumed = study.trials
    assert interrupted.state == TrialState.FAIL and resumed.state == TrialState.COMPLETE
    assert resumed.params == interrupted.params
    assert resumed.user_attrs[RESUMED_FROM_EPOCH] == epoch and resumed.user_attrs[RESUMED_FROM_TRIAL] == 0
    assert sorted(resumed.intermediate_values) == [1, 2, 3]  # the pruner sees the whole curve
    assert all(resumed.intermediate_values[e] == interrupted.intermediate_values[e] for e in range(1, epoch + 1))
    # One value per epoch in MLflow; the interrupted run is marked resumed.
    accuracy = per_epoch(cwd, resumed, "eval_accuracy")
    assert [step for step, _ in accuracy] == [1, 2, 3]
    assert [value for _, value in accuracy] == [resumed.intermediate_values[e] for e in (1, 2, 3)]
    (earlier,) = [r for r in mlflow_client(cwd).search_runs(["1"]) if r.info.run_name == "trial-0"]
    assert earlier.info.status == "KILLED" and earlier.data.tags["pipeline.state"] == "resumed"
    result = audit(study, mlflow_client(cwd), "local")
    assert result.consistent, result.summary() + f" {result.disagreements} {result.running_runs}"
    assert not (cwd / "mlruns" / "checkpoints" / STUDY / "resume").exists()  # no state outlives its trial
    return resumed


def test_sigkill_after_the_first_epoch_then_the_same_command_resumes_from_it(tmp_path, reviews):
    """On a space that leaves out the experiment's learning rate: trial 0 starts inside the space (a value
    outside it made the retry refused), so the killed trial is resumed all the same."""
    study = interrupted_then_rerun(tmp_path / "killed", reviews, signal.SIGKILL, after_save_s=0, learning_rate="5e-5")
    resumed = assert_resumed(tmp_path / "killed", study)
    assert resumed.params["learning_rate"] in (0.001, 0.002)
    log = (tmp_path / "killed" / "interrupted.log").read_text()
    assert "outside it: learning_rate=5e-05" in log


def test_sigterm_mid_epoch_resumes_with_the_curve_of_an_uninterrupted_run(tmp_path, reviews):
    study = interrupted_then_rerun(tmp_path / "terminated", reviews, signal.SIGTERM, after_save_s=0.3)
    resumed = assert_resumed(tmp_path / "terminated", study)

    straight = tmp_path / "straight"
    straight.mkdir()
    result = run_pipeline(straight, *command(straight, reviews))
    assert result.returncode == 0, result.stderr[-3000:]
    (uninterrupted,) = default_study(straight, STUDY).trials
    assert uninterrupted.params == resumed.params
    # Bit for bit on CPU: weights, optimizer, scheduler and RNG states all come back.
    for metric in ("eval_accuracy", "eval_loss"):
        assert per_epoch(tmp_path / "terminated", resumed, metric) == per_epoch(straight, uninterrupted, metric)


def test_sigterm_with_finish_epoch_on_term_finishes_the_epoch_before_stopping(tmp_path, reviews):
    study = interrupted_then_rerun(
        tmp_path / "noticed", reviews, signal.SIGTERM, 0.3, "search.finish_epoch_on_term=true", resumed_epoch=2
    )
    assert_resumed(tmp_path / "noticed", study, epoch=2)
