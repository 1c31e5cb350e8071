"""What can go wrong during a search, and how far it reaches.

* A trial's own failure (training diverged, the learner raised): the trial is FAILED with its
  reason, and the study goes on; failed trials do not count towards ``n_trials``, so they are
  replaced, but :class:`FailureLimit` stops a study whose trials keep failing.
* A fault of the outside world (storage or tracking lost, disk full): the run stops with one
  ``error:`` line from :func:`fault_message` (exit 1) and leaves both stores consistent, so a
  rerun resumes.
"""
from __future__ import annotations

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig
from hpo.urls import redact

FAILURE_REASON = "failure_reason"  # MLflow tag and Optuna user attribute of a failed trial


class TrialFailed(Exception):
    """The learner failed in this trial (the cause is chained); the study goes on."""


class RunAborted(RuntimeError):
    """The run cannot go on; the message is the one line shown to the user."""


# Raised by Optuna's storage while trials run; a study cannot go on without it.
STORAGE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)
# Faults of the outside world: they stop the run rather than fail one trial.
RUN_FAULTS = (RunAborted, *STORAGE_ERRORS)


def first_line(error: BaseException) -> str:
    """The first line of the message (or the type), without passwords."""
    text = str(error).strip()
    return redact(text.splitlines()[0] if text else type(error).__name__)


def failure_reason(error: BaseException) -> str:
    """``Type: first line of the message``, short enough for a tag."""
    return f"{type(error).__name__}: {first_line(error)}"[:500]


def fault_message(error: BaseException, config: StudyConfig) -> str | None:
    """The one line to show for a fault that stopped the run; ``None`` for anything else (a bug).

    The fault may be the context of the error that arrives: Optuna's own clean-up can fail on a
    lost database too (an ``UnboundLocalError`` in ``_run_trial``), hiding the storage error.
    """
    for link in _chain(error):
        if isinstance(link, RunAborted):
            return str(link)
        if isinstance(link, STORAGE_ERRORS):
            return f"lost the Optuna storage {redact(config.storage)}: {first_line(storage_cause(link))}"
    return None


def storage_cause(error: BaseException) -> BaseException:
    """The SQLAlchemy error behind Optuna's ``StorageInternalError`` (whose own message is generic), or ``error``."""
    cause = error.__cause__
    return cause if isinstance(error, optuna.exceptions.StorageInternalError) and cause is not None else error


def _chain(error: BaseException | None) -> list[BaseException]:
    """``error``, then the exception it was raised from or while handling, and so on."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


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
