"""A password in the storage URL and in the tracking URL appears nowhere: not in any file a search, a
multirun and a failing run write (artifacts, Hydra's files, logs), not in what MLflow and Optuna store,
not in the terminal. PostgreSQL here trusts local connections and the MLflow server has no auth, so both
accept the URLs and ignore the password, as a real deployment would check it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from devtools.commands import TINY, run_pipeline
from devtools.services import ONE_EPOCH_SPACE, mlflow_server, postgres_database
from pipeline.runtime.secrets import redact

PASSWORD = "s3cr3t-Pa55"


def run(cwd: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    return run_pipeline(cwd, *(["-m"] if multirun else []), *TINY, *overrides, timeout=400)


def with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, _, host = rest.rpartition("@")
    return f"{scheme}://{user or 'alice'}:{PASSWORD}@{host}"


@pytest.mark.parametrize(
    "text, shown",
    [
        ("postgresql+psycopg://u:pw@db:5432/optuna", "postgresql+psycopg://u:***@db:5432/optuna"),
        ("tracking.uri=http://u:p@ss@host:5000 and more", "tracking.uri=http://u:***@host:5000 and more"),
        ("['search.storage=postgresql://a:b@h/d']", "['search.storage=postgresql://a:***@h/d']"),
        (
            "#0 : tracking.uri=http\\://u\\:pw@h\\:5000",
            "#0 : tracking.uri=http\\://u\\:***@h\\:5000",
        ),  # Hydra's escapes
        ("sqlite:///mlruns/optuna.db http://host:5000 postgresql://u@h/d", None),
    ],
)
def test_redact_masks_only_passwords(text, shown):
    assert redact(text) == (shown or text)


@pytest.mark.slow
def test_a_password_in_both_urls_is_written_and_printed_nowhere(tmp_path):
    (tmp_path / "space.yaml").write_text(ONE_EPOCH_SPACE)
    with (
        postgres_database("pipeline_secret_optuna") as optuna_db,
        postgres_database("pipeline_secret_mlflow") as mlflow_db,
    ):
        with mlflow_server(mlflow_db, tmp_path / "artifacts", tmp_path / "server.log") as url:
            storage, tracking = with_password(optuna_db), with_password(url)
            urls = [f"search.storage={storage}", f"tracking.uri={tracking}", f"search.space={tmp_path / 'space.yaml'}"]
            work = tmp_path / "work"
            work.mkdir()
            search = run(work, *urls, "search.n_trials=1")
            assert search.returncode == 0, redact(search.stderr[-3000:])
            multirun = run(work, *urls, "mode=finalize", "registry.alias=champion,best", multirun=True)
            assert multirun.returncode == 0, redact(multirun.stderr[-3000:])
            failing = run(work, *urls, "mode=finalize", "search.study_name=no-such-study")
            assert failing.returncode == 2 and "error: search.study_name=no-such-study" in failing.stderr
            assert f"{tracking.split(':' + PASSWORD)[0]}:***@" in search.stdout  # the summary's MLflow line, masked
            for result in (search, multirun, failing):
                assert PASSWORD not in result.stdout + result.stderr
            leaks = [p for p in tmp_path.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
            assert not leaks, leaks
            assert (work / "multirun").is_dir() and list(work.rglob(".hydra/overrides.yaml"))  # what was grepped
            client = MlflowClient(url, url)
            experiment = client.get_experiment_by_name("ag_news")
            for logged in client.search_runs([experiment.experiment_id]):
                assert PASSWORD not in repr(logged.data.tags) + repr(logged.data.params)
            for version in client.search_model_versions("name = 'ag_news'"):
                assert PASSWORD not in repr(version.tags) + str(version.source)
            study = optuna.load_study(study_name="ag_news-tiny", storage=optuna_db)
            assert PASSWORD not in repr(study.user_attrs) + repr([t.user_attrs for t in study.trials])
