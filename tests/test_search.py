"""Search-space parsing and validation, hp_space, study compatibility checks, and when a trial may be pruned."""

import math
import re
import statistics

import datasets
import optuna
import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from devtools.commands import TINY
from pipeline import classifier, console
from pipeline.data.fingerprint import fingerprint
from pipeline.data.read import label_names
from pipeline.data.splits import load_splits, tokenize
from pipeline.errors import PipelineError
from pipeline.finalize import Seeds
from pipeline.schema import backbone_name
from pipeline.search import storage
from pipeline.search.checkpoints import drop_checkpoints
from pipeline.search.space import (
    Param,
    at_bounds,
    backbone_choices,
    hp_space,
    load_space,
    seeded_model_init,
)
from pipeline.search.study import best_of_each_backbone, best_trial, budget_line, open_study, ties
from pipeline.tracking.registry import SEED_TAG, SEEDS_TAG
from pipeline.tracking.report import accuracy_vs_speed, pareto_front
from pipeline.training import model
from pipeline.training.args import training_args
from pipeline.training.speed import Speed
from pipeline.training.trainer import build_trainer, objective
from tests.conftest import compose_config, mlflow_client, run_entry_point_said, tracking_uri, write_space

FEATURES = datasets.Features(text=datasets.Value("string"), label=datasets.ClassLabel(names=["x", "y"]))


def test_default_space_has_batch_size_epochs_and_log_learning_rate():
    space = {p.name: p for p in load_space("batch_epochs")}
    assert space["per_device_train_batch_size"].type == "categorical"
    assert space["num_train_epochs"].type == "int" and space["num_train_epochs"].low >= 1
    assert space["learning_rate"].log is True


def test_hp_space_samples_within_bounds():
    space = load_space("batch_epochs")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = hp_space(space)(study.ask())
        assert params["per_device_train_batch_size"] in (8, 16, 32)
        assert 1 <= params["num_train_epochs"] <= 3 and isinstance(params["num_train_epochs"], int)
        assert 1e-5 <= params["learning_rate"] <= 1e-4


def test_best_values_at_an_end_of_their_range_are_reported_and_inner_ones_are_not():
    space = load_space("batch_epochs")  # epochs 1..3, learning_rate 1e-5..1e-4 (log)
    inner = {"per_device_train_batch_size": 8, "num_train_epochs": 2, "learning_rate": 3.2e-5}
    assert at_bounds(inner, space) == []
    edges = at_bounds({**inner, "num_train_epochs": 3, "learning_rate": 9.5e-5}, space)
    assert edges == [
        "num_train_epochs=3 is at the upper end of [1, 3]",
        "learning_rate=9.5e-05 is at the upper end of [1e-05, 0.0001]",
    ]
    low = at_bounds({**inner, "learning_rate": 1.05e-5}, space)
    assert low == ["learning_rate=1.05e-05 is at the lower end of [1e-05, 0.0001]"]
    # 1.3e-5 lies in the bottom 5% of 1e-5..1e-4 on a linear scale, not on the log scale it is searched on.
    assert at_bounds({**inner, "learning_rate": 1.3e-5}, space) == []


