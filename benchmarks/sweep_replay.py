"""How often the default search reaches the grid's best within its time budget, over many sampler seeds,
replayed in seconds against a grid recorded once (no training here).

Record a dense grid first (its learning rates must include the comparison grid's `--float-points` values;
7 log-spaced points include the 3 of the default grid):

    python benchmarks/sweep_to_best.py --train-samples 256 --float-points 7 --repeats 0 --grid-storage sqlite:///grid.db
    python benchmarks/sweep_replay.py --grid-storage sqlite:///grid.db [--seeds 30] [search.pruner=hyperband ...]

Each replayed trial asks the pipeline's own sampler and pruner (as configured) for a point, takes the
recorded trial nearest to it (a float snapped to the nearest recorded value on its scale), reports that
trial's per-epoch accuracies to the pruner, and costs its recorded seconds (a pruned trial: the epochs it
ran). A search stops at the grid's size in trials or when `--budget` of the grid's time is spent.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics

import harness
import optuna
from sweep_to_best import grid_of

from pipeline.search.space import Param, hp_space, load_space
from pipeline.search.study import (
    TrialSeededSampler,
    make_pruner,
    make_sampler,
    open_study,
)


def load_grid(storage: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="grid", storage=storage)
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def duration(trial: optuna.trial.FrozenTrial) -> float:
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def nearest(trials: list[optuna.trial.FrozenTrial], params: dict, space: list[Param]):
    """The recorded trial closest to `params`: same categorical and int values, nearest float values."""

    def distance(trial: optuna.trial.FrozenTrial) -> float:
        far = 0.0
        for param in space:
            mine, theirs = params[param.name], trial.params[param.name]
            if param.type != "float":
                far += 0.0 if mine == theirs else math.inf
            else:
                far += abs(math.log(mine / theirs)) if param.log else abs(mine - theirs)
        return far

    return min(trials, key=distance)


def replay(
    cfg, grid: list[optuna.trial.FrozenTrial], space: list[Param], seed: int, budget_s: float, n_trials: int
) -> tuple[int, list[tuple[float, int, float]]]:
    """One search: its trial count, and (seconds when it finished, number, value) of each completed trial."""
    clock, finished = 0.0, []

    def objective(trial: optuna.Trial) -> float:
        nonlocal clock
        recorded = nearest(grid, hp_space(space)(trial), space)
        seconds = duration(recorded)
        epochs = len(recorded.intermediate_values)
        for epoch, value in sorted(recorded.intermediate_values.items()):
            trial.report(value, epoch)
            if trial.should_prune():
                clock += seconds * epoch / epochs
                raise optuna.TrialPruned()
        clock += seconds
        finished.append((clock, trial.number, recorded.value))
        return recorded.value

    study = open_study(cfg.search, space, optuna.storages.InMemoryStorage(), {**cfg.trainer})
    sampler = TrialSeededSampler(lambda trial_seed: make_sampler(cfg.search, trial_seed), seed)
    study.sampler, study.pruner = sampler, make_pruner(cfg.search)
    study.optimize(objective, n_trials=n_trials, callbacks=[lambda s, _: clock >= budget_s and s.stop()])
    return len(study.trials), finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid-storage", required=True, help="the Optuna storage sweep_to_best recorded its grid in")
    parser.add_argument("--float-points", type=int, default=3, help="values per float range in the comparison grid")
    parser.add_argument("--seeds", type=int, default=30, help="searches, each with its own sampler seed")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the pipeline's config")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = harness.config(*args.overrides)
    space = load_space(cfg.search.space)
    recorded = load_grid(args.grid_storage)
    values = grid_of(space, args.float_points)
    wanted = [dict(zip(values, point)) for point in itertools.product(*values.values())]
    comparison = [t for t in recorded if any(t.params == point for point in wanted)]
    if len(comparison) != len(wanted):
        raise SystemExit(f"the recorded grid holds {len(comparison)} of the {len(wanted)} comparison points")
    grid_total = sum(duration(t) for t in comparison)
    target = max(t.value for t in comparison) - args.tolerance
    rows = []
    for seed in range(cfg.seed, cfg.seed + args.seeds):
        trials, finished = replay(cfg, recorded, space, seed, args.budget * grid_total, len(wanted))
        hit = next((s for s, _, v in finished if v >= target), math.inf)
        sampled = next((s for s, number, v in finished if v >= target and number > 0), math.inf)  # not the start
        rows.append(
            {
                "seed": seed,
                "trials": trials,
                "best": max(v for _, _, v in finished),
                "of_grid": hit / grid_total,
                "sampled_of_grid": sampled / grid_total,
            }
        )
    print(
        f"comparison grid: {len(wanted)} points, {grid_total:.0f} s, target {target:.4f}; "
        f"search: {cfg.search.sampler.name} + {cfg.search.pruner.name} pruning, {args.budget} of the grid's time"
    )
    print(harness.table(rows, list(rows[0])))
    within = sum(r["of_grid"] <= args.budget for r in rows)
    sampled_within = sum(r["sampled_of_grid"] <= args.budget for r in rows)
    harness.result_line(
        seeds=len(rows),
        within_budget=f"{within}/{len(rows)}",
        sampled_within_budget=f"{sampled_within}/{len(rows)}",
        median_fraction=statistics.median(r["of_grid"] for r in rows),
    )


if __name__ == "__main__":
    main()
