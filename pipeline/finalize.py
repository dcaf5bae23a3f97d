"""The final step: the best trial (or, in mode=train, conf/trainer's values) to a model trained once more
or reloaded from its kept weights, scored once on the test split, saved and registered. Under torchrun
every rank trains and scores; rank 0 alone writes."""

from __future__ import annotations

import dataclasses
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from transformers import AutoModelForSequenceClassification
from transformers.trainer_utils import PredictionOutput

from pipeline import console
from pipeline.prepare import Prepared
from pipeline.runtime import distributed
from pipeline.runtime.secrets import redact
from pipeline.schema import MAX_SEED
from pipeline.search import checkpoints, resume
from pipeline.search.space import at_bounds
from pipeline.search.study import best_trial
from pipeline.tracking import registry, report
from pipeline.tracking.callbacks import EpochMetrics
from pipeline.tracking.outbox import RunRef
from pipeline.tracking.promotion import Answers, against_majority
from pipeline.tracking.provenance import command_line, model_source, run_params
from pipeline.tracking.registry import FinalModel
from pipeline.tracking.tracker import RUN_ID_ATTR
from pipeline.training.metrics import OBJECTIVE, Scored, metric_name, said
from pipeline.training.speed import Speed
from pipeline.training.trainer import PipelineTrainer

log = logging.getLogger(__name__)
MODEL_CARD = "model_card.md"  # the registered version's description, also in the run's outputs/ directory
CHANCE_MARGIN = 0.05  # accuracy within this of 1/labels is taken as chance


@dataclass(frozen=True)
class BestTrial:
    """What the final step needs of the study's best trial (mode=train: no trial, conf/trainer's values)."""

    params: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None  # its kept weights, when every rank can read them
    run_id: str | None = None  # its MLflow run
    value: float | None = None  # its validation accuracy
    speed: Speed | None = None  # its model's speed, measured at the trial's end


def best_of(prep: Prepared, study: optuna.Study | None, parent: str) -> BestTrial:
    """The study's best trial (rank 0 reads it; under torchrun every rank gets rank 0's)."""
    best = BestTrial()
    if study is not None:
        cfg, trial = prep.cfg.search, best_trial(study, prep.cfg.registry.max_ms_per_text)
        checkpoints.drop_checkpoints(study, cfg.checkpoint_dir, keep=trial)
        resume.drop_states(study, resume.states_dir(cfg.checkpoint_dir))
        log.info("best trial %d: %s=%.4f %s", trial.number, OBJECTIVE, trial.value, trial.params)
        for edge in widening_hints(study, trial, prep.space, len(prep.labels)):
            log.warning("best trial %d: %s in search.space=%s; widen the range there", trial.number, edge, cfg.space)
        prep.tracker.log_metrics(parent, {f"best_{OBJECTIVE}": trial.value})
        run_id = trial.user_attrs.get(RUN_ID_ATTR) or prep.tracker.trial_run_of(parent, trial.number)
        kept = checkpoints.checkpoint_for(trial, cfg.checkpoint_dir)
        best = BestTrial(trial.params, kept, run_id, trial.value, Speed.of(trial.user_attrs))
    best = distributed.from_main(best)
    readable = distributed.everywhere(best.checkpoint is not None and (best.checkpoint / "config.json").is_file())
    return best if readable else dataclasses.replace(best, checkpoint=None)


def worth_widening(complete: list[optuna.trial.FrozenTrial], best: optuna.trial.FrozenTrial, n_labels: int) -> bool:
    """Whether a best value at an end of its range says anything: not when the best trial is at chance
    accuracy (nothing was learnt anywhere), nor when every completed trial scored the same, nor when the best
    is perfect (1.0: no value outside the range can score higher)."""
    return len({t.value for t in complete}) > 1 and 1 / n_labels + CHANCE_MARGIN < best.value < 1.0


def widening_hints(study: optuna.Study, best: optuna.trial.FrozenTrial, space: list, n_labels: int) -> list[str]:
    """The best trial's values at an end of their range, where that points somewhere: an end that a trial
    scoring as well stays away from did not make the best (with the best score reached at 1, 2 and 3 epochs,
    "3 is at the upper end, widen" was wrong advice)."""
    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if not worth_widening(complete, best, n_labels):
        return []
    ties = [t.params for t in complete if t.value == best.value and t.number != best.number]
    return at_bounds(best.params, space, ties=ties)


def registered_before(prep: Prepared, best: BestTrial, parent: str) -> FinalModel | None:
    """The version an earlier run registered from this best trial (rank 0 looks; the others get None)."""
    if not distributed.is_main():
        return None
    cfg = prep.cfg.registry
    final = registry.registered_from(prep.tracker, cfg, best.run_id, parent)
    if final is not None:
        log.info("best trial already registered as %s; nothing new to register", final.model_uri)
    return final