@pytest.mark.parametrize(
    "space, message",
    [
        ({"num_train_epochs": {"type": "int", "low": 4, "high": 2}}, "low=4 is greater than high=2"),
        ({"learning_rate": {"type": "gaussian", "low": 1, "high": 2}}, "needs `type`"),
        ({"per_device_train_batch_size": {"type": "categorical", "choices": [16, 0]}}, "positive number"),
        ({"per_device_train_batch_size": {"type": "categorical", "choices": []}}, "non-empty `choices`"),
        ({"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, "low=0 must be positive"),
        ({"learnin_rate": {"type": "float", "low": 0.1, "high": 1}}, "not a transformers.TrainingArguments field"),
        ({"num_train_epochs": {"type": "int", "low": 1, "hgh": 3}}, "unknown key 'hgh' for a int"),
        ({"num_train_epochs": {"type": "int", "low": 1}}, "numeric `low` and `high`"),
        ({}, "must map parameter names"),
    ],
)
def test_impossible_spaces_are_rejected_with_the_parameter_named(tmp_path, space, message):
    with pytest.raises(PipelineError, match=message):
        load_space(write_space(tmp_path, space))


def test_unknown_space_name_lists_known_spaces():
    with pytest.raises(PipelineError, match="known spaces: .*batch_epochs"):
        load_space("no_such_space")


def test_reused_study_name_with_another_space_is_rejected(tmp_path):
    cfg = compose_config(f"search.storage=sqlite:///{tmp_path}/o.db", "search.study_name=s").search
    rdb = storage.open_storage(cfg)
    space = load_space("batch_epochs")
    study = open_study(
        cfg, space, rdb, start={"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 5e-5}
    )
    assert len(open_study(cfg, space, rdb, start={"num_train_epochs": 3}).trials) == 1  # enqueued once
    first = hp_space(space)(study.ask())  # the starting point is trial 0
    assert first == {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 5e-5}
    other = load_space(write_space(tmp_path, {"num_train_epochs": {"type": "int", "low": 1, "high": 5}}))
    with pytest.raises(PipelineError, match="different search space"):
        open_study(cfg, other, rdb)


def test_reused_study_name_on_other_data_is_rejected(tmp_path):
    cfg = compose_config(f"search.storage=sqlite:///{tmp_path}/o.db", "search.study_name=s").search
    rdb, space = storage.open_storage(cfg), load_space("batch_epochs")
    assert "data" not in open_study(cfg, space, rdb).user_attrs  # as a study from before the check
    open_study(cfg, space, rdb, data_fingerprint="sha256:abc")  # adopts this run's data
    assert open_study(cfg, space, rdb, data_fingerprint="sha256:abc").user_attrs["data"] == "sha256:abc"
    with pytest.raises(PipelineError, match="search.study_name=s was created on other data"):
        open_study(cfg, space, rdb, data_fingerprint="sha256:xyz")
    assert optuna.load_study(study_name="s", storage=rdb).user_attrs["data"] == "sha256:abc"


def test_study_recorded_under_the_path_dependent_fingerprint_adopts_the_content_one(tmp_path):
    cfg = compose_config(f"search.storage=sqlite:///{tmp_path}/o.db", "search.study_name=s").search
    rdb, space = storage.open_storage(cfg), load_space("batch_epochs")
    open_study(cfg, space, rdb).set_user_attr("data", "3f2a9c0d1e4b5a67")  # datasets' Hasher, before
    assert open_study(cfg, space, rdb, data_fingerprint="sha256:abc").user_attrs["data"] == "sha256:abc"


def test_data_fingerprint_sees_a_changed_row_or_label():
    splits = DatasetDict(
        train=Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}, features=FEATURES),
        test=Dataset.from_dict({"text": ["c"], "label": [1]}, features=FEATURES),
    )
    same = DatasetDict({k: Dataset.from_dict(v.to_dict(), features=FEATURES) for k, v in splits.items()})
    assert fingerprint(splits) == fingerprint(same)
    for split, column, value in [("train", "text", ["a", "B"]), ("test", "label", [0])]:
        changed = DatasetDict(dict(splits))
        changed[split] = splits[split].remove_columns(column).add_column(column, value, feature=FEATURES[column])
        assert fingerprint(changed) != fingerprint(splits), (split, column)


def test_searched_seed_reaches_its_own_trial():
    import torch

    space = load_space("batch_epochs") + [Param("seed", "categorical", choices=(1, 2))]
    init = seeded_model_init(lambda: torch.rand(1).item(), space)
    study = optuna.create_study()
    study.enqueue_trial({"seed": 1})
    study.enqueue_trial({"seed": 1})
    assert init(study.ask()) == init(study.ask())


def test_a_trial_is_pruned_between_epochs_but_never_after_its_last(tmp_path, caplog):
    """A pruner that prunes every report: 2-epoch trials stop after epoch 1, 1-epoch trials complete."""
    cfg = compose_config(*TINY, "dataset.max_train_samples=32", "dataset.max_eval_samples=16")
    tokenizer = model.load_tokenizer(cfg.model)
    splits = load_splits(cfg.dataset, cfg.seed)
    tokenized = tokenize(splits, tokenizer, cfg.dataset.max_length)
    args = training_args(cfg.trainer, str(tmp_path), cfg.seed)
    trainer = build_trainer(args, model.make_model_init(cfg.model, label_names(splits)), tokenized, tokenizer)
    trainer.add_callback(console.TrialProgress(trainer, n_trials=2))
    caplog.set_level("INFO", logger="pipeline.console")
    study = optuna.create_study(study_name="prune", storage=f"sqlite:///{tmp_path}/optuna.db", direction="maximize")
    for epochs in (2, 1):
        study.enqueue_trial({"num_train_epochs": epochs})
    trainer.hyperparameter_search(
        hp_space=lambda trial: {"num_train_epochs": trial.suggest_int("num_train_epochs", 1, 2)},
        compute_objective=objective,
        n_trials=2,
        direction="maximize",
        backend="optuna",
        study_name="prune",
        storage=f"sqlite:///{tmp_path}/optuna.db",
        load_if_exists=True,
        pruner=optuna.pruners.ThresholdPruner(lower=1.1),  # accuracy is below 1.1 at every report
    )
    two, one = optuna.load_study(study_name="prune", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert two.state == optuna.trial.TrialState.PRUNED and list(two.intermediate_values) == [1]
    assert one.state == optuna.trial.TrialState.COMPLETE and list(one.intermediate_values) == [1]
    assert one.value == one.intermediate_values[1]
    outcomes = [
        re.search(r"\| (\w+) in", r.getMessage()).group(1)
        for r in caplog.records
        if "eval_accuracy by epoch" in r.getMessage()
    ]
    assert outcomes == ["pruned", "complete"]  # what the progress line tells the user


def test_a_best_value_at_a_range_end_is_worth_a_warning_only_when_something_was_learnt():
    from pipeline.finalize import worth_widening

    def study_with(values):
        study = optuna.create_study(direction="maximize")
        for value in values:
            study.add_trial(optuna.trial.create_trial(value=value))
        return study

    learnt = study_with([0.61, 0.82, 0.75])
    assert worth_widening(learnt.trials, learnt.best_trial, n_labels=4)
    chance = study_with([0.24, 0.26, 0.25])  # four classes: nothing learnt anywhere
    assert not worth_widening(chance.trials, chance.best_trial, n_labels=4)
    flat = study_with([0.8, 0.8])  # every trial the same: no direction to widen in
    assert not worth_widening(flat.trials, flat.best_trial, n_labels=4)
    perfect = study_with([0.83, 1.0])  # no value outside the range can beat 1.0
    assert not worth_widening(perfect.trials, perfect.best_trial, n_labels=4)


def test_an_end_of_the_range_is_reported_only_when_no_trial_as_good_stays_away_from_it():
    from pipeline.finalize import widening_hints

    space = load_space("batch_epochs")  # epochs 1..3, learning_rate 1e-5..1e-4 (log)
    distributions = {
        "per_device_train_batch_size": optuna.distributions.CategoricalDistribution([8, 16, 32]),
        "num_train_epochs": optuna.distributions.IntDistribution(1, 3),
        "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-4, log=True),
    }
    study = optuna.create_study(direction="maximize")
    for value, epochs in [(0.9, 3), (0.31, 1), (0.9, 2), (0.9, 3)]:
        params = {"per_device_train_batch_size": 16, "num_train_epochs": epochs, "learning_rate": 3e-5}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    assert study.best_trial.number == 0
    assert widening_hints(study, study.best_trial, space, n_labels=3) == []  # trial 2 scored 0.9 at 2 epochs
    study.add_trial(
        optuna.trial.create_trial(  # now the only best, at 3 epochs and 9.5e-5
            params={"per_device_train_batch_size": 8, "num_train_epochs": 3, "learning_rate": 9.5e-5},
            distributions=distributions,
            value=0.9 + 1e-9,
        )
    )
    assert widening_hints(study, study.best_trial, space, n_labels=3) == [
        "num_train_epochs=3 is at the upper end of [1, 3]",
        "learning_rate=9.5e-05 is at the upper end of [1e-05, 0.0001]",
    ]
    ties = [{"num_train_epochs": 3, "learning_rate": 3e-5}]  # as good, at 3 epochs too: only epochs is an end
    assert at_bounds({"num_train_epochs": 3, "learning_rate": 9.5e-5}, space, ties=ties) == [
        "num_train_epochs=3 is at the upper end of [1, 3]",
    ]


def test_trials_within_one_standard_error_of_the_best_tie_and_the_summary_names_them():
    study = optuna.create_study(direction="maximize")
    for value in (0.80, 0.70, 0.765, 0.759):  # on 100 rows: one standard error at 0.8 is 0.04
        study.add_trial(optuna.trial.create_trial(value=value))
    assert ties(study, study.best_trial, rows=100) == [0, 2]
    assert ties(study, study.best_trial, rows=10_000) == [0]  # 0.004: the best stands alone
    perfect = optuna.create_study(direction="maximize")
    for value in (1.0, 0.98, 1.0, 119 / 120):  # no spread at 1.0: one row either way still ties, two do not
        perfect.add_trial(optuna.trial.create_trial(value=value))
    assert ties(perfect, perfect.best_trial, rows=120) == [0, 2, 3]
    assert console.ties_line([0, 2], 120) == (
        "trials 0, 2 tie within noise on 120 validation rows: more validation rows would separate them"
    )
    assert console.ties_line(list(range(11)), 1500).startswith("trials 0, 1, 2, 3, 4, 5, 6, 7 and 3 more tie within ")


def test_seeds_are_summed_up_as_by_hand_and_the_first_best_on_validation_is_kept():
    seeds = Seeds({43: 0.80, 44: 0.86, 45: 0.86})
    assert seeds.chosen == 44
    mean, sd = (0.80 + 0.86 + 0.86) / 3, math.sqrt(((0.80 - 0.84) ** 2 + 2 * (0.86 - 0.84) ** 2) / 2)
    assert seeds.metrics() == pytest.approx({"seeds_eval_accuracy_mean": mean, "seeds_eval_accuracy_sd": sd})
    assert seeds.line() == (
        f"3 seeds: validation accuracy 0.8400 ± {sd:.4f} (sd; 0.8000, 0.8600, 0.8600); registered seed 44, the best "
        "on validation"
    )


@pytest.mark.slow
def test_search_seeds_retrains_the_best_trial_on_new_seeds_and_registers_the_best_on_validation(
    tmp_path, monkeypatch, capsys
):
    """`model=tiny`, two trials with the same values (so they tie), then the best retrained on 3 seeds."""
    rows = [(f"note {i} " + ("win cash" if i % 2 else "see you"), "spam" if i % 2 else "ham") for i in range(120)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "notes.csv", index=False)
    space = {
        "learning_rate": {"type": "categorical", "choices": [3e-3]},
        "num_train_epochs": {"type": "categorical", "choices": [2]},
    }
    command = [
        "dataset=local",
        f"dataset.train_file={tmp_path / 'notes.csv'}",
        "model=tiny",
        f"search.space={write_space(tmp_path, space)}",
        "search.n_trials=2",
        "search.seeds=3",
        "trainer.learning_rate=3e-3",
        "trainer.num_train_epochs=2",
    ]
    code, out, err = run_entry_point_said(monkeypatch, capsys, tmp_path, *command)
    assert code == 0, err[-3000:]
    assert re.search(r"ties +. trials 0, 1 tie within noise on 10 validation rows: more validation rows", out), out
    client = mlflow_client(tmp_path)
    (version,) = client.search_model_versions("name = 'local'")
    run = client.get_run(version.run_id)
    scored = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "seed_eval_accuracy")}
    assert sorted(scored) == [43, 44, 45]  # new seeds: the trials trained on seed 42
    for seed, value in scored.items():  # each retraining's own curve, ending on its score
        assert client.get_metric_history(run.info.run_id, f"final_seed{seed}_eval_accuracy")[-1].value == value
    chosen = max(sorted(scored), key=scored.__getitem__)
    assert version.tags[SEED_TAG] == str(chosen)
    line = Seeds({s: scored[s] for s in sorted(scored)}).line()
    assert version.tags[SEEDS_TAG] == line and f"trained on {line}" in version.description
    assert run.data.metrics["seeds_eval_accuracy_mean"] == pytest.approx(statistics.mean(scored.values()))
    assert re.search(r"seeds +. 3 seeds: validation accuracy ", out), out
    # The registered weights are the chosen seed's: on the validation rows they score its accuracy, and their
    # loss is its last eval_loss, not another seed's (losses differ between seeds even where accuracies tie).
    validation = load_splits(compose_config(*command).dataset, 42)["validation"]
    found = classifier.load(f"models:/local/{version.version}", tracking_uri(tmp_path), precision_choice="fp32")
    probabilities = found.probabilities(list(validation["text"]))
    predicted, _ = found.label_of(probabilities)
    truth = [validation.features["label"].int2str(i) for i in validation["label"]]
    assert sum(p == t for p, t in zip(predicted, truth)) / len(truth) == pytest.approx(scored[chosen])
    loss = -sum(math.log(row[found.labels.index(t)]) for row, t in zip(probabilities, truth)) / len(truth)
    losses = {s: client.get_metric_history(run.info.run_id, f"final_seed{s}_eval_loss")[-1].value for s in scored}
    assert min(losses, key=lambda s: abs(losses[s] - loss)) == chosen
    assert losses[chosen] == pytest.approx(loss, rel=0.02)


