"""run(cfg): the recipe in order. Cheap checks first, so bad input fails before any training."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from pipeline import checks, data, distributed, model, progress, registry, report, search, storage, train, workers
from pipeline.errors import PipelineError
from pipeline.schema import Mode
from pipeline.tracking import RUN_ID_ATTR, TrialRuns, Tracker

log = logging.getLogger(__name__)
INTERRUPT_DRAIN_S = 10  # seconds an interrupted search waits for its queued tracking writes


def run(cfg: DictConfig) -> registry.FinalModel | None:
    progress.quiet()
    checks.check_config(cfg)
    # Validates conf/trainer; under torchrun it also joins the process group.
    train.training_args(cfg.trainer, cfg.output_dir, cfg.seed, **distributed.device_args())
    distributed.check(cfg)
    # The search space is validated here too, before anything is read or recorded.
    space = search.load_space(cfg.search.space) if cfg.mode != Mode.train else []
    tokenizer = model.load_tokenizer(cfg.model)
    model.check_max_length(cfg.model, cfg.dataset.max_length)
    splits = data.load_splits(cfg.dataset, cfg.seed)
    labels = data.label_names(splits)
    model_init = model.make_model_init(cfg.model, labels)
    # Only now write anything: bad input above leaves no experiment, study or run behind.
    tracker = distributed.tracker(cfg)  # rank 0's; under torchrun the other ranks write nowhere
    data_id = data.fingerprint(splits)
    if distributed.is_main():
        registry.check_data(tracker, cfg.registry.name, data_id)
    study = open_study(cfg, space, data_id)
    tokenized = data.tokenize(splits, tokenizer, cfg.dataset.max_length)
    log.info("data: %s; labels: %s", {k: len(v) for k, v in splits.items()}, labels)

    def build(params: dict[str, Any], callbacks: list) -> train.PipelineTrainer:
        params = dict(params)
        seed = params.pop("seed", cfg.seed)
        args = train.training_args(
            cfg.trainer, str(Path(cfg.output_dir) / "trainer"), seed, **distributed.device_args(), **params
        )
        init = search.seeded_model_init(model_init, space) if space else model_init
        return train.build_trainer(args, init, tokenized, tokenizer, callbacks)

    if cfg.mode == Mode.train:
        run_id = tracker.new_run(f"train-{cfg.model.name}", "train")
        with tracker.running(run_id):
            tracker.log_invocation(run_id, cfg)
            trainer = registry.final_model({}, None, build, tracker, run_id)
            final = finish(cfg, trainer, tokenized, tracker, run_id, labels, data_id)
        if final is not None:
            progress.print_summary(progress.Summary(None, final.metrics, final.model_uri, final.champion, tracker.uri))
        return final

    parent = tracker.study_run(cfg.search.study_name)
    with tracker.running(parent):
        tracker.log_invocation(parent, cfg)
        if study is not None:
            search.fail_stale_trials(study)  # trials of a killed worker, once its heartbeat is past grace_period
            workers.warn_on_shared_sqlite(cfg.search, study)
        tracker.close_trial_runs(parent, study)  # runs a killed worker left RUNNING
        if cfg.mode == Mode.search:
            run_search(cfg, build, tracker, parent, study, space)
        if study is not None:
            report.log_study(tracker, parent, study)  # before the final step, so a failure there keeps the plots
        params, checkpoint, trial_run = best_of(cfg, study, tracker, parent, space)
        final = registered_before(cfg, tracker, trial_run, parent)
        if not distributed.from_main(final is not None):
            trainer = registry.final_model(params, checkpoint, build, tracker, parent)
            final = finish(cfg, trainer, tokenized, tracker, parent, labels, data_id, trial_run)
    if final is not None:
        best = search.best_trial(study)
        progress.print_summary(
            progress.Summary(study, final.metrics, final.model_uri, final.champion, tracker.uri, cfg.search.storage, best)
        )
    return final


def best_of(
    cfg: DictConfig, study: optuna.Study | None, tracker: Tracker, parent: str, space: list[search.Param]
) -> tuple[dict, Path | None, str | None]:
    """The best trial's params, kept weights and MLflow run id; under torchrun, rank 0's on every rank."""
    params, checkpoint, trial_run = {}, None, None
    if study is not None:
        best = search.best_trial(study)
        search.drop_checkpoints(study, best, cfg.search.checkpoint_dir)
        log.info("best trial %d: eval_accuracy=%.4f %s", best.number, best.value, best.params)
        for edge in search.at_bounds(best.params, space):
            log.warning("best trial %d: %s in search.space=%s; widen the range there", best.number, edge, cfg.search.space)
        tracker.log_metrics(parent, {"best_eval_accuracy": best.value})
        params, checkpoint = best.params, search.checkpoint_for(best, cfg.search.checkpoint_dir)
        trial_run = best.user_attrs.get(RUN_ID_ATTR) or tracker.trial_run_of(parent, best.number)
    params, checkpoint, trial_run = distributed.from_main((params, checkpoint, trial_run))
    readable = distributed.everywhere(checkpoint is not None and (checkpoint / "config.json").is_file())
    return params, checkpoint if readable else None, trial_run


def registered_before(cfg: DictConfig, tracker: Tracker, trial_run: str | None, parent: str) -> registry.FinalModel | None:
    """The version an earlier run registered from this best trial (rank 0 looks; other ranks get None)."""
    if not distributed.is_main():
        return None
    final = registry.registered_from(tracker, cfg.registry.name, cfg.registry.alias, trial_run, parent)
    if final is not None:
        log.info("best trial already registered as %s; nothing new to register", final.model_uri)
    return final


def open_study(cfg: DictConfig, space: list[search.Param], data_id: str) -> optuna.Study | None:
    """The study (search), the existing study (finalize), or nothing (train)."""
    if cfg.mode == Mode.train or not distributed.is_main():  # a torchrun replica: rank 0 alone uses the study
        return None
    rdb = storage.open_storage(cfg.search)
    if cfg.mode == Mode.finalize and cfg.search.study_name not in optuna.get_all_study_names(rdb):
        raise PipelineError(f"search.study_name={cfg.search.study_name}: no such study in {cfg.search.storage}")
    start = {**cfg.trainer, "seed": cfg.seed}  # the experiment's starting point is trial 0
    return search.open_study(cfg.search, space, rdb, start, data_id)


def run_search(cfg: DictConfig, build, tracker: Tracker, parent: str, study: optuna.Study, space) -> None:
    trainer = build({}, [])
    if study is None:  # a torchrun replica: trains the FixedTrial rank 0 broadcasts for each trial
        search.follow(trainer, cfg.search, space)
        return
    fixed = {"model": cfg.model.name, "dataset": cfg.dataset.name, "seed": cfg.seed}
    trainer.add_callback(TrialRuns(tracker, parent, study, trainer, fixed))
    trainer.add_callback(search.KeepBestTrial(trainer, study, cfg.search.checkpoint_dir))
    trainer.add_callback(progress.TrialProgress(trainer, cfg.search.n_trials, cfg.search.timeout))
    progress.use_bars_only(trainer)
    lost = None
    try:
        search.run(trainer, cfg.search, space, study, cfg.seed)
    except Exception as err:
        if (lost := storage.lost_in(err)) is None:
            raise
        raise lost from None  # Optuna's own handling fails on it and hides it under another error
    finally:
        interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)
        # What the trials logged reaches MLflow first (an interrupt waits a little, not for an outage).
        tracker.outbox.drain(timeout=INTERRUPT_DRAIN_S if interrupted else None)
        if lost is None:  # with the database gone, the next run repairs the trial runs
            tracker.close_trial_runs(parent, study, interrupted=interrupted)


def finish(
    cfg: DictConfig,
    trainer,
    tokenized,
    tracker: Tracker,
    run_id: str,
    labels: list[str],
    data_id: str,
    trial_run: str | None = None,
) -> registry.FinalModel | None:
    prediction = registry.predict_test(trainer, tokenized)
    if not distributed.is_main():  # rank 0 saves, logs and registers
        return None
    metrics = registry.scores(prediction)
    report.log_confusion_matrix(tracker, run_id, prediction, labels)
    final = registry.save_and_register(
        trainer, metrics, Path(cfg.output_dir) / "model", tracker, run_id, cfg.registry.name, cfg.registry.alias,
        data_id, trial_run,
    )
    log.info(
        "test_accuracy=%.4f test_f1_macro=%.4f; registered %s; %s is version %s",
        metrics["test_accuracy"], metrics["test_f1_macro"], final.model_uri, cfg.registry.alias, final.champion,
    )
    return final
