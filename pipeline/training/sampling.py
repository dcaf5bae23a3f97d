"""The training batches under `trainer.train_sampling_strategy=group_by_length`: batches of texts of similar
length (little padding), in shuffled order; random batches when an epoch is shorter than
`trainer.group_by_length_min_batches`.

transformers' LengthGroupedSampler cuts the shuffled rows into megabatches of up to 50 batches and sorts each
longest first, so training walks the lengths in a sawtooth, long to short, again and again. On small data that
order cost 10 points of validation accuracy (128 rows, 9 seeds); the same batches in shuffled order keep the
padding saved. In a short epoch even shuffled ones cost accuracy (3 points at 16 batches, 6 seeds; nothing
measurable at 128 batches): there random batches train (docs/performance.md)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import RandomSampler, Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler


class ShuffledLengthBatches(Sampler[int]):
    """The batches `grouped` makes, in random order; the one holding the longest text stays first (an
    out-of-memory error shows at the first step) and a short last batch stays last (the DataLoader cuts
    the indices into batches in order)."""

    def __init__(self, grouped: LengthGroupedSampler) -> None:
        self.grouped = grouped

    def __len__(self) -> int:
        return len(self.grouped)

    @property
    def generator(self) -> torch.Generator | None:
        """The grouping's generator: under DDP, accelerate sets it and keeps it the same on every rank."""
        return self.grouped.generator

    @generator.setter
    def generator(self, value: torch.Generator | None) -> None:
        self.grouped.generator = value

    def __iter__(self) -> Iterator[int]:
        indices = list(self.grouped)
        size = self.grouped.batch_size
        batches = [indices[start : start + size] for start in range(0, len(indices), size)]
        short_last = len(batches[-1]) < size
        movable = max(len(batches) - 1 - short_last, 0)  # every full batch after the first
        # None means torch's global generator, which the Trainer seeds and checkpoints: a resumed trial
        # draws the same order.
        shuffled = (torch.randperm(movable, generator=self.generator) + 1).tolist()
        order = [0, *shuffled, *range(movable + 1, len(batches))]
        for batch in order:
            yield from batches[batch]


def length_grouped_or_random(
    grouped: LengthGroupedSampler, rows: Sized, min_batches: int, ranks: int = 1
) -> Sampler[int]:
    """`grouped`'s batches in shuffled order; when an epoch has fewer than `min_batches` batches, random
    batches of `rows`, as transformers' `random` strategy makes them: there grouping saves seconds and costs
    accuracy, as a text's length goes with its class, so grouped batches lean to a class (docs/performance.md).
    The epoch's length counts optimizer steps: a batch of `grouped` is a whole step (with its gradient
    accumulation), and under DDP each of `ranks` trains every `ranks`-th one."""
    if math.ceil(len(grouped) / (grouped.batch_size * ranks)) < min_batches:
        return RandomSampler(rows)
    return ShuffledLengthBatches(grouped)
