"""One task per mode, each a short recipe over the prepared inputs: `run_train`, `run_search`, `run_finalize`."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from omegaconf import DictConfig

from pipeline import console, finalize
from pipeline.errors import PipelineError
from pipeline.finalize import BestTrial
from pipeline.prepare import Prepared, prepare
from pipeline.runtime import distributed
from pipeline.schema import Mode
from pipeline.search import checkpoints, resume, storage, study
from pipeline.tracking import provenance, report
from pipeline.tracking.callbacks import TrialRuns
from pipeline.tracking.registry import FinalModel
from pipeline.training.internals import current_trial
from pipeline.training.speed import Speed, TrialSpeed

INTERRUPT_DRAIN_S = 10  # seconds an interrupted search waits for its queued tracking writes


def run(cfg: DictConfig) -> FinalModel | None:
    tasks = {Mode.train: run_train, Mode.search: run_search, Mode.finalize: run_finalize}
    return tasks[cfg.mode](prepare(cfg))


def run_train(prep: Prepared) -> FinalModel | None:
    """Train once with conf/trainer's values, score on test, register."""
    tracker = prep.tracker
    run_id = tracker.new_run(f"train-{prep.cfg.model.name}", "train")
    with tracker.running(run_id):
        provenance.record(tracker, run_id, prep.cfg, prep.split_digests)
        tracker.log_metrics(run_id, prep.duplicates.metrics())
        final = finalize.train_and_register(prep, BestTrial(), run_id)
    if final is not None:
        steps = console.next_commands(prep.cfg, final.model_uri, final.version, final.champion)
        console.print_summary(
            console.Summary(
                None,
                final.metrics,
                final.model_uri,
                final.champion,
                tracker.uri,
                None,
                None,
                steps,
                final.decision,
                seeds=final.seeds,
            )
        )
    return final


def run_search(prep: Prepared) -> FinalModel | None:
    """`search.n_trials` more trials of the study, then its best trial finalized."""
    trials = open_study(prep)
    with study_run(prep, trials) as parent:
        search_trials(prep, trials, parent)
        final = finalize_best(prep, trials, parent)
    print_summary(prep, trials, final)
    return final


def run_finalize(prep: Prepared) -> FinalModel | None:
    """The best completed trial of an existing study finalized, without searching."""
    trials = open_study(prep)
    with study_run(prep, trials) as parent:
        final = finalize_best(prep, trials, parent)
    print_summary(prep, trials, final)
    return final


def open_study(prep: Prepared) -> optuna.Study | None:
    """The study (mode=search creates it if new); None on a torchrun rank other than 0, which never uses it."""
    if not distributed.is_main():
        return None
    cfg = prep.cfg
    rdb = storage.open_storage(cfg.search)
    if cfg.mode == Mode.finalize and cfg.search.study_name not in optuna.get_all_study_names(rdb):
        raise PipelineError(f"search.study_name={cfg.search.study_name}: no such study in {cfg.search.storage}")
    start = {**cfg.trainer, "seed": cfg.seed, "model": cfg.model.name}  # the experiment's starting point: trial 0
    return study.open_study(cfg.search, prep.space, rdb, start, prep.data_fingerprint)


@contextmanager
def study_run(prep: Prepared, trials: optuna.Study | None) -> Iterator[str]:
    """The study's MLflow parent run, running; what killed workers left behind is repaired first."""
    tracker = prep.tracker
    parent = tracker.study_run(prep.cfg.search.study_name)
    with tracker.running(parent):
        provenance.record(tracker, parent, prep.cfg, prep.split_digests)
        tracker.log_metrics(parent, prep.duplicates.metrics())
        if trials is not None:
            study.fail_stale_trials(trials)  # trials of a killed worker, once its heartbeat is past grace_period
            resume.drop_states(trials, resume.states_dir(prep.cfg.search.checkpoint_dir))
            study.warn_on_shared_sqlite(prep.cfg.search, trials)
        tracker.close_trial_runs(parent, trials)  # runs a killed worker left RUNNING
        yield parent


def search_trials(prep: Prepared, trials: optuna.Study | None, parent: str) -> None:
    cfg = prep.cfg
    states = resume.states_dir(cfg.search.checkpoint_dir)
    if trials is None:  # a torchrun replica: trains the FixedTrial rank 0 broadcasts for each trial
        study.follow(prep.trainer({}, [], output_dir=states), cfg.search, prep.space)
        return
    resumer = resume.ResumableTrials(states, cfg.search.finish_epoch_on_term)
    trainer = prep.trainer({}, [], output_dir=states, resumer=resumer)
    fixed = {"model": cfg.model.name, "dataset": cfg.dataset.name, "seed": cfg.seed}
    inputs = provenance.dataset_inputs(cfg, prep.split_digests, ("train", "validation"))  # never test, in a trial
    # Before TrialRuns, which logs what it measured.
    trainer.add_callback(TrialSpeed(trainer, prep.speed_texts, cfg.registry.max_ms_per_text))
    trainer.add_callback(TrialRuns(prep.tracker, parent, trainer, fixed, inputs, resumer))
    trainer.add_callback(checkpoints.KeepBestTrial(trainer, trials, cfg.search.checkpoint_dir))
    progress = console.TrialProgress(trainer, cfg.search.n_trials, cfg.search.timeout, resumer)
    trainer.add_callback(progress)
    console.use_bars_only(trainer, progress.label)
    lost = None
    try:
        study.optimize(trainer, cfg.search, prep.space, trials, cfg.seed)
        resumer.check_terminated()
    except Exception as err:
        if (lost := storage.lost_in(err)) is None:
            raise
        raise lost from None  # Optuna's own handling fails on it and hides it under another error
    finally:
        interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)
        if interrupted:  # Ctrl-C or SIGTERM (a preemption): the next run continues the trial
            resume.retry_interrupted(trials, current_trial(trainer))
        # What the trials logged reaches MLflow first (an interrupt waits a little, not for an outage).
        prep.tracker.outbox.drain(timeout=INTERRUPT_DRAIN_S if interrupted else None)
        if lost is None:  # with the database gone, the next run repairs the trial runs
            prep.tracker.close_trial_runs(parent, trials, interrupted=interrupted)


def finalize_best(prep: Prepared, trials: optuna.Study | None, parent: str) -> FinalModel | None:
    """The study's plots, then its best trial registered (or the version an earlier run registered from it)."""
    if trials is not None:  # before the final step, so a failure there keeps the plots
        report.log_study(prep.tracker, parent, trials, prep.cfg.registry.max_ms_per_text)
    best = finalize.best_of(prep, trials, parent)
    final = finalize.registered_before(prep, best, parent)
    if not distributed.from_main(final is not None):  # every rank trains, unless rank 0 found it registered
        final = finalize.train_and_register(prep, best, parent)
    return dataclasses.replace(final, validation=best.value) if final is not None else None


def print_summary(prep: Prepared, trials: optuna.Study | None, final: FinalModel | None) -> None:
    if final is None:  # a torchrun replica
        return
    budget = prep.cfg.registry.max_ms_per_text
    best, rows = study.best_trial(trials, budget), len(prep.tokenized["validation"])
    summary = console.Summary(
        trials,
        final.metrics,
        final.model_uri,
        final.champion,
        prep.tracker.uri,
        prep.cfg.search.storage,
        best,
        console.next_commands(prep.cfg, final.model_uri, final.version, final.champion),
        final.decision,
        study.ties(trials, best, rows, budget),
        rows,
        final.seeds,
        Speed.of(best.user_attrs),
        study.budget_line(trials, budget, best) if budget is not None else None,
    )
    console.print_summary(summary)
