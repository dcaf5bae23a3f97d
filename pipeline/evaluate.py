"""`python -m pipeline.evaluate URI FILE --label-column L`: score a model on new labelled rows (a file, or the
test split of an AG News release with --data-dir). Prints accuracy, macro-F1 and per-class scores beside the
version's recorded test accuracy; for a registered version, logs an MLflow run (tag pipeline.role=evaluation)
with the metrics, the data as an input and the confusion matrix, linked to the version both ways."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from pipeline import classifier
from pipeline.data import files
from pipeline.data.profile import Shift, profile, shift
from pipeline.data.read import read_ag_news_csv
from pipeline.errors import PipelineError
from pipeline.runtime import interrupts, startup
from pipeline.tracking import internals as mlflow_internals
from pipeline.tracking import report
from pipeline.tracking.tracker import ROLE_TAG, ended_as_the_block_ends
from pipeline.training.metrics import PER_CLASS, TEST_METRIC, Scored, metric_name, said

MODEL_VERSION_TAG = "pipeline.model_version"  # on the evaluation run: models:/NAME/VERSION
EVALUATION_TAG = "pipeline.evaluation_run"  # on the version: its latest evaluation run
# On the evaluation run: how the rows differ from the training data, "none", or "not judged: too few rows".
DRIFT_TAG = "pipeline.drift"


@dataclass(frozen=True)
class Labelled:
    """The rows to score: their texts and true labels, and where they came from."""

    rows: pd.DataFrame
    texts: list[str]
    truth: list[str]
    source: str


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__)
    parser.add_argument("uri", help="models:/NAME@champion, models:/NAME/VERSION, or a saved model directory")
    parser.add_argument("file", nargs="?", help="a labelled CSV, JSONL, JSON or Parquet file")
    parser.add_argument("--label-column", default="label", help="the file's label column (default: label)")
    parser.add_argument("--data-dir", help="instead of FILE: an AG News CSV release directory, scored on its test.csv")
    classifier.add_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return startup.command(arguments(), run, argv)


def run(args: argparse.Namespace) -> dict[str, float]:
    classifier.check_options(args)
    labelled = read_labelled(args)
    model = classifier.from_options(args)
    unknown = sorted(set(labelled.truth) - set(model.labels))
    if unknown:
        raise PipelineError(
            f"{labelled.source}: labels {unknown} are not among the model's labels {model.labels}; "
            "fix the labels or evaluate a model trained on them"
        )
    predicted, _ = model.label_of(model.probabilities(labelled.texts, args.batch_size, progress=True))
    scored = Scored(model.labels, labelled.truth, predicted)
    metrics = scored.metrics()
    version = classifier.registered_version(args.uri, args.tracking_uri)
    print(summary(args.uri, labelled, scored, metrics, version, model.where()))
    here = profile(labelled.texts, labelled.truth, model.tokenizer, top_tokens=0) if model.profile else None
    drift = shift(model.profile, here) if here else None
    if drift is not None and drift.far:
        rows = f"the {len(labelled.texts)} rows of {labelled.source}"
        print(drift.line(rows, "scores here and on the test split are not comparable (docs/uncertainty.md)"))
    if version is not None:
        run_id = log_evaluation(args.tracking_uri, version, labelled, scored, model, drift)
        print(
            f"logged as MLflow run {run_id} (tag {ROLE_TAG}=evaluation); {EVALUATION_TAG} on "
            f"models:/{version.name}/{version.version}"
        )
    return metrics


def read_labelled(args: argparse.Namespace) -> Labelled:
    if bool(args.file) == bool(args.data_dir):
        raise PipelineError("give a labelled FILE or --data-dir DIR (one of the two)")
    if args.data_dir:
        _, test = read_ag_news_csv(args.data_dir)
        names = test.features["label"].names
        rows = test.to_pandas()
        return Labelled(rows, list(rows["text"]), [names[i] for i in rows["label"]], f"--data-dir={args.data_dir}")
    where = f"FILE={args.file}"
    rows = files.read_rows(args.file, "FILE")
    files.require_columns(rows, [args.label_column], where, "--label-column")
    rows = rows[rows[args.label_column].notna()]
    texts = files.texts_of(rows, classifier.text_columns(args), where)
    return Labelled(rows, texts, [str(v).strip() for v in rows[args.label_column]], where)


def summary(uri: str, labelled: Labelled, scored: Scored, metrics: dict[str, float], version, where: str) -> str:
    recorded = version.tags.get(TEST_METRIC) if version is not None else None
    then = f" (test accuracy when registered: {float(recorded):.4f})" if recorded else ""
    lines = [
        f"{uri} on {labelled.source} ({len(labelled.texts)} rows), run on {where}",
        f"{said(metrics, prefix='')}{then}",
        f"{'label':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}",
    ]
    for label in scored.labels:
        precision, recall, f1, support = (metrics[f"{kind}_{metric_name(label)}"] for kind in PER_CLASS)
        lines.append(f"{str(label):<20} {precision:>9.4f} {recall:>9.4f} {f1:>9.4f} {int(support):>8}")
    return "\n".join(lines)


def log_evaluation(
    tracking_uri: str, version, labelled: Labelled, scored: Scored, model: classifier.Classifier, drift: Shift | None
) -> str:
    """An MLflow run in the version's experiment: metrics (with the rows' shift from the training data, where
    the version kept its profile), the data as an input, the confusion matrix, and where the model ran: params
    `quantized` (int8) and `device` (`cuda:0 (NVIDIA H200, bfloat16)`)."""
    client = interrupts.HeldDuringWrites(MlflowClient(tracking_uri, tracking_uri))  # Ctrl-C: no half a write
    experiment_id = client.get_run(version.run_id).info.experiment_id
    model_uri = f"models:/{version.name}/{version.version}"
    tags = {
        ROLE_TAG: "evaluation",
        MODEL_VERSION_TAG: model_uri,
        MLFLOW_RUN_NAME: f"evaluate-{version.name}-v{version.version}",
    }
    if drift is not None:
        tags[DRIFT_TAG] = "; ".join(drift.far) or ("none" if drift.judged else "not judged: too few rows")
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    with ended_as_the_block_ends(client, run_id):
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in (scored.metrics() | (drift.metrics() if drift else {})).items()],
            params=[Param("quantized", str(model.quantized).lower()), Param("device", model.where())],
        )
        path = labelled.source.split("=", 1)[1]
        mlflow.set_tracking_uri(tracking_uri)
        with mlflow_internals.quiet_dataset_warnings(), mlflow.start_run(run_id=run_id):
            dataset = mlflow.data.from_pandas(labelled.rows, source=path, name=Path(path).name)
            mlflow.log_input(dataset, context="evaluation")
        report.log_confusion_matrix(client, run_id, scored, f"{model_uri} on {labelled.source}")
        client.set_model_version_tag(version.name, version.version, EVALUATION_TAG, run_id)
    return run_id


if __name__ == "__main__":
    sys.exit(main())
