"""The training data's profile and a new file's shift from it (pipeline/data/profile.py), with the tiny
model's tokenizer (BERT WordPiece: a snowman is its unknown token): counts by hand, each threshold crossed
and not."""

import random

import numpy as np
import pytest

from devtools.commands import TINY
from pipeline.data.profile import MIN_ROWS, TOP_TOKENS, Profile, profile, shift
from pipeline.training import model
from tests.conftest import compose_config

WORDS = ["bank", "market", "goal", "team", "lab", "cells", "river", "music", "city", "road"]


@pytest.fixture(scope="module")
def tokenizer():
    return model.load_tokenizer(compose_config(*TINY).model)


def sentences(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words + rng.randrange(3))) for _ in range(n)]


def labels_for(n: int, names: list[str]) -> list[str]:
    return [names[i % len(names)] for i in range(n)]


def test_a_profile_counts_lengths_labels_and_unknown_tokens_as_by_hand(tokenizer):
    texts = ["bank market goal", "team ☃", "lab cells river music"]  # 3, 2 (one unknown), 4 tokens
    found = profile(texts, ["a", "b", "a"], tokenizer)
    assert found.rows == 3 and found.labels == {"a": 2 / 3, "b": 1 / 3}
    assert found.lengths["50"] == 3 and found.lengths["5"] == pytest.approx(np.percentile([3, 2, 4], 5))
    assert found.unknown == pytest.approx(1 / 9)
    assert found.tokens["[UNK]"] == 1 and sum(found.tokens.values()) == 9
    assert Profile.from_dict(found.to_dict()) == found  # as kept on the version's run, as JSON
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and w.islower())[:3000]
    many = profile(words, None, tokenizer)
    assert len(many.tokens) == TOP_TOKENS and many.labels == {}
    # Not truncated: a text longer than the tokenizer's max length counts whole.
    tokenizer_max = tokenizer.model_max_length
    assert profile(["bank " * (tokenizer_max + 50)], None, tokenizer).lengths["50"] == tokenizer_max + 50


def test_rows_like_the_training_data_are_not_far_out(tokenizer):
    training = profile(sentences(300, 8, 1), labels_for(300, ["x", "y", "z"]), tokenizer)
    for seed in range(2, 7):
        here = profile(sentences(100, 8, seed), labels_for(100, ["z", "y", "x"]), tokenizer)
        found = shift(training, here)
        assert found.far == () and 0.8 < found.length_ratio < 1.25


def test_longer_texts_a_missing_label_and_unknown_tokens_are_each_far_out(tokenizer):
    training = profile(sentences(300, 8, 1), labels_for(300, ["x", "y", "z"]), tokenizer)
    longer = shift(training, profile([" ".join([t] * 5) for t in sentences(100, 8, 2)], None, tokenizer))
    assert longer.length_ratio == pytest.approx(5, rel=0.1)
    median, here = longer.median
    assert longer.far == (f"texts 5.0x as long (median {here:.0f} tokens, {median:.0f} in training)",)
    shorter = shift(training, profile(sentences(100, 2, 2), None, tokenizer))
    assert shorter.length_ratio < 0.5 and shorter.far[0].startswith("texts 0.")
    missing = shift(training, profile(sentences(100, 8, 2), labels_for(100, ["x", "y"]), tokenizer))
    assert missing.label == ("z", pytest.approx(1 / 3), 0.0)
    # x and y went from 33% to 50% each: past 3 standard errors too, counted beside the largest move.
    assert missing.far == ("label 'z' on 0% of rows (33% in training), and 2 other labels' shares",)
    rare = ["x"] * 48 + ["y"] * 39 + ["z"] * 13  # a rare label 2% -> 13%; y 48% -> 39% is within its noise
    trained = profile(sentences(300, 8, 1), ["x"] * 150 + ["y"] * 144 + ["z"] * 6, tokenizer)
    found = shift(trained, profile(sentences(100, 8, 2), rare, tokenizer))
    assert found.far == ("label 'z' on 13% of rows (2% in training)",)
    unlabelled = profile(sentences(300, 8, 1), None, tokenizer)  # a profile without labels compares none
    assert shift(unlabelled, profile(sentences(100, 8, 2), rare, tokenizer)).label is None
    assert missing.metrics()["drift_label_share_change"] == pytest.approx(1 / 3)
    snowed = shift(training, profile([t + " ☃" for t in sentences(100, 8, 2)], None, tokenizer))
    assert snowed.unknown[0] == 0 and 0.05 < snowed.unknown[1] < 0.15
    assert snowed.far[0].endswith("of tokens unknown to the model's tokenizer (0.0% in training)")


def test_a_label_share_moved_within_its_noise_or_on_few_rows_is_not_far_out(tokenizer):
    training = profile(sentences(60, 8, 1), labels_for(60, ["x", "y"]), tokenizer)  # 50% each, on 60 rows
    # 62% x on 100 rows: 12 points, past LABEL_POINTS but within 3 standard errors of two counts of 50%.
    tilted = shift(training, profile(sentences(100, 8, 2), ["x"] * 62 + ["y"] * 38, tokenizer))
    assert tilted.label[0] in ("x", "y") and tilted.far == ()
    few = [" ".join([t] * 5) for t in sentences(MIN_ROWS - 1, 8, 2)]
    assert shift(training, profile(few, ["x"] * len(few), tokenizer)).far == ()  # too few rows to judge
    assert shift(training, profile(few + few[:1], ["x"] * (len(few) + 1), tokenizer)).far != ()
