"""The Optuna objective: sampled hyperparameters → trained learner → validation accuracy, tracked in MLflow.

The trial's value is the validation accuracy of the model it keeps (``budget.select``: the last
or the best validation's), reported at every validation so the pruner can stop poor trials early.

After every validation the trial stores a checkpoint with its MLflow run
(:class:`~hpo.tracking.TrialCheckpoints`). A trial that retries an interrupted one (killed,
Ctrl-C, SIGTERM: Optuna's ``retry_history`` system attribute names it) continues from that
trial's last checkpoint; its run starts with the validations the checkpoint holds, so it shows one
continuous curve, and is tagged with the run and step it continued from. A completed trial keeps
its model's weights (``checkpoints.keep``); a pruned or failed one keeps nothing.

A trial whose training diverges or whose learner raises ends FAIL, with the reason as the
``failure_reason`` tag and user attribute (see :mod:`hpo.errors`); the study replaces it.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import optuna
from mlflow.entities import DatasetInput
from optuna.trial import FrozenTrial, TrialState

from hpo.config import LearnerConfig, suggest
from hpo.errors import FAILURE_REASON, RUN_FAULTS, TrialFailed, failure_reason
from hpo.tracking import MODEL_FILE, STATE_TAG, Tracker, TrialCheckpoints, run_status, system_metrics
from learners import TrainingDiverged, hparams_with_defaults, learner_class
from learners.base import FitResult, FitState, ValidationPoint
from learners.experiment import TrainingSetup

MODEL_ATTR = "model"          # user attr of a completed trial: where its kept model is ({run_id, step, bytes})
WARM_START_ATTR = "warm_start"  # user attr of a warm-started trial: where it was queued from (see _warm_start)
MODEL_DELETED_TAG = "model_deleted"  # tag of a trial run whose kept model was deleted, and why
TRAINING_ATTR = "training"    # user attr: how training ended ({stop_reason, stopped_at_step, selected_step})
RESUMED_ATTR = "resumed_from"  # user attr: the checkpoint a retried trial continued from ({run_id, step}) or None


class Objective:
    """Callable for ``study.optimize``; one MLflow run per trial, nested under the learner's parent run.

    Args:
        setup: what every trial trains with besides its hyperparameters.
        learner_config: the learner's ``fixed`` values and search ``space``.
        tracker, parent_run: the study's MLflow experiment and the learner's parent run.
        study: the Optuna study's name (tagged on every trial run).
        settings: the run settings written next to each trial's hyperparameters.
        keep: ``checkpoints.keep``: which completed trials keep their model (best, all, none).
        datasets: the MLflow inputs every trial run records (the training and validation classes).
        system_metrics: sample the machine into each trial run (MLflow's system metrics).
    """

    def __init__(self, setup: TrainingSetup, learner_config: LearnerConfig, tracker: Tracker, parent_run: str,
                 study: str, settings: dict[str, Any], keep: str, datasets: list[DatasetInput],
                 system_metrics: bool = False, progress: bool = True):
        self.setup, self.learner_config, self.tracker = setup, learner_config, tracker
        self.parent_run, self.study, self.settings, self.progress = parent_run, study, settings, progress
        self.keep, self.datasets, self.system_metrics = keep, datasets, system_metrics
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
        retried = _retried_trials(trial)
        run_id = self.tracker.start_trial_run(
            self.parent_run, self.study, trial.number, f"{learner}-trial-{trial.number:04d}",
            tags={"learner": learner, "bn_at_test": every["bn_at_test"], STATE_TAG: "RUNNING",
                  **({"retry_of_trial": retried[0]} if retried else {}), **_warm_start_tag(trial)},
            params=every)
        state, interrupted, tags = TrialState.FAIL, False, {}
        checkpoints: TrialCheckpoints | None = None
        self.last_step = 0
        try:
            self.tracker.log_json(run_id, {**self.settings, "learner": learner, "trial": trial.number,
                                           "hparams": every}, "config.json")
            self.tracker.log_inputs(run_id, self.datasets)
            earlier = [run for number in retried if (run := self.tracker.trial_run(self.study, number))]
            checkpoints = TrialCheckpoints(self.tracker, run_id, learner, every, self.setup.trained_on(), earlier)
            resume = self._resume(trial, run_id, checkpoints)
            with system_metrics(self.tracker.tracking_uri, run_id, self.system_metrics):
                model, result = self.setup.train(hparams, lambda point: self._validated(trial, run_id, point),
                                                 self.progress, resume, checkpoints.save)
            tags.update(self._ended(trial, result))
            if self.keep == "none":
                checkpoints.discard_checkpoints()
            else:
                size = checkpoints.keep_model(model.state_dict(), result.selected)
                trial.set_user_attr(MODEL_ATTR, {"run_id": run_id, "step": result.selected.step, "bytes": size})
            state = TrialState.COMPLETE
            return result.selected.val_accuracy
        except optuna.TrialPruned:
            state = TrialState.PRUNED
            tags.update({"stop_reason": "pruned", "stopped_at_step": self.last_step})
            checkpoints.discard_checkpoints()
            raise
        except KeyboardInterrupt:
            interrupted = True  # its checkpoints stay: the retry continues from them
            raise
        except RUN_FAULTS as e:  # storage or tracking lost: the run stops, Optuna fails the trial
            tags[FAILURE_REASON] = failure_reason(e)  # its checkpoints stay (tracking may be gone)
            raise
        except TrainingDiverged as e:
            tags[FAILURE_REASON] = self._failed(trial, f"diverged: {e}")
            checkpoints.discard_checkpoints()
            # No accuracy to report: Optuna fails a trial that returns NaN, with one log line (no traceback).
            return math.nan
        except Exception as e:
            tags[FAILURE_REASON] = self._failed(trial, failure_reason(e))
            if checkpoints is not None:
                checkpoints.discard_checkpoints()
            raise TrialFailed(tags[FAILURE_REASON]) from e
        finally:
            self.tracker.end(run_id, run_status(state, interrupted), {STATE_TAG: state.name, **tags})

    def _resume(self, trial: optuna.Trial, run_id: str, checkpoints: TrialCheckpoints) -> FitState | None:
        """The checkpoint of the trials this one retries, its validations logged to this trial's run."""
        found = checkpoints.latest()
        trial.set_user_attr(RESUMED_ATTR, None if found is None else {"run_id": found[1], "step": found[0].step})
        if found is None:
            return None
        state, source = found
        for point in state.history:
            self.tracker.log_metrics(run_id, _metrics(point), step=point.step)
        self.tracker.set_tags(run_id, {"resumed_from_run": source, "resumed_at_step": state.step})
        return state

    def _ended(self, trial: optuna.Trial, result: FitResult) -> dict[str, Any]:
        """Record where and why training stopped, and the step of the kept model; return them as tags."""
        ended = {"stop_reason": result.stop_reason, "stopped_at_step": result.stopped_at,
                 "selected_step": result.selected.step}
        trial.set_user_attr(TRAINING_ATTR, ended)
        return ended

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: with ``keep: best``, delete the model of the trial that a completed one beat: its own
        when another is strictly better, else the best of the others when it is strictly better than them.

        Strictly: trials of equal value all keep their models until the sweep before the final test
        (:func:`~hpo.execution.delete_beaten_models`), which picks the earliest of them, so no order in which
        workers finish together can delete the model the final test will pick. Under the study's trial lock."""
        if self.keep != "best" or trial.state != TrialState.COMPLETE:
            return
        with study.lock():
            others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                      if t.number != trial.number]
            if (deletion := beaten_model(trial, others)) is not None:
                delete_kept_model(self.tracker, *deletion)

    @staticmethod
    def _failed(trial: optuna.Trial, reason: str) -> str:
        trial.set_user_attr(FAILURE_REASON, reason)
        return reason

    def _validated(self, trial: optuna.Trial, run_id: str, point: ValidationPoint) -> None:
        self.last_step = point.step
        self.tracker.log_metrics(run_id, _metrics(point), step=point.step)
        trial.report(point.val_accuracy, point.step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {point.step} with val_accuracy {point.val_accuracy:.4f}")


def beaten_model(trial: FrozenTrial, others: list[FrozenTrial]) -> tuple[FrozenTrial, FrozenTrial] | None:
    """The trial whose model a newly completed ``trial`` makes worthless, and the trial better than it: ``trial``
    itself when one of the completed ``others`` is strictly better, else the best of the others when ``trial`` is
    strictly better; none on a tie. ``trial`` is the callback's own record, never looked up among the others, so a
    view of the study that does not show it yet cannot make it look beaten."""
    best_other = max(others, key=lambda t: (t.value, -t.number), default=None)
    if best_other is None or best_other.value == trial.value:
        return None
    return (trial, best_other) if best_other.value > trial.value else (best_other, trial)


def delete_kept_model(tracker: Tracker, trial: FrozenTrial, by: FrozenTrial) -> None:
    """Delete a completed trial's kept model, if it still has one, because trial ``by`` is better; its run's
    ``model_deleted`` tag says so."""
    kept = trial.user_attrs.get(MODEL_ATTR)
    if kept is not None and MODEL_FILE in tracker.artifact_sizes(kept["run_id"]):
        tracker.set_tags(kept["run_id"], {MODEL_DELETED_TAG: f"trial {by.number} is better ({by.value:.6g})"})
        tracker.delete_artifacts(kept["run_id"], MODEL_FILE)


def _warm_start_tag(trial: optuna.Trial) -> dict[str, str]:
    """``warm_start_from``: the earlier study's trial a warm-started trial was queued from."""
    source = trial.user_attrs.get(WARM_START_ATTR)
    return {"warm_start_from": f"{source['study']} trial {source['trial']} ({source['storage']})"} if source else {}


def _retried_trials(trial: optuna.Trial) -> list[int]:
    """The numbers of the trials this one retries, the latest first (Optuna's ``retry_history``)."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    return list(reversed(frozen.system_attrs.get("retry_history", [])))


OBJECTIVE_NAME = "val_accuracy"  # what a trial's value is, as Optuna's views name it

# MLflow names of a validation point's fields: the scheduled learning rate is not the `lr` param (the base rate).
METRIC_NAMES = {"val_accuracy": "val_accuracy", "train_loss": "train_loss", "lr": "lr_scheduled", "seconds": "seconds"}


def _metrics(point: ValidationPoint) -> dict[str, float]:
    return {METRIC_NAMES[k]: v for k, v in asdict(point).items() if k != "step"}
