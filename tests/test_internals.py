"""The private parts of transformers, datasets, Optuna and MLflow the pipeline relies on, each used in one owner
module (`pipeline/training/internals.py`, `pipeline/data/internals.py`, `pipeline/search/internals.py`,
`pipeline/tracking/internals.py`): when an upgrade moves one, or words an error otherwise, this fails here,
naming it, instead of trials reporting nothing, searches pruning wrongly or errors going unrecognised."""

import inspect
import logging
import re
import sqlite3
import subprocess
import sys
import warnings

import datasets
import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from datasets import Dataset
from mlflow.tracking import MlflowClient
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from transformers import BertConfig, BertForSequenceClassification, Trainer
from transformers.trainer_callback import CallbackHandler
from transformers.utils import loading_report

from devtools.services import free_port
from pipeline.data import internals as data_internals
from pipeline.search import internals as optuna_internals
from pipeline.tracking import internals as mlflow_internals
from pipeline.training import internals
from pipeline.training.trainer import PipelineTrainer

# transformers


def test_the_trainer_still_reports_to_optuna_through_the_hook_the_pipeline_overrides():
    assert list(inspect.signature(Trainer._report_to_hp_search).parameters) == ["self", "trial", "step", "metrics"]
    assert PipelineTrainer._report_to_hp_search is internals.EpochReports._report_to_hp_search
    source = inspect.getsource(Trainer._report_to_hp_search)
    assert "self.objective = " in source  # objective_value() reads it


def test_the_trainer_still_keeps_the_running_trial_where_the_pipeline_reads_it():
    source = inspect.getsource(Trainer)
    assert "self._trial = trial" in source  # current_trial() reads it
    assert internals.current_trial(object()) is None  # outside a search


def test_the_trainer_still_builds_its_train_sampler_in_the_hook_the_pipeline_overrides():
    assert list(inspect.signature(Trainer._get_train_sampler).parameters) == ["self", "train_dataset"]
    assert "sampler_fn=self._get_train_sampler" in inspect.getsource(Trainer.get_train_dataloader)
    assert "LengthGroupedSampler(" in inspect.getsource(Trainer._get_train_sampler)  # what the override wraps
    assert PipelineTrainer._get_train_sampler is internals.ShuffledLengthGroups._get_train_sampler


def test_the_trainer_still_holds_a_training_s_model_where_the_pipeline_releases_it():
    handler = CallbackHandler([], None, None, None, None)
    for held in ("model", "optimizer", "lr_scheduler", "train_dataloader"):
        assert hasattr(handler, held), held  # release_previous_model() clears these
    assert 'for attr in ("model", "optimizer", "lr_scheduler"):' in inspect.getsource(Trainer)  # set on the handler
    train = inspect.getsource(Trainer.train)
    # A training with model_init makes its model before it reads self.model: None there is never used.
    assert "self.model = self.call_model_init(trial)" in train
    assert train.index("self.call_model_init(trial)") < min(train.index(use) for use in ("self.model.", "self.model,"))


def test_a_model_still_initialises_one_submodule_as_its_class_does():
    model = BertForSequenceClassification(
        BertConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=100,
            num_labels=2,
        )
    )
    with torch.no_grad():
        model.classifier.weight.fill_(7.0)
    internals.init_weights(model, "classifier")
    assert not (model.classifier.weight == 7.0).any()


def test_transformers_still_logs_its_load_report_where_the_pipeline_holds_it():
    assert "LOAD REPORT" in inspect.getsource(loading_report)
    held = internals.HeldLoadReport()
    assert held.logger.name == "transformers.modeling_utils"


# datasets


def test_a_dataset_still_has_the_fingerprint_its_cache_keys_start_from():
    ds = Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    assert isinstance(ds._fingerprint, str) and ds._fingerprint
    assert data_internals.cache_key(ds, 1) == data_internals.cache_key(ds, 1) != data_internals.cache_key(ds, 2)
    assert data_internals.cache_key(ds, 1) != data_internals.cache_key(ds.select([1, 0]), 1)


def test_datasets_still_splits_stratified_and_words_a_one_row_class_as_the_pipeline_reads_it():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    first, second = data_internals.stratified_indices(labels, 4, 4, seed=0)
    assert sorted([*first, *second]) == list(range(8)) and sorted(labels[first]) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="a class has only 1 row"):
        data_internals.stratified_indices(np.array([0, 0, 0, 1]), 2, 2, seed=0)


