"""The model registry: a scored model logged and registered with its provenance and its answers on the test
split, the champion rule applied (tracking/promotion.py), and the checks that keep versions comparable (same
data) and a rerun from registering twice."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from importlib.metadata import version

import mlflow
from mlflow.entities import LoggedModel, LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from pipeline.data.fingerprint import is_content_fingerprint
from pipeline.data.profile import Profile
from pipeline.errors import PipelineError
from pipeline.runtime import interrupts
from pipeline.schema import RegistryConfig
from pipeline.tracking import promotion
from pipeline.tracking.promotion import Answers, Comparison, Rule
from pipeline.tracking.tracker import Tracker, artifact_text
from pipeline.training.metrics import F1_METRIC, INTERVALS, TEST_METRIC
from pipeline.training.trainer import PipelineTrainer

PER_CLASS_TAGS = ("test_precision_", "test_recall_", "test_f1_")  # also on each version, as tags
INTERVAL_TAGS = tuple(f"test_{name}" for name in INTERVALS)  # each test score's 95% interval, and its rows
# On a version registered from a search: its best trial's MLflow run, unique even if the study is recreated.
TRIAL_RUN_TAG = "pipeline.trial_run_id"
# On every version: the fingerprint of the splits it was trained and scored on (data.fingerprint).
DATA_TAG = "pipeline.data"
SEEDS_TAG = "pipeline.seeds"  # with search.seeds > 1: each seed's validation accuracy, in one line
SEED_TAG = "pipeline.seed"  # with search.seeds > 1: the seed registered
PROFILE_TAG = "pipeline.data_profile"  # on every version: the artifact holding its training data's profile
RUN_ID_TAG = "run_id"  # on every version: the MLflow run it was logged to
MODEL_URI_TAG = "pipeline.model_uri"  # on that run: the version it registered
# Explicit requirements: left to infer them, mlflow.transformers imports torchvision (absent here). MLflow's
# own version from the module: an install of mlflow-skinny has no `mlflow` distribution to ask.
PIP_REQUIREMENTS = [f"{pkg}=={version(pkg)}" for pkg in ("torch", "transformers", "tokenizers")]
PIP_REQUIREMENTS.append(f"mlflow=={mlflow.__version__}")


@dataclass
class FinalModel:
    metrics: dict[str, float]
    model_uri: str  # models:/NAME/VERSION
    version: str
    champion: str | None  # the version that holds the alias afterwards (None: no version may hold it)
    validation: float | None = None  # the best trial's validation accuracy (None from mode=train)
    decision: str | None = None  # why this version holds the alias or not, in one line (promotion.decision_line)
    seeds: str | None = None  # with search.seeds > 1: each seed's validation accuracy (finalize.Seeds.line)

    @property
    def test_accuracy(self) -> float:
        return self.metrics[TEST_METRIC]


@dataclass(frozen=True)
class Source:
    """Where a version comes from."""

    run_id: str  # the MLflow run it is logged to
    data_fingerprint: str  # data.fingerprint of the splits it was trained and scored on
    trial_run_id: str | None = None  # from a search: its best trial's MLflow run
    profile: Profile | None = None  # its training data's profile (data/profile.py)


@dataclass(frozen=True)
class Scores:
    """What the final step found on the test split: the metrics, each row's answer, and the comparison with
    answering the training split's majority class everywhere."""

    metrics: dict[str, float]
    answers: Answers
    majority: str
    baseline: Comparison


def register(
    trainer: PipelineTrainer,
    scores: Scores,
    tracker: Tracker,
    cfg: RegistryConfig,
    source: Source,
    extra_tags: dict[str, str] | None = None,
) -> FinalModel:
    """Log the trained model to `source.run_id` as an MLflow model, register it (with `extra_tags` besides its
    scores and provenance) and apply the champion rule."""
    run_id, trial_run_id, name, metrics = source.run_id, source.trial_run_id, cfg.name, scores.metrics
    tracker.log_metrics(run_id, metrics)
    baseline = promotion.baseline_line(scores.baseline, scores.majority, cfg.alpha)
    # An earlier final step of this trial may have logged it, and been killed before registering it.
    logged = logged_before(tracker, run_id, trial_run_id)
    logged_uri = f"models:/{logged.model_id}" if logged else log_model(trainer, run_id, trial_run_id)
    # Before the version exists: every version has its answers, for the champion rule to compare.
    model_id = logged_uri.removeprefix("models:/")
    answers, profile_artifact = promotion.predictions_path(model_id), profile_path(model_id)
    tracker.client.log_text(run_id, scores.answers.to_csv(), answers)
    if source.profile is not None:
        tracker.client.log_dict(run_id, source.profile.to_dict(), profile_artifact)
    with interrupts.deferred():  # a version is registered, tagged and ranked, or not at all
        tags = {
            TEST_METRIC: str(metrics[TEST_METRIC]),
            F1_METRIC: str(metrics[F1_METRIC]),
            DATA_TAG: source.data_fingerprint,
            promotion.BASELINE_TAG: str(baseline is None).lower(),
            promotion.BASELINE_P_TAG: f"{scores.baseline.p_value:.6g}",
            promotion.PREDICTIONS_TAG: answers,
        }
        if source.profile is not None:
            tags[PROFILE_TAG] = profile_artifact
        tags |= {k: str(v) for k, v in metrics.items() if k.startswith(PER_CLASS_TAGS) or k in INTERVAL_TAGS}
        tags |= extra_tags or {}
        if trial_run_id:
            tags[TRIAL_RUN_TAG] = trial_run_id
        registered = mlflow.register_model(logged_uri, name, tags=tags)
        tracker.client.set_model_version_tag(name, registered.version, RUN_ID_TAG, run_id)
        decision = Rule(tracker, cfg).promote(registered.version)
        line = promotion.decision_line(registered.version, decision, cfg, baseline)
        keep_decision(tracker, cfg.name, registered.version, run_id, promotion.decision_tags(decision, line))
    model_uri = f"models:/{name}/{registered.version}"
    tracker.set_tag(run_id, MODEL_URI_TAG, model_uri)
    seeds = (extra_tags or {}).get(SEEDS_TAG)
    return FinalModel(metrics, model_uri, registered.version, decision.champion, decision=line, seeds=seeds)


