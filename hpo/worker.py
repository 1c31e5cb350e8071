"""One learner's study, start to finish: search (or resume) to the total, final test, plots.

:func:`run_worker` is self-contained (it opens its own storage and tracker and loads data when
not given) so that several worker processes can later run it side by side on a shared storage.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from hpo.config import StudyConfig
from hpo.final_test import final_test_is_current, run_final_test
from hpo.interrupts import interrupts_deferred
from hpo.objective import Objective, run_status
from hpo.preflight import load_data, resolve_device, task_spec
from hpo.report import LearnerSummary, summarize, write_plots
from hpo.search import (COUNTED_STATES, counted_trials, fail_stale_trials, make_storage, open_study,
                        remaining_trials, retry_trial)
from hpo.tracking import STATE_TAG, STUDY_TAG, Tracker
from hpo.training import LearnerTask
from learners import Budget
from learners.data import DatasetSplits


def run_worker(config: StudyConfig, learner: str, data: DatasetSplits | None = None,
               progress: bool = True) -> LearnerSummary:
    """Run or resume ``<study>/<learner>``; on Ctrl-C / SIGTERM leave both stores consistent and re-raise."""
    task = learner_task(config, learner, data if data is not None else load_data(config))
    study = open_study(config, learner, make_storage(config.storage))
    tracker = Tracker(config.tracking_uri, config.name)
    fail_stale_trials(study)
    close_orphan_runs(tracker, study)
    remaining = remaining_trials(study, config.search)
    searched = list(config.learners[learner].space)
    if remaining == 0 and final_test_is_current(study, config.test.episodes):
        print(f"{study.study_name}: complete with {counted_trials(study)} trials, nothing to run")
        return summarize(study, learner, searched)

    parent = tracker.reuse_or_start("parent", {STUDY_TAG: study.study_name}, name=learner,
                                    params=parent_params(config, learner),
                                    tags={"learner": learner, "n_trials_target": config.search.n_trials or "-"})
    tracker.log_json(parent, config.model_dump(mode="json"), "config.json")
    objective = Objective(task, config.learners[learner], tracker, parent, study.study_name,
                          trial_settings(config, task), progress)
    try:
        if remaining != 0:
            run_trials(study, objective, remaining, config.search.timeout, progress)
        close_orphan_runs(tracker, study)
        if not final_test_is_current(study, config.test.episodes):
            result = run_final_test(study, task, config.test.episodes, progress)
            tracker.log_metrics(parent, {"test_accuracy": result["test_accuracy"], "test_ci95": result["test_ci95"],
                                         "val_accuracy": result["val_accuracy"], "best_trial": result["trial"],
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


def learner_task(config: StudyConfig, learner: str, data: DatasetSplits) -> LearnerTask:
    budget = Budget(config.budget.iterations, config.budget.val_interval, config.budget.val_episodes)
    return LearnerTask(learner, data, task_spec(config), budget, config.seed, resolve_device(config.device))


def run_trials(study: optuna.Study, objective: Objective, n_trials: int | None, timeout: float | None,
           progress: bool) -> None:
    """Run trials with a progress bar over the study's total; failed trials are recorded, not fatal."""
    done = counted_trials(study)
    bar = tqdm(total=None if n_trials is None else done + n_trials, initial=done, desc=f"{study.study_name} trials",
               unit="trial", position=0, leave=True, disable=not progress, dynamic_ncols=True)

    def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state in COUNTED_STATES:
            bar.update(1)
        if trial.state == TrialState.COMPLETE:
            bar.set_postfix(best=f"{study.best_value:.4f}")

    try:
        study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(Exception,), callbacks=[advance])
    finally:
        bar.close()


def requeue_interrupted(study: optuna.Study, number: int | None) -> None:
    """Queue the trial stopped by the interruption again, unless it had already finished."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is not None and trial.state == TrialState.FAIL:
        retry_trial(study, trial)


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


def trial_settings(config: StudyConfig, task: LearnerTask) -> dict[str, Any]:
    """The run settings written next to each trial's hyperparameters (its ``config.json``)."""
    return {"study": config.name, "seed": config.seed, "device": str(task.device),
            "dataset": config.dataset.model_dump(mode="json"), "budget": config.budget.model_dump(),
            "test": config.test.model_dump()}
