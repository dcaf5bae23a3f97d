"""MLflow tracking overhead: the same one-trial search with the pipeline's tracking on vs off.

    python benchmarks/tracking_overhead.py [--model minilm] [--train-samples 400] [--repeats 2]

On: a parent run per study, a child run per trial, params, per-epoch eval metrics and the training
loss every `--logging-steps` steps, into SQLite, exactly as `python -m pipeline` logs. Off: none of it.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import harness
import optuna

from pipeline.schema import TrackingConfig
from pipeline.search.space import Param, hp_space
from pipeline.search.study import DIRECTION
from pipeline.tracking.callbacks import TrialRuns
from pipeline.tracking.tracker import Tracker
from pipeline.training.args import training_args
from pipeline.training.trainer import build_trainer, objective


def one_search(cfg, prep: harness.Prepared, tracker: Tracker | None, logging_steps: int) -> float:
    """Seconds for a one-trial search of the fixed trainer values, with or without tracking."""
    with tempfile.TemporaryDirectory() as out:
        storage = optuna.storages.InMemoryStorage()
        space = [Param("num_train_epochs", "categorical", choices=(cfg.trainer.num_train_epochs,))]
        study = optuna.create_study(study_name="s", storage=storage, direction=DIRECTION)
        started = time.perf_counter()
        args = training_args(cfg.trainer, out, cfg.seed, disable_tqdm=True, logging_steps=logging_steps)
        trainer = build_trainer(args, prep.model_init, prep.tokenized, prep.tokenizer)
        if tracker:
            parent = tracker.study_run(f"s-{time.time_ns()}")
            trainer.add_callback(TrialRuns(tracker, parent, trainer, {"model": cfg.model.name}))
        trainer.hyperparameter_search(
            hp_space=hp_space(space),
            compute_objective=objective,
            n_trials=1,
            direction=DIRECTION,
            backend="optuna",
            study_name="s",
            storage=storage,
            load_if_exists=True,
        )
        if tracker:
            tracker.outbox.drain()  # every write sent, as a search's end waits for them
            tracker.close_trial_runs(parent, study)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-samples", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--logging-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = harness.config(
        f"model={args.model}",
        f"dataset.max_train_samples={args.train_samples}",
        "dataset.max_eval_samples=200",
        f"trainer.num_train_epochs={args.epochs}",
    )
    prep = harness.prepare(cfg)
    store = tempfile.TemporaryDirectory()
    # Creating the store (schema migrations) happens once per project, not per training: outside the timing.
    tracker = Tracker(
        TrackingConfig(uri=f"sqlite:///{store.name}/mlflow.db", experiment="bench", artifact_dir=f"{store.name}/a")
    )
    timings = {False: [], True: []}
    for _ in range(args.repeats):  # interleaved, so drift on the machine hits both sides alike
        for tracked in (False, True):
            timings[tracked].append(one_search(cfg, prep, tracker if tracked else None, args.logging_steps))
    off, on = min(timings[False]), min(timings[True])
    rows = [
        {"tracking": "off", "seconds": off, "runs": str([round(t, 1) for t in timings[False]])},
        {"tracking": "on (MLflow, SQLite)", "seconds": on, "runs": str([round(t, 1) for t in timings[True]])},
    ]
    print(
        f"\nmodel={args.model}, {args.train_samples} rows x {args.epochs} epochs, loss logged every "
        f"{args.logging_steps} steps; best of {args.repeats}; {harness.machine()}"
    )
    print(harness.table(rows, ["tracking", "seconds", "runs"]))
    harness.result_line(off_s=off, on_s=on, overhead_pct=100 * (on - off) / off)


if __name__ == "__main__":
    main()
