"""After the search, as users go on: classify files with the champion (CSV, JSONL, Parquet, stdin), evaluate
it on new labelled rows (an MLflow evaluation run linked to the version), and serve it over HTTP with
`mlflow models serve`. One tiny search on a CSV of string labels, written fresh, makes the champion."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from devtools.commands import pipeline_env, run_pipeline, tracking_uri
from devtools.services import free_port
from pipeline.data import files
from pipeline.data.splits import load_splits
from pipeline.evaluate import DRIFT_TAG, EVALUATION_TAG, MODEL_VERSION_TAG
from pipeline.tracking.registry import PROFILE_TAG
from pipeline.tracking.report import CONFUSION_MATRIX
from pipeline.tracking.tracker import ROLE_TAG
from tests.conftest import compose_config, run_command_said, write_space
from tests.mlflow_ui import wait_for
from tests.test_own_csv import TOPICS, command, write_reviews

CHAMPION = "models:/local@champion"
LABELS = sorted(TOPICS)


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A project directory whose store holds a registered champion trained on string labels."""
    root = tmp_path_factory.mktemp("after")
    work = root / "project"
    work.mkdir()
    data = write_reviews(root / "data" / "reviews.csv")
    # A learning rate this tiny model learns at: a model no better than the majority class never holds champion.
    fixed = {"learning_rate": [3e-3], "per_device_train_batch_size": [8]}
    learnable = write_space(root, {key: {"type": "categorical", "choices": one} for key, one in fixed.items()})
    result = run_pipeline(work, *command(data), f"search.space={learnable}", "trainer.num_train_epochs=6")
    assert result.returncode == 0, result.stderr[-3000:]
    uri = tracking_uri(work)
    return work, uri, MlflowClient(uri, uri)


def predict(work, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run_pipeline(work, *args, module="pipeline.predict", input=stdin)


def new_texts() -> pd.DataFrame:
    """Rows for the model to classify, with an id to check the order and a column the model never saw."""
    words = [TOPICS[label] for label in LABELS]
    return pd.DataFrame({"id": range(9), "body": [f"{words[i % 3]} fresh {i}" for i in range(9)], "note": ["n"] * 9})


def test_the_registered_version_has_per_class_test_metrics(champion):
    _, _, client = champion
    version = client.get_model_version_by_alias("local", "champion")
    run = client.get_run(version.run_id)
    for label in LABELS:
        assert 0 <= float(version.tags[f"test_f1_{label}"]) <= 1
        assert {f"test_precision_{label}", f"test_recall_{label}", f"test_support_{label}"} <= set(run.data.metrics)


@pytest.mark.slow
def test_predict_classifies_csv_jsonl_parquet_and_stdin_keeping_the_rows_and_their_order(champion, tmp_path):
    work, _, _ = champion
    rows = new_texts()
    rows.to_csv(tmp_path / "in.csv", index=False)
    rows.to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    rows.to_parquet(tmp_path / "in.parquet")
    outputs = {}
    for suffix in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"out.{suffix}"
        result = predict(
            work,
            CHAMPION,
            "--input",
            str(tmp_path / f"in.{suffix}"),
            "--text-columns",
            "body",
            "--output",
            str(out),
            "--all-scores",
            "--batch-size",
            "4",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[suffix] = {
            "csv": pd.read_csv,
            "jsonl": lambda p: pd.read_json(p, lines=True),
            "parquet": pd.read_parquet,
        }[suffix](out)
    for suffix, found in outputs.items():
        assert list(found["id"]) == list(range(9)) and list(found["note"]) == ["n"] * 9, suffix
        assert set(found["label"]) <= set(LABELS)
        scores = found[[f"score_{label}" for label in LABELS]]
        assert scores.sum(axis=1).round(4).eq(1).all()
        assert (found["score"] - scores.max(axis=1)).abs().max() < 1e-6
        assert list(found["label"]) == list(outputs["csv"]["label"])  # the format does not change the answer
    stdin = predict(work, CHAMPION, "--input", "-", stdin="\n".join(new_texts()["body"]) + "\n")
    assert stdin.returncode == 0, stdin.stderr[-3000:]
    printed = pd.read_csv(pd.io.common.StringIO(stdin.stdout))
    assert list(printed.columns) == ["text", "label", "score"]
    assert list(printed["label"]) == list(outputs["csv"]["label"])


@pytest.mark.slow
def test_ctrl_c_during_predict_exits_130_with_one_line_and_no_output_file(champion, tmp_path):
    work, _, _ = champion
    rows = pd.concat([new_texts()] * 20_000, ignore_index=True)  # 180,000 rows: seconds of classifying
    rows.to_csv(tmp_path / "big.csv", index=False)
    out, log = tmp_path / "labelled.csv", tmp_path / "predict.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.predict",
                CHAMPION,
                "--input",
                str(tmp_path / "big.csv"),
                "--text-columns",
                "body",
                "--output",
                str(out),
            ],
            cwd=work,
            env=pipeline_env(),
            stderr=stderr,
        )
    deadline = time.monotonic() + 120
    while "classify:" not in log.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, log.read_text()[-3000:]
    said = log.read_text()
    assert "interrupted (Ctrl-C): run the same command again" in said and "Traceback" not in said
    assert sorted(tmp_path.iterdir()) == sorted([tmp_path / "big.csv", log])  # no labelled.csv, whole or half