def test_a_space_over_backbones_draws_the_model_for_the_trial_and_leaves_it_out_of_the_training_values(tmp_path):
    space = load_space(write_space(tmp_path, {"model": {"type": "categorical", "choices": ["tiny", "minilm"]}}))
    assert backbone_choices(space) == ("tiny", "minilm")
    trial = optuna.create_study().ask()
    assert hp_space(space)(trial) == {}  # TrainingArguments has no `model`: the trainer swaps the backbone in
    assert trial.params["model"] in ("tiny", "minilm")


def test_a_new_study_over_backbones_starts_with_each_of_them_the_configured_one_first(tmp_path):
    cfg = compose_config(f"search.storage=sqlite:///{tmp_path}/o.db", "search.study_name=s").search
    space = load_space(
        write_space(
            tmp_path,
            {
                "model": {"type": "categorical", "choices": ["tiny", "bert_base", "minilm"]},
                "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
            },
        )
    )
    study = open_study(cfg, space, storage.open_storage(cfg), start={"model": "minilm", "learning_rate": 5e-5})
    first = [study.ask() for _ in range(3)]
    for trial in first:
        hp_space(space)(trial)
    assert [t.params["model"] for t in first] == ["minilm", "tiny", "bert_base"]
    assert {t.params["learning_rate"] for t in first} == {5e-5}


