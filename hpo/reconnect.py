"""Optuna's RDB storage, riding out transient connection losses (a database restart, killed sessions).

Two mechanisms, both bounded: the pool tests each connection before use (``pool_pre_ping``) and
replaces dead ones, and opening a connection is retried with exponential backoff. When the
database stays away, the last error propagates and the run stops with one line (see
:mod:`hpo.faults`). A statement cut off half-way is not replayed: Optuna's writes are not all
idempotent.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import optuna
import sqlalchemy

from hpo.faults import STORAGE_ERRORS, first_line

CONNECT_ATTEMPTS = 5
FIRST_RETRY_DELAY_S = 0.5  # doubled after each attempt: 0.5 + 1 + 2 + 4 s before giving up

logger = logging.getLogger(__name__)


class ReconnectingRDBStorage(optuna.storages.RDBStorage):
    def __init__(self, url: str, **kwargs: Any):
        super().__init__(url, engine_kwargs={"pool_pre_ping": True}, **kwargs)
        retry_connections(self.engine)

    def __setstate__(self, state: dict[Any, Any]) -> None:  # unpickled in another process: a new engine
        super().__setstate__(state)
        retry_connections(self.engine)

    def record_heartbeat(self, trial_id: int) -> None:
        # Runs in Optuna's heartbeat thread, where an exception would only print a traceback and stop
        # the heartbeats. A missed beat is harmless; a lost database also stops the main thread.
        try:
            super().record_heartbeat(trial_id)
        except STORAGE_ERRORS as e:
            logger.warning("missed a heartbeat of trial id %d: %s", trial_id, first_line(e))


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
