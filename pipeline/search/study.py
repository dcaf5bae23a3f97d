"""The Optuna study: opened and checked (direction, space, data), its sampler and pruner, its best trial,
what many workers on one study need (per-trial sampler seeds, the shared-SQLite warning, worker names), and
the search itself: `search.n_trials` more trials through `Trainer.hyperparameter_search`."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from pipeline.data.fingerprint import is_content_fingerprint
from pipeline.errors import PipelineError
from pipeline.schema import BACKBONE, Pruner, Sampler, SearchConfig
from pipeline.search import internals
from pipeline.search.space import Param, backbone_choices, hp_space
from pipeline.training.speed import Speed, backbone_ms, backbone_of
from pipeline.training.trainer import PipelineTrainer, objective

log = logging.getLogger(__name__)
DIRECTION = "maximize"  # validation accuracy


def open_study(
    cfg: SearchConfig,
    space: list[Param],
    rdb: optuna.storages.BaseStorage,
    start: dict[str, Any] | None = None,
    data_fingerprint: str | None = None,
) -> optuna.Study:
    """Create the study (its first trials: the configured `start` values), or load it and check it was made
    for this space, direction and data (data/fingerprint.py's fingerprint of the splits; None: neither checked nor
    recorded)."""
    try:
        study, created = optuna.create_study(study_name=cfg.study_name, storage=rdb, direction=DIRECTION), True
    except optuna.exceptions.DuplicatedStudyError:  # another worker, or an earlier run, created it
        study, created = optuna.load_study(study_name=cfg.study_name, storage=rdb), False
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:  # before marking it as ours below
        raise PipelineError(f"search.study_name={cfg.study_name} minimises; this pipeline maximises accuracy")
    fingerprint = json.dumps([asdict(p) for p in space], sort_keys=True)
    stored = study.user_attrs.get("search_space")
    if stored is None:
        study.set_user_attr("search_space", fingerprint)
        if start and created:  # only its creator: workers starting together would each queue the start again
            _enqueue_start(study, space, start)
    elif stored != fingerprint:
        raise PipelineError(
            f"search.study_name={cfg.study_name} was created with a different search space than "
            f"search.space={cfg.space}; use a new search.study_name"
        )
    if data_fingerprint is not None:
        _check_data(study, data_fingerprint)
    return study


def _enqueue_start(study: optuna.Study, space: list[Param], start: dict[str, Any]) -> None:
    """Trial 0 at the experiment's starting values, those the space contains: one outside it would train
    outside the space, and a retry of that trial (after its worker died) would be refused. A space over
    backbones starts with each of them at those values (the configured model first): every model is tried
    before the sampler chooses between them."""
    inside = {p.name: start[p.name] for p in space if p.name in start and p.contains(start[p.name])}
    outside = [f"{p.name}={start[p.name]}" for p in space if p.name in start and p.name not in inside]
    if outside:
        log.info("trial 0 starts at the configured values the space contains; outside it: %s", ", ".join(outside))
    choices = backbone_choices(space)
    first = [{**inside, BACKBONE: c} for c in sorted(choices, key=lambda c: c != inside.get(BACKBONE))]
    for values in first or ([inside] if inside else []):
        study.enqueue_trial(values, skip_if_exists=True)


def _check_data(study: optuna.Study, data_fingerprint: str) -> None:
    """Record the study's data fingerprint, or refuse a run on other rows: its trials would not compare."""
    stored = study.user_attrs.get("data")
    # A new study, one from before studies recorded their data, or one recorded under the older,
    # path-dependent fingerprint (which cannot be recomputed): this run's content fingerprint is recorded.
    if stored is None or not is_content_fingerprint(stored):
        study.set_user_attr("data", data_fingerprint)
    elif stored != data_fingerprint:
        raise PipelineError(
            f"search.study_name={study.study_name} was created on other data (its train, validation or test rows "
            "differ from this run's: other files, dataset.* or seed); use a new search.study_name, or "
            "dataset.name=NAME "
            "for a new experiment"
        )


def make_sampler(cfg: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """TPE also learns where trials meet a latency budget, from the constraint each trial sets (TrialSpeed)."""
    if cfg.sampler == Sampler.random:
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials, constant_liar=True)


