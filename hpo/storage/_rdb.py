"""Optuna's RDB storage, riding out transient connection losses (a database restart, killed sessions).

Three mechanisms, all bounded: the pool tests each connection before use (``pool_pre_ping``) and
replaces dead ones; opening a connection is retried with exponential backoff; and a storage call
whose connection dies before its transaction sent COMMIT is run once more (the server rolled the
transaction back, so nothing is written twice). A call cut off during its COMMIT is not replayed:
the commit may have landed, and Optuna's writes are not all idempotent (a trial would be created
twice). When the database stays away, the last error propagates and the run stops with one line
(see :mod:`hpo.errors`).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable, TypeVar

import optuna
import sqlalchemy

from hpo.errors import STORAGE_ERRORS, first_line, storage_cause

CONNECT_ATTEMPTS = 5
FIRST_RETRY_DELAY_S = 0.5  # doubled after each attempt: 0.5 + 1 + 2 + 4 s before giving up

logger = logging.getLogger(__name__)


Method = TypeVar("Method", bound=Callable[..., Any])


class ReconnectingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage`` with the three mechanisms of this module."""

    def __init__(self, url: str, **kwargs: Any):
        super().__init__(url, engine_kwargs={"pool_pre_ping": True}, **kwargs)
        self._watch_engine()

    def __setstate__(self, state: dict[Any, Any]) -> None:  # unpickled in another process: a new engine
        super().__setstate__(state)
        self._watch_engine()

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_calls", None)  # thread-local: not picklable, made again with the engine
        return state

    def _watch_engine(self) -> None:
        retry_connections(self.engine)
        self._calls = threading.local()  # per thread: whether a storage call runs, and whether it sent COMMIT

        @sqlalchemy.event.listens_for(self.engine, "commit")
        def committing(connection: sqlalchemy.engine.Connection) -> None:
            self._calls.committing = True

    def record_heartbeat(self, trial_id: int) -> None:
        # Runs in Optuna's heartbeat thread, where an exception would only print a traceback and stop
        # the heartbeats. A missed beat is harmless; a lost database also stops the main thread.
        try:
            super().record_heartbeat(trial_id)
        except STORAGE_ERRORS as e:
            logger.warning("missed a heartbeat of trial id %d: %s", trial_id, first_line(e))


def replayed_before_commit(method: Method) -> Method:
    """``method`` run once more when its connection died before its transaction sent COMMIT.

    Only the outermost storage call of a thread replays (storage methods call one another), and
    only if none of its transactions reached COMMIT.
    """

    @functools.wraps(method)
    def replaying(self: ReconnectingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        calls = self._calls
        if getattr(calls, "running", False):
            return method(self, *args, **kwargs)
        calls.running = True
        try:
            for attempt in (1, 2):
                calls.committing = False
                try:
                    return method(self, *args, **kwargs)
                except STORAGE_ERRORS as e:
                    if attempt == 2 or calls.committing or not connection_lost(e):
                        raise
                    logger.warning("connection lost before %s committed; running it again: %s",
                                   method.__name__, first_line(storage_cause(e)))
        finally:
            calls.running = False

    return replaying  # type: ignore[return-value]


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps: Optuna re-raises SQLAlchemy's errors) is a dead connection.

    ``PendingRollbackError`` counts: Optuna catches some failed reads and falls back to another query in the same
    session, whose connection has died meanwhile; the session then refuses every statement, COMMIT included, so
    nothing of the call was committed (tests/test_faults.py).
    """
    cause = storage_cause(error)
    return isinstance(cause, sqlalchemy.exc.PendingRollbackError) or getattr(cause, "connection_invalidated", False)


def _replay_storage_calls(storage_class: type[optuna.storages.RDBStorage]) -> None:
    """Wrap every storage call (a transaction or a few) that ``storage_class`` does not define itself:
    Optuna's public methods, and the stale-trial query of the heartbeat check."""
    for name, method in vars(optuna.storages.RDBStorage).items():
        if callable(method) and (not name.startswith("_") or name == "_get_stale_trial_ids") \
                and name not in vars(storage_class):
            setattr(storage_class, name, replayed_before_commit(method))


_replay_storage_calls(ReconnectingRDBStorage)


def retry_connections(engine: sqlalchemy.engine.Engine, attempts: int = CONNECT_ATTEMPTS,
                      first_delay: float = FIRST_RETRY_DELAY_S) -> None:
    """Open the engine's connections with ``attempts`` tries and exponential backoff."""

    @sqlalchemy.event.listens_for(engine, "do_connect")
    def connect(dialect: sqlalchemy.engine.Dialect, record: Any, cargs: tuple, cparams: dict) -> Any:
        delay = first_delay
        for attempt in range(1, attempts):
            try:
                return dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as e:
                logger.warning("cannot connect to %s (attempt %d of %d, next in %.1f s): %s",
                               engine.url.render_as_string(hide_password=True), attempt, attempts,
                               delay, first_line(e))
                time.sleep(delay)
                delay *= 2
        return dialect.connect(*cargs, **cparams)
