"""Texts per second classifying AG News test texts from a file: `python -m pipeline.predict DIR --input FILE`
(one process: load once, length-sorted batches, inference_mode, bf16 where the processor has it) against the
naive way, `transformers.pipeline("text-classification")` called once per text in fp32, on the same model;
then the same command with `--quantize` (int8 dynamic quantization), with each one's test accuracy.

    python benchmarks/predict_throughput.py [--texts 1600] [--train-rows 2400] [--quick]

The model is all-MiniLM-L6-v2 fine-tuned for one epoch on `--train-rows` AG News training rows with the
pipeline's defaults and saved as the pipeline saves its final model (tokenizer truncating at
dataset.max_length), so that accuracy means something. The pipeline's time is the whole command (start, load,
classify, write); the naive loop's excludes loading. `--quick`: 400 texts, 800 training rows.
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
from transformers import pipeline

from pipeline import data, train


def save_model(cfg, directory: Path) -> None:
    """MiniLM fine-tuned for one epoch with the pipeline's defaults, saved as its final model is."""
    prep = harness.prepare(cfg)
    prep.tokenizer.model_max_length = cfg.dataset.max_length  # as pipeline.prepare saves it
    args = train.training_args(cfg.trainer, str(directory.parent / "trainer"), cfg.seed, num_train_epochs=1)
    trainer = train.build_trainer(args, prep.model_init, prep.tokenized, prep.tokenizer)
    trainer.train()
    trainer.model.save_pretrained(directory)
    prep.tokenizer.save_pretrained(directory)


def naive(directory: Path, texts: list[str]) -> float:
    classify = pipeline("text-classification", model=str(directory), tokenizer=str(directory))
    started = time.perf_counter()
    for text in texts:
        classify(text, truncation=True)
    return time.perf_counter() - started


def with_pipeline(directory: Path, texts_file: Path, out: Path, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.predict", str(directory), "--input", str(texts_file),
                    "--output", str(out), *extra], check=True, capture_output=True, cwd=harness.ROOT)
    return time.perf_counter() - started


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
    _, test = data.read_ag_news_csv(cfg.dataset.data_dir)
    test = test.select(range(count))
    texts, names = list(test["text"]), test.features["label"].names
    truth = [names[i] for i in test["label"]]
    with tempfile.TemporaryDirectory() as tmp:
        directory, texts_file = Path(tmp) / "model", Path(tmp) / "texts.csv"
        save_model(cfg, directory)
        test.to_pandas()[["text"]].to_csv(texts_file, index=False)
        pipeline_s = with_pipeline(directory, texts_file, Path(tmp) / "out.csv")
        int8_s = with_pipeline(directory, texts_file, Path(tmp) / "int8.csv", "--quantize")
        pipeline_acc, int8_acc = accuracy(Path(tmp) / "out.csv", truth), accuracy(Path(tmp) / "int8.csv", truth)
        naive_s = naive(directory, texts)
    print(f"{count} texts, model=minilm fine-tuned 1 epoch on {rows} rows, {harness.machine()}")
    print(f"naive (pipeline() per text, fp32, load excluded): {naive_s:.1f} s, {count / naive_s:.1f} texts/s")
    print(f"python -m pipeline.predict --input (whole command): {pipeline_s:.1f} s, {count / pipeline_s:.1f} texts/s, "
          f"test accuracy {pipeline_acc:.4f}")
    print(f"  ... --quantize (int8): {int8_s:.1f} s, {count / int8_s:.1f} texts/s, test accuracy {int8_acc:.4f}")
    harness.result_line(texts=count, naive_tps=count / naive_s, pipeline_tps=count / pipeline_s, ratio=naive_s / pipeline_s,
                        int8_tps=count / int8_s, int8_ratio=naive_s / int8_s, accuracy=pipeline_acc,
                        int8_accuracy_change=int8_acc - pipeline_acc)


if __name__ == "__main__":
    main()