def within_budget(trials: list[optuna.trial.FrozenTrial], budget: float | None) -> list[optuna.trial.FrozenTrial]:
    """The trials whose backbone classifies at most `budget` ms per text (all of them, without a budget), each
    backbone judged by the median of its measured trials among `trials` (speed.backbone_ms)."""
    if budget is None:
        return trials
    ms = backbone_ms(trials)
    return [t for t in trials if ms.get(backbone_of(t), math.inf) <= budget]


def make_pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner == Pruner.median:
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials)
    if cfg.pruner == Pruner.hyperband:
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def trial_name(trial: optuna.Trial | optuna.trial.FrozenTrial | int) -> str:
    """`trial-N`: a trial's MLflow run, and its directories of kept weights and saved states."""
    return f"trial-{trial if isinstance(trial, int) else trial.number}"


def best_trial(study: optuna.Study, budget: float | None = None) -> optuna.trial.FrozenTrial:
    """The most accurate completed trial (the earliest of equals), within `budget` ms per text if one is set."""
    complete = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
    if not complete:
        failed = study.get_trials(deepcopy=False, states=[TrialState.FAIL])
        errors = sorted({t.user_attrs.get("error", "no error recorded") for t in failed})
        said = f"; {len(failed)} failed: " + " | ".join(e.splitlines()[0][:200] for e in errors[:3]) if failed else ""
        raise PipelineError(
            f"search.study_name={study.study_name} has no completed trial yet{said}; fix the cause and run the "
            "same command again (each trial's error is in MLflow, tag pipeline.error)"
        )
    within = within_budget(complete, budget)
    if not within:
        raise PipelineError(no_trial_within(study.study_name, complete, budget))
    return max(within, key=ranking)


def ranking(trial: optuna.trial.FrozenTrial) -> tuple[float, int]:
    """The more accurate first, the earliest of equals."""
    return trial.value, -trial.number


def best_of_each_backbone(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """Each backbone's most accurate completed trial. A budget keeps or drops whole backbones (within_budget),
    so whatever the budget, best_trial's pick is one of these."""
    best: dict[str, optuna.trial.FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
        held = best.get(name := backbone_of(trial))
        if held is None or ranking(trial) > ranking(held):
            best[name] = trial
    return best


def no_trial_within(study_name: str, complete: list[optuna.trial.FrozenTrial], budget: float) -> str:
    said, ms = f"registry.max_ms_per_text={budget:g}: ", backbone_ms(complete)
    if not ms:
        return said + (
            f"no completed trial of search.study_name={study_name} has a measured speed (trials from before "
            "speeds were measured); run more trials, or drop the budget"
        )
    fastest = min(ms, key=ms.get)
    device = next(s.predict_device for t in complete if backbone_of(t) == fastest and (s := Speed.of(t.user_attrs)))
    return said + (
        f"none of the {len(complete)} completed trials classifies that fast; the fastest model, "
        f"{fastest or 'the configured one'}, takes {ms[fastest]:.2f} ms/text on {device}; raise the budget or search "
        "smaller models. Nothing registered"
    )


def budget_line(study: optuna.Study, budget: float, pick: optuna.trial.FrozenTrial) -> str:
    """What the budget cost: `best within 5 ms/text: trial 1 (minilm) 0.8830 at 3.20 ms/text; best overall: trial
    4 (bert_base) 0.9010 at 21.00 ms/text` (each backbone's median speed)."""
    best, ms = best_trial(study), backbone_ms(study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]))
    said = f"best within {budget:g} ms/text: {_trial_speed(pick, ms)}"
    if best.number == pick.number:
        return said + ", also the best overall"
    return said + f"; best overall: {_trial_speed(best, ms)}"


def _trial_speed(trial: optuna.trial.FrozenTrial, ms: dict[str, float]) -> str:
    backbone = backbone_of(trial)
    at = f" at {ms[backbone]:.2f} ms/text" if backbone in ms else " (speed not measured)"
    return f"trial {trial.number}{f' ({backbone})' if backbone else ''} {trial.value:.4f}{at}"


