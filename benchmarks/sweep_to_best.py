"""Wall time to the best validation accuracy: the pipeline's default search (the experiment's starting
point as trial 0, then TPE with per-epoch median pruning, through `search.run`) vs a full grid without
pruning over the same discrete space, same data, same model. A third row shows the search without the
starting point (TPE + pruning alone), so the share each part contributes is visible.

    python benchmarks/sweep_to_best.py [--model minilm] [--train-samples 256] [--eval-samples 400]

"Reached" means a completed trial within `--tolerance` (0.005 = half a point) of the grid's best.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile

import harness
import optuna

from pipeline import search, train

# The experiment's starting point (trainer: 3 epochs, batch 16, lr 5e-5) is one of the grid's points.
GRID = {
    "per_device_train_batch_size": [16, 32],
    "num_train_epochs": [1, 2, 3],
    "learning_rate": [2e-5, 5e-5, 1e-4],
}
SPACE = [search.Param(name, "categorical", choices=tuple(values)) for name, values in GRID.items()]


def new_trainer(cfg, prep: harness.Prepared, out: str) -> train.PipelineTrainer:
    args = train.training_args(cfg.trainer, out, cfg.seed, disable_tqdm=True, logging_steps=10_000)
    return train.build_trainer(args, prep.model_init, prep.tokenized, prep.tokenizer)


def run_grid(cfg, prep: harness.Prepared) -> optuna.Study:
    """Every point of GRID, in the grid sampler's order, none pruned."""
    study = optuna.create_study(direction=search.DIRECTION, study_name="grid")
    with tempfile.TemporaryDirectory() as out:
        new_trainer(cfg, prep, out).hyperparameter_search(
            hp_space=search.hp_space(SPACE), compute_objective=train.objective, direction=search.DIRECTION,
            n_trials=len(list(itertools.product(*GRID.values()))), backend="optuna", study_name="grid",
            storage=study._storage, load_if_exists=True,
            sampler=optuna.samplers.GridSampler(GRID, seed=cfg.seed), pruner=optuna.pruners.NopPruner(),
        )
    return study


def run_pipeline_search(cfg, prep: harness.Prepared, with_start: bool) -> optuna.Study:
    """The pipeline's own study and search code (search.n_trials trials), on an in-memory storage."""
    start = {**cfg.trainer} if with_start else None
    study = search.open_study(cfg.search, SPACE, optuna.storages.InMemoryStorage(), start)
    with tempfile.TemporaryDirectory() as out:
        search.run(new_trainer(cfg, prep, out), cfg.search, SPACE, study, cfg.seed)
    return study


def timeline(study: optuna.Study) -> tuple[float, list[tuple[float, float]]]:
    """Total wall seconds, and (seconds since start, value) for each completed trial in finishing order."""
    start = min(t.datetime_start for t in study.trials)
    end = max(t.datetime_complete for t in study.trials)
    done = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.datetime_complete)
    return (end - start).total_seconds(), [((t.datetime_complete - start).total_seconds(), t.value) for t in done]


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    return next((seconds for seconds, value in points if value >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-samples", type=int, default=256)
    parser.add_argument("--eval-samples", type=int, default=400)
    parser.add_argument("--trials", type=int, default=9, help="trials of each search (the grid has 18)")
    parser.add_argument("--tolerance", type=float, default=0.005)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = harness.config(
        f"model={args.model}", f"dataset.max_train_samples={args.train_samples}",
        f"dataset.max_eval_samples={args.eval_samples}", f"search.n_trials={args.trials}",
    )
    prep = harness.prepare(cfg)
    studies = {
        "grid, no pruning": run_grid(cfg, prep),
        "pipeline default (start + TPE + pruning)": run_pipeline_search(cfg, prep, with_start=True),
        "TPE + pruning, no starting point": run_pipeline_search(cfg, prep, with_start=False),
    }
    timelines = {name: timeline(study) for name, study in studies.items()}
    grid_total, grid_points = timelines["grid, no pruning"]
    grid_best = max(v for _, v in grid_points)
    target = grid_best - args.tolerance
    rows = []
    for name, study in studies.items():
        total, points = timelines[name]
        states = [t.state.name.lower() for t in study.trials]
        reached = time_to(points, target)
        rows.append({
            "search": name, "trials": len(states), "pruned": states.count("pruned"),
            "best_acc": max(v for _, v in points), "total_s": total,
            "to_target_s": reached if reached is not None else "never",
            "of_grid_total": reached / grid_total if reached is not None else "never",
        })
    print(f"\nmodel={args.model}, {args.train_samples} train / {args.eval_samples} validation rows, "
          f"target = grid best {grid_best:.4f} - {args.tolerance}; {harness.machine()}")
    print(harness.table(rows, list(rows[0])))
    default, no_start = rows[1], rows[2]
    harness.result_line(
        grid_total_s=grid_total, grid_best=grid_best, default_total_s=default["total_s"],
        default_best=default["best_acc"], default_to_target_s=default["to_target_s"],
        fraction_of_grid=default["of_grid_total"], no_start_fraction_of_grid=no_start["of_grid_total"],
    )


if __name__ == "__main__":
    main()
