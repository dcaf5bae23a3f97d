"""Faults of the services a search stands on, made for real: PostgreSQL terminating the study's connections
(`pg_terminate_backend`, as a restart or an idle-connection reaper does), a database that stays away, the
MLflow tracking server killed for 40 s mid-trial, and commands started at the same instant on new
SQLite files."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import optuna
import psycopg
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from devtools.audit import audit
from devtools.commands import TINY, start_pipeline, tracking_uri
from devtools.services import (
    ONE_EPOCH_SPACE,
    POSTGRES,
    free_port,
    mlflow_server,
    postgres_database,
)
from tests.conftest import champion_by_the_rule, default_study

pytestmark = pytest.mark.slow  # servers, faults, or trainings of 20 s and more

OUTAGE_S = 40  # long enough for MLflow's own retries to give up (about 35 s a call) and both trials to end

SEARCH = [*TINY, "search.pruner=none", "search.sampler=random", "search.heartbeat_interval=1", "search.grace_period=3"]


def start(cwd: Path, name: str, *overrides: str) -> subprocess.Popen:
    return start_pipeline(cwd, *SEARCH, *overrides, log=cwd / f"{name}.log")


def admin(sql: str, *params) -> list[tuple]:
    with psycopg.connect(f"postgresql://{POSTGRES}/postgres", autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def drop_connections(database: str) -> int:
    """What a database restart does to its clients: every connection to `database` is terminated."""
    rows = admin(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
        database,
    )
    return sum(1 for (done,) in rows if done)


def complete_trials(database: str) -> int:
    with psycopg.connect(f"postgresql://{POSTGRES}/{database}", autocommit=True) as conn:
        try:
            return conn.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


def wait_until(condition, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_connections_dropped_twice_during_a_search_cost_no_trial(tmp_path):
    (tmp_path / "space.yaml").write_text(ONE_EPOCH_SPACE)
    with postgres_database("pipeline_drops") as url:
        database = url.rsplit("/", 1)[1]
        proc = start(
            tmp_path, "worker", f"search.storage={url}", f"search.space={tmp_path / 'space.yaml'}", "search.n_trials=5"
        )
        dropped = []
        for after in (1, 3):
            wait_until(lambda: complete_trials(database) >= after, proc, tmp_path / "worker.log")
            dropped.append(drop_connections(database))
        assert proc.wait(timeout=400) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        assert all(n >= 1 for n in dropped), dropped  # the worker's pooled connections were there to drop
        study = optuna.load_study(study_name="ag_news-tiny", storage=url)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
        uri = tracking_uri(tmp_path)
        result = audit(study, MlflowClient(uri, uri), "ag_news")
        assert result.consistent, result.summary()
        optuna.storages.RDBStorage(url).engine.dispose()


def test_a_database_that_stays_away_stops_the_worker_with_one_line_and_a_rerun_recovers(tmp_path):
    (tmp_path / "space.yaml").write_text(ONE_EPOCH_SPACE)
    with postgres_database("pipeline_gone") as url:
        database = url.rsplit("/", 1)[1]
        command = [
            f"search.storage={url}",
            f"search.space={tmp_path / 'space.yaml'}",
            "search.n_trials=3",
            "search.storage_retry_s=3",
            "trainer.num_train_epochs=1",
        ]
        proc = start(tmp_path, "gone", *command)
        wait_until(lambda: complete_trials(database) >= 1, proc, tmp_path / "gone.log")
        admin(f'alter database "{database}" allow_connections false')
        try:
            drop_connections(database)
            code = proc.wait(timeout=300)
        finally:
            admin(f'alter database "{database}" allow_connections true')
        output = (tmp_path / "gone.log").read_text()
        errors = [line for line in output.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(errors) == 1, output[-3000:]
        assert "search.storage=" in errors[0] and "stopped answering for 3 s" in errors[0]
        assert "Traceback" not in output, output[-3000:]
        time.sleep(3)  # search.grace_period: the lost worker's trial is now stale
        rerun = start(tmp_path, "rerun", *command)
        assert rerun.wait(timeout=400) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
        study = optuna.load_study(study_name="ag_news-tiny", storage=url)
        assert not [t for t in study.trials if t.state == TrialState.RUNNING]
        assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) >= 4


def test_commands_started_at_the_same_instant_on_new_sqlite_files_all_run(tmp_path):
    """Three rounds of two commands released by one barrier, each round on new default SQLite files."""
    space = tmp_path / "space.yaml"
    space.write_text(ONE_EPOCH_SPACE)
    for round_ in range(3):
        cwd = tmp_path / f"round{round_}"
        cwd.mkdir()
        barrier, procs = threading.Barrier(2), {}

        def launch(name: str) -> None:
            barrier.wait()
            procs[name] = start(cwd, name, f"search.space={space}", "search.n_trials=1", f"search.study_name=s-{name}")

        threads = [threading.Thread(target=launch, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, proc in procs.items():
            assert proc.wait(timeout=400) == 0, (cwd / f"{name}.log").read_text()[-3000:]
        for name in procs:
            study = default_study(cwd, f"s-{name}")
            assert [t.state for t in study.trials] == [TrialState.COMPLETE]


def intermediate_values(cwd: Path) -> int:
    """Epoch results Optuna holds (read with sqlite3, creating nothing)."""
    db = cwd / "mlruns" / "optuna.db"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("select count(*) from trial_intermediate_values").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_a_tracking_server_killed_for_40_s_mid_trial_loses_nothing(tmp_path):
    (tmp_path / "space.yaml").write_text("num_train_epochs: {type: categorical, choices: [3]}\n")
    port = free_port()
    with postgres_database("pipeline_outage") as backend:
        server = lambda: mlflow_server(backend, tmp_path / "artifacts", tmp_path / "server.log", port=port)  # noqa: E731
        with server() as url:
            proc = start(
                tmp_path,
                "worker",
                f"tracking.uri={url}",
                f"search.space={tmp_path / 'space.yaml'}",
                "search.n_trials=2",
                "dataset.max_train_samples=200",
            )
            wait_until(lambda: intermediate_values(tmp_path) >= 1, proc, tmp_path / "worker.log")  # trial 0, epoch 1
        killed = time.monotonic()  # the server and its workers are gone (SIGTERM, then SIGKILL)
        while time.monotonic() - killed < OUTAGE_S:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(2)
        trained_meanwhile = intermediate_values(tmp_path)
        with server() as url:
            assert proc.wait(timeout=600) == 0, (tmp_path / "worker.log").read_text()[-3000:]
            client = MlflowClient(url, url)
            experiment = client.get_experiment_by_name("ag_news")
            trial_runs = client.search_runs([experiment.experiment_id], "tags.`pipeline.role` = 'trial'")
            assert len(trial_runs) == 2
            for run in trial_runs:
                history = client.get_metric_history(run.info.run_id, "eval_accuracy")
                assert [m.step for m in sorted(history, key=lambda m: m.timestamp)] == [1, 2, 3], run.data.tags
                assert run.info.status == "FINISHED"
            study = default_study(tmp_path, "ag_news-tiny")
            result = audit(study, client, "ag_news")
            assert result.consistent, result.summary()
            assert [str(v.version) for v in client.search_model_versions("name = 'ag_news'")] == ["1"]
            champion_by_the_rule(url, "ag_news")
    assert trained_meanwhile == 6, trained_meanwhile  # both trials trained all their epochs while it was away
    log = (tmp_path / "worker.log").read_text()
    assert "is unreachable" in log and "the worker keeps training" in log
    back = re.search(r"is back after (\d+) s", log)
    assert back and int(back.group(1)) >= OUTAGE_S - 30, log[-3000:]
