"""The real entry point (`python -m pipeline`) in a subprocess, on the tiny model and real AG News rows."""

import re

import pytest
from optuna.trial import TrialState

from devtools.commands import CLASSES, TINY, run_pipeline, tracking_uri
from pipeline.search.study import best_trial
from pipeline.tracking.promotion import BASELINE_TAG, DECISION_TAG
from pipeline.tracking.registry import TRIAL_RUN_TAG
from pipeline.tracking.tracker import STATE_TAG, TRIAL_TAG
from pipeline.training.metrics import TEST_METRIC
from tests.conftest import champion_by_the_rule, default_study, mlflow_client, runs_by_role

pytestmark = pytest.mark.slow  # servers, faults, or trainings of 20 s and more

STUDY = "ag_news-tiny"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Three trials, then the same command again (six trials in the same study)."""
    cwd = tmp_path_factory.mktemp("e2e")
    first = run_pipeline(cwd, *TINY, "search.n_trials=3")
    assert first.returncode == 0, first.stderr[-3000:]
    client = mlflow_client(cwd)
    (version,) = client.search_model_versions("name = 'ag_news'")
    after_first = {
        "champion": champion_by_the_rule(tracking_uri(cwd), "ag_news"),
        "trial_runs": len(runs_by_role(client, "trial")),
        "trials": len(default_study(cwd, STUDY).trials),
        "best_trial_run": version.tags[TRIAL_RUN_TAG],
    }
    second = run_pipeline(cwd, *TINY, "search.n_trials=3")
    assert second.returncode == 0, second.stderr[-3000:]
    return cwd, after_first


def test_first_search_runs_three_trials_each_with_its_run(searched):
    cwd, after_first = searched
    assert after_first["trials"] == 3 and after_first["trial_runs"] == 3


def test_rerun_continues_the_same_study(searched):
    cwd, _ = searched
    study = default_study(cwd, STUDY)
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert study.trials[0].params["num_train_epochs"] == 3  # the configured starting point came first


def test_one_parent_run_with_a_child_run_per_trial_and_per_epoch_accuracy(searched):
    cwd, _ = searched
    client = mlflow_client(cwd)
    (parent,) = runs_by_role(client, "study")
    assert parent.info.status == "FINISHED" and parent.info.run_name == STUDY
    children = runs_by_role(client, "trial")
    assert len(children) == 6
    study = default_study(cwd, STUDY)
    by_number = {t.number: t for t in study.trials}
    assert sorted(r.info.run_name for r in children) == [f"trial-{i}" for i in range(6)]
    for run in children:
        trial = by_number[int(run.data.tags[TRIAL_TAG])]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.tags[STATE_TAG] == trial.state.name.lower()
        assert int(run.data.params["num_train_epochs"]) == trial.params["num_train_epochs"]
        history = client.get_metric_history(run.info.run_id, "eval_accuracy")
        epochs_run = trial.last_step if trial.state == TrialState.PRUNED else trial.params["num_train_epochs"]
        assert [m.step for m in history] == list(range(1, epochs_run + 1))
        memory = client.get_metric_history(run.info.run_id, "system/system_memory_usage_megabytes")
        assert [m.step for m in memory] == list(range(1, epochs_run + 1)) and all(m.value > 0 for m in memory)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "command.txt", "invocations"} <= artifacts
    invocations = client.list_artifacts(parent.info.run_id, "invocations")
    assert len(invocations) == 2  # one folder per run of the command, each with its config and command
    for folder in invocations:
        assert {"config.yaml", "command.txt"} == {
            a.path.rsplit("/", 1)[1] for a in client.list_artifacts(parent.info.run_id, folder.path)
        }
    assert "test_accuracy" in parent.data.metrics and "best_eval_accuracy" in parent.data.metrics


def test_the_parent_and_trial_runs_show_their_params_and_data_as_dataset_inputs(searched):
    cwd, _ = searched
    (parent,) = runs_by_role(mlflow_client(cwd), "study")
    params = parent.data.params
    assert params["model"] == "tiny" and params["dataset"] == "ag_news" and params["search_space"] == "batch_epochs"
    assert "learning_rate" in params["search_space_content"]
    assert (params["n_trials"], params["sampler"], params["pruner"], params["seed"], params["max_length"]) == (
        "3",
        "tpe",
        "median",
        "42",
        "48",
    )
    inputs = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in parent.inputs.dataset_inputs
    }
    assert sorted(inputs) == ["test", "train", "validation"]
    assert inputs["test"].source.endswith('test.csv"}') and inputs["train"].source.endswith('train.csv"}')
    assert len({d.digest for d in inputs.values()}) == 3 and all(len(d.digest) == 16 for d in inputs.values())
    # Each trial run shows what it trained and was judged on; no trial touches the test split.
    for trial in runs_by_role(mlflow_client(cwd), "trial"):
        used = {
            next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset
            for i in trial.inputs.dataset_inputs
        }
        assert sorted(used) == ["train", "validation"]
        assert {split: d.digest for split, d in used.items()} == {split: inputs[split].digest for split in used}


def test_each_version_carries_its_model_card(searched):
    cwd, _ = searched
    version = mlflow_client(cwd).get_model_version("ag_news", "1")
    card = version.description
    assert card.startswith("# ag_news: text classification") and "Labels: World, Sports, Business, Sci/Tech." in card
    assert f"test accuracy {float(version.tags[TEST_METRIC]):.4f}" in card
    assert all(f"| {label} |" in card for label in CLASSES) and "## Limits" in card
    saved = sorted((cwd / "outputs" / STUDY).glob("*/model_card.md"))
    assert saved and any(path.read_text() == card for path in saved)


def test_champion_follows_the_rule_and_never_moves_to_a_worse_model(searched):
    cwd, after_first = searched
    client = mlflow_client(cwd)
    versions = client.search_model_versions("name = 'ag_news'")
    champion = champion_by_the_rule(tracking_uri(cwd), "ag_news")
    said = {str(v.version): v.tags[DECISION_TAG] for v in versions}
    assert all(line.startswith(f"version {n}: ") for n, line in said.items()), said
    if champion is not None and after_first["champion"] is not None:
        accuracy = {str(v.version): float(v.tags[TEST_METRIC]) for v in versions}
        assert accuracy[champion] >= accuracy[after_first["champion"]]
        assert champion == after_first["champion"] or said[champion].endswith(f"champion is now version {champion}")
    # One version per best trial: a rerun whose best trial did not change registers nothing new.
    trial_runs = [v.tags[TRIAL_RUN_TAG] for v in versions]
    best = best_trial(default_study(cwd, STUDY))
    assert len(set(trial_runs)) == len(versions)
    assert set(trial_runs) == {after_first["best_trial_run"], best.user_attrs["mlflow_run_id"]}


def test_predict_loads_a_registered_version_in_a_new_process(searched):
    cwd, _ = searched
    texts = ["Stocks rally as oil slides", "Team wins the cup final"]
    result = run_pipeline(cwd, "models:/ag_news/1", *texts, module="pipeline.predict")
    assert result.returncode == 0, result.stderr[-2000:]
    labels = [line.split("\t")[0] for line in result.stdout.split("\n")[:-1]]
    assert len(labels) == 2 and set(labels) <= set(CLASSES)


def test_predict_loads_a_saved_directory(searched):
    cwd, _ = searched
    best = best_trial(default_study(cwd, STUDY))
    model_dir = cwd / "mlruns" / "checkpoints" / STUDY / f"trial-{best.number}"  # the kept best trial
    result = run_pipeline(cwd, str(model_dir), "Markets fall", module="pipeline.predict")
    assert result.returncode == 0, result.stderr[-2000:]
    label, score = result.stdout.strip().split("\t")
    assert label in CLASSES and 0 < float(score) <= 1


def test_train_mode_trains_once_and_registers(tmp_path):
    result = run_pipeline(tmp_path, *TINY, "mode=train", "trainer.num_train_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    # The weights once, in MLflow's artifacts: none under outputs/ (the model card is there).
    assert not list((tmp_path / "outputs").rglob("*.safetensors")) and list(
        (tmp_path / "outputs").rglob("model_card.md")
    )
    assert len(list((tmp_path / "mlruns" / "artifacts").rglob("*.safetensors"))) == 1
    client = mlflow_client(tmp_path)
    (run,) = runs_by_role(client, "train")
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "final_eval_accuracy")] == [1, 2]
    assert not runs_by_role(client, "study") and not (tmp_path / "mlruns" / "optuna.db").exists()
    (version,) = client.search_model_versions("name = 'ag_news'")
    assert version.tags[DECISION_TAG].startswith("version 1: ") and version.tags[BASELINE_TAG] in ("true", "false")
    assert champion_by_the_rule(tracking_uri(tmp_path), "ag_news") == (
        "1" if version.tags[BASELINE_TAG] == "true" else None
    )
    # The terminal: one line for the training, its accuracy per epoch as MLflow has it; no Trainer dicts.
    accuracies = " ".join(f"{m.value:.3f}" for m in client.get_metric_history(run.info.run_id, "final_eval_accuracy"))
    assert f"trained batch=16 epochs=2 lr=0.001 | eval_accuracy by epoch: {accuracies} | in " in result.stdout, (
        result.stdout
    )
    assert not re.search(r"\{'(loss|eval_loss|train_runtime)'", result.stdout + result.stderr), result.stdout


def test_search_timeout_starts_no_trial_after_it_runs_out(tmp_path):
    result = run_pipeline(tmp_path, *TINY, "search.n_trials=5", "search.timeout=1", "trainer.num_train_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    study = default_study(tmp_path, STUDY)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]  # a trial takes longer than 1 s
    assert len(runs_by_role(mlflow_client(tmp_path), "trial")) == 1
