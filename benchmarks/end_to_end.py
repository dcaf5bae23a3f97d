"""Wall time from the command to a registered, test-scored champion: the plain Hugging Face recipe against the
pipeline's default command, at the same trial budget, on the same rows and model (all-MiniLM-L6-v2).

    python benchmarks/end_to_end.py [--train-rows 400] [--eval-rows 200] [--trials 3] [--seeds 42,7] [--quick]

Baseline, the recipe of the Hugging Face documentation that users copy, in a process of its own: the tokenizer
with `padding="max_length"` (the model's 512 tokens), `Trainer(model_init=...)` with `report_to="mlflow"`
(the built-in MLflowCallback), `trainer.hyperparameter_search(backend="optuna", n_trials=N)`, then the best
parameters trained again (its `BestRun` has no weights), `trainer.evaluate` on test, and
`mlflow.transformers.log_model` + `mlflow.register_model`. Its search space is the pipeline's
(`sweeps/batch_epochs.yaml`; `--quick`: one epoch), not HF's default one (up to 5 epochs, batch 4 to 64), so that
both sides train comparable trials. Pipeline: the default command, `python -m pipeline model=minilm
dataset.data_dir=...`, with the same rows, space and `search.n_trials`,
timed whole. Both read the pipeline's own splits of ../shared's AG News
(`dataset.max_train_samples`, `dataset.max_eval_samples`), fp32 against `trainer.bf16=auto`.
`--quick`: 128 training rows, 256 validation and test rows, 2 trials of one epoch at batch 8, one seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

from devtools.commands import study_storage, tracking_uri

SPACE = harness.ROOT / "sweeps" / "batch_epochs.yaml"
# One epoch at batch 8 and a higher learning rate: few rows, yet a model well above chance.
QUICK_SPACE = """\
per_device_train_batch_size: {type: categorical, choices: [8]}
num_train_epochs: {type: categorical, choices: [1]}
learning_rate: {type: float, low: 1.0e-4, high: 3.0e-4, log: true}
"""


# The pipeline's first trial is conf/trainer's values: in the quick space, these.
QUICK_START = ["trainer.num_train_epochs=1", "trainer.per_device_train_batch_size=8", "trainer.learning_rate=1.5e-4"]


def baseline(work: Path, space: Path, rows: tuple[int, int], trials: int, seed: int) -> dict:
    """The documentation's recipe, timed phase by phase; runs in its own process (see main)."""
    import mlflow
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )

    from pipeline.data.read import label_names
    from pipeline.data.splits import load_splits
    from pipeline.search import space as spaces
    from pipeline.training import model

    phases, started = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        phases[name] = time.perf_counter() - started
        started = time.perf_counter()

    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("baseline", (work / "artifacts").as_uri()))
    cfg = harness.config("model=minilm", f"dataset.max_train_samples={rows[0]}", f"dataset.max_eval_samples={rows[1]}")
    splits = load_splits(cfg.dataset, seed)  # the same rows the pipeline reads
    source = model.weights_source(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    labels = label_names(splits)
    lap("load")
    tokenized = splits.map(lambda b: tokenizer(b["text"], padding="max_length", truncation=True), batched=True)
    lap("tokenize")

    def model_init(trial=None):
        return AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(labels))

    def accuracy(prediction) -> dict:
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    args = TrainingArguments(
        str(work / "trainer"),
        eval_strategy="epoch",
        report_to=["mlflow"],
        seed=seed,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model_init=model_init,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        compute_metrics=accuracy,
    )
    best = trainer.hyperparameter_search(
        direction="maximize", backend="optuna", n_trials=trials, hp_space=spaces.hp_space(spaces.load_space(str(space)))
    )
    lap("search")
    for name, value in best.hyperparameters.items():
        setattr(trainer.args, name, value)
    trainer.train()  # BestRun holds the parameters, not the weights
    lap("retrain")
    test = trainer.evaluate(tokenized["test"], metric_key_prefix="test")
    lap("test")
    if mlflow.active_run() is None:  # the MLflowCallback leaves the retraining's run open: log into it
        mlflow.start_run()
    info = mlflow.transformers.log_model(
        {"model": trainer.model, "tokenizer": tokenizer},
        name="model",
        task="text-classification",
        pip_requirements=["transformers", "torch"],
    )
    mlflow.register_model(info.model_uri, "baseline")
    mlflow.end_run()
    lap("register")
    return {
        "phases": phases,
        "validation_accuracy": best.objective,
        "test_accuracy": test["test_accuracy"],
        "trials": trials,
    }


