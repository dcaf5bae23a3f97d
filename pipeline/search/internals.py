"""Every use of Optuna's private API, in one place: `tests/test_internals.py` fails loudly when an upgrade of
Optuna changes one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

# RDBStorage's operations, each a transaction of its own: after a dropped connection the whole call is
# retried on a fresh one. The private ones are those Optuna's _CachedStorage (which wraps every RDBStorage
# a study uses) calls instead of the public ones; tests/test_internals.py checks the list against it. (A
# write whose commit reached the server just before the connection dropped is retried too: Optuna's writes
# are idempotent but for create_new_trial, which may then leave one extra RUNNING trial without a heartbeat.)
RDB_OPERATIONS = [
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "_get_stale_trial_ids",
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_trials",
    "_set_trial_param",
]
# The logger of a failed trial's "Trial N failed ... because of the following error" (with its traceback).
OPTIMIZE_LOGGER = "optuna.study._optimize"


def wrap_operations(storage_class: type[RDBStorage], wrap: Callable[[Callable], Callable]) -> None:
    """Replace each of RDBStorage's operations on `storage_class` (its own, where it overrides one) by
    `wrap(operation)`."""
    for name in RDB_OPERATIONS:
        setattr(storage_class, name, wrap(getattr(storage_class, name)))


class StaleWithoutHeartbeat(RDBStorage):
    """RDBStorage whose stale trials also count a RUNNING trial that never recorded a heartbeat and started more
    than the grace period ago. Optuna skips those: its worker died (or lost the database) between creating the
    trial and the heartbeat thread's first beat, and the trial stayed RUNNING for ever, never retried."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = timedelta(seconds=self.grace_period or 2 * self.heartbeat_interval)
        now = datetime.now()  # as Optuna stamps datetime_start: the worker's clock
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        old = {t._trial_id for t in running if t.datetime_start is not None and now - t.datetime_start > grace}
        if not old:
            return stale
        with _create_scoped_session(self.scoped_session) as session:
            heart = models.TrialHeartbeatModel
            beaten = {row.trial_id for row in session.query(heart.trial_id).filter(heart.trial_id.in_(old))}
        return stale + sorted(old - beaten - set(stale))


def schema() -> sqlalchemy.MetaData:
    """Optuna's tables in a study database (the tests make workers race to create them)."""
    return models.BaseModel.metadata


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study was opened on, to hand it to `Trainer.hyperparameter_search`."""
    return study._storage
