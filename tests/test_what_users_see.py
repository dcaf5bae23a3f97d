"""What a person sees after a real tiny search: the MLflow UI in headless Chromium, the parent run's
report artifacts, the terminal progress and summary, and the Optuna storage that optuna-dashboard opens."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from devtools.commands import CLASSES, TINY, pipeline_env, run_pipeline, tracking_uri
from devtools.services import free_port
from pipeline import console
from pipeline.tracking import report
from pipeline.tracking.tracker import ROLE_TAG
from tests import mlflow_ui
from tests.conftest import champion_by_the_rule, compose_config, default_study, mlflow_client

STUDY = "ag_news-tiny"
COLUMNS = ["eval_accuracy", "num_train_epochs", "per_device_train_batch_size"]
# Every trial trains 2 or 3 epochs, so each comparison curve has several points.
SPACE = """\
per_device_train_batch_size: {type: categorical, choices: [8, 16]}
num_train_epochs: {type: int, low: 2, high: 3}
learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("users")
    (cwd / "space.yaml").write_text(SPACE)
    done = run_pipeline(cwd, *TINY, "search.n_trials=3", f"search.space={cwd / 'space.yaml'}")
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow_client(cwd)
    experiment = client.get_experiment_by_name("ag_news")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags[ROLE_TAG] == "study")
    trials = sorted((r for r in runs if r.data.tags[ROLE_TAG] == "trial"), key=lambda r: r.info.run_name)
    return cwd, done, client, parent, trials


def artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_files(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.slow
def test_mlflow_ui_lists_the_runs_and_compares_trials_per_epoch(searched):
    cwd, _, _, parent, trials = searched
    shots = cwd / "shots"
    shots.mkdir()
    with mlflow_ui.mlflow_server(cwd) as url, mlflow_ui.browser_page(cwd / "chromium-profile") as page:
        mlflow_ui.open_runs_table(page, url, parent.info.experiment_id, STUDY, COLUMNS)
        for run in trials:
            page.get_by_text(run.info.run_name, exact=True).first.wait_for()
        rows = mlflow_ui.table_rows(page)
        page.screenshot(path=shots / "runs.png")

        assert STUDY in rows[parent.info.run_id]["Run Name"]
        for run in trials:
            row = rows[run.info.run_id]
            assert run.info.run_name in row["Run Name"]
            assert row["per_device_train_batch_size"] == run.data.params["per_device_train_batch_size"]
            assert row["num_train_epochs"] == run.data.params["num_train_epochs"]
            assert float(row["eval_accuracy"]) == pytest.approx(run.data.metrics["eval_accuracy"], abs=1e-3)
            assert "ag_news" in row["Dataset"]  # the trial's train and validation inputs
        assert "ag_news" in rows[parent.info.run_id]["Dataset"]

        pair = trials[:2]
        mlflow_ui.open_comparison(page, url, parent.info.experiment_id, [r.info.run_id for r in pair], "eval_accuracy")
        chart = mlflow_ui.comparison_chart(page, [r.info.run_name for r in pair], "eval_accuracy")
        page.screenshot(path=shots / "compare.png")
        assert len(chart["legend"]) == 2
        # x axis: epochs; every trial trained 2 or 3, so each run's curve is a line through several points
        assert {"1", "2"} <= set(chart["xticks"])
        assert sum("L" in d for d in chart["lines"]) >= 2
        shown = mlflow_ui.open_model_version(page, url, "ag_news", "1")  # the model card as its description
        for part in ("ag_news: text classification", "Training data", "Scores", "Made by", "Limits", *CLASSES):
            assert part in shown
    assert (shots / "compare.png").stat().st_size > 10_000


@pytest.mark.slow
def test_parent_run_holds_plots_trials_table_best_params_and_confusion_matrix(searched):
    cwd, _, client, parent, trials = searched
    files = artifact_files(client, parent.info.run_id)
    for name in ("optimization_history", "parallel_coordinate", "intermediate_values"):
        assert {f"plots/{name}.html", f"plots/{name}.png"} <= files
    assert {report.TRIALS_TABLE, report.BEST_PARAMS, report.CONFUSION_MATRIX} <= files

    local = Path(client.download_artifacts(parent.info.run_id, "", str(cwd / "downloaded")))
    parallel = (local / "plots" / "parallel_coordinate.html").read_text()
    for axis in (
        "eval_accuracy",
        "learning_rate",
        "num_train_epochs",
        "per_device_train_",
    ):  # optuna shortens long names
        assert axis in parallel
    assert (local / report.CONFUSION_MATRIX).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader(io.StringIO((local / report.TRIALS_TABLE).read_text())))
    study = default_study(cwd, STUDY)
    assert [int(r["number"]) for r in rows] == [t.number for t in study.trials]
    by_run = {r.info.run_id: r for r in trials}
    for row, trial in zip(rows, study.trials):
        assert row["state"] == trial.state.name
        assert int(row["num_train_epochs"]) == trial.params["num_train_epochs"]
        assert by_run[row["mlflow_run_id"]].info.run_name == f"trial-{trial.number}"

    best = json.loads((local / report.BEST_PARAMS).read_text())
    assert best["params"] == study.best_trial.params and best["trial"] == study.best_trial.number
    assert parent.data.tags["pipeline.model_uri"] == "models:/ag_news/1"
    assert {"test_accuracy", "test_f1_macro", "best_eval_accuracy"} <= set(parent.data.metrics)
    assert {"test_accuracy_low", "test_accuracy_high", "test_rows", "duplicates_test_in_train"} <= set(
        parent.data.metrics
    )


