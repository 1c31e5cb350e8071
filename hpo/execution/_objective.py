"""The Optuna objective: sampled hyperparameters → trained learner → validation accuracy, tracked in MLflow.

The trial's value is the validation accuracy at the end of training (the model the final test
re-trains and scores), reported at every validation so the pruner can stop poor trials early.

A trial whose training diverges or whose learner raises ends FAIL, with the reason as the
``failure_reason`` tag and user attribute (see :mod:`hpo.errors`); the study replaces it.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.config import LearnerConfig, suggest
from hpo.errors import FAILURE_REASON, RUN_FAULTS, TrialFailed, failure_reason
from hpo.tracking import STATE_TAG, Tracker, run_status
from learners import TrainingDiverged, hparams_with_defaults, learner_class
from learners.base import ValidationPoint
from learners.experiment import TrainingSetup


class Objective:
    """Callable for ``study.optimize``; one MLflow run per trial, nested under the learner's parent run.

    Args:
        setup: what every trial trains with besides its hyperparameters.
        learner_config: the learner's ``fixed`` values and search ``space``.
        tracker, parent_run: the study's MLflow experiment and the learner's parent run.
        study: the Optuna study's name (tagged on every trial run).
        settings: the run settings written next to each trial's hyperparameters.
    """

    def __init__(self, setup: TrainingSetup, learner_config: LearnerConfig, tracker: Tracker, parent_run: str,
                 study: str, settings: dict[str, Any], progress: bool = True):
        self.setup, self.learner_config, self.tracker = setup, learner_config, tracker
        self.parent_run, self.study, self.settings, self.progress = parent_run, study, settings, progress
        # Number of the trial stopped by Ctrl-C / SIGTERM, so the caller can queue it again.
        self.interrupted_trial: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        self.interrupted_trial = trial.number  # stays set only if an interruption ends the trial
        try:
            value = self._run(trial)
        except Exception:
            self.interrupted_trial = None
            raise
        self.interrupted_trial = None
        return value

    def _run(self, trial: optuna.Trial) -> float:
        learner = self.setup.learner
        hparams = {**self.learner_config.fixed, **suggest(trial, self.learner_config.space)}
        trial.set_user_attr("hparams", hparams)
        every = hparams_with_defaults(learner, hparams)
        run_id = self.tracker.start_trial_run(
            self.parent_run, self.study, trial.number, f"{learner}-trial-{trial.number:04d}",
            tags={"learner": learner, "bn_at_test": learner_class(learner).bn_at_test, STATE_TAG: "RUNNING"},
            params=every)
        state, interrupted, tags = TrialState.FAIL, False, {}
        try:
            self.tracker.log_json(run_id, {**self.settings, "learner": learner, "trial": trial.number,
                                           "hparams": every}, "config.json")
            _, history = self.setup.train(hparams, lambda point: self._validated(trial, run_id, point), self.progress)
            state = TrialState.COMPLETE
            return history[-1].val_accuracy
        except optuna.TrialPruned:
            state = TrialState.PRUNED
            raise
        except KeyboardInterrupt:
            interrupted = True
            raise
        except RUN_FAULTS as e:  # storage or tracking lost: the run stops, Optuna fails the trial
            tags[FAILURE_REASON] = failure_reason(e)
            raise
        except TrainingDiverged as e:
            tags[FAILURE_REASON] = self._failed(trial, f"diverged: {e}")
            # No accuracy to report: Optuna fails a trial that returns NaN, with one log line (no traceback).
            return math.nan
        except Exception as e:
            tags[FAILURE_REASON] = self._failed(trial, failure_reason(e))
            raise TrialFailed(tags[FAILURE_REASON]) from e
        finally:
            self.tracker.end(run_id, run_status(state, interrupted), {STATE_TAG: state.name, **tags})

    @staticmethod
    def _failed(trial: optuna.Trial, reason: str) -> str:
        trial.set_user_attr(FAILURE_REASON, reason)
        return reason

    def _validated(self, trial: optuna.Trial, run_id: str, point: ValidationPoint) -> None:
        metrics = {k: v for k, v in asdict(point).items() if k != "step"}
        self.tracker.log_metrics(run_id, metrics, step=point.step)
        trial.report(point.val_accuracy, point.step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {point.step} with val_accuracy {point.val_accuracy:.4f}")
