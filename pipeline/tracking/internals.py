"""Every place MLflow's errors and warnings are recognised by their words, in one place:
`tests/test_internals.py` fails loudly when an upgrade of MLflow says them otherwise."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

UNANSWERED = ("API request to", " failed with ")  # a request to a tracking server that got no answer
PARAM_CHANGED = "Changing param values"  # a param logged again with another value
# A unique-constraint violation, in the words of PostgreSQL, SQLite and MySQL (through MLflow's stores).
DUPLICATE_KEY = ("duplicate key", "UNIQUE constraint failed", "Duplicate entry")
# Logging a local file as a dataset: "can be interpreted in multiple ways" (both readings are the local file),
# and the schema's hint on integer columns (about serving a model with that schema, which a dataset is not).
DATASET_WARNINGS = (".*can be interpreted in multiple ways", "Hint: Inferred schema contains integer")


def unreachable(err: BaseException) -> bool:
    """MLflow's words for a request that got no answer after its own few retries (refused, reset, timed
    out, or a 5xx from a server that is starting)."""
    text = str(err)
    return text.startswith(UNANSWERED[0]) and UNANSWERED[1] in text


def duplicate_key(err: BaseException) -> bool:
    """A write that lost a race: another writer inserted the same row first."""
    return any(words in str(err) for words in DUPLICATE_KEY)


def param_changed(err: BaseException) -> bool:
    """MLflow's refusal of a param value that differs from the one already logged."""
    return PARAM_CHANGED in str(err)


@contextlib.contextmanager
def quiet_dataset_warnings() -> Iterator[None]:
    """MLflow's warnings on logging a user's file as a dataset, which say nothing to the user, left out."""
    with warnings.catch_warnings():
        for message in DATASET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield
