"""One learner's study, start to finish: prepare it, run its trials, final test, plots.

:func:`run_learner` fails trials of dead workers, closes their MLflow runs, queues grid points
and opens the learner's parent run; then it runs trials, in this process or in ``search.workers``
worker processes (:mod:`hpo.worker`), waits for the trials that workers elsewhere (other
machines) still run, and runs the final test once.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from hpo.budget import STARTED_STATES, BudgetedStudy
from hpo.config import StudyConfig
from hpo.faults import RunAborted
from hpo.final_test import final_test_is_current, run_final_test
from hpo.interrupts import interrupts_deferred
from hpo.objective import Objective, run_status
from hpo.parallel import INTERRUPTED, POLL_S, run_worker_processes
from hpo.preflight import load_data
from hpo.report import LearnerSummary, summarize, write_plots
from hpo.search import (COUNTED_STATES, counted_trials, fail_stale_trials, make_storage, open_study,
                        queue_grid_points, trial_counts)
from hpo.timing import TimedObjective
from hpo.tracking import STATE_TAG, STUDY_TAG, Tracker
from hpo.worker import WorkerJob, learner_task, requeue_interrupted, run_trials, seconds_left, trial_settings
from learners.data import DatasetSplits


def run_learner(config: StudyConfig, learner: str, data: DatasetSplits | None = None,
                progress: bool = True) -> LearnerSummary:
    """Run or resume ``<study>/<learner>``; on Ctrl-C / SIGTERM leave both stores consistent and re-raise."""
    task = learner_task(config, learner, data if data is not None else load_data(config))
    study = open_study(config, learner, make_storage(config.storage, config.search))
    with study.lock():  # machines starting together: one creates the MLflow experiment, the others find it
        tracker = Tracker(config.tracking_uri, config.name)
    fail_stale_trials(study, config.storage)
    close_orphan_runs(tracker, study)
    queue_grid_points(config, learner, study)
    searched = list(config.learners[learner].space)
    if not study.has_trials_left() and not running_count(study) and final_test_is_current(study, config.test.episodes):
        print(f"{study.study_name}: complete with {counted_trials(study)} trials, nothing to run")
        return summarize(study, learner, searched)

    with study.lock():  # one parent run, also when machines start together
        parent = tracker.reuse_or_start("parent", {STUDY_TAG: study.study_name}, name=learner,
                                        params=parent_params(config, learner),
                                        tags={"learner": learner, "n_trials_target": config.search.n_trials or "-"})
    objective = Objective(task, config.learners[learner], tracker, parent, study.study_name,
                          trial_settings(config, task), progress)
    try:
        tracker.log_json(parent, config.model_dump(mode="json"), "config.json")
        search(config, learner, study, objective, parent, progress)
        close_orphan_runs(tracker, study)
        with study.lock():  # one final test, also when workers on several machines finish together
            if not final_test_is_current(study, config.test.episodes):
                result = run_final_test(study, task, config.test.episodes, progress)
                tracker.log_metrics(parent, {"test_accuracy": result["test_accuracy"],
                                             "test_ci95": result["test_ci95"], "val_accuracy": result["val_accuracy"],
                                             "best_trial": result["trial"],
                                             "retrain_val_accuracy": result["retrain_val_accuracy"]})
                tracker.log_json(parent, study.best_trial.user_attrs["hparams"], "best_hparams.json")
        log_plots(tracker, parent, study)
        tracker.end(parent, "FINISHED")
    except KeyboardInterrupt:
        with interrupts_deferred():
            requeue_interrupted(study, objective.interrupted_trial)
            close_orphan_runs(tracker, study)
            # KILLED until a rerun reopens it (RUNNING) and finishes it (FINISHED).
            tracker.end(parent, "KILLED")
        raise
    except Exception:
        tracker.end(parent, "FAILED")  # never left RUNNING; a rerun reopens it
        raise
    return summarize(study, learner, searched)


def search(config: StudyConfig, learner: str, study: BudgetedStudy, objective: Objective, parent: str,
           progress: bool) -> None:
    """Run trials until the study's total is reached or ``search.timeout`` passes: in this process, or in
    ``search.workers`` worker processes; then wait for the trials other workers still run, and run again
    when they leave work (a dead worker's trial queued again, a failed trial to replace)."""
    deadline = None if config.search.timeout is None else time.monotonic() + config.search.timeout
    in_process = TimedObjective(objective, objective.tracker) if config.search.workers == 1 else None
    bar = TrialsBar(study, progress)
    try:
        while True:
            if in_process is not None:
                reached = run_trials(study, in_process, config.search, deadline, bar.update)
            else:
                reached = run_in_processes(config, learner, parent, deadline, lambda: bar.update(study))
            if not reached or not wait_for_running_trials(study, config.storage, deadline, bar):
                return
            if not study.has_trials_left():
                return
    finally:
        bar.close()


def run_in_processes(config: StudyConfig, learner: str, parent: str, deadline: float | None,
                     on_poll: Callable[[], None]) -> bool:
    """Run ``search.workers`` worker processes until they stop; True if the total was reached (not the deadline).

    A worker killed by a signal only loses its current trial, which the stale-trial check queues again
    (unless every worker was killed: something kills them on sight); a worker stopped by a fault (exit
    code 1, its error printed) stops the run once the others end.
    """
    workers = config.search.workers
    threads = max(1, (os.cpu_count() or 1) // workers)  # one worker per core beats cores shared by threads
    jobs = [WorkerJob(config=config, learner=learner, parent_run=parent, worker=f"{socket.gethostname()}/{index}",
                      timeout=seconds_left(deadline), threads=threads).model_dump_json() for index in range(workers)]
    codes = run_worker_processes(jobs, on_poll)
    for index, code in enumerate(codes):
        if code < 0 or code in INTERRUPTED:
            print(f"worker {index} of {learner} was stopped by a signal; its trial will run again", file=sys.stderr)
    faults = [(index, code) for index, code in enumerate(codes) if code > 0 and code not in INTERRUPTED]
    if faults:
        index, code = faults[0]
        raise RunAborted(f"worker {index} of {learner} stopped with exit code {code} (its error is above); "
                         f"rerun to resume")
    if 0 not in codes:
        raise RunAborted(f"all {workers} workers of {learner} were stopped by signals; rerun to resume")
    return deadline is None or time.monotonic() < deadline


def wait_for_running_trials(study: BudgetedStudy, storage_url: str, deadline: float | None, bar: "TrialsBar") -> bool:
    """Until no trial of the study runs (True), or the deadline passes (False).

    Trials still running belong to workers elsewhere, or to a dead process until the stale-trial check
    fails them (after the heartbeat grace period) and queues them again.
    """
    while running_count(study):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        bar.update(study)
        time.sleep(POLL_S)
        fail_stale_trials(study, storage_url)
    return True


def running_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


class TrialsBar:
    """Progress over the study's total, from the study's state (trials of every worker count)."""

    def __init__(self, study: BudgetedStudy, progress: bool):
        counts = trial_counts(study)
        # A grid's total is what it queued (all its points, or n_trials of them).
        total = sum(counts[s] for s in (*STARTED_STATES, TrialState.WAITING)) if study.queued_only else study.total
        self.bar = tqdm(total=total, initial=sum(counts[s] for s in COUNTED_STATES), desc=f"{study.study_name} trials",
                        unit="trial", position=0, leave=True, disable=not progress, dynamic_ncols=True)

    def update(self, study: optuna.Study, *_: Any) -> None:
        """Also an Optuna callback (``study, trial``)."""
        self.bar.n = counted_trials(study)
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self.bar.set_postfix(best=f"{study.best_value:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def close_orphan_runs(tracker: Tracker, study: optuna.Study) -> None:
    """Close trial runs left RUNNING by a killed process once Optuna has settled their trial.

    The objective closes its own run in every other case, so a FAIL trial here was killed.
    """
    trials = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    for number, run_id in tracker.running_children(study.study_name).items():
        state = trials.get(number, TrialState.FAIL)
        if state.is_finished():
            tracker.end(run_id, run_status(state, interrupted=state == TrialState.FAIL), {STATE_TAG: state.name})


def log_plots(tracker: Tracker, run_id: str, study: optuna.Study) -> None:
    with tempfile.TemporaryDirectory() as directory:
        for path in write_plots(study, Path(directory)):
            tracker.log_file(run_id, path)


def parent_params(config: StudyConfig, learner: str) -> dict[str, Any]:
    """What stays fixed for the whole learner study (MLflow params cannot change later)."""
    dataset, search, budget = config.dataset, config.search, config.budget
    return {"learner": learner, "seed": config.seed, "dataset": dataset.name, "split": dataset.split,
            "ways": dataset.ways, "shots": dataset.shots, "queries": dataset.queries,
            "sampler": search.sampler, "pruner": search.pruner.type, "iterations": budget.iterations,
            "val_interval": budget.val_interval, "val_episodes": budget.val_episodes,
            "test_episodes": config.test.episodes,
            **{f"fixed.{k}": v for k, v in config.learners[learner].fixed.items()}}
