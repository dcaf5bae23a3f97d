"""Optuna's RDB storage as workers need it: created once when several start at the same instant, and
riding out dropped database connections (a restart, a failover, an idle-connection reaper)."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback

from pipeline.errors import PipelineError
from pipeline.runtime import sqlite
from pipeline.runtime.secrets import redact
from pipeline.schema import SearchConfig
from pipeline.search import internals, resume

log = logging.getLogger(__name__)
SCHEMA_RACE_RETRIES = 3  # workers opening a new database at once race to create its tables; losers retry
FIRST_WAIT_S = 0.5  # the first wait after a dropped connection; it doubles up to MAX_WAIT_S
MAX_WAIT_S = 8.0


class StorageLost(PipelineError):
    """The database kept refusing connections for longer than search.storage_retry_s."""


def lost_in(err: BaseException | None) -> StorageLost | None:
    """The StorageLost that `err` was raised while handling, if any."""
    while err is not None and not isinstance(err, StorageLost):
        err = err.__cause__ or err.__context__
    return err


def dropped_connection(err: BaseException) -> bool:
    """A connection the server closed or refused (Optuna wraps SQLAlchemy's error in StorageInternalError)."""
    if isinstance(err, optuna.exceptions.StorageInternalError):
        err = err.__cause__ or err
    # PendingRollbackError: the thread's session still holds the transaction the drop broke.
    dropped = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.PendingRollbackError)
    return isinstance(err, dropped) or (isinstance(err, sqlalchemy.exc.DBAPIError) and err.connection_invalidated)


class ReconnectingStorage(internals.StaleWithoutHeartbeat):
    """RDBStorage whose operations retry on a dropped connection, for up to `retry_s` seconds each, and whose
    stale trials include those that never beat (internals.StaleWithoutHeartbeat).

    The engine pings a pooled connection before using it (`pool_pre_ping`, which Optuna sets only for
    MySQL), so a connection the server closed while the worker trained is replaced without an error."""

    def __init__(self, url: str, retry_s: float, **kwargs: Any) -> None:
        self.retry_s = retry_s
        self._depth = threading.local()  # only the outermost call retries (operations call each other)
        engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
        super().__init__(url, engine_kwargs=engine_kwargs, **kwargs)

    def record_heartbeat(self, trial_id: int) -> None:
        """A beat lost to a dropped connection is skipped, not retried: the next one comes in
        search.heartbeat_interval, and only beats missing for search.grace_period fail a trial."""
        try:
            super().record_heartbeat(trial_id)
        except Exception as err:
            if not dropped_connection(err):
                raise
            log.debug("search.storage: heartbeat of trial %d skipped (%s)", trial_id, _reason(err))

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_depth", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._depth = threading.local()


def _retrying(operation: Callable) -> Callable:
    @functools.wraps(operation)
    def call(self: ReconnectingStorage, *args, **kwargs):
        depth = getattr(self._depth, "n", 0)
        if depth:
            return operation(self, *args, **kwargs)
        deadline, wait = time.monotonic() + self.retry_s, FIRST_WAIT_S
        self._depth.n = 1
        try:
            while True:
                try:
                    return operation(self, *args, **kwargs)
                except Exception as err:
                    if not dropped_connection(err):
                        raise
                    if time.monotonic() + wait > deadline:
                        raise StorageLost(
                            f"search.storage={redact(self.url)}: the database stopped answering for "
                            f"{self.retry_s:g} s ({_reason(err)}); run the same command again once it is back "
                            "(the trial it was running is failed after search.grace_period and retried)"
                        ) from None
                    log.warning("search.storage: connection lost (%s); retrying in %.1f s", _reason(err), wait)
                    self.remove_session()  # a fresh session, on a fresh connection
                    time.sleep(wait)
                    wait = min(2 * wait, MAX_WAIT_S)
        finally:
            self._depth.n = 0

    return call


internals.wrap_operations(ReconnectingStorage, _retrying)


def _reason(err: BaseException) -> str:
    cause = err.__cause__ if isinstance(err, optuna.exceptions.StorageInternalError) else err
    cause = getattr(cause, "orig", None) or cause
    text = str(cause).strip()
    return redact(text.splitlines()[0] if text else type(cause).__name__)[:200]


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a dead worker's trial, through resume.retry (its retry continues from the last
    epoch saved), except one whose values lie outside the search space (the configured starting point
    may): Optuna cannot re-create it, and the error would stop the worker."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        try:
            resume.retry(study, trial)
        except ValueError as err:
            log.warning("trial %d failed (its worker died) and is not retried: %s", trial.number, err)


def open_storage(cfg: SearchConfig) -> ReconnectingStorage:
    """The study's storage, with heartbeats: a killed worker's RUNNING trial turns FAIL and is retried."""
    try:
        with sqlite.creation_lock(cfg.storage):
            for attempt in range(SCHEMA_RACE_RETRIES):
                try:
                    return ReconnectingStorage(
                        cfg.storage,
                        cfg.storage_retry_s,
                        heartbeat_interval=cfg.heartbeat_interval,
                        grace_period=cfg.grace_period,
                        heartbeat_stale_trial_callback=RetryStaleTrial(),
                    )
                except sqlalchemy.exc.DBAPIError as err:
                    if not _lost_schema_race(err) or attempt == SCHEMA_RACE_RETRIES - 1:
                        raise
                    time.sleep(1 + attempt)
    except Exception as err:  # sqlalchemy: bad URL, unreachable server, missing driver
        raise PipelineError(
            f"search.storage={redact(cfg.storage)}: cannot open ({redact(str(err).splitlines()[0])})"
        ) from None


def _lost_schema_race(err: sqlalchemy.exc.DBAPIError) -> bool:
    """Another worker created a table or type of a new database between our existence check and our
    CREATE: PostgreSQL says unique violation (it committed while we waited) or duplicate table."""
    return isinstance(err, sqlalchemy.exc.IntegrityError) or "already exists" in str(err).splitlines()[0]
