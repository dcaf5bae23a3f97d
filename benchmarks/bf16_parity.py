"""Does bf16 hold accuracy? The seed recipe (conf/trainer: batch 16, 3 epochs, lr 5e-5) trained in fp32 and in
bf16, over several seeds, on AG News from ../shared; validation and test accuracy of each, their mean
differences, and the wall time ratio. `trainer.bf16=auto` is the default only if bf16 stays within 0.5 point.

    python benchmarks/bf16_parity.py [--model minilm] [--seeds 42 7 1] [--quick]

`--quick`: 1,000 training rows, 1 epoch, 2 seeds; the same result keys.
"""

from __future__ import annotations

import argparse
import statistics
import time

import harness

from pipeline.training import precision
from pipeline.training.args import training_args
from pipeline.training.trainer import build_trainer


def run(cfg, prep: harness.Prepared, bf16: bool, out: str) -> dict:
    args = training_args(cfg.trainer, out, cfg.seed, bf16=bf16, logging_steps=10_000, disable_tqdm=True)
    trainer = build_trainer(args, prep.model_init, prep.tokenized, prep.tokenizer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    validation = trainer.evaluate()["eval_accuracy"]
    test = trainer.predict(prep.tokenized["test"], metric_key_prefix="test").metrics["test_accuracy"]
    return {
        "seed": cfg.seed,
        "precision": "bf16" if bf16 else "fp32",
        "validation": validation,
        "test": test,
        "train_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    quick = ["dataset.max_train_samples=1000", "trainer.num_train_epochs=1"] if args.quick else []
    seeds = args.seeds[:2] if args.quick else args.seeds
    if not precision.supports_bf16():
        print("this machine has no native bf16 (CUDA bf16, AVX512-BF16 or AMX): both rows would measure emulation")
    rows = []
    for seed in seeds:
        cfg = harness.config(f"model={args.model}", f"seed={seed}", *quick)
        prep = harness.prepare(cfg)
        for bf16 in (False, True):
            rows.append(run(cfg, prep, bf16, f"/tmp/bench-bf16-{seed}-{bf16}"))
            print(harness.table(rows[-1:], list(rows[-1])), flush=True)
    print(f"\nmodel={args.model}, {harness.machine()}")
    print(harness.table(rows, ["seed", "precision", "validation", "test", "train_s"]))

    def mean(kind: str, key: str) -> float:
        return statistics.fmean(r[key] for r in rows if r["precision"] == kind)

    harness.result_line(
        fp32_validation=mean("fp32", "validation"),
        bf16_validation=mean("bf16", "validation"),
        fp32_test=mean("fp32", "test"),
        bf16_test=mean("bf16", "test"),
        validation_diff_points=100 * (mean("bf16", "validation") - mean("fp32", "validation")),
        test_diff_points=100 * (mean("bf16", "test") - mean("fp32", "test")),
        speedup=mean("fp32", "train_s") / mean("bf16", "train_s"),
    )


if __name__ == "__main__":
    main()
