"""Wall time to the best validation accuracy: the pipeline's default search vs a full grid without pruning
over the same space, on the same data and model, in one process.

The search is the pipeline's own code on its default space (`sweeps/<search.space>.yaml`): `open_study`
with the experiment's starting point enqueued as trial 0, then `search.optimize` (TPE + per-epoch median
pruning). The grid is the plain loop a user would write over that space: every choice of a categorical,
every value of an int range, and `--float-points` values of a float range (log-spaced for a log range).
The grid runs first; each search then gets `--budget` of the grid's wall time (`search.timeout`: no trial
starts after it) and at most as many trials as the grid has points.

    python benchmarks/sweep_to_best.py [--model minilm] [--train-samples 512] [--eval-samples 400] [--repeats 2]

"Reached" means a completed trial within `--tolerance` (0.005 = half a point) of the grid's best. Repeats
rerun the search with other sampler seeds (training is seeded the same), to show how often it gets there.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile

import harness
import numpy as np
import optuna

from pipeline.search import internals as search_internals
from pipeline.search.space import Param, hp_space, load_space
from pipeline.search.study import DIRECTION, open_study, optimize
from pipeline.training.args import training_args
from pipeline.training.trainer import PipelineTrainer, build_trainer, objective


def grid_of(space: list[Param], float_points: int) -> dict[str, list]:
    """The values a plain loop over `space` would try."""
    grid = {}
    for param in space:
        if param.type == "categorical":
            grid[param.name] = list(param.choices)
        elif param.type == "int":
            grid[param.name] = list(range(int(param.low), int(param.high) + 1, int(param.step or 1)))
        else:
            spaced = np.geomspace if param.log else np.linspace
            grid[param.name] = [float(f"{v:.3g}") for v in spaced(param.low, param.high, float_points)]
    return grid


def new_trainer(cfg, prep: harness.Prepared, out: str) -> PipelineTrainer:
    args = training_args(cfg.trainer, out, cfg.seed, disable_tqdm=True, logging_steps=10_000)
    return build_trainer(args, prep.model_init, prep.tokenized, prep.tokenizer)


def run_grid(cfg, prep: harness.Prepared, grid: dict[str, list], storage: str | None) -> optuna.Study:
    """Every point of the grid, in the grid sampler's order, none pruned."""
    study = optuna.create_study(direction=DIRECTION, study_name="grid", storage=storage)
    space = [Param(name, "categorical", choices=tuple(values)) for name, values in grid.items()]
    with tempfile.TemporaryDirectory() as out:
        new_trainer(cfg, prep, out).hyperparameter_search(
            hp_space=hp_space(space),
            compute_objective=objective,
            direction=DIRECTION,
            n_trials=len(list(itertools.product(*grid.values()))),
            backend="optuna",
            study_name="grid",
            storage=search_internals.storage_of(study),
            load_if_exists=True,
            sampler=optuna.samplers.GridSampler(grid, seed=cfg.seed),
            pruner=optuna.pruners.NopPruner(),
        )
    return study


def run_pipeline_search(cfg, prep: harness.Prepared, space: list[Param], seed: int) -> optuna.Study:
    """The pipeline's own study and search code (search.n_trials trials), on an in-memory storage."""
    study = open_study(cfg.search, space, optuna.storages.InMemoryStorage(), {**cfg.trainer})
    with tempfile.TemporaryDirectory() as out:
        optimize(new_trainer(cfg, prep, out), cfg.search, space, study, seed)
    return study


def timeline(study: optuna.Study, first: int = 0) -> tuple[float, list[tuple[float, float]]]:
    """Total wall seconds, and (seconds since start, value) for each completed trial numbered `first` or
    later, in finishing order."""
    start = min(t.datetime_start for t in study.trials)
    end = max(t.datetime_complete for t in study.trials)
    done = sorted(
        (t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.number >= first),
        key=lambda t: t.datetime_complete,
    )
    return (end - start).total_seconds(), [((t.datetime_complete - start).total_seconds(), t.value) for t in done]


def trial_rows(study: optuna.Study) -> list[dict]:
    """Each trial in starting order: its point, how it ended, its (last reported) accuracy, when it finished."""
    start = min(t.datetime_start for t in study.trials)
    return [
        {
            "trial": t.number,
            **{"_".join(name.split("_")[-2:]): value for name, value in t.params.items()},
            "state": t.state.name.lower(),
            "accuracy": t.value if t.value is not None else max(t.intermediate_values.values(), default="-"),
            "done_s": (t.datetime_complete - start).total_seconds(),
        }
        for t in sorted(study.trials, key=lambda t: t.number)
    ]


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    return next((seconds for seconds, value in points if value >= target), None)


