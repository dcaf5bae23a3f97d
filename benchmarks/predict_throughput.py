"""Texts per second classifying AG News test texts from a file: `python -m pipeline.predict DIR --input FILE`
(one process: load once, length-sorted batches, inference_mode, bf16 where the processor has it) against the
naive way, `transformers.pipeline("text-classification")` called once per text in fp32, on the same model.

    python benchmarks/predict_throughput.py [--texts 1600] [--quick]

The model is all-MiniLM-L6-v2 with a classification head, saved as the pipeline saves its final model
(tokenizer truncating at dataset.max_length); its weights do not change the speed. The pipeline's time is the
whole command (start, load, classify, write); the naive loop's excludes loading. `--quick`: 400 texts.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from transformers import AutoModelForSequenceClassification, pipeline

from pipeline import data, model


def save_model(cfg, directory: Path, labels: list[str]) -> None:
    tokenizer = model.load_tokenizer(cfg.model)
    tokenizer.model_max_length = cfg.dataset.max_length  # as pipeline.prepare saves it
    net = AutoModelForSequenceClassification.from_pretrained(
        model.weights_source(cfg.model), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    net.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def naive(directory: Path, texts: list[str]) -> float:
    classify = pipeline("text-classification", model=str(directory), tokenizer=str(directory))
    started = time.perf_counter()
    for text in texts:
        classify(text, truncation=True)
    return time.perf_counter() - started


def with_pipeline(directory: Path, texts_file: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.predict", str(directory), "--input", str(texts_file),
                    "--output", str(out)], check=True, capture_output=True, cwd=harness.ROOT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1600)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 400 if args.quick else args.texts
    cfg = harness.config("model=minilm")
    _, test = data.read_ag_news_csv(cfg.dataset.data_dir)
    texts = list(test["text"][:count])
    with tempfile.TemporaryDirectory() as tmp:
        directory, texts_file = Path(tmp) / "model", Path(tmp) / "texts.csv"
        save_model(cfg, directory, test.features["label"].names)
        test.select(range(count)).to_pandas()[["text"]].to_csv(texts_file, index=False)
        pipeline_s = with_pipeline(directory, texts_file, Path(tmp) / "out.csv")
        naive_s = naive(directory, texts)
    print(f"{count} texts, model=minilm, {harness.machine()}")
    print(f"naive (pipeline() per text, fp32, load excluded): {naive_s:.1f} s, {count / naive_s:.1f} texts/s")
    print(f"python -m pipeline.predict --input (whole command): {pipeline_s:.1f} s, {count / pipeline_s:.1f} texts/s")
    harness.result_line(texts=count, naive_tps=count / naive_s, pipeline_tps=count / pipeline_s, ratio=naive_s / pipeline_s)


if __name__ == "__main__":
    main()