def test_an_output_that_fails_halfway_leaves_the_file_that_was_there(tmp_path):
    class Unprintable:
        def __str__(self) -> str:
            raise OSError("disk full")  # what a write that fails halfway raises

    out = tmp_path / "labelled.csv"
    out.write_text("label,score\nsport,0.9\n")
    rows = pd.DataFrame({"text": ["a"] * 5000 + [Unprintable()], "label": ["sport"] * 5001})
    with pytest.raises(OSError, match="disk full"):
        files.write_rows(rows, str(out))
    assert out.read_text() == "label,score\nsport,0.9\n"
    assert list(tmp_path.iterdir()) == [out]  # nothing half-written beside it either


def test_predict_prints_a_label_and_its_score_per_text_on_the_command_line(champion):
    work, _, _ = champion
    result = predict(work, CHAMPION, "match goal team tonight", "bank market shares fall", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{CHAMPION} on cpu (" in result.stderr  # where it ran, beside the rows, not among them
    assert "Loading weights" not in result.stderr and "resolved as" not in result.stderr  # a pipe: no bars, no INFO
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert len(lines) == 2 and all(label in LABELS and 0 < float(score) <= 1 for label, score in lines)


@pytest.mark.slow
def test_predict_quantized_to_int8_gives_close_probabilities(champion, tmp_path):
    work, _, _ = champion
    new_texts().to_csv(tmp_path / "in.csv", index=False)
    found = {}
    for name, extra in (("plain", []), ("int8", ["--quantize"])):
        out = tmp_path / f"{name}.csv"
        result = predict(
            work,
            CHAMPION,
            "--input",
            str(tmp_path / "in.csv"),
            "--text-columns",
            "body",
            "--all-scores",
            "--output",
            str(out),
            *extra,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        found[name] = pd.read_csv(out)
    columns = [f"score_{label}" for label in LABELS]
    assert list(found["int8"]["body"]) == list(found["plain"]["body"])
    assert (found["int8"][columns] - found["plain"][columns]).abs().max().max() < 0.05
    assert found["int8"][columns].sum(axis=1).round(4).eq(1).all()


# What the user sees from the real process; the other cases run in this process.
REAL_PROCESS_CASES = {"unknown format", "unregistered name"}


@pytest.mark.parametrize(
    "case, args, says",
    [
        ("missing column", ["--input", "{dir}/in.csv", "--text-columns", "title"], "column 'title' not found"),
        ("empty file", ["--input", "{dir}/empty.csv"], "no rows"),
        ("unknown format", ["--input", "{dir}/in.xlsx"], "unknown format '.xlsx'"),
        (
            "unquoted comma",
            ["--input", "{dir}/ragged.csv", "--text-columns", "body"],
            "ragged.csv: line 2 has 2 fields, the header 1 (body)",
        ),
        (
            "no such alias",
            ["--input", "{dir}/in.csv", "--text-columns", "body", "--model", "models:/local@nobody"],
            "nobody",
        ),
        (
            "unregistered name",
            ["--input", "{dir}/in.csv", "--text-columns", "body", "--model", "models:/locale@champion"],
            "registered models here: local (did you mean 'local'?)",
        ),
        (
            "output under a file",
            ["--input", "{dir}/in.csv", "--text-columns", "body", "--output", "{dir}/in.csv/rows.csv"],
            "--output={dir}/in.csv/rows.csv: {dir}/in.csv is a file, not a directory",
        ),
        (
            "unknown device",
            ["--input", "{dir}/in.csv", "--text-columns", "body", "--device", "tpu"],
            "--device=tpu: choose one of auto, cpu, cuda",
        ),
        (
            "mistyped store",
            ["--input", "{dir}/in.csv", "--text-columns", "body", "--tracking-uri", "sqlite:///{dir}/typo/mlflow.db"],
            "no such file",
        ),
    ],
)
def test_bad_predict_input_is_one_error_line(champion, tmp_path, monkeypatch, capsys, case, args, says):
    work, uri, _ = champion
    new_texts().to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "empty.csv").write_text("body\n")
    (tmp_path / "ragged.csv").write_text("body\nhello, world\nfine\n")  # pandas: index 'hello', text ' world'
    args = [a.format(dir=tmp_path) for a in args]
    model = CHAMPION
    if "--model" in args:
        at = args.index("--model")
        model, args = args[at + 1], args[:at] + args[at + 2 :]
    if case in REAL_PROCESS_CASES:
        result = predict(work, model, *args)
        code, stderr = result.returncode, result.stderr
    else:  # the case's own --tracking-uri, if it has one, comes later and wins
        code, _, stderr = run_command_said(
            monkeypatch, capsys, work, "pipeline.predict", model, "--tracking-uri", uri, *args
        )
    assert code == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says.format(dir=tmp_path) in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr
    assert not (tmp_path / "typo").exists()  # a mistyped store is not created


@pytest.mark.slow
def test_evaluate_logs_an_evaluation_run_linked_to_the_version(champion, tmp_path):
    work, _, client = champion
    labelled = new_texts().assign(topic=[LABELS[i % 3] for i in range(9)])
    labelled.to_parquet(tmp_path / "week.parquet")  # its id column: integers
    result = run_pipeline(
        work,
        CHAMPION,
        str(tmp_path / "week.parquet"),
        "--label-column",
        "topic",
        "--text-columns",
        "body",
        module="pipeline.evaluate",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy when registered" in result.stdout
    # 9 rows: a wide interval, said beside the score.
    assert re.search(r"accuracy [\d.]+ \(95% [\d.]+-[\d.]+, 9 rows\), f1 macro [\d.]+ \([\d.]+-[\d.]+\)", result.stdout)
    assert "Inferred schema contains integer" not in result.stderr, result.stderr  # MLflow's hint on the id column
    version = client.get_model_version_by_alias("local", "champion")
    run = client.get_run(version.tags[EVALUATION_TAG])
    assert run.data.tags[ROLE_TAG] == "evaluation" and run.info.status == "FINISHED"
    assert run.data.tags[MODEL_VERSION_TAG] == f"models:/local/{version.version}"
    assert run.info.experiment_id == client.get_run(version.run_id).info.experiment_id
    assert {"accuracy", "f1_macro", *(f"f1_{label}" for label in LABELS)} <= set(run.data.metrics)
    assert run.data.metrics["accuracy_low"] <= run.data.metrics["accuracy"] <= run.data.metrics["accuracy_high"]
    assert run.data.metrics["rows"] == 9
    assert run.data.metrics["support_money"] == 3 and run.data.params["quantized"] == "false"
    device = "cuda:0" if torch.cuda.is_available() else "cpu"  # --device auto
    assert run.data.params["device"].startswith(f"{device} (") and f"run on {device} (" in result.stdout
    (source,) = run.inputs.dataset_inputs
    assert source.dataset.name == "week.parquet" and {t.value for t in source.tags} == {"evaluation"}
    assert CONFUSION_MATRIX in {a.path for a in client.list_artifacts(run.info.run_id)}

    # Labels the model does not know: one line naming them, nothing logged.
    labelled.assign(topic="cooking").to_csv(tmp_path / "other.csv", index=False)
    other = run_pipeline(
        work,
        CHAMPION,
        str(tmp_path / "other.csv"),
        "--label-column",
        "topic",
        "--text-columns",
        "body",
        module="pipeline.evaluate",
    )
    assert other.returncode == 2 and "['cooking'] are not among the model's labels" in other.stderr
    assert client.get_model_version_by_alias("local", "champion").tags[EVALUATION_TAG] == run.info.run_id


@pytest.mark.slow
def test_evaluate_and_predict_say_when_rows_are_unlike_the_training_data_and_only_then(champion, tmp_path):
    work, _, client = champion
    version = client.get_model_version_by_alias("local", "champion")
    kept = Path(client.download_artifacts(version.run_id, version.tags[PROFILE_TAG], str(tmp_path)))
    kept = json.loads(kept.read_text())
    cfg = compose_config(*command(work.parent / "data" / "reviews.csv"))
    train = load_splits(cfg.dataset, cfg.seed)["train"]
    names = train.features["label"].names
    counts = Counter(names[i] for i in train["label"])
    assert kept["rows"] == len(train) and kept["labels"] == {k: counts[k] / len(train) for k in sorted(counts)}
    # New rows of the training file's shape and token (a fresh token splits into another number of pieces).
    like = pd.read_csv(work.parent / "data" / "reviews.csv")
    like = like.assign(body=like["body"].str.replace(" item ", " new item ", regex=False))
    like.to_csv(tmp_path / "like.csv", index=False)
    unlike = like[like["topic"] != "science"].assign(body=lambda rows: (rows["body"] + " ") * 5)
    unlike.to_csv(tmp_path / "unlike.csv", index=False)
    said = {}
    for name, path in (("like", tmp_path / "like.csv"), ("unlike", tmp_path / "unlike.csv")):
        options = ["--label-column", "topic", "--text-columns", "body"]
        evaluated = run_pipeline(work, CHAMPION, str(path), *options, module="pipeline.evaluate")
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        run = client.get_run(client.get_model_version_by_alias("local", "champion").tags[EVALUATION_TAG])
        predicted = predict(work, CHAMPION, "--input", str(path), "--text-columns", "body")
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        said[name] = (evaluated.stdout, predicted.stderr, run.data)
    evaluated, predicted, logged = said["like"]
    assert "unlike" not in evaluated and "unlike" not in predicted
    assert logged.tags[DRIFT_TAG] == "none" and 0.75 < logged.metrics["drift_length_ratio"] < 1.33
    evaluated, predicted, logged = said["unlike"]
    shift = re.escape(f"the 60 rows of FILE={tmp_path / 'unlike.csv'} are unlike the training data: texts ")
    label = r"label 'science' on 0% of rows \(\d+% in training\)"
    pattern = rf"warning: {shift}[\d.]+x as long \(median \d+ tokens, \d+ in training\); {label}: scores here and on"
    assert re.search(pattern, evaluated), evaluated
    assert "warning: the 60 texts of --input=" in predicted and "x as long (median" in predicted
    assert "label" not in predicted.split("warning:")[1]  # predict has no labels to compare
    assert 4 < logged.metrics["drift_length_ratio"] < 7  # 5 times the text, one word more
    assert logged.metrics["drift_label_share_change"] == pytest.approx(kept["labels"]["science"])
    assert logged.tags[DRIFT_TAG].startswith(f"texts {logged.metrics['drift_length_ratio']:.1f}x as long")


@pytest.mark.slow
def test_the_champion_served_by_mlflow_answers_labels_and_scores_over_http(champion):
    work, uri, _ = champion
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        CHAMPION,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = pipeline_env(MLFLOW_TRACKING_URI=uri)
    with open(work / "serve.log", "w") as log:
        server = subprocess.Popen(
            command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server, 180)
        for body in (
            {"inputs": ["match goal team", "lab study cells"]},
            {"dataframe_split": {"columns": ["text"], "data": [["match goal team"], ["lab study cells"]]}},
        ):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=60) as answer:
                predictions = json.loads(answer.read())["predictions"]
            assert len(predictions) == 2
            assert all(p["label"] in LABELS and 0 < p["score"] <= 1 for p in predictions), predictions
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
