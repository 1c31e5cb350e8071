"""``n_trials`` as a total over every worker process of a study, on any number of machines.

Several workers asking Optuna for trials at once would each see "fewer than n_trials" and start
one more, overshooting the total. :class:`BudgetedStudy` makes the check and the start of a trial
one step by taking a lock shared by all workers of the study (a PostgreSQL advisory lock, or a
file lock next to a journal file) around ``ask()``. A grid never asks for new trials at all: its
points are queued once, under the same lock, and workers only pop queued trials, which Optuna
does atomically, so no grid point runs twice.

Accounting: COMPLETE, PRUNED and RUNNING trials use up the total, WAITING (queued) trials are
what is left of it, and FAIL trials do not count: they are replaced (by their retry when they
were interrupted, else by a new trial).
"""
from __future__ import annotations

import fcntl
import itertools
import json
import os
import socket
import zlib
from collections import Counter
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from hpo.reconnect import retry_connections
from hpo.urls import is_postgresql, journal_path

STARTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
GRID_POINT_ATTR = "grid_point"  # user attr of a queued grid point: its parameters as sorted JSON
WORKER_ATTR = "worker"  # user attr of a trial: the {host, pid} of the process that runs it
# First key of PostgreSQL's two-key advisory locks, so they cannot clash with other users of the database.
LOCK_NAMESPACE = zlib.crc32(b"fewshot-hpo trials") & 0x7FFFFFFF

StudyLock = Callable[[], AbstractContextManager[None]]


class NoTrialsLeft(Exception):
    """Every trial of the study's total is done, running or queued: the worker stops."""


class BudgetedStudy(optuna.Study):
    """A study whose ``ask()`` starts a trial only while the total allows it, atomically across processes.

    ``total``: trials that may be started (``None``: no limit, a timeout bounds the run);
    ``queued_only``: run only queued trials (a grid's points), never ask the sampler for new ones.
    """

    def __init__(self, study_name: str, storage: optuna.storages.BaseStorage, sampler: optuna.samplers.BaseSampler,
                 pruner: optuna.pruners.BasePruner, lock: StudyLock, total: int | None, queued_only: bool):
        super().__init__(study_name, storage, sampler, pruner)
        self.lock, self.total, self.queued_only = lock, total, queued_only

    def ask(self, fixed_distributions: dict[str, Any] | None = None) -> optuna.Trial:
        with self.lock():
            if not self.has_trials_left():
                raise NoTrialsLeft()
            trial = super().ask(fixed_distributions)
            # Recorded at once: finding the trials of a dead process needs it (see hpo.search.fail_stale_trials).
            trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
            return trial

    def has_trials_left(self) -> bool:
        """Whether the total allows another trial to start (one already queued, or a new one)."""
        states = Counter(t.state for t in self.get_trials(deepcopy=False))
        if self.total is not None and sum(states[s] for s in STARTED_STATES) >= self.total:
            return False
        return states[TrialState.WAITING] > 0 or not self.queued_only


def study_lock(storage_url: str, study_name: str) -> StudyLock:
    """The lock every worker of ``study_name`` takes to start a trial.

    SQLite (one process only, see :func:`hpo.config.check_workers`) needs none.
    """
    journal = journal_path(storage_url)
    if journal is not None:
        return lambda: _file_lock(journal.with_name(journal.name + ".trials-lock"))
    if is_postgresql(storage_url):
        engine = sqlalchemy.create_engine(storage_url, pool_size=1, max_overflow=0, pool_pre_ping=True)
        retry_connections(engine)  # rides out a database restart like the storage itself
        key = zlib.crc32(study_name.encode()) & 0x7FFFFFFF
        return lambda: _advisory_lock(engine, key)
    return nullcontext


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
def _file_lock(path: Path) -> Iterator[None]:
    # flock is released by the kernel when its process dies, so a killed worker never blocks the others.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def grid_points(grid: dict[str, list[Any]], seed: int) -> list[dict[str, Any]]:
    """Every point of ``grid`` in the order Optuna's ``GridSampler(grid, seed)`` would run them."""
    names = sorted(grid)
    points = list(itertools.product(*(grid[name] for name in names)))
    np.random.RandomState(seed).shuffle(points)
    return [dict(zip(names, point)) for point in points]


def queue_grid(study: BudgetedStudy, points: list[dict[str, Any]]) -> None:
    """Queue the grid points no trial has taken yet, within the study's total.

    A point counts as taken once any trial ran it, whatever its end: like Optuna's grid, a failed
    point is not run again (an interrupted one is, through its retry).
    """
    with study.lock():
        trials = study.get_trials(deepcopy=False)
        taken = {_point_key(t) for t in trials}
        planned = sum(t.state in STARTED_STATES or t.state == TrialState.WAITING for t in trials)
        room = len(points) if study.total is None else study.total - planned
        fresh = [p for p in points if _key(p) not in taken][:max(room, 0)]
        for point in fresh:
            study.enqueue_trial(point, user_attrs={GRID_POINT_ATTR: _key(point)})


def _point_key(trial: FrozenTrial) -> str:
    return trial.user_attrs.get(GRID_POINT_ATTR) or _key(trial.params)


def _key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)
