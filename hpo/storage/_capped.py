"""``n_trials`` as a total over every worker process of a study, on any number of machines, and the
one place that counts trials by state.

Several workers asking Optuna for trials at once would each see "fewer than n_trials" and start
one more, overshooting the total. :class:`CappedStudy` makes the check and the start of a trial
one step by taking a lock shared by all workers of the study (its storage kind's trial lock)
around ``ask()``. A grid never asks for new trials at all: its points are queued once, under the
same lock (:mod:`hpo.storage._grid`), and workers only pop queued trials, which Optuna does
atomically, so no grid point runs twice.

Accounting: COMPLETE, PRUNED and RUNNING trials use up the total, WAITING (queued) trials are
what is left of it, and FAIL trials do not count: they are replaced (by their retry when they
were interrupted, Ctrl-C, SIGTERM or a dead process, else by a new trial). COMPLETE and PRUNED
trials are the ones done (:func:`counted_trials`).
"""
from __future__ import annotations

import os
import socket
from collections import Counter
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import NoTrialsLeft
from hpo.logs import experimental_api

if TYPE_CHECKING:
    from hpo.storage._kinds import StorageKind

COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
STARTED_STATES = (*COUNTED_STATES, TrialState.RUNNING)
WORKER_ATTR = "worker"  # user attr of a trial: the {host, pid} of the process that runs it


class CappedStudy(optuna.Study):
    """A study whose ``ask()`` starts a trial only while the total allows it, atomically across processes.

    Args:
        kind: the storage's kind, which gives the trial lock and the way dead workers are found.
        total: trials that may be started (``None``: no limit, a timeout bounds the run).
        queued_only: run only queued trials (a grid's points), never ask the sampler for new ones.
    """

    def __init__(self, study_name: str, kind: StorageKind, storage: optuna.storages.BaseStorage,
                 sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner, total: int | None,
                 queued_only: bool):
        super().__init__(study_name, storage, sampler, pruner)
        self.kind, self.total, self.queued_only = kind, total, queued_only
        self.lock = kind.trial_lock(study_name)

    def ask(self, fixed_distributions: dict[str, Any] | None = None) -> optuna.Trial:
        """A new or queued trial; raises :class:`~hpo.errors.NoTrialsLeft` once the total is taken."""
        with self.lock():
            if not self.has_trials_left():
                raise NoTrialsLeft()
            trial = super().ask(fixed_distributions)
            # Recorded at once: finding the trials of a dead process needs it (see Journal.fail_stale_trials).
            trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
            return trial

    def has_trials_left(self) -> bool:
        """Whether the total allows another trial to start (one already queued, or a new one)."""
        states = trial_counts(self)
        if self.total is not None and sum(states[s] for s in STARTED_STATES) >= self.total:
            return False
        return states[TrialState.WAITING] > 0 or not self.queued_only

    def planned_trials(self) -> int:
        """Trials started or queued: a grid's total is what it queued."""
        states = trial_counts(self)
        return sum(states[s] for s in (*STARTED_STATES, TrialState.WAITING))

    def fail_stale_trials(self) -> None:
        """Fail (and queue again) trials whose process is gone (see :meth:`StorageKind.fail_stale_trials`)."""
        self.kind.fail_stale_trials(self)


def trial_counts(study: optuna.Study) -> Counter[TrialState]:
    return Counter(t.state for t in study.get_trials(deepcopy=False))


def counted_trials(study: optuna.Study) -> int:
    """Trials done: COMPLETE and PRUNED (what ``n_trials`` counts)."""
    counts = trial_counts(study)
    return sum(counts[state] for state in COUNTED_STATES)


def best_complete_trial(study: optuna.Study) -> FrozenTrial | None:
    """The COMPLETE trial of the highest value, the earliest among equals: the one rule the final test, the
    kept models and the summary go by (Optuna's own ``best_trial`` leaves ties to the database)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number), default=None)


def running_count(study: optuna.Study) -> int:
    return trial_counts(study)[TrialState.RUNNING]


def retry_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue an interrupted trial again with the same parameters (and grid point)."""
    with experimental_api():
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)


def requeue_interrupted(study: optuna.Study, number: int | None) -> None:
    """Queue the trial stopped by an interruption again, unless it had already finished."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is not None and trial.state == TrialState.FAIL:
        retry_trial(study, trial)
