"""The trial loop every process that runs trials goes through: Optuna's ``optimize`` until the study's total
is reached or a deadline passes, with failed trials replaced up to a limit and interrupted ones queued again."""
from __future__ import annotations

import time
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import SearchConfig
from hpo.errors import FAILURE_REASON, NoTrialsLeft, RunAborted, TrialFailed
from hpo.execution._signals import interrupts_deferred
from hpo.execution._timing import TimedObjective
from hpo.storage import CappedStudy, requeue_interrupted


def optimize(study: CappedStudy, objective: TimedObjective, search: SearchConfig, deadline: float | None,
             on_trial: Callable[[], None] | None = None) -> bool:
    """Run trials in this process until the study's total is reached (True) or the deadline passes (False).

    A failed trial (it diverged or the learner raised) is recorded and replaced by another, up to
    ``search.max_consecutive_failures`` in a row; faults of storage or tracking stop the run. On
    Ctrl-C / SIGTERM the trial it stopped is queued again before the interruption propagates.
    """
    callbacks = [FailureLimit(search.max_consecutive_failures), objective.after_trial,
                 *([lambda *_: on_trial()] if on_trial else [])]
    try:
        study.optimize(objective, timeout=seconds_left(deadline), catch=(TrialFailed,), callbacks=callbacks)
    except NoTrialsLeft:
        return True
    except KeyboardInterrupt:
        with interrupts_deferred():
            requeue_interrupted(study, objective.interrupted_trial)
        raise
    return False


def seconds_left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def deadline_after(seconds: float | None) -> float | None:
    """The ``time.monotonic()`` deadline ``seconds`` from now (``None``: no deadline)."""
    return None if seconds is None else time.monotonic() + seconds


class FailureLimit:
    """Optuna callback: stop the run after ``limit`` failed trials in a row (of this process)."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row = limit, 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            reason = trial.user_attrs.get(FAILURE_REASON, "see the log")
            raise RunAborted(f"{study.study_name}: {self.in_a_row} trials in a row failed, the last with "
                             f"'{reason}'; check the search space (search.max_consecutive_failures = "
                             f"{self.limit}), then rerun to continue")
