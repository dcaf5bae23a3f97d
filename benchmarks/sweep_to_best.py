"""Wall time to the best validation accuracy: the pipeline's search (TPE + median pruning, per-epoch
reports) vs a full grid without pruning, over the same discrete space, same data, same model.

    python benchmarks/sweep_to_best.py [--model minilm] [--train-samples 256] [--eval-samples 160]

"Reached" means a completed trial within `--tolerance` (0.005 = half a point) of the grid's best.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile

import harness
import optuna

from pipeline import search, train

GRID = {
    "per_device_train_batch_size": [16, 32],
    "num_train_epochs": [1, 2, 3],
    "learning_rate": [2e-5, 1e-4],
}


def run_search(cfg, prep: harness.Prepared, sampler, pruner, n_trials: int, name: str) -> optuna.Study:
    storage = optuna.storages.InMemoryStorage()
    space = [search.Param(k, "categorical", choices=tuple(v)) for k, v in GRID.items()]
    with tempfile.TemporaryDirectory() as out:
        args = train.training_args(cfg.trainer, out, cfg.seed, disable_tqdm=True, logging_steps=10_000)
        trainer = train.build_trainer(args, prep.model_init, prep.tokenized, prep.tokenizer)
        trainer.hyperparameter_search(
            hp_space=search.hp_space(space), compute_objective=train.objective, n_trials=n_trials,
            direction=search.DIRECTION, backend="optuna", study_name=name, storage=storage,
            sampler=sampler, pruner=pruner,
        )
    return optuna.load_study(study_name=name, storage=storage)


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
    parser.add_argument("--eval-samples", type=int, default=160)
    parser.add_argument("--tpe-trials", type=int, default=6, help="half the grid's 12 trials")
    parser.add_argument("--tolerance", type=float, default=0.005)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = harness.config(
        f"model={args.model}", f"dataset.max_train_samples={args.train_samples}",
        f"dataset.max_eval_samples={args.eval_samples}",
    )
    prep = harness.prepare(cfg)
    n_grid = len(list(itertools.product(*GRID.values())))

    grid = run_search(cfg, prep, optuna.samplers.GridSampler(GRID, seed=cfg.seed),
                      optuna.pruners.NopPruner(), n_grid, "grid")
    tpe = run_search(cfg, prep, search.make_sampler(cfg.search, cfg.seed),
                     search.make_pruner(cfg.search), args.tpe_trials, "tpe")

    grid_total, grid_points = timeline(grid)
    tpe_total, tpe_points = timeline(tpe)
    grid_best = max(v for _, v in grid_points)
    target = grid_best - args.tolerance
    rows = []
    for name, study, total, points in (("grid, no pruning", grid, grid_total, grid_points),
                                       ("TPE + median pruning", tpe, tpe_total, tpe_points)):
        states = [t.state.name.lower() for t in study.trials]
        reached = time_to(points, target)
        rows.append({
            "search": name, "trials": len(states), "pruned": states.count("pruned"),
            "best_acc": max(v for _, v in points), "total_s": total,
            "to_target_s": reached if reached is not None else "never",
        })
    print(f"\nmodel={args.model}, {args.train_samples} train / {args.eval_samples} validation rows, "
          f"target = grid best {grid_best:.4f} - {args.tolerance}; {harness.machine()}")
    print(harness.table(rows, list(rows[0])))
    tpe_reach = time_to(tpe_points, target)
    harness.result_line(
        grid_total_s=grid_total, grid_best=grid_best, tpe_total_s=tpe_total,
        tpe_best=rows[1]["best_acc"], tpe_to_target_s=tpe_reach if tpe_reach is not None else "never",
        fraction_of_grid=(tpe_reach / grid_total) if tpe_reach is not None else "never",
    )


if __name__ == "__main__":
    main()
