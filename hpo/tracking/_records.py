"""What is logged where: the learner parent run's params, each trial run's settings, the MLflow status of a
trial, and closing the runs a killed process left RUNNING."""
from __future__ import annotations

from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from hpo.config import StudyConfig
from hpo.tracking._tracker import STATE_TAG, Tracker

# Pruned trials did not run to the end: they are KILLED in MLflow, never FINISHED.
RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


def run_status(state: TrialState, interrupted: bool = False) -> str:
    """MLflow status of a trial run; an interrupted trial (FAIL in Optuna) was KILLED."""
    return "KILLED" if interrupted else RUN_STATUS.get(state, "FAILED")


def parent_params(config: StudyConfig, learner: str) -> dict[str, Any]:
    """What stays fixed for the whole learner study (MLflow params cannot change later)."""
    dataset, search, budget = config.dataset, config.search, config.budget
    return {"learner": learner, "seed": config.seed, "dataset": dataset.name, "split": dataset.split,
            "ways": dataset.ways, "shots": dataset.shots, "queries": dataset.queries,
            "sampler": search.sampler, "pruner": search.pruner.type, "iterations": budget.iterations,
            "val_interval": budget.val_interval, "val_episodes": budget.val_episodes,
            "test_episodes": config.test.episodes,
            **{f"fixed.{k}": v for k, v in config.learners[learner].fixed.items()}}


def trial_settings(config: StudyConfig, device: torch.device) -> dict[str, Any]:
    """The run settings written next to each trial's hyperparameters (its ``config.json``); ``threads``: torch's
    intra-op threads, which change a CPU run's rounding (``hpo.rerun`` trains with as many)."""
    return {"study": config.name, "seed": config.seed, "device": str(device), "threads": torch.get_num_threads(),
            "dataset": config.dataset.model_dump(mode="json"), "budget": config.budget.model_dump(),
            "test": config.test.model_dump()}


def close_orphan_runs(tracker: Tracker, study: optuna.Study) -> None:
    """Close trial runs left RUNNING by a killed process once Optuna has settled their trial.

    The objective closes its own run in every other case, so a FAIL trial here was killed.
    """
    trials = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    for number, run_id in tracker.running_children(study.study_name).items():
        state = trials.get(number, TrialState.FAIL)
        if state.is_finished():
            tracker.end(run_id, run_status(state, interrupted=state == TrialState.FAIL), {STATE_TAG: state.name})
