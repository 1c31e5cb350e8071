"""Optuna storages by kind of URL, the capped study and all trial-state accounting, grid queueing.

Every question that depends on the kind of storage URL (how to check and open it, whether
several workers may share it, how they lock, how dead workers are found) is answered by its
:class:`StorageKind`, from :func:`storage_kind`; nothing outside this package looks at a URL's
scheme.
"""
from hpo.storage._capped import (COUNTED_STATES, STARTED_STATES, WORKER_ATTR, CappedStudy, best_complete_trial,
                                 counted_trials, requeue_interrupted, retry_trial, running_count, trial_counts)
from hpo.storage._grid import GRID_POINT_ATTR, grid_points, queue_grid
from hpo.storage._kinds import (SQLITE_HEADER, Database, Heartbeat, Journal, PostgreSQL, SQLite, StorageKind,
                                get_storage, resolved_url, storage_kind)
from hpo.storage._locks import StudyLock
from hpo.storage._rdb import ReconnectingRDBStorage, retry_connections

__all__ = ["COUNTED_STATES", "CappedStudy", "Database", "GRID_POINT_ATTR", "Heartbeat", "Journal", "PostgreSQL",
           "ReconnectingRDBStorage", "SQLITE_HEADER", "SQLite", "STARTED_STATES", "StorageKind", "StudyLock",
           "WORKER_ATTR", "best_complete_trial", "counted_trials", "get_storage", "grid_points", "queue_grid", "requeue_interrupted",
           "resolved_url", "retry_connections", "retry_trial", "running_count", "storage_kind", "trial_counts"]