def test_the_default_study_name_of_a_space_over_backbones_is_one_per_space_whatever_model_is_named(tmp_path):
    backbones = write_space(tmp_path, {"model": {"type": "categorical", "choices": ["tiny", "minilm"]}})
    assert backbone_name(backbones, "minilm") == backbone_name(backbones, "tiny")
    assert backbone_name(backbones, "tiny").startswith("backbones-")
    other = tmp_path / "other"
    other.mkdir()
    wider = write_space(other, {"model": {"type": "categorical", "choices": ["tiny", "bert_base"]}})
    assert backbone_name(wider, "tiny") != backbone_name(backbones, "tiny")
    assert backbone_name("batch_epochs", "minilm") == "minilm"
    name = compose_config(f"search.space={backbones}", "model=tiny").search.study_name
    assert name == f"ag_news-{backbone_name(backbones, 'tiny')}"


def measured(value: float, ms: float | None, backbone: str) -> optuna.trial.FrozenTrial:
    """A completed trial of `backbone` measured at `ms` per text (None: not measured)."""
    attrs = {} if ms is None else Speed(1000 / ms, ms, 10, 1.0, "cpu (float32; test, 2 threads)").__dict__
    return optuna.trial.create_trial(
        value=value,
        params={"model": backbone},
        user_attrs=attrs,
        distributions={"model": optuna.distributions.CategoricalDistribution(["a", "b", "c", "d"])},
    )


