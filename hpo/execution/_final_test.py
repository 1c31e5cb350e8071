"""The final test: score the best trial's model once on the fixed test episodes.

By default the model tested is the one the best trial kept (its ``model.pt`` artifact): no
re-training, and the very weights whose validation accuracy won the search. ``test.retrain: true``
re-trains the best trial's hyperparameters with the study's seed instead (the seed every trial
trained with), which reproduces that model on the CPU and costs one more trial. The result, which
says which model was tested and how it was obtained, is stored in the Optuna study, so a resumed,
finished study does not test again.

The test's per-episode accuracies are kept too (the study user attr ``test_episodes``, and ``test_episodes.csv`` on
the final-test run) with a digest of the episodes' images, so that the summary can compare learners episode by
episode (:mod:`hpo.reporting._comparison`), and a protocol card says how the test was run
(:mod:`hpo.reporting._protocol`).

The tested model is then published (:func:`publish_tested_model`): logged as an MLflow model of the learner's
parent run, the test metrics linked to it, and registered as a new version of ``registry.name``. Each step is
recorded in the same study attribute, so a run stopped between them finishes them, once, when it resumes.
"""
from __future__ import annotations

import csv
import io
import time
from typing import Any

import optuna
from mlflow.entities import DatasetInput
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hpo.errors import RunAborted
from hpo.execution._objective import MODEL_ATTR, MODEL_DELETED_TAG, delete_kept_model
from hpo.config import TestConfig
from hpo.reporting import FINAL_TEST_ATTR, PROTOCOL_FILE, TEST_EPISODES_ATTR
from hpo.storage import best_complete_trial
from hpo.tracking import (FINAL_TEST_TAG, STUDY_TAG, Tracker, final_test_key, load_kept_model, log_tested_model,
                          register_tested_model)
from learners.base import evaluation_seed
from learners.checkpoint import CheckpointError, SavedModel
from learners.data import episode_digest
from learners.experiment import TrainingSetup
from learners.inference import example_episode
from learners.registry import hparams_with_defaults
from learners.statistics import describe_method, mean_interval

KEPT, RETRAINED = "kept model", "retrained"  # how the tested model was obtained
FINAL_TEST_ROLE = "final_test"  # run_role of the final-test runs
TEST_EPISODES_FILE = "test_episodes.csv"


def final_test_is_current(study: optuna.Study, episodes: int, retrain: bool, register: bool) -> bool:
    """True when the best trial has been tested on ``episodes`` episodes the way asked and its model published
    (or there is nothing to test)."""
    best = best_complete_trial(study)
    if best is None:
        return True
    done = study.user_attrs.get(FINAL_TEST_ATTR)
    # episode_digest: a record of an older version, without per-episode accuracies, is tested again.
    return (done is not None and done["trial"] == best.number and done["episodes"] == episodes
            and "episode_digest" in done
            and done.get("how") == (RETRAINED if retrain else KEPT) and done.get("model_id") is not None
            and (not register or done.get("registered") is not None) and done.get("run_id") is not None)


def final_test(study: optuna.Study, setup: TrainingSetup, tracker: Tracker, test: TestConfig,
               progress: bool = True) -> tuple[dict[str, Any], SavedModel]:
    """Test the best trial's kept model (``test.retrain``: its re-trained hyperparameters) on ``test.episodes``
    fixed test episodes; the result (also a study user attr) has the test accuracy and interval (``test.ci``), the
    episodes' digest, the best trial, its validation accuracy, and the tested model's run, step and validation
    accuracy; and the model tested. The per-episode accuracies are the study user attr ``test_episodes``.

    Raises:
        RunAborted: the best trial has no readable kept model.
    """
    best = best_complete_trial(study)
    start = time.perf_counter()
    if test.retrain:
        learner, fitted = setup.train(best.user_attrs["hparams"], progress=progress)
        saved = SavedModel(setup.learner, hparams_with_defaults(setup.learner, best.user_attrs["hparams"]),
                           fitted.selected.step, fitted.selected.val_accuracy, learner.state_dict(),
                           setup.trained_on())
        model = {"how": RETRAINED, "run_id": None, "step": saved.step, "val_accuracy": saved.val_accuracy}
    else:
        kept = best.user_attrs.get(MODEL_ATTR)
        if kept is None:
            raise RunAborted(f"{study.study_name}: the best trial {best.number} kept no model "
                             f"(it ran with checkpoints.keep: none or before models were kept); "
                             f"set test.retrain: true to re-train it")
        try:
            saved = load_kept_model(tracker, kept["run_id"])
            learner = setup.load(saved)
        except CheckpointError as e:
            deleted = tracker.client.get_run(kept["run_id"]).data.tags.get(MODEL_DELETED_TAG)
            raise RunAborted(f"{study.study_name}: the model of the best trial {best.number}: {e}"
                             f"{f' (deleted: {deleted})' if deleted else ''}; "
                             f"set test.retrain: true to re-train it") from None
        model = {"how": KEPT, "run_id": kept["run_id"], "step": saved.step, "val_accuracy": saved.val_accuracy}
    accuracies = setup.test(learner, test.episodes, progress)
    interval = mean_interval(accuracies, test.ci)
    digest = test_episodes_digest(setup, test.episodes)
    # Before the record: a record always has its episodes (a stop in between tests again).
    study.set_user_attr(TEST_EPISODES_ATTR, {"trial": best.number, "episode_digest": digest,
                                             "accuracies": accuracies.tolist()})
    result = {"trial": best.number, "episodes": test.episodes, "test_accuracy": interval.mean,
              "test_ci95": interval.half_width, "ci_method": test.ci, "episode_digest": digest,
              "val_accuracy": best.value, **{f"model_{k}": v for k, v in model.items() if k != "how"},
              "how": model["how"], "seconds": time.perf_counter() - start}
    study.set_user_attr(FINAL_TEST_ATTR, result)
    return result, saved


def test_episodes_digest(setup: TrainingSetup, episodes: int) -> str:
    """The digest of the setup's ``episodes`` fixed test episodes (:func:`learners.data.episode_digest`)."""
    return episode_digest(setup.data.test, setup.spec, episodes, evaluation_seed(setup.seed, "test"))


def episodes_csv(accuracies: list[float]) -> str:
    """``episode,accuracy`` rows, one per test episode in the fixed order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["episode", "accuracy"])
    writer.writerows(enumerate(accuracies))
    return out.getvalue()


def publish_tested_model(study: optuna.Study, setup: TrainingSetup, tracker: Tracker, parent_run: str,
                         result: dict[str, Any], model: SavedModel, registered_name: str | None) -> dict[str, Any]:
    """Log the tested model with the parent run (test metrics linked) and register it as ``registered_name``
    (``None``: not registered); the final-test record, with the model id and the registered version added.

    Raises:
        TrackingError: MLflow cannot be reached or written.
    """
    example = example_episode(setup.data.test, setup.spec)
    result = {**result, "model_id": log_tested_model(tracker, parent_run, model, result, example)}
    study.set_user_attr(FINAL_TEST_ATTR, result)
    if registered_name is not None:
        spec = setup.spec
        protocol = (f"{spec.ways}-way {spec.shots}-shot {spec.queries}-query, {result['episodes']} fixed test "
                    f"episodes of seed {setup.seed}, mean ± {describe_method(result['ci_method'])}, "
                    f"batch norm {hparams_with_defaults(setup.learner, model.hparams)['bn_at_test']}")
        version = register_tested_model(tracker, registered_name, result["model_id"], parent_run, {
            "study": study.study_name, "trial": result["trial"],
            "test_accuracy": f"{100 * result['test_accuracy']:.2f}% ± {100 * result['test_ci95']:.2f}%",
            "protocol": protocol, "tested_model": result["how"], "parent_run": parent_run})
        result = {**result, "registered": {"name": registered_name, "version": version}}
        study.set_user_attr(FINAL_TEST_ATTR, result)
    return result


def record_final_test_run(study: optuna.Study, tracker: Tracker, parent_run: str, result: dict[str, Any],
                          model: SavedModel, test_data: DatasetInput, protocol: dict[str, Any]) -> dict[str, Any]:
    """A run nested under the parent whose params are exactly the tested configuration (every hyperparameter)
    and whose metrics are the test results, so that selecting the final-test runs of several learners and
    pressing Compare shows their tuned values side by side; its artifacts are the per-episode accuracies and the
    protocol card, also logged with the parent run. Params are immutable: a new final test (a new best trial)
    makes a new run, and the study's earlier ones are tagged ``superseded``. The record, with the run id and the
    protocol card.
    """
    key = final_test_key(result)
    registered = result.get("registered")
    run = tracker.reuse_or_start(FINAL_TEST_ROLE, {STUDY_TAG: study.study_name, FINAL_TEST_TAG: key},
                                 name=f"{model.learner}-final-test", params=model.hparams, tags={
                                     MLFLOW_PARENT_RUN_ID: parent_run, "learner": model.learner,
                                     "tested_trial": result["trial"], "tested_model": result["how"],
                                     "registered_model": (f"models:/{registered['name']}/{registered['version']}"
                                                          if registered else "-")})
    tracker.log_inputs(run, [test_data])
    tracker.log_text(run, episodes_csv(study.user_attrs[TEST_EPISODES_ATTR]["accuracies"]), TEST_EPISODES_FILE)
    for logged_with in (run, parent_run):
        tracker.log_json(logged_with, protocol, PROTOCOL_FILE)
    tracker.log_metrics(run, {"test_accuracy": result["test_accuracy"], "test_ci95": result["test_ci95"],
                              "val_accuracy": result["val_accuracy"], "tested_model_step": result["model_step"]},
                        model_id=result["model_id"])
    tracker.end(run, "FINISHED")
    for earlier in tracker.role_runs(FINAL_TEST_ROLE, study.study_name):
        if earlier.info.run_id != run and "superseded_by" not in earlier.data.tags:
            tracker.set_tags(earlier.info.run_id, {"superseded": "true", "superseded_by": run})
    result = {**result, "run_id": run, "protocol": protocol}
    study.set_user_attr(FINAL_TEST_ATTR, result)
    return result


def delete_beaten_models(study: optuna.Study, tracker: Tracker) -> None:
    """Delete every kept model but the best trial's (``keep: best``): those of trials equal to the best, and what
    a worker killed between a trial's end and its clean-up left behind."""
    best = best_complete_trial(study)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if best is not None and trial.number != best.number:
            delete_kept_model(tracker, trial, best)
