"""Training arguments, the order of length-grouped batches and the Trainer's adversarial (FGM) step, on the tiny "
"model."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
import transformers
from datasets import Dataset, DatasetDict
from torch.utils.data import RandomSampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from devtools.commands import TINY
from pipeline.data.read import label_names
from pipeline.data.splits import load_splits, tokenize
from pipeline.errors import PipelineError
from pipeline.search.space import parse_param
from pipeline.tracking.callbacks import GPU_PEAK_METRIC, system_metrics
from pipeline.training import internals, model
from pipeline.training.args import training_args
from pipeline.training.metrics import PER_CLASS, Scored, bootstrap_f1_macro, headline, wilson
from pipeline.training.sampling import ShuffledLengthBatches, length_grouped_or_random
from pipeline.training.trainer import build_trainer, nudged_embeddings
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_config(*TINY, "dataset.max_train_samples=32", "dataset.max_eval_samples=16")
    tokenizer = model.load_tokenizer(cfg.model)
    splits = load_splits(cfg.dataset, cfg.seed)
    tokenized = tokenize(splits, tokenizer, cfg.dataset.max_length)
    return cfg, tokenizer, tokenized, model.make_model_init(cfg.model, label_names(splits))


def one_step(tiny, tmp_path, fgm_epsilon: float) -> tuple[float, dict[str, torch.Tensor], int]:
    """Train one step; the loss it reports, the weights after it, and how many forward passes it took."""
    cfg, tokenizer, tokenized, model_init = tiny
    # Plain SGD with no warmup, so the step's weights show its gradients (Adam's first step is only their sign).
    args = training_args(
        cfg.trainer, str(tmp_path), cfg.seed, max_steps=1, warmup_steps=0, optim="sgd", fgm_epsilon=fgm_epsilon
    )
    trainer = build_trainer(args, model_init, tokenized, tokenizer)
    forwards = []
    trainer.model.register_forward_hook(lambda *_: forwards.append(1))
    loss = trainer.train().training_loss
    return loss, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, len(forwards)


def test_fgm_trains_on_nudged_embeddings_too_and_reports_the_clean_loss(tiny, tmp_path):
    clean_loss, clean_weights, clean_forwards = one_step(tiny, tmp_path / "off", 0.0)
    fgm_loss, fgm_weights, fgm_forwards = one_step(tiny, tmp_path / "on", 1.0)
    assert fgm_forwards == 2 * clean_forwards  # the batch again, on moved embeddings
    assert fgm_loss == pytest.approx(clean_loss)  # what the user sees is the loss on the real batch
    changed = [k for k in clean_weights if not torch.equal(clean_weights[k], fgm_weights[k])]
    assert "bert.embeddings.word_embeddings.weight" in changed and "classifier.weight" in changed


def test_nudged_embeddings_move_by_epsilon_along_the_gradient_and_come_back(tiny):
    _, tokenizer, _, model_init = tiny
    net = model_init()
    batch = tokenizer(["stocks rally as oil slides"], return_tensors="pt")
    net(**batch, labels=torch.tensor([2])).loss.backward()
    weight = net.get_input_embeddings().weight
    before = weight.detach().clone()
    with nudged_embeddings(net, 0.5):
        step = weight.detach() - before
        assert step.norm().item() == pytest.approx(0.5, rel=1e-4)
        assert torch.nn.functional.cosine_similarity(step.flatten(), weight.grad.flatten(), dim=0) > 0.999
    assert torch.equal(weight.detach(), before)


def test_nudged_embeddings_without_a_gradient_leave_the_weights_alone(tiny):
    net = tiny[3]()
    before = net.get_input_embeddings().weight.detach().clone()
    with nudged_embeddings(net, 1.0):
        assert torch.equal(net.get_input_embeddings().weight.detach(), before)


def test_fgm_epsilon_is_a_trainer_key_and_a_search_parameter(tmp_path):
    cfg = compose_config(*TINY, "trainer.fgm_epsilon=0.5")
    assert training_args(cfg.trainer, str(tmp_path), cfg.seed).fgm_epsilon == 0.5
    with pytest.raises(PipelineError, match=r"trainer.fgm_epsilon=-1: must be 0 \(off\) or a positive number"):
        training_args({"fgm_epsilon": -1}, str(tmp_path), 0)
    param = parse_param("fgm_epsilon", {"type": "categorical", "choices": [0.0, 1.0]}, "sweeps/x.yaml")
    assert param.choices == (0.0, 1.0)


def padded_lengths(tiny, tmp_path, strategy: str, lengths: list[int], min_batches: int = 1) -> list[int]:
    """The padded length of each training batch of 8, in the order an epoch trains them."""
    cfg, tokenizer, _, model_init = tiny
    rows = Dataset.from_dict(
        {
            "input_ids": [[5] * n for n in lengths],
            "attention_mask": [[1] * n for n in lengths],
            "labels": [n % 2 for n in lengths],
        }
    )
    args = training_args(
        cfg.trainer,
        str(tmp_path),
        cfg.seed,
        per_device_train_batch_size=8,
        train_sampling_strategy=strategy,
        group_by_length_min_batches=min_batches,
    )
    trainer = build_trainer(args, model_init, DatasetDict(train=rows, validation=rows), tokenizer)
    transformers.set_seed(cfg.seed)
    return [batch["input_ids"].shape[1] for batch in trainer.get_train_dataloader()]


def test_length_grouped_batches_come_in_shuffled_order_not_longest_first_per_megabatch(tiny, tmp_path):
    lengths = torch.randint(3, 120, (803,), generator=torch.Generator().manual_seed(0)).tolist()
    grouped = padded_lengths(tiny, tmp_path, "group_by_length", lengths)
    mixed = padded_lengths(tiny, tmp_path, "random", lengths)
    assert len(grouped) == len(mixed) == 101  # every row once, the short batch of 3 at the end
    assert grouped[0] == max(lengths)  # an out-of-memory error would show at the first step
    assert sum(grouped) < 0.7 * sum(mixed)  # the padding saved is kept
    # transformers' own order sorts each megabatch (25 batches here) longest first: 96 of 100 steps go down.
    steps_down = sum(b < a for a, b in zip(grouped, grouped[1:]))
    assert 30 < steps_down < 70


def test_an_epoch_shorter_than_the_minimum_trains_on_random_batches_a_longer_one_on_length_groups(tiny, tmp_path):
    lengths = torch.randint(3, 120, (803,), generator=torch.Generator().manual_seed(0)).tolist()  # 101 batches
    mixed = padded_lengths(tiny, tmp_path, "random", lengths)
    assert padded_lengths(tiny, tmp_path, "group_by_length", lengths, min_batches=102) == mixed
    grouped = padded_lengths(tiny, tmp_path, "group_by_length", lengths, min_batches=101)
    assert sum(grouped) < 0.7 * sum(mixed)


def test_under_ddp_the_minimum_counts_each_ranks_batches():
    lengths = torch.randint(3, 120, (803,), generator=torch.Generator().manual_seed(0)).tolist()  # 101 batches of 8
    grouped = LengthGroupedSampler(8, lengths=lengths)
    assert isinstance(length_grouped_or_random(grouped, lengths, min_batches=101), ShuffledLengthBatches)
    assert isinstance(length_grouped_or_random(grouped, lengths, min_batches=52, ranks=2), RandomSampler)  # 51 each
    assert isinstance(length_grouped_or_random(grouped, lengths, min_batches=51, ranks=2), ShuffledLengthBatches)


def test_length_grouped_order_follows_the_generator_accelerate_sets_on_every_ddp_rank():
    lengths = torch.randint(3, 120, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    ranks = [ShuffledLengthBatches(LengthGroupedSampler(8, lengths=lengths)) for _ in range(2)]
    for rank in ranks:  # what accelerate's prepare_data_loader does with a sampler's `generator`
        rank.generator = torch.Generator().manual_seed(3)
    assert list(ranks[0]) == list(ranks[1])
    ranks[1].generator.manual_seed(4)
    assert list(ranks[0]) != list(ranks[1])


def test_each_training_makes_its_model_after_the_last_ones_memory_is_released(tiny, tmp_path):
    """Trainings in one Trainer, as trials of a search are: when model_init makes a model, nothing holds the
    one before (left to the Trainer, its weights and Adam state would sit on the GPU beside the new ones)."""
    cfg, tokenizer, tokenized, model_init = tiny
    made, alive_when_making = [], []

    def tracked_init():
        gc.collect()
        alive_when_making.append(sum(ref() is not None for ref in made))
        model = model_init()
        made.append(weakref.ref(model))
        return model

    args = training_args(cfg.trainer, str(tmp_path), cfg.seed, max_steps=2)
    trainer = build_trainer(args, tracked_init, tokenized, tokenizer)  # makes one model
    for _ in range(2):
        trainer.train()
    assert alive_when_making == [0, 0, 0]
    assert made[-1]() is trainer.model and trainer.evaluate()["eval_loss"] > 0  # the last one stays usable


def test_on_a_gpu_each_training_counts_its_own_peak_memory_and_logs_it(tiny, tmp_path, monkeypatch):
    cfg, tokenizer, tokenized, model_init = tiny
    trainer = build_trainer(training_args(cfg.trainer, str(tmp_path), cfg.seed), model_init, tokenized, tokenizer)
    resets = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: resets.append(device))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 300 * 2**20)
    internals.release_previous_model(trainer)  # as each training with model_init starts
    assert resets == [None] and trainer.model is None
    assert system_metrics()[GPU_PEAK_METRIC] == 300  # each epoch's end, in MB


def test_scores_equal_scikit_learns_on_random_labels_with_missing_and_unseen_classes():
    """The metrics are computed in numpy (scikit-learn's import cost every command half a second): they must
    agree with scikit-learn's, zero_division=0 included (a class never predicted, or never true)."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    for case in range(200):
        n_classes, n_rows = rng.integers(2, 6), rng.integers(1, 30)
        truth, predicted = (rng.integers(0, n_classes, n_rows).astype(str) for _ in range(2))
        found = headline(truth, predicted)
        assert found["accuracy"] == pytest.approx(float(np.mean(truth == predicted)), abs=1e-12)
        assert found["f1_macro"] == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0))
        labels = [*map(str, range(n_classes)), "never"]
        per_class = Scored(labels, list(truth), list(predicted)).metrics()
        expected = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
        for kind, values in zip(PER_CLASS, expected):
            assert [per_class[f"{kind}_{label}"] for label in labels] == pytest.approx(list(values)), (case, kind)


