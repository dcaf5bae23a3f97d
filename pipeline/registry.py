"""Best trial -> final model -> test score -> saved, logged and registered; the champion rule."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import LoggedModel, LoggedModelStatus
from datasets import DatasetDict
from mlflow.models import infer_signature
from transformers import AutoModelForSequenceClassification
from transformers.trainer_utils import PredictionOutput

from pipeline import interrupts, train
from pipeline.data import is_content_fingerprint
from pipeline.errors import PipelineError
from pipeline.outbox import RunRef
from pipeline.tracking import EpochMetrics, Tracker, duplicate_key

TEST_METRIC = "test_accuracy"
F1_METRIC = "test_f1_macro"
# On a version registered from a search: its best trial's MLflow run, unique even if the study is recreated.
TRIAL_RUN_TAG = "pipeline.trial_run_id"
# On every version: the fingerprint of the splits it was trained and scored on (data.fingerprint).
DATA_TAG = "pipeline.data"
RUN_ID_TAG = "run_id"  # on every version: the MLflow run it was logged to
MODEL_URI_TAG = "pipeline.model_uri"  # on that run: the version it registered
# Explicit requirements: left to infer them, mlflow.transformers imports torchvision (absent here).
PIP_REQUIREMENTS = [f"{pkg}=={version(pkg)}" for pkg in ("torch", "transformers", "tokenizers", "mlflow")]


@dataclass
class FinalModel:
    metrics: dict[str, float]
    model_uri: str  # models:/NAME/VERSION
    version: str
    champion: str  # the version that holds the alias afterwards


def final_model(
    params: dict[str, Any],
    checkpoint: Path | None,
    build: Callable[[dict[str, Any], list], train.PipelineTrainer],
    tracker: Tracker,
    run_id: str,
) -> train.PipelineTrainer:
    """A Trainer holding the final model: the kept checkpoint of the best trial, else retrained with `params`."""
    if checkpoint is not None:
        trainer = build(params, [])
        trainer.model = AutoModelForSequenceClassification.from_pretrained(checkpoint).to(trainer.args.device)
        return trainer
    trainer = build(params, [EpochMetrics(tracker, RunRef(run_id), prefix="final_")])
    trainer.train()
    tracker.outbox.drain()  # its per-epoch metrics are in MLflow before the model is logged
    return trainer


def predict_test(trainer: train.PipelineTrainer, tokenized: DatasetDict) -> PredictionOutput:
    """The one look at the test split: metrics and the predictions (for the confusion matrix)."""
    return trainer.predict(tokenized["test"], metric_key_prefix="test")


def scores(prediction: PredictionOutput) -> dict[str, float]:
    return {k: v for k, v in prediction.metrics.items() if k in (TEST_METRIC, F1_METRIC, "test_loss")}


def save_and_register(
    trainer: train.PipelineTrainer,
    metrics: dict[str, float],
    directory: Path,
    tracker: Tracker,
    run_id: str,
    name: str,
    alias: str,
    data_id: str,
    trial_run_id: str | None = None,
) -> FinalModel:
    """Save with the tokenizer, log to `run_id` as an MLflow model, register it and apply the champion rule."""
    trainer.save_model(str(directory))  # model + tokenizer (processing_class)
    tracker.log_metrics(run_id, metrics)
    logged = logged_before(tracker, run_id, trial_run_id)
    if logged is None:
        signature = infer_signature(["some text"], [{"label": "a label", "score": 0.5}])
        with mlflow.start_run(run_id=run_id, nested=True):
            logged_uri = mlflow.transformers.log_model(
                transformers_model={"model": trainer.model, "tokenizer": trainer.processing_class},
                name="model",
                task="text-classification",
                signature=signature,
                pip_requirements=PIP_REQUIREMENTS,
                tags={TRIAL_RUN_TAG: trial_run_id} if trial_run_id else None,
            ).model_uri
    else:  # an earlier final step of this trial logged it and was killed before registering it
        logged_uri = f"models:/{logged.model_id}"
    with interrupts.deferred():  # a version is registered, tagged and ranked, or not at all
        tags = {TEST_METRIC: str(metrics[TEST_METRIC]), F1_METRIC: str(metrics[F1_METRIC]), DATA_TAG: data_id}
        if trial_run_id:
            tags[TRIAL_RUN_TAG] = trial_run_id
        registered = mlflow.register_model(logged_uri, name, tags=tags)
        tracker.client.set_model_version_tag(name, registered.version, RUN_ID_TAG, run_id)
        champion = promote(tracker, name, alias)
    model_uri = f"models:/{name}/{registered.version}"
    tracker.set_tag(run_id, MODEL_URI_TAG, model_uri)
    return FinalModel(metrics, model_uri, registered.version, champion)


def logged_before(tracker: Tracker, run_id: str, trial_run_id: str | None) -> LoggedModel | None:
    """A whole model (READY) that an earlier final step of the same best trial logged to `run_id` and did
    not register: registering it, instead of logging another copy, leaves no orphan behind."""
    if not trial_run_id:
        return None
    found = tracker.client.search_logged_models(
        [tracker.experiment_id], f"source_run_id = '{run_id}' AND tags.`{TRIAL_RUN_TAG}` = '{trial_run_id}'"
    )
    registered = {v.model_id for v in tracker.client.search_model_versions(f"run_id = '{run_id}'")}
    ready = [m for m in found if m.status == LoggedModelStatus.READY and m.model_id not in registered]
    return min(ready, key=lambda m: m.creation_timestamp) if ready else None


def check_data(tracker: Tracker, name: str, data_id: str) -> None:
    """Refuse to add to a registered model whose versions were scored on other data: the champion rule
    ranks versions by test accuracy, which compares only on the same test rows. (Versions untagged, or
    tagged with the older path-dependent fingerprint, cannot tell, and are taken as they are.)"""
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    tagged = [v for v in versions if is_content_fingerprint(v.tags.get(DATA_TAG, ""))]
    other = [v for v in tagged if v.tags[DATA_TAG] != data_id]
    if other:
        first = min(other, key=lambda v: int(v.version))
        raise PipelineError(
            f"registry.name={name}: version {first.version} was trained and scored on other data (train, "
            "validation or test rows differ from this run's); use a new registry.name, or dataset.name=NAME "
            "for a new experiment"
        )


def registered_from(
    tracker: Tracker, name: str, alias: str, trial_run_id: str | None, run_id: str
) -> FinalModel | None:
    """The version an earlier run registered from the same best trial, if any: a rerun whose best trial
    did not change would only score the same weights again and store another copy of them. The version's
    tags and the run's `pipeline.model_uri` are completed if a killed final step left them out."""
    if not trial_run_id:
        return None
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    found = [v for v in versions if v.tags.get(TRIAL_RUN_TAG) == trial_run_id and TEST_METRIC in v.tags]
    if not found:
        return None
    version = min(found, key=lambda v: int(v.version))
    metrics = {key: float(version.tags[key]) for key in (TEST_METRIC, F1_METRIC)}  # tagged together
    model_uri = f"models:/{name}/{version.version}"
    # What a final step killed after registering left unwritten.
    if RUN_ID_TAG not in version.tags:
        tracker.client.set_model_version_tag(name, version.version, RUN_ID_TAG, version.run_id or run_id)
    tracker.set_tag(run_id, MODEL_URI_TAG, model_uri)
    return FinalModel(metrics, model_uri, version.version, promote(tracker, name, alias))


