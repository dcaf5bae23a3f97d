"""The search itself: `search.n_trials` more trials of a study through `Trainer.hyperparameter_search`."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from pipeline import trainer_internals
from pipeline.schema import SearchConfig
from pipeline.space import Param, hp_space
from pipeline.study import DIRECTION, TrialSeededSampler, make_pruner, make_sampler, trial_name
from pipeline.train import PipelineTrainer, objective


def optimize(trainer: PipelineTrainer, cfg: SearchConfig, space: list[Param], study: optuna.Study, seed: int) -> None:
    """Run `search.n_trials` more trials of the study (fewer if `search.timeout` runs out)."""
    try:
        _search(trainer, cfg, space, study, seed)
    except ValueError:
        # transformers reads study.best_trial at the end, which Optuna refuses while no trial has completed
        # ("Record does not exist"); best_trial() says so in one line, with the trials' errors.
        if study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
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
        storage=trainer_internals.storage_of(study),
        load_if_exists=True,
        # Seeded per trial number: concurrent workers draw apart, a resumed study does not replay its first draws.
        sampler=TrialSeededSampler(lambda trial_seed: make_sampler(cfg, trial_seed), seed),
        pruner=make_pruner(cfg),
        catch=(Exception,),  # a crashing trial is recorded FAIL; the study goes on
    )


def follow(trainer: PipelineTrainer, cfg: SearchConfig, space: list[Param]) -> None:
    """A torchrun rank other than 0: transformers hands it each trial rank 0 samples (as a FixedTrial)."""
    trainer.hyperparameter_search(
        hp_space=hp_space(space), compute_objective=objective, n_trials=cfg.n_trials, direction=DIRECTION,
        backend="optuna", hp_name=trial_name,
    )
