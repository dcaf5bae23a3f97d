"""A user's own CSV with string labels, as the README's `dataset=local` route takes it: the same command
twice, then the same rows at another path, all continue one study and one registered model."""

import re
import shutil
import uuid

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from devtools.commands import run_pipeline, study_storage, tracking_uri
from pipeline.tracking.promotion import DECISION_TAG
from pipeline.tracking.tracker import ROLE_TAG
from tests.conftest import champion_by_the_rule, default_study, run_entry_point_said

pytestmark = pytest.mark.slow  # servers, faults, or trainings of 20 s and more

TOPICS = {"sport": "match goal team", "money": "bank market shares", "science": "lab study cells"}


def write_reviews(path):
    """Rows this machine has never seen (a fresh token in every text), string labels, a header."""
    token = uuid.uuid4().hex[:6]
    rows = [(f"{words} {token} item {i}", label) for label, words in TOPICS.items() for i in range(30)]
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows, columns=["body", "topic"]).to_csv(path, index=False)
    return path


def command(train_file) -> list[str]:
    return [
        "dataset=local",
        f"dataset.train_file={train_file}",
        "dataset.text_columns=[body]",
        "dataset.label_column=topic",
        "dataset.max_length=32",
        "model=tiny",
        "search.n_trials=1",
        "trainer.num_train_epochs=1",
        "trainer.learning_rate=0.001",
    ]


def test_own_csv_run_twice_and_from_another_path_continues_one_study(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    mine = write_reviews(tmp_path / "data" / "reviews.csv")
    elsewhere = tmp_path / "copied" / "to" / "elsewhere.csv"
    elsewhere.parent.mkdir(parents=True)
    shutil.copy(mine, elsewhere)
    for train_file in (mine, mine, elsewhere):
        result = run_pipeline(work, *command(train_file))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "error:" not in result.stderr
    study = default_study(work, "local-tiny")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    uri = tracking_uri(work)
    client = MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name("local")
    parents = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'study'")
    assert len(parents) == 1
    versions = client.search_model_versions("name = 'local'")
    assert len({v.tags["pipeline.data"] for v in versions}) == 1
    champion_by_the_rule(uri, "local")

    # mode=train, twice, from the copy: each run registers a version on the same data, compared with the holder.
    searched = len(versions)
    for _ in range(2):
        result = run_pipeline(work, *command(elsewhere), "mode=train")
        assert result.returncode == 0, result.stderr[-3000:]
    versions = client.search_model_versions("name = 'local'")
    assert len(versions) == searched + 2 and len({v.tags["pipeline.data"] for v in versions}) == 1
    said = {str(v.version): v.tags[DECISION_TAG] for v in versions}
    assert all(line.startswith(f"version {n}: ") for n, line in said.items()), said
    champion = champion_by_the_rule(uri, "local")
    assert champion is None or re.search(rf"champion is (now )?version {champion}$", said[champion]), said


def test_a_multirun_run_twice_continues_each_of_its_studies(tmp_path):
    """The README's `-m ... model=minilm,tiny`: one search per job; the same multirun again adds a trial to each."""
    work = tmp_path / "project"
    work.mkdir()
    data = write_reviews(tmp_path / "data" / "reviews.csv")
    for _ in range(2):
        result = run_pipeline(work, "-m", *command(data), "model=tiny,minilm")
        assert result.returncode == 0, result.stderr[-3000:]
        (best,) = [line for line in result.stdout.splitlines() if line.startswith("multirun: best job of 2: model=")]
        assert re.search(
            r"study=local-(tiny|minilm) validation accuracy [\d.]+, test accuracy [\d.]+ \(95% [\d.]+-[\d.]+\), "
            r"models:/local/\d+$",
            best,
        )
    for study_name in ("local-tiny", "local-minilm"):
        study = default_study(work, study_name)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    uri = tracking_uri(work)
    client = MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name("local")
    parents = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'study'")
    assert sorted(p.info.run_name for p in parents) == ["local-minilm", "local-tiny"]
    assert all(p.info.status == "FINISHED" for p in parents)
    children = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
    assert sorted(c.data.tags["mlflow.parentRunId"] for c in children) == sorted(2 * [p.info.run_id for p in parents])
    assert [e.name for e in client.search_experiments()] == ["local", "Default"]


def test_a_quick_try_on_capped_rows_then_the_full_data_need_no_new_names(tmp_path, monkeypatch, capsys):
    """The common workflow: a small run first, then all rows, with the same command less the cap (in this
    process: the names are the point, and the test above runs the real one twice)."""
    work = tmp_path / "project"
    work.mkdir()
    data = write_reviews(tmp_path / "data" / "reviews.csv")
    code, out, err = run_entry_point_said(monkeypatch, capsys, work, *command(data), "dataset.max_train_samples=40")
    assert code == 0, err[-3000:]
    assert "models:/local-train40/1" in out
    code, out, err = run_entry_point_said(monkeypatch, capsys, work, *command(data))
    assert code == 0, err[-3000:]
    assert "models:/local/1" in out
    assert sorted(optuna.get_all_study_names(study_storage(work))) == ["local-tiny", "local-tiny-train40"]
    client = MlflowClient(tracking_uri(work), tracking_uri(work))
    assert sorted(m.name for m in client.search_registered_models()) == ["local", "local-train40"]
    # An explicit name still gets the data check: the full rows under the quick try's name are refused.
    code, _, err = run_entry_point_said(
        monkeypatch, capsys, work, *command(data), "registry.name=local-train40", "search.study_name=other"
    )
    assert code == 2 and "registry.name=local-train40: version 1 was trained and scored on other data" in err