def promote(tracker: Tracker, name: str, alias: str) -> str:
    """Point `alias` at the version with the best test accuracy (ties keep the holder, then the oldest).

    Equivalent to "move only when the new version beats the champion", and safe when two finalize
    commands race: each re-reads after writing (or failing to) until what it reads is consistent."""
    client = tracker.client
    for _ in range(20):
        versions = [v for v in client.search_model_versions(f"name = '{name}'") if TEST_METRIC in v.tags]
        holder = _alias_holder(tracker, name, alias)
        best = max(versions, key=lambda v: (float(v.tags[TEST_METRIC]), v.version == holder, -int(v.version)))
        if best.version == holder:
            return holder
        try:
            client.set_registered_model_alias(name, alias, best.version)
        except mlflow.exceptions.MlflowException as err:
            # MLflow's store reads then inserts: when another finalize created the alias in between, this
            # insert is a duplicate key. Read again; the next round decides as if it had come first.
            if not duplicate_key(err):
                raise
    raise RuntimeError(f"registry: alias {alias!r} of {name!r} did not settle")


def _alias_holder(tracker: Tracker, name: str, alias: str) -> str | None:
    try:
        return tracker.client.get_model_version_by_alias(name, alias).version
    except mlflow.exceptions.MlflowException:
        return None
