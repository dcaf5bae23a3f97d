"""Interruptions (SIGINT, SIGTERM, SIGKILL) of the real process, a crashing trial, bounded disk, finalize twice."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import weakref
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from devtools.audit import audit
from devtools.commands import TINY, run_pipeline, start_pipeline, study_storage, tracking_uri
from pipeline.runtime import interrupts
from pipeline.search import storage
from pipeline.search.resume import RESUMED_FROM_TRIAL
from pipeline.search.space import load_space
from pipeline.search.study import best_trial, open_study
from pipeline.tracking import registry
from pipeline.tracking.promotion import DECISION_TAG
from pipeline.tracking.tracker import ERROR_TAG, STATE_TAG, TRIAL_TAG
from tests.conftest import (
    champion_by_the_rule,
    compose_config,
    default_study,
    mlflow_client,
    runs_by_role,
    write_space,
)

pytestmark = pytest.mark.slow  # servers, faults, or trainings of 20 s and more

STUDY = "ag_news-tiny"
# Heartbeat every second, stale after 2: a SIGKILLed trial is failed when the next run starts.
HEARTBEAT = ["search.heartbeat_interval=1", "search.grace_period=2"]


def learning_rate_space(cwd: Path, learning_rates: list[float], epochs: int) -> str:
    space = {
        "learning_rate": {"type": "categorical", "choices": learning_rates},
        "num_train_epochs": {"type": "categorical", "choices": [epochs]},
    }
    return write_space(cwd, space)


def search_command(cwd: Path, space: str, n_trials: int, epochs: int) -> list[str]:
    return [
        *TINY,
        f"search.space={space}",
        f"search.n_trials={n_trials}",
        f"trainer.num_train_epochs={epochs}",
        "search.sampler=random",
        "search.pruner=none",
        *HEARTBEAT,
    ]


def load_study(cwd: Path) -> optuna.Study:
    return default_study(cwd, STUDY)


def runs(cwd: Path, role: str) -> list:
    return runs_by_role(mlflow_client(cwd), role)


def assert_consistent(cwd: Path):
    result = audit(load_study(cwd), mlflow_client(cwd), "ag_news")
    assert result.consistent, result.summary() + f" {result.disagreements} {result.running_runs}"
    return result


def trial_states(cwd: Path) -> dict[int, tuple[str, bool]]:
    """number -> (state, has an MLflow run): read with sqlite3, without creating anything."""
    db = cwd / "mlruns" / "optuna.db"
    if not db.exists():
        return {}
    query = (
        "select t.number, t.state, exists(select 1 from trial_user_attributes a "
        "where a.trial_id = t.trial_id and a.key = 'mlflow_run_id') from trials t"
    )
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return {n: (state, bool(has_run)) for n, state, has_run in conn.execute(query)}
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return {}


def start(cwd: Path, command: list[str]) -> tuple[subprocess.Popen, Path]:
    """`python -m pipeline COMMAND` in the background; its output goes to the returned log file."""
    path = cwd / f"worker-{time.monotonic_ns()}.log"
    return start_pipeline(cwd, *command, log=path), path


def wait_for_training_trial(cwd: Path, proc: subprocess.Popen, timeout: float = 240) -> int:
    """Once a trial has completed, the number of the trial in training (RUNNING, its MLflow run begun)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker exited before a trial was interrupted"
        states = trial_states(cwd)
        running = [n for n, (state, has_run) in states.items() if state == "RUNNING" and has_run]
        if running and any(state == "COMPLETE" for state, _ in states.values()):
            return running[0]
        time.sleep(0.2)
    raise TimeoutError("no trial started training")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_interrupted_search_resumes_with_nothing_lost(tmp_path, sig):
    command = search_command(tmp_path, learning_rate_space(tmp_path, [0.001, 0.003], 2), n_trials=2, epochs=2)
    proc, log = start(tmp_path, command)
    victim = wait_for_training_trial(tmp_path, proc)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    said = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "interrupted (signal 15)"}.get(sig)
    assert said is None or f"{said}: run the same command again" in log.read_text()
    before = load_study(tmp_path).trials
    completed = {t.number: t.value for t in before if t.state == TrialState.COMPLETE}
    (trial_run,) = [r for r in runs(tmp_path, "trial") if r.data.tags[TRIAL_TAG] == str(victim)]
    (parent,) = runs(tmp_path, "study")
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
        assert before[victim].state == TrialState.RUNNING  # nobody was left to record it
        assert trial_run.info.status == parent.info.status == "RUNNING"
    else:
        assert code == 130
        assert before[victim].state == TrialState.FAIL
        assert trial_run.info.status == parent.info.status == "KILLED"
        assert trial_run.data.tags[STATE_TAG] == "resumed"  # its retry is queued at once
        assert_consistent(tmp_path)  # at once: nothing waits for the next run

    resumed = run_pipeline(tmp_path, *command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    after = load_study(tmp_path).trials
    assert {t.number: t.value for t in after if t.number in completed} == completed
    assert all(after[n].state == TrialState.COMPLETE for n in completed)
    assert after[victim].state == TrialState.FAIL
    # Queued again once (SIGKILL: from its stale heartbeat), with its parameters, and completed.
    retried = [t for t in after if t.system_attrs.get("failed_trial") == victim]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == after[victim].params and retried[0].user_attrs[RESUMED_FROM_TRIAL] == victim
    (repaired,) = [r for r in runs(tmp_path, "trial") if r.data.tags[TRIAL_TAG] == str(victim)]
    assert repaired.info.status == "KILLED" and repaired.data.tags[STATE_TAG] == "resumed"
    result = assert_consistent(tmp_path)
    assert result.trials["COMPLETE"] == result.trial_runs["complete"] == len(completed) + 2
    assert runs(tmp_path, "study")[0].info.status == "FINISHED"


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """Five trials; the second one's absurd learning rate makes the loss NaN."""
    cwd = tmp_path_factory.mktemp("crash")
    (cwd / "mlruns").mkdir()
    space = learning_rate_space(cwd, [0.001, 0.003, 0.01, 1.0e30], 2)
    command = [*search_command(cwd, space, n_trials=5, epochs=2), f"search.storage={study_storage(cwd)}"]
    # The study as the pipeline creates it (trial 0: the configured values), then the user queues trials.
    cfg = compose_config(*command)
    study = open_study(cfg.search, load_space(space), storage.open_storage(cfg.search), {**cfg.trainer, "seed": 42})
    for lr in (1.0e30, 0.003, 0.01, 0.001):
        study.enqueue_trial({"learning_rate": lr, "num_train_epochs": 2})
    result = run_pipeline(cwd, *command)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, command


def test_a_crashing_trial_fails_and_the_study_goes_on(crashed):
    cwd, _ = crashed
    trials = load_study(cwd).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, *[TrialState.COMPLETE] * 3]
    assert "training loss is nan" in trials[1].user_attrs["error"]
    (failed,) = [r for r in runs(cwd, "trial") if r.data.tags[TRIAL_TAG] == "1"]
    assert failed.info.status == "FAILED" and failed.data.tags[STATE_TAG] == "failed"
    assert "FloatingPointError: training loss is nan" in failed.data.tags[ERROR_TAG]
    # Stopped early: at the first logged loss (logging_steps=5), within its first epoch of 6 steps.
    assert int(re.search(r"at step (\d+)", trials[1].user_attrs["error"]).group(1)) <= 6
    assert not mlflow_client(cwd).get_metric_history(failed.info.run_id, "eval_accuracy")
    assert_consistent(cwd)


