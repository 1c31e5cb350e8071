"""One object per kind of storage URL: every "which kind is this?" question is answered here.

* :class:`SQLite` (``sqlite:///optuna.db``, the default): one worker per command, and several commands
  on one machine: file locks next to it serialise creating its tables and starting a trial; dead
  workers are found by their heartbeats.
* :class:`Journal` (``journal:///optuna.journal``): many processes on one machine; a file lock
  next to it; no heartbeats, so dead workers are found by their process ids.
* :class:`PostgreSQL` (``postgresql://`` or ``postgresql+driver://``): many machines; an advisory
  lock; heartbeats.
* :class:`Database`: any other SQLAlchemy URL: one worker, no locks; also the kind of an MLflow
  server's http(s) ``tracking_uri``, which is never opened here.

The same kinds describe MLflow's database backends (``tracking_uri``), which are checked alike.
"""
from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import optuna
import sqlalchemy
from optuna.trial import TrialState

from hpo.errors import ConfigError, first_line
from hpo.logs import experimental_api
from hpo.redaction import redact
from hpo.storage._capped import WORKER_ATTR, retry_trial
from hpo.storage._locks import StudyLock, advisory_lock, file_lock
from hpo.storage._rdb import ReconnectingRDBStorage

if TYPE_CHECKING:
    from hpo.storage._capped import CappedStudy


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


@dataclass(frozen=True)
class Heartbeat:
    """A RUNNING trial whose process sent no heartbeat for ``grace_period`` seconds is failed and retried."""

    interval: int
    grace_period: int


class StorageKind(ABC):
    """What a storage URL is: how to check, open and lock it, and how its dead workers are found."""

    #: Whether one command may run trials in several worker processes on it (``search.workers > 1``).
    shared_by_processes: ClassVar[bool] = False

    def __init__(self, url: str):
        self.url = url

    @property
    def scheme(self) -> str:
        return redact(self.url).split(":", 1)[0]

    def resolved(self, cwd: Path) -> str:
        """The URL with a relative file path made absolute against ``cwd`` (other URLs unchanged)."""
        return self.url

    @abstractmethod
    def check(self, field: str) -> None:
        """Raise :class:`~hpo.errors.ConfigError` naming ``field`` if the storage cannot be used; write nothing."""

    @abstractmethod
    def open(self, heartbeat: Heartbeat | None = None) -> optuna.storages.BaseStorage:
        """The Optuna storage; trials run on it send ``heartbeat`` where the kind has heartbeats (readers pass none)."""

    def check_exists(self, field: str) -> None:
        """Raise :class:`~hpo.errors.ConfigError` naming ``field`` unless the storage is there already, for a reader
        that must not create it (a server is checked when it is reached)."""

    def dashboard_argument(self) -> str:
        """What ``optuna-dashboard`` is given to open this storage (passwords redacted)."""
        return redact(self.url)

    def schema_lock(self) -> AbstractContextManager[None]:
        """Held while this process opens the database, so that of processes started together only the first
        creates its tables and the others find them made (none by default)."""
        return nullcontext()

    def trial_lock(self, study_name: str) -> StudyLock:
        """The lock every worker of ``study_name`` takes to start a trial (none where one process writes)."""
        return nullcontext

    def fail_stale_trials(self, study: CappedStudy) -> None:
        """Fail (and queue again) the trials whose process is gone."""
        with experimental_api():
            optuna.storages.fail_stale_trials(study)


class _FileURL:
    """``scheme:///relative/path`` and ``scheme:////absolute/path``, like SQLAlchemy."""

    prefix: ClassVar[str]
    url: str

    @property
    def path(self) -> Path | None:
        path = self.url[len(self.prefix):].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)

    def check_exists(self, field: str) -> None:
        if self.path is None or not self.path.is_file():
            raise ConfigError(f"no database file {self.path or self.url}", field)

    def resolved(self, cwd: Path) -> str:
        # Resolving once, at start-up, means every later step (and every log line) names the same file.
        path = self.path
        if path is None or path.is_absolute():
            return self.url
        query = self.url[len(self.prefix):].partition("?")[1:]
        return self.prefix + str(cwd / path) + "".join(query)

    def trial_lock(self, study_name: str) -> StudyLock:
        return lambda: self._lock_beside("trials-lock")

    def _lock_beside(self, suffix: str) -> AbstractContextManager[None]:
        """A file lock in ``<file>.<suffix>`` next to the file (none in memory: one process sees it)."""
        path = self.path
        return nullcontext() if path is None else file_lock(path.with_name(f"{path.name}.{suffix}"))