def pipeline(work: Path, space: Path, rows: tuple[int, int], trials: int, seed: int, overrides: list[str]) -> dict:
    """The pipeline's default command, in a subprocess; phases from its study's trial times."""
    import optuna

    command = [
        sys.executable,
        "-m",
        "pipeline",
        "model=minilm",
        f"dataset.data_dir={harness.AG_NEWS_DIR}",
        f"dataset.max_train_samples={rows[0]}",
        f"dataset.max_eval_samples={rows[1]}",
        f"search.space={space}",
        f"search.n_trials={trials}",
        f"seed={seed}",
        "search.study_name=e2e",
        "registry.name=e2e",
        *overrides,
    ]
    started = time.time()
    done = subprocess.run(command, cwd=work, env=harness.env(), capture_output=True, text=True)
    ended = time.time()
    if done.returncode != 0:
        sys.exit(f"the pipeline failed:\n{done.stderr[-3000:]}")
    study = optuna.load_study(study_name="e2e", storage=study_storage(work))
    first = min(t.datetime_start for t in study.trials).timestamp()
    last = max(t.datetime_complete for t in study.trials).timestamp()
    return {
        "phases": {"start, load, tokenize": first - started, "search": last - first, "final step": ended - last},
        "validation_accuracy": study.best_value,
        "test_accuracy": _pipeline_test_accuracy(work),
        "trials": len(study.trials),
        "wall_s": ended - started,  # the command alone, not this process's own imports
    }


def _pipeline_test_accuracy(work: Path) -> float:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri(work))
    version = client.get_model_version_by_alias("e2e", "champion")
    return client.get_run(version.run_id).data.metrics["test_accuracy"]


def timed_side(
    side: str, work: Path, space: Path, rows: tuple[int, int], trials: int, seed: int, overrides: list[str]
) -> dict:
    """One side in a fresh process, timed whole (the pipeline's: its command, timed inside): imports and
    start-up count on both sides."""
    work.mkdir(parents=True)
    command = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--work",
        str(work),
        "--space",
        str(space),
        "--train-rows",
        str(rows[0]),
        "--eval-rows",
        str(rows[1]),
        "--trials",
        str(trials),
        "--seeds",
        str(seed),
        "--overrides",
        *overrides,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=harness.env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall} | found | {"side": side, "seed": seed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--eval-rows", type=int, default=200, help="validation rows, and test rows")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seeds", help="comma-separated; each side runs once per seed (default 42,7; --quick: 42)")
    parser.add_argument(
        "--quick", action="store_true", help="128 training rows, 256 validation and test rows, 2 one-epoch trials"
    )
    parser.add_argument("--side", choices=["baseline", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--space",
        type=Path,
        default=SPACE,
        help="the search space of both sides (default: sweeps/batch_epochs.yaml; --quick: one epoch at batch 8)",
    )
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        help="more of the pipeline command's overrides; its first "
        "trial is its trainer.* values, which must lie in --space (--quick: %s)" % " ".join(QUICK_START),
    )
    args = parser.parse_args()
    seeds = [int(s) for s in (args.seeds or ("42" if args.quick else "42,7")).split(",")]
    rows = (args.train_rows, args.eval_rows)
    if args.side:  # one side, in the process timed_side started
        side_args = (args.work, args.space, rows, args.trials, seeds[0])
        found = baseline(*side_args) if args.side == "baseline" else pipeline(*side_args, args.overrides)
        print(json.dumps(found))
        return
    with tempfile.TemporaryDirectory() as tmp:
        space = args.space
        if args.quick:
            rows, args.trials = (128, 256), 2
            space = Path(tmp) / "quick.yaml"
            space.write_text(QUICK_SPACE)
            args.overrides = [*QUICK_START, *args.overrides]
        results = []
        for seed in seeds:
            for side in ("pipeline", "baseline"):
                results.append(
                    timed_side(side, Path(tmp) / f"{side}-{seed}", space, rows, args.trials, seed, args.overrides)
                )
                print(json.dumps(results[-1]), flush=True)
    report(results, rows, args.trials, args.quick)


def report(results: list[dict], rows: tuple[int, int], trials: int, quick: bool) -> None:
    for found in results:
        where = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in found["phases"].items())
        print(
            f"{found['side']} seed {found['seed']}: {found['wall_s']:.1f} s, best validation accuracy "
            f"{found['validation_accuracy']:.4f}, test accuracy {found['test_accuracy']:.4f}, {found['trials']} "
            f"trials ({where})"
        )
    mean = {
        side: {
            key: statistics.fmean(r[key] for r in results if r["side"] == side) for key in ("wall_s", "test_accuracy")
        }
        for side in ("baseline", "pipeline")
    }
    print(f"\n{rows[0]} training rows, {rows[1]} validation and test rows, {trials} trials, {harness.machine()}")
    print(f"reproduce: python benchmarks/end_to_end.py{' --quick' if quick else ''}")
    harness.result_line(
        baseline_s=mean["baseline"]["wall_s"],
        pipeline_s=mean["pipeline"]["wall_s"],
        baseline_test_accuracy=mean["baseline"]["test_accuracy"],
        pipeline_test_accuracy=mean["pipeline"]["test_accuracy"],
        ratio=mean["baseline"]["wall_s"] / mean["pipeline"]["wall_s"],
    )


if __name__ == "__main__":
    main()
