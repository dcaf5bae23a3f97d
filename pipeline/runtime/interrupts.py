"""Hold Ctrl-C and SIGTERM while the pipeline writes to a tracking or study database.

An interrupt raised in the middle of a SQLite write can leave that write's transaction open, locking the
database for the cleanup that should mark the run KILLED; held until the write ends, it is raised at a
point where nothing is half-written."""

from __future__ import annotations

import contextlib
import functools
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

# How long a swallowed interrupt waits before it is sent again: out of the garbage collection that swallowed it.
REDELIVERY_DELAY_S = 0.05
_swallowed: queue.SimpleQueue[int] | None = None  # signals to send again, once redeliver_swallowed has run


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every `finally` runs."""


def stop_on_sigterm() -> None:
    """SIGTERM (a preemption, `kill`) stops the command like Ctrl-C: every `finally` and cleanup runs."""
    signal.signal(signal.SIGTERM, _raise_interrupted)


def what(err: KeyboardInterrupt) -> str:
    """'Ctrl-C', or the signal an `Interrupted` was raised for."""
    return str(err) or "Ctrl-C"


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def redeliver_swallowed() -> None:
    """Send again an interrupt that Python swallowed: one raised inside a weakref callback or `__del__` is
    printed as "Exception ignored" and dropped (cpython#95959), and the command went on as if never stopped."""
    global _swallowed
    if getattr(sys.unraisablehook, "redelivers", False):
        return
    if _swallowed is None:  # put() is safe inside garbage collection: no lock taken, no thread started there
        _swallowed = queue.SimpleQueue()
        threading.Thread(target=_send_again, args=(_swallowed,), name="redeliver-interrupts", daemon=True).start()
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            return previous(unraisable)
        _swallowed.put(signal.SIGTERM if isinstance(unraisable.exc_value, Interrupted) else signal.SIGINT)

    hook.redelivers = True
    sys.unraisablehook = hook


def _send_again(signals: queue.SimpleQueue) -> None:
    """From a thread, a moment later: sent at once, the signal would be raised inside the hook and dropped again."""
    while True:
        signum = signals.get()
        time.sleep(REDELIVERY_DELAY_S)
        signal.pthread_kill(threading.main_thread().ident, signum)


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