@dataclass(frozen=True)
class Seeds:
    """The final model trained on several seeds (search.seeds): each seed's validation accuracy."""

    validation: dict[int, float]  # seed -> validation accuracy, in training order

    @property
    def chosen(self) -> int:
        """The seed registered: the best on validation (the first of equals), never chosen on test."""
        return max(self.validation, key=self.validation.__getitem__)

    def line(self) -> str:
        """`3 seeds: validation accuracy 0.8500 ± 0.0120 (sd; 0.8400, 0.8600, 0.8500); registered seed 44, the
        best on validation`."""
        values = list(self.validation.values())
        each = ", ".join(f"{v:.4f}" for v in values)
        return (
            f"{len(values)} seeds: validation accuracy {statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
            f" (sd; {each}); registered seed {self.chosen}, the best on validation"
        )

    def metrics(self) -> dict[str, float]:
        values = list(self.validation.values())
        return {f"seeds_{OBJECTIVE}_mean": statistics.mean(values), f"seeds_{OBJECTIVE}_sd": statistics.stdev(values)}


def train_and_register(prep: Prepared, best: BestTrial, run_id: str) -> FinalModel | None:
    """Train (or reload) the final model, score it on test, save, log and register it (None on ranks > 0)."""
    if prep.cfg.search.seeds > 1:
        trainer, seeds = train_on_seeds(prep, best, run_id)
    else:
        trainer, seeds = final_model(prep, best, run_id), None
    backbone = prep.backbone(best.params)
    # The one look at the test split: metrics and the predictions (for the confusion matrix).
    prediction = trainer.predict(backbone.tokenized["test"], metric_key_prefix="test")
    if not distributed.is_main():
        return None
    scores = test_scores(prep, prediction)
    title = f"model={backbone.cfg.name} on the test split ({len(prep.test_rows)} rows)"
    scored = Scored(prep.labels, scores.answers.truth, scores.answers.predicted)
    report.log_confusion_matrix(prep.tracker.client, run_id, scored, title)
    source = registry.Source(run_id, prep.data_fingerprint, best.run_id, backbone.profile)
    # The weights are kept once, in MLflow (and the best trial's checkpoint): no copy under outputs/.
    extra_tags = {registry.SEEDS_TAG: seeds.line(), registry.SEED_TAG: str(seeds.chosen)} if seeds else {}
    final = registry.register(trainer, scores, prep.tracker, prep.cfg.registry, source, extra_tags)
    metrics = scores.metrics
    text = model_card(prep, best, scores, final.decision, seeds)
    Path(prep.cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(prep.cfg.output_dir) / MODEL_CARD).write_text(text, encoding="utf-8")
    prep.tracker.client.update_model_version(prep.cfg.registry.name, final.version, description=text)
    log.info("test %s; registered %s", said(metrics), final.model_uri)
    log.info("%s", final.decision)
    return final


def test_scores(prep: Prepared, prediction: PredictionOutput) -> registry.Scores:
    """The test split's metrics, each row's answer and its score, and the majority-class baseline's
    comparison."""
    probabilities = torch.softmax(torch.as_tensor(prediction.predictions).float(), dim=-1).numpy()
    truth, predicted = ([prep.labels[i] for i in ids] for ids in (prediction.label_ids, probabilities.argmax(-1)))
    answers = Answers(prep.test_rows, truth, predicted, probabilities.max(-1).tolist())
    metrics = {"test_loss": prediction.metrics["test_loss"], **Scored(prep.labels, truth, predicted).metrics("test_")}
    return registry.Scores(metrics, answers, prep.majority, against_majority(answers, prep.majority))


def final_model(prep: Prepared, best: BestTrial, run_id: str) -> PipelineTrainer:
    """A Trainer holding the final model: the best trial's kept weights, else trained with its params."""
    if best.checkpoint is not None:
        trainer = prep.trainer(best.params, [])
        console.use_bars_only(trainer)  # off a terminal, no prediction bar on the test split either
        trainer.model = AutoModelForSequenceClassification.from_pretrained(best.checkpoint).to(trainer.args.device)
        return trainer
    return train_final(prep, best.params, run_id, "final_")


def train_final(prep: Prepared, params: dict, run_id: str, prefix: str) -> PipelineTrainer:
    """A model trained with `params`, its per-epoch metrics logged to `run_id` under `prefix`."""
    callbacks = [EpochMetrics(prep.tracker, RunRef(run_id), prefix=prefix), console.TrainingProgress(params)]
    trainer = prep.trainer(params, callbacks)
    console.use_bars_only(trainer)
    trainer.train()
    prep.tracker.outbox.drain()  # its per-epoch metrics are in MLflow before the model is logged
    return trainer