def ties(study: optuna.Study, best: optuna.trial.FrozenTrial, rows: int, budget: float | None = None) -> list[int]:
    """The completed trials (the best among them; within `budget` ms per text, if set) whose validation accuracy
    lies within one standard error of the best's, sqrt(p(1-p)/rows) on `rows` validation rows, and never less
    than one row (at 1.0 the standard error is 0, yet one row either way is noise): the search cannot tell them
    apart."""
    margin = max(math.sqrt(best.value * (1 - best.value) / rows), 1 / rows) if rows else 0.0
    complete = within_budget(study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]), budget)
    return sorted(t.number for t in complete if t.value >= best.value - margin - 1e-12)


def fail_stale_trials(study: optuna.Study) -> None:
    """FAIL (and queue one retry of) RUNNING trials whose worker stopped heartbeating more than
    search.grace_period ago: a SIGKILL or a lost machine. Optuna does this before each new trial;
    doing it when a run starts repairs a killed run even if this run starts no trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def worker_name() -> str:
    """Which process ran a trial: kept on the trial and its MLflow run, to trace a worker that died.
    `host:pid`, and under SLURM `slurm-JOB_TASK@host:pid` (`squeue`'s and `sacct`'s name for it)."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job else os.environ.get("SLURM_JOB_ID")
    return f"{f'slurm-{job}@' if job else ''}{socket.gethostname()}:{os.getpid()}"


def warn_on_shared_sqlite(cfg: SearchConfig, study: optuna.Study) -> bool:
    """Warn when another worker is running trials of a study kept in SQLite, which locks under
    concurrent writers. Call after heartbeats failed the trials of dead workers."""
    if not cfg.storage.startswith("sqlite"):
        return False
    if not study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
        return False
    log.warning(
        "search.storage=%s: another worker is running trials of study %s; SQLite locks under concurrent "
        "writers: share a study through PostgreSQL (search.storage=postgresql+psycopg://HOST/DB, "
        "pip install -e '.[postgres]') or Optuna's journal storage",
        cfg.storage,
        study.study_name,
    )
    return True


class TrialSeededSampler(BaseSampler):
    """A sampler built afresh for each trial with seed + trial number.

    Trial numbers come from the shared storage and never collide, so workers that start together draw
    different values, while one worker replaying a study draws the same ones."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._sampler = make(seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._sampler = self._make(self._seed + trial.number)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def optimize(trainer: PipelineTrainer, cfg: SearchConfig, space: list[Param], study: optuna.Study, seed: int) -> None:
    """Run `search.n_trials` more trials of the study (fewer if `search.timeout` runs out)."""
    try:
        _search(trainer, cfg, space, study, seed)
    except ValueError:
        # transformers reads study.best_trial at the end, which Optuna refuses while no trial has completed
        # ("Record does not exist"), or none meets its constraints (a latency budget: TrialSpeed); best_trial()
        # says so in one line.
        complete = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
        if any(all(v <= 0 for v in t.constraints.values()) for t in complete):
            raise


def _search(trainer: PipelineTrainer, cfg: SearchConfig, space: list[Param], study: optuna.Study, seed: int) -> None:
    trainer.hyperparameter_search(
        hp_space=hp_space(space),
        compute_objective=objective,
        n_trials=cfg.n_trials,
        timeout=cfg.timeout,
        direction=DIRECTION,
        backend="optuna",
        hp_name=trial_name,
        # The rest goes to optuna.create_study / study.optimize.
        study_name=study.study_name,
        storage=internals.storage_of(study),
        load_if_exists=True,
        # Seeded per trial number: concurrent workers draw apart, a resumed study does not replay its first draws.
        sampler=TrialSeededSampler(lambda trial_seed: make_sampler(cfg, trial_seed), seed),
        pruner=make_pruner(cfg),
        catch=(Exception,),  # a crashing trial is recorded FAIL; the study goes on
    )


def follow(trainer: PipelineTrainer, cfg: SearchConfig, space: list[Param]) -> None:
    """A torchrun rank other than 0: transformers hands it each trial rank 0 samples (as a FixedTrial)."""
    trainer.hyperparameter_search(
        hp_space=hp_space(space),
        compute_objective=objective,
        n_trials=cfg.n_trials,
        direction=DIRECTION,
        backend="optuna",
        hp_name=trial_name,
    )
