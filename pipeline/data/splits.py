"""The train, validation and test splits a run works on: the held-out carve-outs (seeded, stratified), the
row caps, label names, and tokenization (cached across runs)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

import numpy as np
from datasets import Dataset, DatasetDict
from datasets.fingerprint import Hasher

from pipeline.data import internals
from pipeline.data.read import batches, read
from pipeline.errors import PipelineError
from pipeline.schema import DatasetConfig

log = logging.getLogger(__name__)


def load_splits(cfg: DatasetConfig, seed: int) -> DatasetDict:
    """Train, validation and test splits, each with a `text` string and a ClassLabel `label`."""
    train, test = read(cfg)
    names = train.features["label"].names
    if test is None:
        train, test = _carve(train, cfg.test_fraction, seed, "dataset.test_fraction")
    train, validation = _carve(train, cfg.validation_fraction, seed, "dataset.validation_fraction")
    splits = DatasetDict(
        train=_cap(train, cfg.max_train_samples, seed),
        validation=_cap(validation, cfg.max_eval_samples, seed),
        test=_cap(test, cfg.max_eval_samples, seed),
    )
    for split, ds in splits.items():
        if len(ds) == 0:
            raise PipelineError(f"the {split} split is empty: check dataset.max_*_samples and the input files")
    assert all(ds.features["label"].names == names for ds in splits.values())
    missing = sorted(set(range(len(names))) - set(np.unique(_labels(splits["test"])).tolist()))
    if missing:
        log.warning(
            "the test split has no rows of class %s: its scores count the other classes only",
            ", ".join(repr(names[i]) for i in missing),
        )
    return splits


@dataclass(frozen=True)
class Duplicates:
    """Texts in more than one split (the same joined text, exactly), and texts of train with more than one
    label: a test text also in train makes test accuracy optimistic."""

    validation_in_train: int  # validation rows whose text is also in train
    test_in_train: int
    test_in_validation: int
    conflicting_in_train: int  # distinct train texts that carry two labels or more

    def metrics(self) -> dict[str, float]:
        return {f"duplicates_{name}": float(value) for name, value in asdict(self).items()}

    def warn(self, dropping: bool) -> None:
        said = {"test": self.test_in_train + self.test_in_validation, "validation": self.validation_in_train}
        for split, count in said.items():
            if count:
                log.warning(
                    "%d %s texts also occur in %s: %s",
                    count,
                    split,
                    "train" if split == "validation" else "train or validation",
                    "removed from train and validation (dataset.drop_duplicates=true)"
                    if dropping
                    else f"{split} accuracy would be optimistic; dataset.drop_duplicates=true removes them from train "
                    "and validation",
                )
        if self.conflicting_in_train:
            log.warning("%d texts occur in train with more than one label", self.conflicting_in_train)


def find_duplicates(splits: DatasetDict) -> Duplicates:
    found = {name: texts(ds) for name, ds in splits.items()}
    train, validation, test = (set(found[name]) for name in ("train", "validation", "test"))
    labels_of: dict[str, set[int]] = {}
    for text, label in zip(found["train"], _labels(splits["train"]).tolist()):
        labels_of.setdefault(text, set()).add(label)
    return Duplicates(
        validation_in_train=sum(t in train for t in found["validation"]),
        test_in_train=sum(t in train for t in found["test"]),
        test_in_validation=sum(t in validation for t in found["test"]),
        conflicting_in_train=sum(len(seen) > 1 for seen in labels_of.values()),
    )


def drop_duplicates(splits: DatasetDict) -> DatasetDict:
    """Train without the texts of validation and test, validation without those of test; test as it is
    (the held-out rows are never chosen from)."""
    later = {"train": ("validation", "test"), "validation": ("test",)}
    found = {name: texts(ds) for name, ds in splits.items()}  # each split read once
    kept = dict(splits)
    for name, others in later.items():
        seen = set().union(*(found[other] for other in others))
        rows = [i for i, text in enumerate(found[name]) if text not in seen]
        kept[name] = splits[name].select(rows, new_fingerprint=internals.cache_key(splits[name], "dedup", rows))
    return DatasetDict(kept)


def texts(ds: Dataset) -> list[str]:
    """The split's texts (its text columns joined), in row order."""
    return [text for batch in batches(ds, ["text"]) for text in batch.column("text").to_pylist()]