@pytest.mark.slow
def test_terminal_shows_a_line_per_trial_and_a_summary(searched):
    cwd, done, _, parent, _ = searched
    lines = [line for line in done.stdout.splitlines() if re.search(r"trial \d/3 \(#\d\) .*by epoch", line)]
    assert len(lines) == 3
    for i, line in enumerate(lines, 1):
        assert f"trial {i}/3 (#{i - 1})" in line and "batch=" in line and "epochs=" in line
        assert re.search(r"eval_accuracy by epoch: [0-9.]+ [0-9.]+", line)  # 2 or 3 epochs each
        assert re.search(r"\| (complete|pruned) in \d+:\d\d \| elapsed \d+:\d\d, ~\d+:\d\d left", line)
    assert "~0:00 left" in lines[-1]
    summary = done.stdout[done.stdout.index("pipeline summary") :]
    # The test score with its 95% interval and the rows it was counted on (TINY: 40 test rows).
    assert re.search(r"│ test +│ accuracy [\d.]+ \(95% [\d.]+-[\d.]+, 40 rows\), f1 macro [\d.]+ \(", summary), summary
    for expected in (
        "3 trials",
        "validation accuracy",
        "models:/ag_news/1",
        "mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db",
        "optuna-dashboard sqlite:///mlruns/optuna.db",
    ):
        assert expected in summary
    # Library noise once per run, not once per trial.
    assert done.stderr.count("'pin_memory' argument is set as true") <= 1
    assert "Trial 1 finished with value" not in done.stderr
    assert "Loading weights" not in done.stderr and "Writing model shards" not in done.stderr
    assert all(line.startswith("trial ") for line in lines)  # no time and logger prefix in the terminal
    assert "monitoring system metrics" not in done.stdout + done.stderr and "ylims" not in done.stderr
    # Off a terminal (this pipe): a plain line per epoch, named as the trial's line names it, and no bars.
    assert re.search(r"^trial 1/3 \(#0\) epoch 1/\d: eval_accuracy [0-9.]+ in \d+:\d\d$", done.stdout, re.M)
    assert re.search(r"^trial 3/3 \(#2\) epoch 2/\d: eval_accuracy", done.stdout, re.M)
    assert "it/s]" not in done.stderr and "%|" not in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_on_a_terminal_the_bar_names_the_trial_as_its_line_does_and_the_summary_says_what_next(tmp_path):
    """stderr on a pseudo-terminal, as in an interactive shell: the Trainer's bar, named `trial 1/1 (#0)` like
    the trial's line (it said `trial 0`), and no plain epoch lines; the summary ends with the model's commands."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 0 columns: empty bars
    command = [sys.executable, "-m", "pipeline", *TINY, "search.n_trials=1", "trainer.num_train_epochs=2"]
    with subprocess.Popen(
        command, cwd=tmp_path, env=pipeline_env(), stdout=subprocess.PIPE, stderr=secondary, text=True
    ) as proc:
        os.close(secondary)
        terminal = b""
        while True:
            try:
                chunk = os.read(primary, 1 << 16)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            terminal += chunk
        stdout = proc.stdout.read()
    os.close(primary)
    assert proc.returncode == 0, terminal.decode(errors="replace")[-3000:]
    shown = terminal.decode(errors="replace")
    assert "trial 1/1 (#0) epoch 1/2" in shown and "trial 1/1 (#0) epoch 2/2" in shown
    assert "trial 1/1 (#0) batch=" in stdout and "epoch 1/2: eval_accuracy" not in stdout
    # The commands name the alias when this version holds it, else the version (no better than guessing).
    model = (
        "models:/ag_news@champion" if champion_by_the_rule(tracking_uri(tmp_path), "ag_news") else "models:/ag_news/1"
    )
    assert f"python -m pipeline.predict {model} --input FILE.csv --output predictions.csv" in stdout
    assert f"python -m pipeline.evaluate {model} LABELLED.csv --label-column label" in stdout
    # The default store as configured (relative), so the commands work from this directory as printed.
    assert (
        f"MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db mlflow models serve -m {model} --env-manager local" in stdout
    )
    assert "--tracking-uri" not in stdout


@pytest.mark.slow
def test_optuna_dashboard_opens_the_study_storage(searched):
    cwd, done = searched[0], searched[1]
    storage = re.search(r"optuna-dashboard (\S+)", done.stdout).group(1)
    study = optuna.load_study(study_name=STUDY, storage=storage.replace("sqlite:///", f"sqlite:///{cwd}/"))
    assert len(study.trials) == 3 and study.best_trial.user_attrs["mlflow_run_id"]
    # The command the summary prints, run where the pipeline ran, serves the study.
    port = free_port()
    command = [shutil.which("optuna-dashboard"), storage, "--host", "127.0.0.1", "--port", str(port)]
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            studies = json.loads(mlflow_ui.wait_for(f"http://127.0.0.1:{port}/api/studies", server, 60))
        finally:
            server.terminate()
    assert [s["study_name"] for s in studies["study_summaries"]] == [STUDY]


def test_time_left_counts_trials_or_the_timeout_whichever_ends_first():
    # 2 of 10 trials in 60 s: 8 more at 30 s each.
    assert console.time_left(60, 2, 10, None) == 240
    # search.timeout=100: no trial starts after 100 s, and one may start just before it.
    assert console.time_left(60, 2, 10, 100) == 40 + 30
    assert console.time_left(120, 2, 10, 100) == 0  # past the timeout no trial starts
    assert console.time_left(60, 10, 10, 100) == 0  # all trials done


def test_a_retrained_best_trial_shows_its_searched_params_once_on_rank_0(caplog):
    from transformers import TrainerState, TrainingArguments

    args = TrainingArguments(
        "/tmp/unused",
        per_device_train_batch_size=8,
        num_train_epochs=2,
        learning_rate=3e-5,
        weight_decay=0.1,
        report_to=[],
    )
    line = console.TrainingProgress(["learning_rate", "weight_decay"])
    for rank_zero in (True, False):
        state = TrainerState(is_world_process_zero=rank_zero)
        line.on_train_begin(args, state, None)
        for accuracy in (0.5, 0.75):
            line.on_evaluate(args, state, None, metrics={"eval_accuracy": accuracy})
        with caplog.at_level("INFO", logger="pipeline.console"):
            line.on_train_end(args, state, None)
    (record,) = caplog.records  # the other rank says nothing
    assert record.getMessage().startswith(
        "trained batch=8 epochs=2 lr=3e-05 weight_decay=0.1 | eval_accuracy by epoch: 0.500 0.750 | in 0:00"
    )


def test_the_summary_in_a_pipe_keeps_each_row_and_command_on_one_line(capsys):
    """Off a terminal rich folds at 80 columns: a long best-trial row or URI broke over two lines."""
    params = {f"a_searched_parameter_{i}": 1e-5 * (i + 1) for i in range(6)}
    best = optuna.trial.create_trial(
        params=params,
        distributions={name: optuna.distributions.FloatDistribution(1e-6, 1.0) for name in params},
        value=0.875,
    )
    cfg = compose_config(
        "dataset=local",
        "dataset.train_file=reviews/train_with_a_long_name.csv",
        "dataset.test_file=reviews/test.csv",
        "dataset.text_columns=[title,body]",
        "dataset.label_column=topic",
    )
    uri = "models:/a_registered_model_with_a_rather_long_name/12"
    steps = console.next_commands(cfg, uri, "12", "12")
    metrics = {"test_accuracy": 0.8, "test_f1_macro": 0.79}
    console.print_summary(console.Summary(None, metrics, uri, "12", cfg.tracking.uri, None, best, steps))
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "best trial" in line)
    assert all(f"{name}=" in row for name in params), out
    uri = "models:/a_registered_model_with_a_rather_long_name@champion"
    options = "--text-columns title,body"
    for command in (
        f"python -m pipeline.predict {uri} --input reviews/test.csv --output predictions.csv {options}",
        f"python -m pipeline.evaluate {uri} reviews/test.csv --label-column topic {options}",
        f"MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db mlflow models serve -m {uri} --env-manager local",
    ):
        assert any(line.strip().startswith(command) for line in out.splitlines()), out