class Database(StorageKind):
    """A database SQLAlchemy connects to; Optuna's RDB storage, riding out lost connections."""

    def check(self, field: str) -> None:
        try:
            engine = sqlalchemy.create_engine(self.url)
        except ImportError as e:
            # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; this project ships psycopg2.
            raise ConfigError(f"no database driver for {redact(self.url)} ({first_line(e)}); for PostgreSQL with "
                              f"psycopg2 write postgresql+psycopg2://", field) from None
        except Exception as e:  # bad URL syntax
            raise ConfigError(f"invalid database URL {redact(self.url)}: {first_line(e)}", field) from None
        try:
            with engine.connect():
                pass
        except Exception as e:
            raise ConfigError(f"cannot connect to {redact(self.url)}: {first_line(e)}", field) from None
        finally:
            engine.dispose()

    def open(self, heartbeat: Heartbeat | None = None) -> optuna.storages.BaseStorage:
        # Optuna's RDBStorage creates its tables (and stamps alembic's version table) in its constructor.
        with experimental_api(), self.schema_lock():
            if heartbeat is None:
                return ReconnectingRDBStorage(self.url)
            return ReconnectingRDBStorage(
                self.url, heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())


class SQLite(_FileURL, Database):
    """A file that several commands on one machine may share, one worker each.

    Processes started together would race to create its tables (alembic's ``UNIQUE constraint failed:
    alembic_version.version_num``, ``table ... already exists``), so opening it takes a file lock, and so
    does starting a trial, to keep ``n_trials`` a total over the commands. Their writes are short: 8 commands
    started together on 80 trials, heartbeats every second, never outwaited SQLite's 5 s busy timeout.
    """

    prefix = "sqlite:///"

    def schema_lock(self) -> AbstractContextManager[None]:
        return self._lock_beside("schema-lock")

    def check(self, field: str) -> None:
        """The file must be creatable: its folder exists and can be written."""
        path = self.path
        if path is None:  # in memory
            return
        if not path.parent.is_dir():
            raise ConfigError(f"the folder of the SQLite file does not exist (or is not a folder): {path.parent}",
                              field)
        if path.is_dir():
            raise ConfigError(f"the SQLite file is a folder: {path}", field)
        if not os.access(path if path.exists() else path.parent, os.W_OK):  # root passes: a file stops it
            raise ConfigError(f"the SQLite file cannot be written: {path}", field)
        if path.exists() and path.stat().st_size and not _starts_with(path, SQLITE_HEADER):
            raise ConfigError(f"not a SQLite database: {path} (move it away or name another file)", field)


class PostgreSQL(Database):
    """A server that workers on many machines share; starting a trial takes an advisory lock."""

    shared_by_processes = True

    def trial_lock(self, study_name: str) -> StudyLock:
        return advisory_lock(self.url, study_name)


class Journal(_FileURL, StorageKind):
    """Optuna's JournalStorage in a file, safe for many processes on one machine. It has no heartbeats:
    a trial's process is dead when its process id, recorded with the trial, no longer exists."""

    prefix = "journal:///"
    shared_by_processes = True

    def dashboard_argument(self) -> str:
        return str(self.path)  # optuna-dashboard opens a journal by its file's path

    def check(self, field: str) -> None:
        path = self.path
        if not path.parent.is_dir():
            raise ConfigError(f"the folder of the journal file does not exist: {path.parent}", field)
        if path.is_dir():
            raise ConfigError(f"the journal file is a folder: {path}", field)
        if not os.access(path if path.exists() else path.parent, os.W_OK):
            raise ConfigError(f"the journal file cannot be written: {path}", field)
        if path.exists() and path.stat().st_size and not _starts_with(path, b"{"):  # one JSON object a line
            raise ConfigError(f"not an Optuna journal file: {path} (move it away or name another file)", field)

    def open(self, heartbeat: Heartbeat | None = None) -> optuna.storages.BaseStorage:
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(self.path)))

    def fail_stale_trials(self, study: CappedStudy) -> None:
        with study.lock():
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                worker = trial.user_attrs.get(WORKER_ATTR)
                if worker and worker["host"] == socket.gethostname() and not _process_exists(worker["pid"]):
                    retry_trial(study, study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True))


def storage_kind(url: str) -> StorageKind:
    """The kind of ``url``: the one place that looks at a storage URL's scheme."""
    if url.startswith(Journal.prefix) and Journal(url).path is not None:  # journal:/// alone names no file
        return Journal(url)
    if url.startswith(SQLite.prefix):
        return SQLite(url)
    if url.startswith(("postgresql://", "postgresql+")):  # psycopg 3, or postgresql+driver://
        return PostgreSQL(url)
    return Database(url)


def get_storage(url: str, heartbeat: Heartbeat | None = None) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``url``.

    Args:
        url: ``sqlite:///file.db``, ``journal:///file.journal``, ``postgresql://user@host/db`` or any
            other SQLAlchemy URL.
        heartbeat: heartbeats for trials run on it (RDB storages); readers pass none.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be opened.
    """
    return storage_kind(url).open(heartbeat)


def resolved_url(url: str, cwd: Path | None = None) -> str:
    """``url`` with a relative SQLite or journal file made absolute against ``cwd`` (default: the working
    directory); other URLs unchanged."""
    return storage_kind(url).resolved(cwd or Path.cwd())


def _starts_with(path: Path, header: bytes) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(header)) == header


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
