"""Optuna side of a study: storage with heartbeats, seeded samplers, pruners, trial accounting.

Trial accounting: ``n_trials`` is a total per learner over all runs and all workers (enforced by
:class:`hpo.budget.BudgetedStudy`). COMPLETE and PRUNED trials count towards it; FAILED trials do
not (a crash must not silently use up the budget), so they are replaced. Interrupted trials
(Ctrl-C, SIGTERM, or a killed process detected by its stale heartbeat or, without heartbeats, by
its dead process id) are failed and queued again with the same parameters.
"""
from __future__ import annotations

import os
import socket
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.budget import WORKER_ATTR, BudgetedStudy, grid_points, queue_grid, study_lock
from hpo.config import PrunerConfig, SearchConfig, StudyConfig
from hpo.reconnect import ReconnectingRDBStorage
from hpo.space import grid_search_space
from hpo.urls import journal_path

COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


@contextmanager
def experimental_api() -> Iterator[None]:
    """Use Optuna features it marks experimental (heartbeats, retries, constant liar) without its warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def study_name(config: StudyConfig, learner: str) -> str:
    return f"{config.name}/{learner}"


def make_storage(url: str, search: SearchConfig | None = None) -> optuna.storages.BaseStorage:
    """The storage at ``url``; trials run with ``search`` send heartbeats (readers pass none).

    ``journal:///file.journal`` is Optuna's JournalStorage in a file, safe for many processes on
    one machine; it has no heartbeats (see :func:`fail_stale_trials`).
    """
    journal = journal_path(url)
    if journal is not None:
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    with experimental_api():
        if search is None:
            return ReconnectingRDBStorage(url)
        return ReconnectingRDBStorage(
            url, heartbeat_interval=search.heartbeat_interval, grace_period=search.grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())


def make_sampler(config: StudyConfig, learner: str, stored_trials: int,
                 worker: str = "") -> optuna.samplers.BaseSampler:
    """A sampler seeded from the study seed.

    Random draws are seeded with the seed plus the number of trials already stored, so a resumed
    search does not replay the draws of the first run, yet reruns stay reproducible; each parallel
    ``worker`` (a name unique in the study) adds its own offset, so workers do not draw the same
    values. A grid's points are queued up front with every parameter fixed (see
    :func:`hpo.budget.queue_grid`), so its sampler is never asked.
    """
    sampler = config.search.sampler
    seed = config.seed + stored_trials + (zlib.crc32(worker.encode()) if worker else 0)
    if sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if sampler in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    with experimental_api():
        # constant_liar: running trials of other workers count as poor, so workers spread out.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(pruner: PrunerConfig, iterations: int, val_interval: int) -> optuna.pruners.BasePruner:
    """Steps are training iterations, so warm-up and Hyperband resources are in iterations too."""
    if pruner.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.n_startup_trials,
                                           n_warmup_steps=pruner.n_warmup_steps)
    if pruner.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=val_interval, max_resource=iterations,
                                              reduction_factor=pruner.reduction_factor)
    return optuna.pruners.NopPruner()


def open_study(config: StudyConfig, learner: str, storage: optuna.storages.BaseStorage,
               worker: str = "") -> BudgetedStudy:
    """Create or load ``<study>/<learner>`` with its pruner, a freshly seeded sampler and its trial budget."""
    name = study_name(config, learner)
    stored = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    grid = config.search.sampler == "grid"
    return BudgetedStudy(name, storage, make_sampler(config, learner, len(stored.get_trials(deepcopy=False)), worker),
                         make_pruner(config.search.pruner, config.budget.iterations, config.budget.val_interval),
                         study_lock(config.storage, name), total=config.search.n_trials, queued_only=grid)


def queue_grid_points(config: StudyConfig, learner: str, study: BudgetedStudy) -> None:
    """A grid study: queue the points not yet taken, in the seeded order (no-op for other samplers)."""
    if config.search.sampler == "grid":
        queue_grid(study, grid_points(grid_search_space(config.learners[learner].space, learner), config.seed))


def trial_counts(study: optuna.Study) -> Counter[TrialState]:
    return Counter(t.state for t in study.get_trials(deepcopy=False))


def counted_trials(study: optuna.Study) -> int:
    counts = trial_counts(study)
    return sum(counts[state] for state in COUNTED_STATES)


def retry_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue an interrupted trial again with the same parameters (and grid point)."""
    with experimental_api():
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)


def fail_stale_trials(study: BudgetedStudy, storage_url: str) -> None:
    """Fail (and queue again) trials whose process is gone: its heartbeats stopped or, in a journal file
    (no heartbeats, one machine), its process id no longer exists."""
    if journal_path(storage_url) is None:
        with experimental_api():
            optuna.storages.fail_stale_trials(study)
        return
    with study.lock():
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get(WORKER_ATTR)
            if worker and worker["host"] == socket.gethostname() and not _process_exists(worker["pid"]):
                retry_trial(study, study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