def profile_path(model_id: str) -> str:
    """Where a logged model's training profile is kept on its run: a run may log several models."""
    return f"data_profile/{model_id}.json"


def training_profile(client: MlflowClient, version: ModelVersion) -> Profile | None:
    """The profile of the data `version` was trained on; None for a version from before they were kept, or
    one whose profile cannot be read (a warning says so: the comparison is a check, not the command's job)."""
    if PROFILE_TAG not in version.tags:
        return None
    try:
        return Profile.from_dict(json.loads(artifact_text(client, version.run_id, version.tags[PROFILE_TAG])))
    except Exception as err:  # a missing artifact, a store that failed, a profile of another layout
        print(
            f"warning: {version.tags[PROFILE_TAG]} of models:/{version.name}/{version.version} cannot be read "
            f"({type(err).__name__}): rows are not compared with its training data",
            file=sys.stderr,
        )
        return None


def keep_decision(tracker: Tracker, name: str, version: str, run_id: str, tags: dict[str, str]) -> None:
    """The champion rule's line and comparison, on the version and on the run that registered it."""
    for key, value in tags.items():
        tracker.client.set_model_version_tag(name, version, key, value)
        tracker.set_tag(run_id, key, value)


def log_model(trainer: PipelineTrainer, run_id: str, trial_run_id: str | None) -> str:
    """Log the model and its tokenizer to `run_id` as an MLflow transformers model; its URI."""
    signature = infer_signature(["some text"], [{"label": "a label", "score": 0.5}])
    with mlflow.start_run(run_id=run_id, nested=True):
        return mlflow.transformers.log_model(
            transformers_model={"model": trainer.model, "tokenizer": trainer.processing_class},
            name="model",
            task="text-classification",
            signature=signature,
            pip_requirements=PIP_REQUIREMENTS,
            tags={TRIAL_RUN_TAG: trial_run_id} if trial_run_id else None,
        ).model_uri


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


def check_data(tracker: Tracker, name: str, data_fingerprint: str) -> None:
    """Refuse to add to a registered model whose versions were scored on other data: the champion rule
    ranks versions by test accuracy, which compares only on the same test rows. (Versions untagged, or
    tagged with the older path-dependent fingerprint, cannot tell, and are taken as they are.)"""
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    tagged = [v for v in versions if is_content_fingerprint(v.tags.get(DATA_TAG, ""))]
    other = [v for v in tagged if v.tags[DATA_TAG] != data_fingerprint]
    if other:
        first = min(other, key=lambda v: int(v.version))
        raise PipelineError(
            f"registry.name={name}: version {first.version} was trained and scored on other data (train, "
            "validation or test rows differ from this run's); use a new registry.name, or dataset.name=NAME "
            "for a new experiment"
        )


def registered_from(tracker: Tracker, cfg: RegistryConfig, trial_run_id: str | None, run_id: str) -> FinalModel | None:
    """The version an earlier run registered from the same best trial, if any: a rerun whose best trial
    did not change would only score the same weights again and store another copy of them. The version's
    tags and the run's `pipeline.model_uri` are completed if a killed final step left them out."""
    if not trial_run_id:
        return None
    name = cfg.name
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    found = [v for v in versions if v.tags.get(TRIAL_RUN_TAG) == trial_run_id and TEST_METRIC in v.tags]
    if not found:
        return None
    version = min(found, key=lambda v: int(v.version))
    # Tagged together; the intervals only since they were recorded.
    metrics = {key: float(version.tags[key]) for key in (TEST_METRIC, F1_METRIC, *INTERVAL_TAGS) if key in version.tags}
    model_uri = f"models:/{name}/{version.version}"
    # What a final step killed after registering left unwritten.
    if RUN_ID_TAG not in version.tags:
        tracker.client.set_model_version_tag(name, version.version, RUN_ID_TAG, version.run_id or run_id)
    tracker.set_tag(run_id, MODEL_URI_TAG, model_uri)
    # Said as things stand now (the alias may have moved since), and kept if a killed step left it unsaid.
    decision = Rule(tracker, cfg).promote(version.version)
    line = promotion.decision_line(version.version, decision, cfg, baseline_from_tags(version))
    if promotion.DECISION_TAG not in version.tags:
        keep_decision(tracker, name, version.version, run_id, promotion.decision_tags(decision, line))
    seeds = version.tags.get(SEEDS_TAG)
    return FinalModel(metrics, model_uri, version.version, decision.champion, decision=line, seeds=seeds)


def baseline_from_tags(version: ModelVersion) -> str | None:
    """`promotion.baseline_line`, shortened, for a registered version: from its tags."""
    if version.tags.get(promotion.BASELINE_TAG) != "false":
        return None
    p_value = version.tags.get(promotion.BASELINE_P_TAG)
    said = f"{float(p_value):.2g}" if p_value else "?"  # as the final step said it: p=0.76, not p=0.756575
    return f"no better than the training split's majority class (p={said}): it will not become the champion"
