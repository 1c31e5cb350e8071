"""Optuna side of a study: storage with heartbeats, seeded samplers, pruners, trial accounting.

Trial accounting: ``n_trials`` is a total per learner over all runs. COMPLETE and PRUNED trials
count towards it; FAILED trials do not (a crash must not silently use up the budget), so a rerun
tops the study up. Interrupted trials (Ctrl-C, SIGTERM, or a killed process detected by its stale
heartbeat) are failed and queued again with the same parameters.
"""
from __future__ import annotations

import warnings
from collections import Counter

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import PrunerConfig, SearchConfig, StudyConfig
from hpo.space import grid_search_space

HEARTBEAT_INTERVAL_S = 10
# A trial whose process has not written a heartbeat for this long is failed (and retried).
GRACE_PERIOD_S = 30
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def study_name(config: StudyConfig, learner: str) -> str:
    return f"{config.name}/{learner}"


def make_storage(url: str) -> optuna.storages.BaseStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())


def make_sampler(config: StudyConfig, learner: str, stored_trials: int) -> optuna.samplers.BaseSampler:
    """A sampler seeded from the study seed.

    Random draws are seeded with the seed plus the number of trials already stored, so a resumed
    search does not replay the draws of the first run, yet reruns stay reproducible. The grid keeps
    the plain seed: its shuffled order defines the grid-point ids stored with each trial.
    """
    sampler, seed = config.search.sampler, config.seed + stored_trials
    if sampler == "grid":
        return optuna.samplers.GridSampler(grid_search_space(config.learners[learner].space, learner), seed=config.seed)
    if sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(pruner: PrunerConfig, iterations: int, val_interval: int) -> optuna.pruners.BasePruner:
    """Steps are training iterations, so warm-up and Hyperband resources are in iterations too."""
    if pruner.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.n_startup_trials,
                                           n_warmup_steps=pruner.n_warmup_steps)
    if pruner.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=val_interval, max_resource=iterations,
                                              reduction_factor=pruner.reduction_factor)
    return optuna.pruners.NopPruner()


def open_study(config: StudyConfig, learner: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create or load ``<study>/<learner>`` with its pruner and a freshly seeded sampler."""
    study = optuna.create_study(storage=storage, study_name=study_name(config, learner), direction="maximize",
                                load_if_exists=True,
                                pruner=make_pruner(config.search.pruner, config.budget.iterations,
                                                   config.budget.val_interval))
    study.sampler = make_sampler(config, learner, len(study.get_trials(deepcopy=False)))
    return study


def trial_counts(study: optuna.Study) -> Counter[TrialState]:
    return Counter(t.state for t in study.get_trials(deepcopy=False))


def counted_trials(study: optuna.Study) -> int:
    counts = trial_counts(study)
    return sum(counts[state] for state in COUNTED_STATES)


def remaining_trials(study: optuna.Study, search: SearchConfig) -> int | None:
    """Trials still to run towards ``n_trials`` (``None``: no total, the timeout alone bounds the run)."""
    if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study):
        # Every grid point has been tried; only re-queued interrupted points are left.
        return trial_counts(study)[TrialState.WAITING]
    if search.n_trials is None:
        return None
    return max(0, search.n_trials - counted_trials(study))


def retry_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue an interrupted trial again with the same parameters (and grid point)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and queue again) trials whose process stopped sending heartbeats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