def majority_class(ds: Dataset) -> int:
    """The most common class id of a split (the lowest id among equals)."""
    return int(np.argmax(np.bincount(_labels(ds))))


def tokenize(splits: DatasetDict, tokenizer, max_length: int) -> DatasetDict:
    """Tokenize every split once per run, reused across runs from the datasets cache; padding happens
    per batch in the collator."""

    options = _encoding(tokenizer)

    def encode(batch: dict) -> dict:
        return tokenizer(batch["text"], max_length=max_length, **options)

    identity = tokenizer_identity(tokenizer)
    return DatasetDict(
        {
            name: ds.map(
                encode,
                batched=True,
                remove_columns=["text"],
                desc=f"tokenize {name}",
                new_fingerprint=internals.cache_key(ds, identity, max_length, options),
            )
            for name, ds in splits.items()
        }
    )


def _encoding(tokenizer) -> dict:
    """What to keep of the tokenizer's output: the collator makes the attention mask when it pads a batch
    (a fifth less tokenizing time, a column less to cache), and token types only where a single text has
    some other than 0 (Funnel marks [CLS] with 2; BERT's are all 0, which the model assumes without them)."""
    types = tokenizer("a b", truncation=True).get("token_type_ids")
    return {"truncation": True, "return_attention_mask": False, "return_token_type_ids": bool(types and any(types))}


def tokenizer_identity(tokenizer) -> str:
    """A hash of the tokenizer's definition. The object's own hash changes once it has truncated
    (its state records that), which would make every run miss the cache."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return Hasher.hash(spec)


def _carve(ds: Dataset, fraction: float, seed: int, key: str) -> tuple[Dataset, Dataset]:
    """Seeded, stratified split of `fraction` of the rows."""
    n_classes = ds.features["label"].num_classes
    held_out = round(len(ds) * fraction)
    if not 0 < fraction < 1 or held_out < n_classes or len(ds) - held_out < n_classes:
        raise PipelineError(
            f"{key}={fraction}: {len(ds)} rows cannot give a held-out split with every one of {n_classes} "
            "classes; add rows or change the fraction"
        )
    try:
        return _stratified_split(ds, len(ds) - held_out, held_out, seed)
    except ValueError as err:
        raise PipelineError(f"{key}={fraction}: cannot stratify: {err}") from None


def _cap(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded, stratified subsample of at most `limit` rows."""
    if limit is None or limit >= len(ds):
        return ds
    if limit <= 0:
        raise PipelineError(f"dataset.max_*_samples={limit}: must be positive")
    try:
        return _stratified_split(ds, limit, len(ds) - limit, seed)[0]
    except ValueError:  # fewer rows than classes: stratification impossible, a plain sample still is
        return ds.shuffle(seed=seed).select(range(limit))


def _stratified_split(ds: Dataset, n_first: int, n_second: int, seed: int) -> tuple[Dataset, Dataset]:
    """`ds.train_test_split(train_size=n_first, test_size=n_second, seed=seed, stratify_by_column="label")`, the
    same rows in the same order, with the labels read through Arrow: datasets reads them for it one row at a
    time (8 s for 100k rows here)."""
    first, second = internals.stratified_indices(_labels(ds), n_first, n_second, seed)
    # The rows chosen, not only the arguments, name the splits in the cache: should an upgrade of datasets or
    # numpy choose others, the tokenized splits are made again rather than read stale.
    return (
        ds.select(first, new_fingerprint=internals.cache_key(ds, first)),
        ds.select(second, new_fingerprint=internals.cache_key(ds, second)),
    )


def _labels(ds: Dataset) -> np.ndarray:
    """The class ids in row order, read in batches: `ds[:]` through a split's indices took 50 MB per 100k rows,
    and `ds.unique` writes the split out again first."""
    return np.concatenate([batch.column("label").to_numpy() for batch in batches(ds, ["label"])])
