"""The two locks that make a step (starting a trial, creating a database's tables) atomic across processes: a
PostgreSQL advisory lock (many machines) and a file lock next to a journal or SQLite file (one machine). Both
die with their process."""
from __future__ import annotations

import fcntl
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable

import sqlalchemy

from hpo.storage._rdb import retry_connections

StudyLock = Callable[[], AbstractContextManager[None]]

# First key of PostgreSQL's two-key advisory locks, so they cannot clash with other users of the database.
LOCK_NAMESPACE = zlib.crc32(b"fewshot-hpo trials") & 0x7FFFFFFF


def advisory_lock(url: str, study_name: str) -> StudyLock:
    engine = sqlalchemy.create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)
    retry_connections(engine)  # rides out a database restart like the storage itself
    key = zlib.crc32(study_name.encode()) & 0x7FFFFFFF
    return lambda: _advisory_lock(engine, key)


@contextmanager
def _advisory_lock(engine: sqlalchemy.engine.Engine, key: int) -> Iterator[None]:
    # A session-level lock: PostgreSQL releases it when the connection dies with its process.
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:namespace, :key)"),
                           {"namespace": LOCK_NAMESPACE, "key": key})
        try:
            yield
        finally:
            try:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:namespace, :key)"),
                                   {"namespace": LOCK_NAMESPACE, "key": key})
            except sqlalchemy.exc.DBAPIError as e:
                if not e.connection_invalidated:
                    raise  # the session died otherwise, and its lock with it


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    # flock is released by the kernel when its process dies, so a killed worker never blocks the others.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
