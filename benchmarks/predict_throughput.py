"""Texts per second classifying AG News test texts from a file: the pipeline (`python -m pipeline.predict DIR
--input FILE`: load once, length-sorted batches, inference_mode, bf16 where the processor has it) against the
naive way, `transformers.pipeline("text-classification")` called once per text in fp32, on the same model;
then `--quantize` (int8 dynamic quantization), with each one's test accuracy; and what a trial's speed
measurement (`pipeline/training/speed.py`, on at most 512 texts after a warm-up batch) says of the same model,
against `pipeline.classifier` on all the texts (a search's latency budget trusts that figure).

    python benchmarks/predict_throughput.py [--texts 1600] [--train-rows 2400] [--quick]

Two ratios, each like for like. `ratio`: classifying alone, loading excluded on both sides, in this process
(the pipeline's side is `pipeline.classifier`, the code the command runs); this is what a large file sees.
`command_ratio`: whole processes on both sides, from start to the written file (the command against a script
that imports transformers, builds `pipeline()`, reads the CSV, loops and writes a CSV); start-up counts here.
The model is all-MiniLM-L6-v2 fine-tuned for one epoch on `--train-rows` AG News training rows with the
pipeline's defaults and saved as the pipeline saves its final model (tokenizer truncating at
dataset.max_length), so that accuracy means something. `--quick`: 400 texts, 800 training rows.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
import pandas as pd
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from pipeline import classifier
from pipeline.data.read import read_ag_news_csv
from pipeline.prepare import SPEED_TEXTS
from pipeline.training import speed
from pipeline.training.args import training_args
from pipeline.training.trainer import build_trainer

NAIVE_SCRIPT = """\
import sys
import pandas as pd
from transformers import pipeline
model, texts_file, out = sys.argv[1:]
classify = pipeline("text-classification", model=model, tokenizer=model)
texts = pd.read_csv(texts_file)["text"].tolist()
found = [classify(text, truncation=True)[0] for text in texts]
rows = {"text": texts, "label": [f["label"] for f in found], "score": [f["score"] for f in found]}
pd.DataFrame(rows).to_csv(out, index=False)
"""


def save_model(cfg, directory: Path) -> None:
    """MiniLM fine-tuned for one epoch with the pipeline's defaults, saved as its final model is."""
    prep = harness.prepare(cfg)
    prep.tokenizer.model_max_length = cfg.dataset.max_length  # as pipeline.prepare saves it
    args = training_args(cfg.trainer, str(directory.parent / "trainer"), cfg.seed, num_train_epochs=1)
    trainer = build_trainer(args, prep.model_init, prep.tokenized, prep.tokenizer)
    trainer.train()
    trainer.model.save_pretrained(directory)
    prep.tokenizer.save_pretrained(directory)


def naive_loop(directory: Path, texts: list[str]) -> float:
    classify = pipeline("text-classification", model=str(directory), tokenizer=str(directory))
    started = time.perf_counter()
    for text in texts:
        classify(text, truncation=True)
    return time.perf_counter() - started


def classifier_alone(directory: Path, texts: list[str], quantize: bool = False) -> float:
    model = classifier.load(str(directory), "", quantize)
    started = time.perf_counter()
    model.probabilities(texts)
    return time.perf_counter() - started


def trial_measurement(directory: Path, texts: list[str]) -> float:
    """Texts per second as a search's trial measures its model (training/speed.py), on the same texts it would get."""
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    return speed.measure(model, AutoTokenizer.from_pretrained(directory), texts[:SPEED_TEXTS]).predict_texts_per_s


def timed_process(*command: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=harness.ROOT, env=harness.env())
    return time.perf_counter() - started


def command(directory: Path, texts_file: Path, out: Path, *extra: str) -> float:
    return timed_process(
        sys.executable,
        "-m",
        "pipeline.predict",
        str(directory),
        "--input",
        str(texts_file),
        "--output",
        str(out),
        *extra,
    )


def accuracy(out: Path, truth: list[str]) -> float:
    return float((pd.read_csv(out)["label"] == pd.Series(truth)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1600)
    parser.add_argument("--train-rows", type=int, default=2400, help="AG News rows the model is fine-tuned on")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, rows = (400, 800) if args.quick else (args.texts, args.train_rows)
    cfg = harness.config("model=minilm", f"dataset.max_train_samples={rows}")
    _, test = read_ag_news_csv(cfg.dataset.data_dir)
    test = test.select(range(count))
    texts, names = list(test["text"]), test.features["label"].names
    truth = [names[i] for i in test["label"]]
    with tempfile.TemporaryDirectory() as tmp:
        directory, texts_file, out = Path(tmp) / "model", Path(tmp) / "texts.csv", Path(tmp) / "out"
        out.mkdir()
        save_model(cfg, directory)
        test.to_pandas()[["text"]].to_csv(texts_file, index=False)
        naive_s, pipeline_s, int8_s = (
            naive_loop(directory, texts),
            classifier_alone(directory, texts),
            classifier_alone(directory, texts, quantize=True),
        )
        trial_tps = trial_measurement(directory, texts)
        script_s = timed_process(
            sys.executable, "-c", NAIVE_SCRIPT, str(directory), str(texts_file), str(out / "naive.csv")
        )
        command_s = command(directory, texts_file, out / "pipeline.csv")
        int8_command_s = command(directory, texts_file, out / "int8.csv", "--quantize")
        found = {name: accuracy(out / f"{name}.csv", truth) for name in ("naive", "pipeline", "int8")}
    print(f"{count} texts, model=minilm fine-tuned 1 epoch on {rows} rows, {harness.machine()}")
    print(
        f"classifying alone, loading excluded (texts/s): naive pipeline() per text, fp32 {count / naive_s:.1f}; "
        f"pipeline.classifier {count / pipeline_s:.1f}; with --quantize {count / int8_s:.1f}"
    )
    print(
        f"whole process, start to written file: naive script {script_s:.1f} s; python -m pipeline.predict --input "
        f"{command_s:.1f} s; with --quantize {int8_command_s:.1f} s"
    )
    print(
        f"a trial's speed measurement on the same model: {trial_tps:.1f} texts/s, "
        f"{trial_tps / (count / pipeline_s):.2f}x pipeline.classifier's"
    )
    print(
        f"test accuracy: naive {found['naive']:.4f}, pipeline {found['pipeline']:.4f}, --quantize {found['int8']:.4f}"
    )
    print(f"reproduce: python benchmarks/predict_throughput.py{' --quick' if args.quick else ''}")
    harness.result_line(
        texts=count,
        naive_tps=count / naive_s,
        pipeline_tps=count / pipeline_s,
        ratio=naive_s / pipeline_s,
        naive_script_s=script_s,
        command_s=command_s,
        command_ratio=script_s / command_s,
        int8_tps=count / int8_s,
        trial_tps=trial_tps,
        trial_vs_classifier=trial_tps / (count / pipeline_s),
        int8_ratio=naive_s / int8_s,
        accuracy=found["pipeline"],
        accuracy_change=found["pipeline"] - found["naive"],
        int8_accuracy_change=found["int8"] - found["pipeline"],
    )


if __name__ == "__main__":
    main()
