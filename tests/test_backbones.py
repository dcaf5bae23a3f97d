"""A search over backbones, as a user runs it: one study over `model: [tiny, minilm]` on AG News trains both,
measures each trial's speed, registers the most accurate, or, under `registry.max_ms_per_text`, the most
accurate within the budget; an impossible budget registers nothing. A killed trial of a local-directory
backbone resumes as that backbone."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from transformers import BertForSequenceClassification

from devtools.audit import audit
from devtools.commands import AG_NEWS_DIR, CLASSES, run_pipeline, start_pipeline, study_storage, wait_for_saved_epoch
from pipeline.search.resume import RESUMED_FROM_TRIAL
from pipeline.search.study import best_trial
from pipeline.tracking.registry import TRIAL_RUN_TAG
from pipeline.tracking.report import SPEED_PLOT, TRIALS_TABLE
from pipeline.training import speed
from pipeline.training.speed import Speed
from tests.conftest import champion_by_the_rule, mlflow_client, run_entry_point_said, save_small_bert, write_space

pytestmark = pytest.mark.slow  # MiniLM trains; a process is killed

NAME = "ag_news-train240-eval100"  # the registered model: capped rows name it
CAPS = [
    f"dataset.data_dir={AG_NEWS_DIR}",
    "dataset.max_train_samples=240",
    "dataset.max_eval_samples=100",
    "dataset.max_length=64",
    "trainer.learning_rate=5e-5",  # MiniLM learns in one epoch; the tiny random BERT does not
    "trainer.num_train_epochs=1",
]


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, list[str], optuna.Study]:
    """`python -m pipeline` over a space of two backbones, two trials (each backbone once), in a fresh directory."""
    cwd = tmp_path_factory.mktemp("backbones")
    space = write_space(cwd, {"model": {"type": "categorical", "choices": ["tiny", "minilm"]}})
    command = [f"search.space={space}", *CAPS]
    result = run_pipeline(cwd, *command, "search.n_trials=2", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (name,) = optuna.get_all_study_names(study_storage(cwd))
    assert name.startswith("ag_news-backbones-")  # one study for the space, not named after one model
    return cwd, command, optuna.load_study(study_name=name, storage=study_storage(cwd))


def finalize(monkeypatch, capsys, cwd: Path, command: list[str], *extra: str) -> tuple[int, str, str]:
    return run_entry_point_said(monkeypatch, capsys, cwd, *command, "mode=finalize", *extra)


def trials_by_backbone(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    return {t.params["model"]: t for t in study.get_trials(states=[TrialState.COMPLETE])}


def kept_weights(cwd: Path, study: optuna.Study) -> set[str]:
    return {path.name for path in (cwd / "mlruns" / "checkpoints" / study.study_name).glob("trial-*")}


def test_one_study_trains_both_backbones_measures_each_and_registers_the_more_accurate(searched):
    cwd, _, study = searched
    trials = trials_by_backbone(study)
    assert sorted(trials) == ["minilm", "tiny"]  # each backbone tried once, the configured one first
    assert trials["minilm"].number == 0
    speeds = {name: Speed.of(t.user_attrs) for name, t in trials.items()}
    assert all(speeds.values()), {n: t.user_attrs for n, t in trials.items()}
    assert speeds["tiny"].predict_ms_per_text < speeds["minilm"].predict_ms_per_text
    assert speeds["minilm"].model_params > 20e6 > speeds["tiny"].model_params  # each trial trained its own model
    assert trials["minilm"].value > trials["tiny"].value
    client = mlflow_client(cwd)
    for trial in trials.values():  # the trial's MLflow run holds its speed, as metrics
        metrics = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        assert metrics[speed.MS_PER_TEXT] == trial.user_attrs[speed.MS_PER_TEXT]
    parent = client.get_run(trials["minilm"].user_attrs["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
    assert SPEED_PLOT in {a.path for a in client.list_artifacts(parent, "plots")}
    table = pd.read_csv(client.download_artifacts(parent, TRIALS_TABLE))
    assert list(table.columns[:9]) == ["number", "state", "value", "model", *speed.METRICS, "mlflow_run_id"]
    (version,) = client.search_model_versions(f"name = '{NAME}'")
    assert version.tags[TRIAL_RUN_TAG] == trials["minilm"].user_attrs["mlflow_run_id"]
    assert "speed: " in version.description and "ms/text" in version.description
    assert kept_weights(cwd, study) == {f"trial-{t.number}" for t in trials.values()}  # each backbone's best
    predicted = run_pipeline(cwd, f"models:/{NAME}/1", "Stocks fall as rates rise", module="pipeline.predict")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert predicted.stdout.strip().split("\t")[0] in CLASSES, predicted.stdout


def test_a_budget_between_the_two_picks_the_faster_one_and_a_rerun_registers_nothing_new(searched, monkeypatch, capsys):
    cwd, command, study = searched
    trials = trials_by_backbone(study)
    fast, slow = (Speed.of(trials[name].user_attrs).predict_ms_per_text for name in ("tiny", "minilm"))
    between = round(math.sqrt(fast * slow), 4)
    budget = f"registry.max_ms_per_text={between}"
    client = mlflow_client(cwd)
    code, out, err = finalize(monkeypatch, capsys, cwd, command, budget)
    assert code == 0, err[-3000:]
    picked = best_trial(study, between)
    assert picked.number == trials["tiny"].number
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{NAME}'")}
    assert versions["2"].tags[TRIAL_RUN_TAG] == trials["tiny"].user_attrs["mlflow_run_id"]
    assert f"best within {between:g} ms/text: trial {picked.number} (tiny)" in out
    assert "trained " not in out + err  # the pick's kept weights, not a training again
    assert kept_weights(cwd, study) == {f"trial-{t.number}" for t in trials.values()}  # for another budget later
    assert f"best overall: trial {trials['minilm'].number} (minilm)" in out
    # The champion rule as before: the slower, more accurate version keeps the alias it won on test rows.
    assert champion_by_the_rule(f"sqlite:///{cwd}/mlruns/mlflow.db", NAME) == "1"
    code, out, err = finalize(monkeypatch, capsys, cwd, command, budget)  # the same command again
    assert code == 0 and f"already registered as models:/{NAME}/2" in out + err, err[-3000:]
    code, out, err = finalize(monkeypatch, capsys, cwd, command)  # no budget: the more accurate, registered before
    assert code == 0 and f"already registered as models:/{NAME}/1" in out + err, err[-3000:]
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 2


def test_an_impossible_budget_says_so_in_one_line_and_registers_nothing(searched, monkeypatch, capsys):
    cwd, command, study = searched
    client = mlflow_client(cwd)
    before = len(client.search_model_versions(f"name = '{NAME}'"))
    code, _, err = finalize(monkeypatch, capsys, cwd, command, "registry.max_ms_per_text=0.0001")
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    fastest = Speed.of(trials_by_backbone(study)["tiny"].user_attrs).predict_ms_per_text  # its one trial
    assert "registry.max_ms_per_text=0.0001: none of the 2 completed trials classifies that fast" in errors[0]
    assert f"the fastest model, tiny, takes {fastest:.2f} ms/text" in errors[0]
    assert len(client.search_model_versions(f"name = '{NAME}'")) == before


@pytest.fixture(scope="module")
def wider(tmp_path_factory) -> Path:
    """A second backbone in a local directory: a random BERT twice the tiny one's width, MiniLM's vocabulary."""
    return save_small_bert(tmp_path_factory.mktemp("models") / "wider")


def test_a_killed_trial_of_a_directory_backbone_resumes_as_that_backbone(tmp_path, wider):
    space = write_space(tmp_path, {"model": {"type": "categorical", "choices": ["tiny", str(wider)]}})
    command = [
        f"search.space={space}",
        *CAPS[:4],
        "trainer.learning_rate=0.001",
        "trainer.num_train_epochs=3",
        "search.n_trials=2",
        "search.pruner=none",
        "search.heartbeat_interval=1",
        "search.grace_period=2",
        "search.study_name=spans",
    ]
    proc = start_pipeline(tmp_path, *command, log=tmp_path / "killed.log")
    saved = wait_for_saved_epoch(tmp_path / "mlruns" / "checkpoints" / "spans" / "resume", proc, trial="trial-1")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL and saved["epoch"] >= 1
    time.sleep(3)  # past search.grace_period
    again = run_pipeline(tmp_path, *command, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="spans", storage=study_storage(tmp_path))
    killed = study.trials[1]
    (resumed,) = [t for t in study.trials if t.user_attrs.get(RESUMED_FROM_TRIAL) == 1]
    assert killed.state == TrialState.FAIL and resumed.state == TrialState.COMPLETE
    assert resumed.params["model"] == str(wider) == killed.params["model"]
    wider_params = sum(p.numel() for p in BertForSequenceClassification.from_pretrained(wider).parameters())
    assert Speed.of(resumed.user_attrs).model_params == wider_params  # it trained the directory's model
    # The same command again continued the one study: its two new trials, the retry first, joined it.
    assert optuna.get_all_study_names(study_storage(tmp_path)) == ["spans"] and len(study.trials) == 4
    assert all(t.state == TrialState.COMPLETE for t in study.trials if t.number != 1)
    result = audit(study, mlflow_client(tmp_path), "ag_news")
    assert result.consistent, result.summary()
    versions = mlflow_client(tmp_path).search_model_versions(f"name = '{NAME}'")
    assert [v.tags[TRIAL_RUN_TAG] for v in versions] == [best_trial(study).user_attrs["mlflow_run_id"]]
    champion_by_the_rule(f"sqlite:///{tmp_path}/mlruns/mlflow.db", NAME)  # asserts the alias is where the rule puts it