def test_disk_keeps_only_the_best_trials_checkpoint(crashed):
    cwd, _ = crashed
    best = best_trial(load_study(cwd))
    kept = sorted(p.name for p in (cwd / "mlruns" / "checkpoints" / STUDY).iterdir())
    assert kept == [f"trial-{best.number}"]


def test_finalize_again_registers_nothing_new_and_keeps_the_champion(crashed):
    cwd, command = crashed
    c = mlflow_client(cwd)
    (version,) = c.search_model_versions("name = 'ag_news'")  # registered by the search
    best = best_trial(load_study(cwd))
    assert version.tags[registry.TRIAL_RUN_TAG] == best.user_attrs["mlflow_run_id"]
    trials_before = len(load_study(cwd).trials)
    champion = champion_by_the_rule(tracking_uri(cwd), "ag_news")
    for _ in range(2):
        result = run_pipeline(cwd, *command, "mode=finalize")
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"already registered as models:/ag_news/{version.version}" in result.stdout + result.stderr
    assert [v.version for v in c.search_model_versions("name = 'ag_news'")] == [version.version]
    assert champion_by_the_rule(tracking_uri(cwd), "ag_news") == champion
    assert len(load_study(cwd).trials) == trials_before
    assert runs(cwd, "study")[0].info.status == "FINISHED"
    assert_consistent(cwd)


