"""The private parts of transformers and Optuna that pipeline/trainer_internals.py relies on: when an upgrade
moves one, this fails here, naming it, instead of trials reporting nothing or searches pruning wrongly."""
import inspect

import optuna
from transformers import Trainer
from transformers.trainer_callback import CallbackHandler

from pipeline import trainer_internals
from pipeline.train import PipelineTrainer


def test_the_trainer_still_reports_to_optuna_through_the_hook_the_pipeline_overrides():
    assert list(inspect.signature(Trainer._report_to_hp_search).parameters) == ["self", "trial", "step", "metrics"]
    assert PipelineTrainer._report_to_hp_search is trainer_internals.EpochReports._report_to_hp_search
    source = inspect.getsource(Trainer._report_to_hp_search)
    assert "self.objective = " in source  # objective_value() reads it


def test_the_trainer_still_keeps_the_running_trial_where_the_pipeline_reads_it():
    source = inspect.getsource(Trainer)
    assert "self._trial = trial" in source  # current_trial() reads it
    assert trainer_internals.current_trial(object()) is None  # outside a search


def test_a_study_still_keeps_its_storage_where_the_pipeline_reads_it(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url)
    storage = trainer_internals.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert [s.study_name for s in storage.get_all_studies()] == ["s"]


def test_the_trainer_still_builds_its_train_sampler_in_the_hook_the_pipeline_overrides():
    assert list(inspect.signature(Trainer._get_train_sampler).parameters) == ["self", "train_dataset"]
    assert "sampler_fn=self._get_train_sampler" in inspect.getsource(Trainer.get_train_dataloader)
    assert "LengthGroupedSampler(" in inspect.getsource(Trainer._get_train_sampler)  # what the override wraps
    assert PipelineTrainer._get_train_sampler is trainer_internals.ShuffledLengthGroups._get_train_sampler


def test_the_trainer_still_holds_a_training_s_model_where_the_pipeline_releases_it():
    handler = CallbackHandler([], None, None, None, None)
    for held in ("model", "optimizer", "lr_scheduler", "train_dataloader"):
        assert hasattr(handler, held), held  # release_previous_model() clears these
    assert 'for attr in ("model", "optimizer", "lr_scheduler"):' in inspect.getsource(Trainer)  # set on the handler
    train = inspect.getsource(Trainer.train)
    # A training with model_init makes its model before it reads self.model: None there is never used.
    assert "self.model = self.call_model_init(trial)" in train
    assert train.index("self.call_model_init(trial)") < min(train.index(use) for use in ("self.model.", "self.model,"))
