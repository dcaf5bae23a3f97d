"""Every use of datasets' private API (and of its error messages), in one place: `tests/test_internals.py`
fails loudly when an upgrade of datasets changes one."""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset
from datasets.fingerprint import Hasher
from datasets.utils.stratify import stratified_shuffle_split_generate_indices

NO_ROWS = "corresponds to no data"  # datasets' words for a data file without rows
FEW_ROWS = "Minimum class count error"  # its stratified split's words for a class of a single row


def cache_key(ds: Dataset, *made_with: Any) -> str:
    """The cache fingerprint of what is made from `ds` with `made_with`: a result is reused across runs only
    when both are the same. (datasets' own hash of a mapping function differs between processes.)"""
    return Hasher.hash([ds._fingerprint, *made_with])


def stratified_indices(labels: np.ndarray, n_first: int, n_second: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a seeded, stratified split, as `Dataset.train_test_split(stratify_by_column=...)` picks
    them; a class of one row is a ValueError that says so."""
    try:
        return next(stratified_shuffle_split_generate_indices(labels, n_first, n_second, np.random.default_rng(seed)))
    except ValueError as err:
        if str(err) == FEW_ROWS:
            raise ValueError("a class has only 1 row; stratifying needs at least 2 of each") from None
        raise


def says_no_rows(reason: str) -> bool:
    """Whether datasets' error about a data file says it holds no rows."""
    return NO_ROWS in reason
