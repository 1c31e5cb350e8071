"""The final test: re-train the best trial's configuration and score it once on the fixed test episodes.

Re-training uses the study's seed, the same seed every trial trained with, so it reproduces the
best trial's model (up to non-deterministic GPU kernels) without storing a checkpoint per trial.
The result is stored in the Optuna study, so a resumed, finished study does not test again.
"""
from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.reporting import FINAL_TEST_ATTR
from learners.experiment import TrainingSetup


def final_test_is_current(study: optuna.Study, episodes: int) -> bool:
    """True when the best trial has been tested on ``episodes`` episodes (or there is nothing to test)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return True
    done = study.user_attrs.get(FINAL_TEST_ATTR)
    return done is not None and done["trial"] == study.best_trial.number and done["episodes"] == episodes


def final_test(study: optuna.Study, setup: TrainingSetup, episodes: int, progress: bool = True) -> dict[str, Any]:
    """Re-train the best trial's hyperparameters and test them on ``episodes`` fixed test episodes; the result
    (also a study user attr) has the test accuracy and CI, the best trial and its validation accuracies."""
    best = study.best_trial
    start = time.perf_counter()
    learner, history = setup.train(best.user_attrs["hparams"], progress=progress)
    accuracy, ci95 = setup.test(learner, episodes, progress)
    result = {"trial": best.number, "episodes": episodes, "test_accuracy": accuracy, "test_ci95": ci95,
              "val_accuracy": best.value, "retrain_val_accuracy": history[-1].val_accuracy,
              "seconds": time.perf_counter() - start}
    study.set_user_attr(FINAL_TEST_ATTR, result)
    return result
