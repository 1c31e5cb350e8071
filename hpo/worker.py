"""Trials of one learner's study until its total is reached: the loop every worker runs, and the
worker process ``python -m hpo.worker`` that :mod:`hpo.coordinator` starts for ``--workers N``.

A worker process gets its job as JSON on stdin, opens the study, tracker and data itself, and
runs trials until the study's total (over all workers) is reached or its timeout passes.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import optuna
import torch
from optuna.trial import TrialState
from pydantic import BaseModel

from hpo.budget import BudgetedStudy, NoTrialsLeft
from hpo.config import SearchConfig, StudyConfig, check_learners
from hpo.faults import FailureLimit, TrialFailed, fault_message
from hpo.interrupts import exit_code, interrupts_deferred, stop_signals_as_interrupts
from hpo.objective import Objective
from hpo.preflight import load_data, resolve_device, task_spec
from hpo.search import make_storage, open_study, retry_trial
from hpo.timing import TimedObjective
from hpo.tracking import Tracker
from learners import Budget
from learners.data import DatasetSplits
from learners.experiment import LearnerTask

FAULT = 1  # exit code of a worker process stopped by a fault (its one-line error is on stderr)


def run_trials(study: BudgetedStudy, objective: Callable[[optuna.Trial], float], search: SearchConfig,
               deadline: float | None, on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None
               ) -> bool:
    """Run trials in this process until the study's total is reached (True) or the deadline passes (False).

    A failed trial (it diverged or the learner raised) is recorded and replaced by another, up to
    ``search.max_consecutive_failures`` in a row; faults of storage or tracking stop the run.
    """
    callbacks = [FailureLimit(search.max_consecutive_failures), *([on_trial] if on_trial else [])]
    try:
        study.optimize(objective, timeout=seconds_left(deadline), catch=(TrialFailed,), callbacks=callbacks)
    except NoTrialsLeft:
        return True
    return False


def seconds_left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class WorkerJob(BaseModel):
    """What a worker process needs, sent as JSON on its stdin (never on the command line: passwords)."""

    config: StudyConfig
    learner: str
    parent_run: str   # the learner's MLflow parent run, created by the coordinating process
    worker: str       # unique among the study's workers; seeds the worker's sampler
    timeout: float | None
    threads: int


def main() -> int:
    """``python -m hpo.worker``: run trials of the job on stdin until the study's total is reached.

    Exit codes: 0 done (total reached or timeout), 1 a fault (one ``error:`` line), 130 / 143 stopped
    by Ctrl-C / SIGTERM (the trial it ran is queued again).
    """
    from hpo.run import quiet_optuna_logging  # the command line's settings, for the same output

    job = WorkerJob.model_validate_json(sys.stdin.read())
    check_learners(job.config)  # coerces fixed values and choices to the learners' types again
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(job.threads)
    quiet_optuna_logging()
    with stop_signals_as_interrupts():
        try:
            run_trial_worker(job)
        except KeyboardInterrupt as interruption:
            return exit_code(interruption)
        except Exception as error:
            message = fault_message(error, job.config)
            if message is None:
                raise  # a bug: keep the traceback
            print(f"error: worker {job.worker}: {message}", file=sys.stderr)
            return FAULT
    return 0


def run_trial_worker(job: WorkerJob) -> None:
    config = job.config
    task = learner_task(config, job.learner, load_data(config))
    study = open_study(config, job.learner, make_storage(config.storage, config.search), job.worker)
    tracker = Tracker(config.tracking_uri, config.name)
    objective = Objective(task, config.learners[job.learner], tracker, job.parent_run, study.study_name,
                          trial_settings(config, task), progress=False)
    deadline = None if job.timeout is None else time.monotonic() + job.timeout
    try:
        run_trials(study, TimedObjective(objective, tracker), config.search, deadline)
    except KeyboardInterrupt:
        with interrupts_deferred():
            requeue_interrupted(study, objective.interrupted_trial)
        raise


def learner_task(config: StudyConfig, learner: str, data: DatasetSplits) -> LearnerTask:
    budget = Budget(config.budget.iterations, config.budget.val_interval, config.budget.val_episodes)
    return LearnerTask(learner, data, task_spec(config), budget, config.seed, resolve_device(config.device))


def requeue_interrupted(study: optuna.Study, number: int | None) -> None:
    """Queue the trial stopped by the interruption again, unless it had already finished."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is not None and trial.state == TrialState.FAIL:
        retry_trial(study, trial)


def trial_settings(config: StudyConfig, task: LearnerTask) -> dict[str, Any]:
    """The run settings written next to each trial's hyperparameters (its ``config.json``)."""
    return {"study": config.name, "seed": config.seed, "device": str(task.device),
            "dataset": config.dataset.model_dump(mode="json"), "budget": config.budget.model_dump(),
            "test": config.test.model_dump()}


if __name__ == "__main__":
    sys.exit(main())