def test_a_budget_picks_the_most_accurate_trial_within_it_and_says_what_it_cost():
    study = optuna.create_study(direction="maximize")
    for value, ms, backbone in ((0.90, 20.0, "a"), (0.86, 4.0, "b"), (0.84, 1.0, "c"), (0.95, None, "d")):
        study.add_trial(measured(value, ms, backbone))
    assert best_trial(study).number == 3  # no budget: the most accurate, measured or not
    assert best_trial(study, 5.0).number == 1 and best_trial(study, 1.0).number == 2
    assert ties(study, study.trials[1], rows=100, budget=5.0) == [1, 2]  # the better trials over the budget are no ties
    assert budget_line(study, 5.0, study.trials[1]) == (
        "best within 5 ms/text: trial 1 (b) 0.8600 at 4.00 ms/text; best overall: trial 3 (d) 0.9500 (speed not "
        "measured)"
    )
    with pytest.raises(PipelineError) as raised:
        best_trial(study, 0.5)
    assert str(raised.value) == (
        "registry.max_ms_per_text=0.5: none of the 4 completed trials classifies that fast; the fastest model, c, "
        "takes 1.00 ms/text on cpu (float32; test, 2 threads); raise the budget or search smaller models. "
        "Nothing registered"
    )


def test_a_budget_judges_each_backbone_by_its_median_trial_never_by_one_lucky_measurement():
    study = optuna.create_study(direction="maximize")
    # Three trials of one model, measured with timing noise around 2 ms, and one unmeasured (pruned elsewhere).
    for value, ms in ((0.90, 2.1), (0.89, 1.9), (0.88, 2.0), (0.91, None)):
        study.add_trial(measured(value, ms, "a"))
    study.add_trial(measured(0.70, 0.5, "b"))
    assert best_trial(study, 2.0).number == 3  # the model's median, 2.0 ms, is within: all its trials are
    assert best_trial(study, 1.95).number == 4  # not the 1.9 ms draw: the model is over, whichever trial
    assert budget_line(study, 1.95, study.trials[4]).endswith("best overall: trial 3 (a) 0.9100 at 2.00 ms/text")