def as_number(cell: float | str) -> float:
    """A table cell of time or fraction as a number: "never" is infinity."""
    return math.inf if cell == "never" else cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-samples", type=int, default=512)
    parser.add_argument("--eval-samples", type=int, default=400)
    parser.add_argument("--trials", type=int, help="most trials of each search (default: the grid's size)")
    parser.add_argument("--budget", type=float, default=0.5, help="each search's time, as a fraction of the grid's")
    parser.add_argument(
        "--repeats", type=int, default=2, help="searches, each with its own sampler seed (0: only record the grid)"
    )
    parser.add_argument("--float-points", type=int, default=3, help="grid values per float range")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--grid-storage", help="an Optuna storage URL to keep the grid's trials in (a new study)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = harness.config(
        f"model={args.model}",
        f"dataset.max_train_samples={args.train_samples}",
        f"dataset.max_eval_samples={args.eval_samples}",
    )
    prep = harness.prepare(cfg)
    space = load_space(cfg.search.space)
    grid = grid_of(space, args.float_points)
    points = len(list(itertools.product(*grid.values())))
    studies = {f"grid ({points} points), no pruning": run_grid(cfg, prep, grid, args.grid_storage)}
    cfg.search.n_trials = args.trials or points
    cfg.search.timeout = round(args.budget * timeline(next(iter(studies.values())))[0])
    for i in range(args.repeats):
        seed = cfg.seed + 1000 * i  # the first is the pipeline's own configured seed
        studies[f"default search, sampler seed {seed}"] = run_pipeline_search(cfg, prep, space, seed)
    timelines = {name: timeline(study) for name, study in studies.items()}
    grid_name = next(iter(studies))
    grid_total, grid_points = timelines[grid_name]
    grid_best = max(v for _, v in grid_points)
    target = grid_best - args.tolerance
    rows = []
    for name, study in studies.items():
        total, points = timelines[name]
        states = [t.state.name.lower() for t in study.trials]
        reached = time_to(points, target)
        # A search's trial 0 is the experiment's starting point: when did a trial the sampler chose get there?
        sampled = time_to(timeline(study, first=1)[1], target) if name != grid_name else None
        rows.append(
            {
                "search": name,
                "trials": len(states),
                "pruned": states.count("pruned"),
                "best_acc": max(v for _, v in points),
                "total_s": total,
                "to_target_s": reached if reached is not None else "never",
                "of_grid_total": reached / grid_total if reached is not None else "never",
                "sampled_of_grid_total": (
                    "-" if name == grid_name else sampled / grid_total if sampled is not None else "never"
                ),
            }
        )
    print(
        f"\nmodel={args.model}, {args.train_samples} train / {args.eval_samples} validation rows, space "
        f"{cfg.search.space}; target = grid best {grid_best:.4f} - {args.tolerance}; each search: at most "
        f"{cfg.search.n_trials} trials, search.timeout={cfg.search.timeout} s; {harness.machine()}"
    )
    print(harness.table(rows, list(rows[0])))
    for name, study in studies.items():
        trials = trial_rows(study)
        print(f"\n{name} (a pruned trial shows its best reported accuracy):")
        print(harness.table(trials, list(trials[0])))
    searches = rows[1:]
    if not searches:
        return
    fractions = [as_number(r["of_grid_total"]) for r in searches]
    sampled_fractions = [as_number(r["sampled_of_grid_total"]) for r in searches]
    harness.result_line(
        grid_total_s=grid_total,
        grid_best=grid_best,
        default_total_s=searches[0]["total_s"],
        default_best=searches[0]["best_acc"],
        default_to_target_s=searches[0]["to_target_s"],
        fraction_of_grid=searches[0]["of_grid_total"],
        within_half=f"{sum(f <= 0.5 for f in fractions)}/{len(fractions)}",
        median_fraction=statistics.median(fractions),
        sampled_within_half=f"{sum(f <= 0.5 for f in sampled_fractions)}/{len(sampled_fractions)}",
    )


if __name__ == "__main__":
    main()