def train_on_seeds(prep: Prepared, best: BestTrial, run_id: str) -> tuple[PipelineTrainer, Seeds]:
    """The final model trained `search.seeds` times on new seeds (the best trial's own was picked for scoring
    best, and would flatter the mean); the last Trainer holding the weights best on validation, and every
    seed's score. The best weights wait on the CPU: one model trains at a time."""
    first = best.params.get("seed", prep.cfg.seed) + 1
    validation, kept = {}, None
    for seed in (s % (MAX_SEED + 1) for s in range(first, first + prep.cfg.search.seeds)):
        log.info("final model, seed %d (%d of %d)", seed, len(validation) + 1, prep.cfg.search.seeds)
        trainer = train_final(prep, {**best.params, "seed": seed}, run_id, f"final_seed{seed}_")
        validation[seed] = last_validation(trainer)
        prep.tracker.log_metrics(run_id, {f"seed_{OBJECTIVE}": validation[seed]}, step=seed)
        if Seeds(validation).chosen == seed:
            kept = {name: tensor.detach().cpu().clone() for name, tensor in trainer.model.state_dict().items()}
    seeds = Seeds(validation)
    trainer.model.load_state_dict(kept)
    prep.tracker.log_metrics(run_id, seeds.metrics())
    log.info("%s", seeds.line())
    return trainer, seeds


def last_validation(trainer: PipelineTrainer) -> float:
    """The validation accuracy of the trained model: its last epoch's evaluation."""
    return [entry[OBJECTIVE] for entry in trainer.state.log_history if OBJECTIVE in entry][-1]


def model_card(
    prep: Prepared, best: BestTrial, scores: registry.Scores, decision: str | None, seeds: Seeds | None = None
) -> str:
    """The model card: what a registered version is, what it was trained and scored on, and how well it does
    (the version's description in MLflow, and `model_card.md` in the run's outputs/ directory). Markdown for a
    version trained with `best`'s params (its validation accuracy and speed, and each seed's score with
    search.seeds), scored `scores`, and the champion rule's `decision` on it."""
    cfg, metrics, baseline = prep.cfg, scores.metrics, scores.baseline
    params, validation, backbone = best.params, best.value, prep.backbone(best.params)
    described = run_params(cfg) | model_source(backbone.cfg)
    rows = {split: len(ds) for split, ds in prep.tokenized.items()}
    lines = [
        f"# {cfg.registry.name}: text classification",
        "",
        f"Labels: {', '.join(prep.labels)}.",
        "",
        "## Training data",
        f"- dataset `{cfg.dataset.name}` from `{described['data_source']}`; rows: "
        + ", ".join(f"{split} {n}" for split, n in rows.items()),
        f"- content fingerprint `{prep.data_fingerprint}`; texts truncated at {cfg.dataset.max_length} tokens",
        f"- training texts: median {backbone.profile.lengths['50']:.0f} tokens (5-95%: "
        f"{backbone.profile.lengths['5']:.0f}-{backbone.profile.lengths['95']:.0f}); labels: "
        + ", ".join(f"{label} {share:.0%}" for label, share in backbone.profile.labels.items()),
        "",
        "## Model",
        f"- base model `{backbone.cfg.name}` (`{described['model_source']}`)",
        "- hyperparameters: " + (", ".join(f"{k}={_short(v)}" for k, v in params.items()) or "conf/trainer's values"),
        *([f"- speed: {best.speed.line()}, measured at the end of its trial"] if best.speed else []),
        "",
        "## Scores",
        (f"- validation accuracy {validation:.4f}; " if validation is not None else "- ") + f"test {said(metrics)}",
        *([f"- trained on {seeds.line()}"] if seeds else []),
        f"- against answering {scores.majority!r} (the training split's most common label) on every test row: "
        f"{baseline.points:+.1f} points, p={baseline.p_value:.2g} (one-sided exact McNemar test)",
        f"- registry: {decision}",
        "",
        "| label | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label in prep.labels:
        name = metric_name(label)
        values = [metrics[f"test_{kind}_{name}"] for kind in ("precision", "recall", "f1")]
        lines.append(
            f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {int(metrics[f'test_support_{name}'])} |"
        )
    lines += [
        "",
        "## Made by",
        f"`{redact(command_line())}`",
        "",
        "## Limits",
        f"- scored once on {rows.get('test', 0)} test rows: differences of a point or less between versions may be "
        "noise",
        "- knows only the labels above, and texts like its training data; longer texts are cut at "
        f"{cfg.dataset.max_length} tokens",
    ]
    return "\n".join(lines) + "\n"


def _short(value) -> str:
    """A searched float as a person writes it (5.94e-05, not 5.944851968698904e-05)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
