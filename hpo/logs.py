"""What hpo's commands print besides their own lines: library log levels, Optuna's tracebacks and warnings."""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import optuna

from hpo.errors import RUN_FAULTS


def quiet_logging() -> None:
    """Warnings only, without tracebacks already reported: per-trial lines would break the progress bars,
    and MLflow announces its database migrations at INFO on every first use of a file."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in optuna.logging.get_logger("optuna").handlers:  # handler filters see child loggers' records
        handler.addFilter(drop_reported_tracebacks)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # MLflow draws a bar for every artifact download (each checkpoint a retried trial reads): not ours to show.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def drop_reported_tracebacks(record: logging.LogRecord) -> bool:
    """Keep Optuna's "trial failed" line for Ctrl-C / SIGTERM and for faults (reported as one ``error:`` line
    at the end), but not the traceback of wherever training was."""
    if record.exc_info and isinstance(record.exc_info[1], (KeyboardInterrupt, *RUN_FAULTS)):
        record.exc_info = record.exc_text = None
    return True


@contextmanager
def experimental_api() -> Iterator[None]:
    """Use Optuna features it marks experimental (heartbeats, retries, constant liar) without its warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