def test_whatever_the_budget_its_pick_is_a_backbones_best_whose_weights_stay_kept(tmp_path):
    study = optuna.create_study(direction="maximize")
    for value, ms, backbone in (
        (0.90, 20.0, "a"),
        (0.92, 21.0, "a"),
        (0.86, 4.0, "b"),
        (0.86, 4.2, "b"),
        (0.8, 1, "c"),
    ):
        study.add_trial(measured(value, ms, backbone))
    bests = best_of_each_backbone(study)
    assert {name: t.number for name, t in bests.items()} == {"a": 1, "b": 2, "c": 4}  # the earliest of equals
    for budget in (None, 30.0, 10.0, 4.1, 2.0):
        assert best_trial(study, budget) in bests.values()
    running = study.ask()  # another worker's trial, its weights saved before it completes
    for name in [f"trial-{t.number}" for t in study.trials] + [".trial-3.partial"]:
        (tmp_path / name).mkdir()
    drop_checkpoints(study, str(tmp_path), keep=study.trials[0])
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["trial-0", "trial-1", "trial-2", "trial-4", f"trial-{running.number}"]


def test_the_front_holds_the_trials_no_other_beats_on_speed_and_accuracy_and_the_plot_draws_it():
    points = [(4.0, 0.86), (20.0, 0.90), (1.0, 0.84), (5.0, 0.85), (1.0, 0.80), (30.0, 0.90)]
    assert pareto_front(points) == [(1.0, 0.84), (4.0, 0.86), (20.0, 0.90)]
    study = optuna.create_study(direction="maximize")
    for value, ms, backbone in ((0.90, 20.0, "a"), (0.86, 4.0, "b"), (0.84, 1.0, "c")):
        study.add_trial(measured(value, ms, backbone))
    figure = accuracy_vs_speed(study.trials, study.trials[1], 5.0)
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels == ["a", "b", "c", "front", "pick: trial 1", "budget 5 ms/text"]
