"""The search strategy of one learner's study, and what every process that runs its trials opens.

Samplers are seeded from the study seed, pruners count steps in training iterations, and
:class:`LearnerSearch` holds the capped study, the tracker and the training setup, opened the same
way by the coordinating process and by each worker process.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import optuna

from hpo.config import (SEED_LIMIT, PrunerConfig, StudyConfig, grid_search_points, is_conditional, resolve_device,
                        task_spec)
from hpo.execution._objective import OBJECTIVE_NAME, Objective
from hpo.logs import experimental_api
from hpo.storage import CappedStudy, Heartbeat, grid_points, queue_grid, storage_kind
from mlflow.entities import DatasetInput

from hpo.tracking import Tracker, dataset_inputs, trial_settings
from learners import Budget
from learners.data import DatasetSplits
from learners.experiment import TrainingSetup


def study_name(config: StudyConfig, learner: str) -> str:
    return f"{config.name}/{learner}"


def make_sampler(config: StudyConfig, stored_trials: int, worker: str = "",
                 conditional: bool = False) -> optuna.samplers.BaseSampler:
    """A sampler seeded from the study seed.

    Random draws are seeded with the seed plus the number of trials already stored, so a resumed
    search does not replay the draws of the first run, yet reruns stay reproducible; each parallel
    ``worker`` (a name unique in the study) adds its own offset, so workers do not draw the same
    values. A grid's points are queued up front with every parameter fixed (see
    :func:`hpo.storage.queue_grid`), so its sampler is never asked.
    """
    sampler = config.search.sampler
    # Modulo: NumPy's RandomState behind every sampler refuses seeds of 2**32 and above (a worker's offset alone
    # can reach 2**32 - 1).
    seed = (config.seed + stored_trials + (zlib.crc32(worker.encode()) if worker else 0)) % SEED_LIMIT
    if sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if sampler in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    with experimental_api():
        # constant_liar: running trials of other workers count as poor, so workers spread out. group, for a space
        # with conditions (``conditional``): Optuna 5's multivariate TPE models only the parameters every trial
        # has and samples the others independently; group=True models each set of parameters that occur together
        # jointly (tests/test_conditional_space.py). Off otherwise, so that earlier studies draw as before.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, group=conditional)


def make_pruner(pruner: PrunerConfig, iterations: int, val_interval: int) -> optuna.pruners.BasePruner:
    """Steps are training iterations, so warm-up and Hyperband resources are in iterations too."""
    if pruner.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.n_startup_trials,
                                           n_warmup_steps=pruner.n_warmup_steps)
    if pruner.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=val_interval, max_resource=iterations,
                                              reduction_factor=pruner.reduction_factor)
    return optuna.pruners.NopPruner()


def open_study(config: StudyConfig, learner: str, worker: str = "") -> CappedStudy:
    """Create or load ``<study>/<learner>`` with its pruner, a freshly seeded sampler and its trial total.

    Args:
        config: the validated study.
        learner: one of the study's learners.
        worker: a name unique among the study's worker processes (seeds its sampler); empty in-process.

    Raises:
        optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError: the storage failed.
    """
    name, search, budget = study_name(config, learner), config.search, config.budget
    kind = storage_kind(config.storage)
    storage = kind.open(Heartbeat(search.heartbeat_interval, search.grace_period))
    stored = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    if stored.metric_names != [OBJECTIVE_NAME]:  # optuna-dashboard's label for the value (else "Objective 0")
        with experimental_api():
            stored.set_metric_names([OBJECTIVE_NAME])
    conditional = is_conditional(config.learners[learner].space)
    return CappedStudy(name, kind, storage,
                       make_sampler(config, len(stored.get_trials(deepcopy=False)), worker, conditional),
                       make_pruner(search.pruner, budget.iterations, budget.val_interval),
                       total=search.n_trials, queued_only=search.sampler == "grid")


def queue_grid_points(config: StudyConfig, learner: str, study: CappedStudy) -> None:
    """A grid study: queue the points not yet taken, in the seeded order (no-op for other samplers)."""
    if config.search.sampler == "grid":
        queue_grid(study, grid_points(grid_search_points(config.learners[learner].space, learner), config.seed))


def training_setup(config: StudyConfig, learner: str, data: DatasetSplits) -> TrainingSetup:
    budget = Budget(config.budget.iterations, config.budget.val_interval, config.budget.val_episodes,
                    config.budget.select)
    return TrainingSetup(learner, data, task_spec(config), budget, config.seed, resolve_device(config.device))


@dataclass
class LearnerSearch:
    """One learner's study as a process that runs its trials opens it: the capped study, the study's MLflow
    experiment and the training setup."""

    config: StudyConfig
    learner: str
    setup: TrainingSetup
    study: CappedStudy
    tracker: Tracker
    datasets: dict[str, DatasetInput]  # the MLflow input of each class split

    @classmethod
    def open(cls, config: StudyConfig, learner: str, data: DatasetSplits, worker: str = "") -> LearnerSearch:
        study = open_study(config, learner, worker)
        with study.lock():  # machines starting together: one creates the MLflow experiment, the others find it
            tracker = Tracker(config.tracking_uri, config.name)
        return cls(config, learner, training_setup(config, learner, data), study, tracker,
                   dataset_inputs(data, config.dataset.root))

    def objective(self, parent_run: str, progress: bool) -> Objective:
        """The objective whose trial runs nest under ``parent_run``, the learner's MLflow parent run."""
        return Objective(self.setup, self.config.learners[self.learner], self.tracker, parent_run,
                         self.study.study_name, trial_settings(self.config, self.setup.device),
                         self.config.checkpoints.keep, [self.datasets["train"], self.datasets["val"]],
                         self.config.system_metrics, progress)