def test_datasets_still_says_a_data_file_without_rows_in_the_words_the_pipeline_reads(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(Exception) as raised:
        datasets.load_dataset("csv", data_files={"train": str(empty)}, cache_dir=str(tmp_path / "cache"))
    err = raised.value
    while err.__cause__ is not None:
        err = err.__cause__
    assert data_internals.says_no_rows(str(err)), str(err)


# Optuna


def test_every_storage_call_optuna_makes_is_retried():
    """Optuna's _CachedStorage calls some private RDBStorage methods; an upgrade that changes them fails here."""
    called = set(re.findall(r"self\._backend\.(\w+)", inspect.getsource(_CachedStorage)))
    not_transactions = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "record_heartbeat"}
    operations = set(optuna_internals.RDB_OPERATIONS)
    assert called - not_transactions <= operations, called - not_transactions - operations
    assert all(hasattr(RDBStorage, name) for name in operations)


def test_a_study_still_keeps_its_storage_where_the_pipeline_reads_it(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url)
    storage = optuna_internals.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert [s.study_name for s in storage.get_all_studies()] == ["s"]


def test_optuna_still_logs_a_failed_trial_on_the_logger_the_pipeline_quiets():
    study = optuna.create_study()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger(optuna_internals.OPTIMIZE_LOGGER).addHandler(handler)
    try:
        study.optimize(lambda trial: 1 / 0, n_trials=1, catch=(ZeroDivisionError,))
    finally:
        logging.getLogger(optuna_internals.OPTIMIZE_LOGGER).removeHandler(handler)
    assert any(
        "failed because of the following error" in r.getMessage().replace(" with parameters: {}", "") for r in records
    ), [r.getMessage() for r in records]


# MLflow


def test_mlflow_still_words_an_unanswered_request_as_the_outbox_reads_it(tmp_path):
    """A real client against a port nobody listens on, with MLflow's retries cut short."""
    code = (
        "import sys; from mlflow.tracking import MlflowClient\n"
        "try:\n    MlflowClient(sys.argv[1]).get_experiment_by_name('x')\n"
        "except Exception as err:\n    print(str(err).splitlines()[0])\n"
    )
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2", "PATH": "/usr/bin:/bin"}
    said = subprocess.run(
        [sys.executable, "-c", code, f"http://127.0.0.1:{free_port()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()
    assert mlflow_internals.unreachable(Exception(said)), said


def test_mlflow_still_words_a_changed_param_and_a_duplicate_row_as_the_tracker_reads_them(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    run = client.create_run(client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri()))
    client.log_param(run.info.run_id, "p", "1")
    with pytest.raises(mlflow.exceptions.MlflowException) as changed:
        client.log_param(run.info.run_id, "p", "2")
    assert mlflow_internals.param_changed(changed.value) and not mlflow_internals.duplicate_key(changed.value)
    with sqlite3.connect(tmp_path / "m.db") as db, pytest.raises(sqlite3.IntegrityError) as duplicate:
        db.execute("INSERT INTO params (key, value, run_uuid) VALUES ('p', '1', ?)", (run.info.run_id,))
    assert mlflow_internals.duplicate_key(duplicate.value), duplicate.value


def test_mlflow_still_warns_on_a_logged_file_in_the_words_the_pipeline_quiets(tmp_path):
    """A local CSV with an integer column, logged as a dataset: warned about, and not once quieted."""
    path = tmp_path / "rows.csv"
    rows = pd.DataFrame({"id": [1, 2], "text": ["a", "b"]})
    rows.to_csv(path, index=False)

    def warned() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("always", append=True)  # after any filter that quiets
            mlflow.data.from_pandas(rows, source=str(path), name="rows.csv").to_dict()  # as logging it does
            return [str(w.message) for w in caught]

    def quieted(said: list[str]) -> list[str]:
        return [text for text in said if any(re.match(m, text) for m in mlflow_internals.DATASET_WARNINGS)]

    loud = warned()
    assert all(any(re.match(m, text) for text in loud) for m in mlflow_internals.DATASET_WARNINGS), loud
    with mlflow_internals.quiet_dataset_warnings():
        assert quieted(warned()) == []