def test_the_accuracy_interval_is_wilsons_as_computed_by_hand():
    # 169 of 200: p = 0.845, z = 1.96; centre (p + z²/2n) / (1 + z²/n) = 0.838494,
    # half-width z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n) = 0.050105.
    assert wilson(169, 200) == pytest.approx((0.788389, 0.888599), abs=1e-5)
    assert wilson(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-5)  # never outside [0, 1], never empty
    assert wilson(10, 10)[1] == pytest.approx(1.0)


def test_the_f1_interval_is_a_bootstrap_over_rows():
    """Drawn over the confusion matrix's cells: the same as resampling rows, checked against a row bootstrap."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, 1600).astype(str)
    predicted = np.where(rng.random(1600) < 0.85, truth, rng.integers(0, 4, 1600).astype(str))
    rows = np.random.default_rng(5)
    by_rows = [
        f1_score(truth[i], predicted[i], average="macro", labels=np.unique(truth), zero_division=0)
        for i in (rows.integers(0, 1600, 1600) for _ in range(400))
    ]
    low, high = bootstrap_f1_macro(truth, predicted)
    assert (low, high) == pytest.approx(tuple(np.percentile(by_rows, [2.5, 97.5])), abs=0.005)
    assert low < headline(truth, predicted)["f1_macro"] < high
    assert bootstrap_f1_macro(truth, predicted) == (low, high)  # seeded: the same rows, the same interval
    scored = Scored(["0", "1", "2", "3"], list(truth), list(predicted)).metrics("test_")
    assert scored["test_rows"] == 1600 and scored["test_f1_macro_low"] == low
