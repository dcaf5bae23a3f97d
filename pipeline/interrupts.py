"""Hold Ctrl-C and SIGTERM while the pipeline writes to a tracking or study database.

An interrupt raised in the middle of a SQLite write can leave that write's transaction open, locking the
database for the cleanup that should mark the run KILLED; held until the write ends, it is raised at a
point where nothing is half-written."""
from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every `finally` runs."""


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then raise them (main thread only: elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():  # only it can set signal handlers
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _f: received.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in received:
            signal.raise_signal(sig)


def deferring(method: Callable) -> Callable:
    """`method`, run with interrupts held (for callbacks that write to MLflow or Optuna)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with deferred():
            return method(*args, **kwargs)

    return wrapper


# MlflowClient's writing methods, by name: create_run, set_tag, log_batch, update_run, delete_run, register_...
WRITE_PREFIXES = ("create_", "set_", "log_", "update_", "delete_", "register_", "rename_", "copy_", "transition_")


class HeldDuringWrites:
    """`target` (an MlflowClient) whose writing methods run with interrupts held; reads are not held, so
    Ctrl-C still stops a slow search of runs at once."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._target, name)
        return deferring(found) if callable(found) and name.startswith(WRITE_PREFIXES) else found
