"""Training throughput on AG News: the naive tutorial recipe vs the pipeline's defaults, step by step.

    python benchmarks/train_throughput.py [--model minilm] [--steps 40] [--naive-steps 8]

Naive: padding="max_length" (512), fp32, tokenized afresh and the model reloaded from disk per trial,
random sampler. Each row adds one of the pipeline's fast paths; the last row is the pipeline as shipped
(bf16 where the processor has it: trainer.bf16=auto). `--quick`: fewer steps, the same rows and result keys.
Samples/s counts the training loop only; `trial_setup_s` is what each trial pays before it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import harness
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
)

from pipeline.data.read import label_names
from pipeline.training import model
from pipeline.training.args import training_args
from pipeline.training.trainer import PipelineTrainer


@dataclass
class Variant:
    name: str
    max_length: int
    padding: str  # "max_length" (tutorials) or "batch" (DataCollatorWithPadding)
    sampling: str  # TrainingArguments.train_sampling_strategy
    per_trial_load: bool  # tokenizer, tokenization and weights redone for every trial
    bf16: object = False  # trainer.bf16: the naive recipe trains in fp32; the pipeline's default is `auto`


def variants(cfg) -> list[Variant]:
    return [
        Variant("naive", 512, "max_length", "random", True),
        Variant("+ per-batch padding", 512, "batch", "random", True),
        Variant(f"+ max_length {cfg.dataset.max_length}", cfg.dataset.max_length, "batch", "random", True),
        Variant("+ length-grouped batches", cfg.dataset.max_length, "batch", "group_by_length", True),
        Variant("+ weights loaded once", cfg.dataset.max_length, "batch", cfg.trainer.train_sampling_strategy, False),
        Variant(
            f"pipeline defaults (bf16={cfg.trainer.bf16})",
            cfg.dataset.max_length,
            "batch",
            cfg.trainer.train_sampling_strategy,
            False,
            cfg.trainer.bf16,
        ),
    ]


def measure(variant: Variant, cfg, prep: harness.Prepared, steps: int) -> dict:
    """Train `steps` batches with one variant; returns samples/s, tokens/s and per-trial setup time."""
    started = time.perf_counter()
    splits = prep.splits
    if variant.per_trial_load:
        source = model.weights_source(cfg.model)
        tokenizer = AutoTokenizer.from_pretrained(source)
        encoded = splits.map(
            lambda b: tokenizer(b["text"], truncation=True, max_length=variant.max_length, padding=_pad(variant)),
            batched=True,
            remove_columns=["text"],
            load_from_cache_file=False,  # naive: tokenized afresh
        )
        net = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(label_names(splits)))
    else:
        tokenizer, encoded, net = prep.tokenizer, prep.tokenized, prep.model_init()
    setup = time.perf_counter() - started
    args = training_args(
        cfg.trainer,
        "/tmp/bench-throughput",
        cfg.seed,
        max_steps=steps,
        train_sampling_strategy=variant.sampling,
        logging_steps=10_000,
        disable_tqdm=True,
        bf16=variant.bf16,
    )
    trainer = PipelineTrainer(  # the pipeline's order of length-grouped batches
        model=net,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    samples = steps * args.per_device_train_batch_size
    real_tokens = statistics.fmean(
        sum(t != tokenizer.pad_token_id for t in ids) for ids in encoded["train"]["input_ids"][:2000]
    )
    return {
        "variant": variant.name,
        "samples": samples,
        "samples_per_s": samples / seconds,
        "tokens_per_s": samples * real_tokens / seconds,
        "trial_setup_s": setup,
    }


def _pad(variant: Variant) -> str | bool:
    return "max_length" if variant.padding == "max_length" else False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--steps", type=int, default=40, help="training steps per fast variant")
    parser.add_argument("--naive-steps", type=int, default=8, help="training steps for the slow max_length=512 rows")
    parser.add_argument("--quick", action="store_true", help="20 steps per fast variant, 4 for the slow ones")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.naive_steps = 20, 4
    cfg = harness.config(f"model={args.model}")
    prep = harness.prepare(cfg)  # tokenized once per run, weights loaded once, as the pipeline does
    rows = []
    for variant in variants(cfg):
        steps = args.naive_steps if variant.max_length == 512 else args.steps
        rows.append(measure(variant, cfg, prep, steps))
        rows[-1]["ratio"] = rows[-1]["samples_per_s"] / rows[0]["samples_per_s"]
        print(harness.table(rows[-1:], list(rows[-1])), flush=True)
    print(f"\nmodel={args.model}, batch {cfg.trainer.per_device_train_batch_size}, {harness.machine()}")
    print(harness.table(rows, ["variant", "samples", "samples_per_s", "tokens_per_s", "trial_setup_s", "ratio"]))
    harness.result_line(
        naive_sps=rows[0]["samples_per_s"],
        fp32_sps=rows[-2]["samples_per_s"],
        pipeline_sps=rows[-1]["samples_per_s"],
        ratio=rows[-1]["ratio"],
        bf16_ratio=rows[-1]["samples_per_s"] / rows[-2]["samples_per_s"],
        naive_setup_s=rows[0]["trial_setup_s"],
        pipeline_setup_s=rows[-1]["trial_setup_s"],
    )


if __name__ == "__main__":
    main()
