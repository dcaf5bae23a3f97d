"""SQLite stores (`sqlite:///PATH`), which MLflow and Optuna both use by default: where the file is, and one
process at a time creating a new database's tables (in a directory made for it)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

PREFIX = "sqlite:///"


def path_of(url: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URL; None for other URLs and for an in-memory database."""
    if not url.startswith(PREFIX) or url == PREFIX + ":memory:":
        return None
    return Path(url.removeprefix(PREFIX))


def absolute(url: str) -> str:
    """`url` with a relative SQLite path made absolute; other URLs unchanged. MLflow caches one store per URL
    string for the process, so a relative URL would keep writing to the directory it was first used in."""
    path = path_of(url)
    return url if path is None else PREFIX + str(path.absolute())


@contextlib.contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock on `<database>.lock` beside a SQLite database for the block; no-op for other
    URLs (servers serialize their own schema changes, and racing creators retry). Two commands started at the
    same instant on new files otherwise race inside MLflow's and Optuna's schema migrations (alembic stops
    the loser)."""
    path = path_of(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
