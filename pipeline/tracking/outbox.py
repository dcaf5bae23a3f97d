"""Tracking writes made while training (per-epoch metrics, trial runs, their states), sent in order by one
background thread, so that a tracking server outage never stops training: while the server is away the
writes wait, and they go out in the order they were made once it is back."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import PipelineError
from pipeline.runtime.secrets import redact
from pipeline.tracking import internals

log = logging.getLogger(__name__)
FIRST_WAIT_S = 1.0  # between tries while the server is away, doubling up to MAX_WAIT_S
MAX_WAIT_S = 10.0


@dataclass
class RunRef:
    """An MLflow run whose id is known once its creation has gone out."""

    id: str | None = None


class Outbox:
    def __init__(self, where: str, max_outage_s: float) -> None:
        self.where, self.max_outage_s = where, max_outage_s
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self._away_since: float | None = None
        self._failure: PipelineError | None = None
        threading.Thread(target=self._send_all, name="tracking-outbox", daemon=True).start()

    def send(self, write: Callable[[], None]) -> None:
        """Queue `write` (a call of the MLflow client); raises if an earlier one was given up on."""
        if self._failure is not None:
            raise self._failure
        self._queue.put(write)

    @property
    def away(self) -> bool:
        """The tracking server is not answering now."""
        return self._away_since is not None

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued write has gone out; False if `timeout` came first. Raises the outage
        that made the outbox give up, if one did."""
        sent = self.wait_sent(timeout)
        if self._failure is not None:
            raise self._failure
        return sent

    def wait_sent(self, timeout: float | None) -> bool:
        """Wait until every queued write has been handled, for at most `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left if left is not None else 1.0)
        return True

    def _send_all(self) -> None:
        while True:
            write = self._queue.get()
            try:
                if self._failure is None:
                    self._send(write)
            except PipelineError:
                pass  # the outage outlasted max_outage_s: send() and drain() raise it
            except Exception as err:  # a write MLflow refused: reported, training goes on
                log.warning(
                    "tracking: a write to %s failed and was skipped: %s", self.where, str(err).splitlines()[0][:300]
                )
            finally:
                self._queue.task_done()

    def _send(self, write: Callable[[], None]) -> None:
        wait = FIRST_WAIT_S
        while True:
            try:
                write()
            except Exception as err:
                if not internals.unreachable(err):
                    raise
                self._wait_for_server(err, wait)
                wait = min(2 * wait, MAX_WAIT_S)
                continue
            if self._away_since is not None:
                away = time.monotonic() - self._away_since
                log.warning("tracking: %s is back after %.0f s; sending what was logged meanwhile", self.where, away)
                self._away_since = None
            return

    def _wait_for_server(self, err: Exception, wait: float) -> None:
        now = time.monotonic()
        if self._away_since is None:
            self._away_since = now
            log.warning(
                "tracking: %s is unreachable (%s); the worker keeps training and sends its metrics and run states "
                "when the server is back (for up to tracking.max_outage_s=%d s)",
                self.where,
                redact(str(err).splitlines()[0][:200]),
                self.max_outage_s,
            )
        elif now - self._away_since > self.max_outage_s:
            self._failure = PipelineError(
                f"tracking.uri={redact(self.where)}: unreachable for more than tracking.max_outage_s="
                f"{self.max_outage_s:g} s; the study is intact in search.storage: run the same command again once "
                "the server is back (metrics logged during the outage are lost)"
            )
            raise self._failure
        time.sleep(wait)
