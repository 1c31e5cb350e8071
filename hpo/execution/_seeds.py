"""Seed variance: the chosen configuration trained again with other seeds (``test.seeds``), on the same test episodes.

An interval over test episodes says how well the episodes measure one model; it says nothing of how another
training run of the same configuration would score, which is often the larger spread. The final test's model is
the study seed's run; each further seed trains the best trial's hyperparameters from other initial weights and
training episodes (:attr:`~learners.experiment.TrainingSetup.training_seed`), and is tested on the final test's
episodes. Each finished seed is recorded at once (the study user attr ``seed_runs``), so a stopped run resumes with
the seeds not done yet.
"""
from __future__ import annotations

from dataclasses import replace

import optuna
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hpo.config import SEED_LIMIT, TestConfig
from hpo.execution._final_test import TEST_EPISODES_FILE, episodes_csv
from hpo.execution._signals import interrupts_deferred
from hpo.reporting import FINAL_TEST_ATTR, SEED_RUNS_ATTR, seed_results
from hpo.storage import best_complete_trial
from hpo.tracking import STUDY_TAG, Tracker
from learners.experiment import TrainingSetup
from learners.registry import hparams_with_defaults
from learners.statistics import mean_interval

SEED_RUN_ROLE = "seed_run"  # run_role of the further seeds' runs
# Training seed k is the study seed + k · 100003 (a prime): never one of the episode seeds (seed + 1000 for
# validation, seed + 2000 for test), and far apart from each other.
SEED_STRIDE = 100_003


def training_seeds(study_seed: int, seeds: int) -> list[int]:
    """The training seeds of ``test.seeds: seeds``, the study's own first."""
    return [(study_seed + k * SEED_STRIDE) % SEED_LIMIT for k in range(seeds)]


def seeds_done(study: optuna.Study, test: TestConfig, study_seed: int) -> bool:
    """True when every further seed of ``test.seeds`` has a result for the tested configuration."""
    done = {result["training_seed"] for result in seed_results(study)}
    return set(training_seeds(study_seed, test.seeds)[1:]) <= done


def run_seeds(study: optuna.Study, setup: TrainingSetup, tracker: Tracker, parent_run: str, test: TestConfig,
              progress: bool = True) -> None:
    """Train and test the best trial's configuration with each further seed not done yet.

    Each seed is a run nested under the parent (role ``seed_run``, params: every hyperparameter and the
    ``training_seed``) with the kept model's validation accuracy, the test accuracy and interval, and the
    per-episode accuracies (``test_episodes.csv``); a run stopped midway is KILLED and reopened by the next start.
    """
    tested = study.user_attrs[FINAL_TEST_ATTR]
    hparams = best_complete_trial(study).user_attrs["hparams"]
    recorded = dict(study.user_attrs.get(SEED_RUNS_ATTR, {}))
    finished = {result["training_seed"] for result in seed_results(study)}
    for seed in training_seeds(setup.seed, test.seeds)[1:]:
        if seed in finished:
            continue
        run = tracker.reuse_or_start(
            SEED_RUN_ROLE, {STUDY_TAG: study.study_name, "training_seed": str(seed),
                            "tested_trial": str(tested["trial"])},
            name=f"{setup.learner}-seed-{seed}", params={**hparams_with_defaults(setup.learner, hparams),
                                                         "training_seed": seed},
            tags={MLFLOW_PARENT_RUN_ID: parent_run, "learner": setup.learner})
        try:
            learner, fitted = replace(setup, training_seed=seed).train(hparams, progress=progress)
            accuracies = setup.test(learner, test.episodes, progress)
        except BaseException as error:  # Ctrl-C, SIGTERM or a fault: never left RUNNING
            with interrupts_deferred():
                tracker.end(run, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            raise
        interval = mean_interval(accuracies, test.ci)
        result = {"training_seed": seed, "trial": tested["trial"], "episode_digest": tested["episode_digest"],
                  "val_accuracy": fitted.selected.val_accuracy, "test_accuracy": interval.mean,
                  "test_ci95": interval.half_width, "ci_method": test.ci, "run_id": run}
        tracker.log_metrics(run, {"val_accuracy": result["val_accuracy"], "test_accuracy": interval.mean,
                                  "test_ci95": interval.half_width})
        tracker.log_text(run, episodes_csv(accuracies.tolist()), TEST_EPISODES_FILE)
        tracker.end(run, "FINISHED")
        recorded[str(seed)] = result
        study.set_user_attr(SEED_RUNS_ATTR, recorded)
