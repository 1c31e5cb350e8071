"""Every error hpo raises, under one base, and how far each reaches.

* :class:`ConfigError`: bad input (study file, command line, data, unreachable storage), found
  before anything is written; one ``error: <file>: <field>: <message>`` line, exit code 2.
* :class:`TrialFailed`: the learner failed in one trial (training diverged, the learner raised);
  the trial is FAILED with its reason and the study goes on. Failed trials do not count towards
  ``n_trials``, so they are replaced, but ``search.max_consecutive_failures`` failures in a row
  stop the run.
* :class:`RunAborted` (and :class:`TrackingError`), and errors of Optuna's storage: faults of the
  outside world (storage or tracking lost, disk full). The run stops with one ``error:`` line from
  :func:`fault_message` (exit code 1) and leaves both stores consistent, so a rerun resumes.
* :class:`NoTrialsLeft`: not a failure; every trial of the study's total is taken.

Ctrl-C and SIGTERM are ``KeyboardInterrupt`` (see :mod:`hpo.execution`): exit codes 130 and 143.
"""
from __future__ import annotations

import optuna
import sqlalchemy.exc

from hpo.redaction import redact

FAULT = 1      # exit code: a fault stopped the run (rerun to resume)
BAD_INPUT = 2  # exit code: bad input, nothing written

FAILURE_REASON = "failure_reason"  # MLflow tag and Optuna user attribute of a failed trial


class HpoError(Exception):
    """Base of every error hpo raises."""


class ConfigError(HpoError, ValueError):
    """A user error in a study file or command line: ``<file>: <field.path>: <message>``."""

    def __init__(self, message: str, field: str | None = None, file: str | None = None):
        super().__init__(message)
        self.message, self.field, self.file = message, field, file

    def __str__(self) -> str:
        return ": ".join(part for part in (self.file, self.field, self.message) if part)


class TrialFailed(HpoError):
    """The learner failed in this trial (the cause is chained); the study goes on."""


class RunAborted(HpoError, RuntimeError):
    """The run cannot go on; the message is the one line shown to the user."""


class TrackingError(RunAborted):
    """MLflow (or the disk holding its artifacts) failed; the run cannot be tracked."""


class NoTrialsLeft(HpoError):
    """Every trial of the study's total is done, running or queued: the worker stops."""


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


def fault_message(error: BaseException, storage_url: str) -> str | None:
    """The one line to show for a fault that stopped the run; ``None`` for anything else (a bug).

    The fault may be the context of the error that arrives: Optuna's own clean-up can fail on a
    lost database too (an ``UnboundLocalError`` in ``_run_trial``), hiding the storage error.
    """
    for link in _chain(error):
        if isinstance(link, RunAborted):
            return str(link)
        if isinstance(link, STORAGE_ERRORS):
            return f"lost the Optuna storage {redact(storage_url)}: {first_line(storage_cause(link))}"
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