def test_sigint_during_the_final_step_leaves_the_registry_as_it_was(crashed):
    cwd, command = crashed
    c = mlflow_client(cwd)
    versions = sorted(v.version for v in c.search_model_versions("name = 'ag_news'"))
    champion = champion_by_the_rule(tracking_uri(cwd), "ag_news")
    # Under a registry name the best trial is not registered in yet, so the final step runs.
    proc, log = start(cwd, [*command, "mode=finalize", "registry.name=ag_news_again"])
    deadline = time.monotonic() + 180
    while "best trial" not in log.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    assert proc.poll() is None, "the final step ended before the test could interrupt it"
    proc.send_signal(signal.SIGINT)  # while the final model is loaded, scored, saved and logged
    assert proc.wait(timeout=120) == 130
    assert c.search_model_versions("name = 'ag_news_again'") == []
    assert sorted(v.version for v in c.search_model_versions("name = 'ag_news'")) == versions
    assert champion_by_the_rule(tracking_uri(cwd), "ag_news") == champion
    assert runs(cwd, "study")[0].info.status == "KILLED"
    assert_consistent(cwd)


def test_a_final_step_killed_halfway_is_completed_by_the_same_command(crashed):
    """What a SIGKILL inside the final step can leave, made from a whole one: a version without its run_id
    tag, its champion-rule line and a parent run without pipeline.model_uri (killed after registering), then a
    logged model no version was registered from (killed between logging and registering)."""
    cwd, command = crashed
    c = mlflow_client(cwd)
    parent = runs(cwd, "study")[0].info.run_id
    best_run = best_trial(load_study(cwd)).user_attrs["mlflow_run_id"]
    (version,) = [v for v in c.search_model_versions("name = 'ag_news'") if v.tags[registry.TRIAL_RUN_TAG] == best_run]
    said = version.tags[DECISION_TAG]
    c.delete_model_version_tag("ag_news", version.version, registry.RUN_ID_TAG)
    c.delete_model_version_tag("ag_news", version.version, DECISION_TAG)
    c.delete_tag(parent, registry.MODEL_URI_TAG)
    result = run_pipeline(cwd, *command, "mode=finalize")
    assert result.returncode == 0, result.stderr[-3000:]
    repaired = c.get_model_version("ag_news", version.version).tags
    assert repaired[registry.RUN_ID_TAG] == parent
    # The line again, as the summary shows it; a version no better than guessing is still called so.
    assert repaired[DECISION_TAG].startswith(f"version {version.version}: ") and repaired[DECISION_TAG] in result.stdout
    assert ("no better than" in repaired[DECISION_TAG]) == ("no better than" in said), (said, repaired)
    assert c.get_run(parent).data.tags[registry.MODEL_URI_TAG] == f"models:/ag_news/{version.version}"

    experiment = c.get_experiment_by_name("ag_news").experiment_id
    logged_before = {m.model_id for m in c.search_logged_models([experiment])}
    c.delete_model_version("ag_news", version.version)  # as if killed before register_model
    result = run_pipeline(cwd, *command, "mode=finalize")
    assert result.returncode == 0, result.stderr[-3000:]
    (again,) = [v for v in c.search_model_versions("name = 'ag_news'") if v.tags[registry.TRIAL_RUN_TAG] == best_run]
    assert again.model_id == version.model_id  # the logged model registered, not a second copy
    assert {m.model_id for m in c.search_logged_models([experiment])} == logged_before
    assert c.get_run(parent).data.tags[registry.MODEL_URI_TAG] == f"models:/ag_news/{again.version}"
    champion_by_the_rule(tracking_uri(cwd), "ag_news")  # `again`, unless it is no better than the majority class
    assert_consistent(cwd)


def test_deferred_interrupts_finish_the_registry_block_then_raise():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # the signal is delivered here, and held
            done.append("registered, tagged and promoted")
    assert done == ["registered, tagged and promoted"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_python_swallows_in_a_weakref_callback_is_sent_again(monkeypatch):
    """Python prints and drops a KeyboardInterrupt raised inside a weakref callback (cpython#95959): a Ctrl-C
    landing in one, during the final step's garbage collection, let the command finish as if never stopped."""
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    interrupts.redeliver_swallowed()

    class Model:
        pass

    def collected(_ref) -> None:
        signal.raise_signal(signal.SIGINT)  # handled at once, inside the callback

    model = Model()
    ref = weakref.ref(model, collected)
    with pytest.raises(KeyboardInterrupt):
        del model  # Python drops the interrupt from the callback...
        time.sleep(5)  # ...and it arrives again here
    assert ref() is None


def test_tracking_writes_finish_before_an_interrupt_and_reads_do_not():
    """Ctrl-C inside a SQLite write left the tracking database locked for the cleanup that marks the run
    KILLED (seen as exit 1 and a RUNNING parent run): the tracker's client holds interrupts while it writes."""
    done = []

    class Client:
        def log_batch(self, run_id: str) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            done.append(f"logged to {run_id}")

        def search_runs(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            done.append("searched")

    client = interrupts.HeldDuringWrites(Client())
    with pytest.raises(KeyboardInterrupt):
        client.log_batch("run")
    with pytest.raises(KeyboardInterrupt):
        client.search_runs()
    assert done == ["logged to run"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
