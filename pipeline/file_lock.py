"""One process at a time creates a new SQLite database's tables: two commands started at the same instant
on new files otherwise race inside MLflow's and Optuna's schema migrations (alembic stops the loser)."""
from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def sqlite_creation_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock on `<database>.lock` beside a `sqlite:///` database for the block; no-op
    for other URLs (servers serialize their own schema changes, and racing creators retry)."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        yield
        return
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
