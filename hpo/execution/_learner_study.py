"""One learner's study, start to finish: prepare it, run its trials, final test, plots.

:func:`tune_learner` fails trials of dead workers, closes their MLflow runs, queues grid points
and opens the learner's parent run; then it runs trials through a :class:`TrialRunner` (in this
process, or in ``search.workers`` worker processes), waits for the trials that workers elsewhere
(other machines) still run, and runs the final test once.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hpo.config import StudyConfig, load_data
from hpo.execution._final_test import (delete_beaten_models, final_test, final_test_is_current, publish_tested_model,
                                      record_final_test_run)
from hpo.execution._loop import deadline_after
from hpo.execution._objective import Objective
from hpo.execution._runners import WORKER_POLL_S, trial_runner
from hpo.execution._search import LearnerSearch, queue_grid_points
from hpo.execution._seeds import run_seeds, seeds_done, training_seeds
from hpo.execution._warm_start import queue_warm_start
from hpo.execution._signals import interrupts_deferred
from hpo.reporting import (PLOTS_FOLDER, LearnerSummary, TrialsBar, format_protocol, protocol_card, summarize,
                           write_plots)
from hpo.storage import CappedStudy, best_complete_trial, counted_trials, running_count
from hpo.tracking import STUDY_TAG, Tracker, close_orphan_runs, parent_params, stored_bytes
from learners.data import DatasetSplits
from learners.registry import hparams_with_defaults


def tune_learner(config: StudyConfig, learner: str, data: DatasetSplits | None = None,
                 progress: bool = True) -> LearnerSummary:
    """Run or resume the study ``<study>/<learner>``: trials up to its total, then the final test of the best.

    Args:
        config: the validated study (:func:`hpo.config.load_config`, paths resolved).
        learner: one of the study's learners.
        data: the dataset, already loaded and checked (:func:`hpo.config.load_data`); loaded if ``None``.
        progress: show progress bars.

    Returns:
        The learner's summary row.

    Raises:
        KeyboardInterrupt: Ctrl-C or SIGTERM, after both stores were left consistent (the trial it
            stopped queued again, its runs KILLED).
        RunAborted: a fault (storage, tracking, failing trials); the stores are consistent and a rerun resumes.
    """
    search = LearnerSearch.open(config, learner, data if data is not None else load_data(config))
    study, tracker = search.study, search.tracker
    study.fail_stale_trials()
    close_orphan_runs(tracker, study)
    queue_grid_points(config, learner, study)
    for line in queue_warm_start(config, learner, study):
        print(line, flush=True)
    searched = list(config.learners[learner].space)
    test, registry = config.test, config.registry
    registered_name = registry.model_name(config.name, learner) if registry.enabled else None
    if (not study.has_trials_left() and not running_count(study)
            and final_test_is_current(study, test.episodes, test.retrain, registry.enabled)
            and seeds_done(study, test, config.seed)):
        print(f"{study.study_name}: complete with {counted_trials(study)} trials, nothing to run")
        return summarize(study, learner, searched, stored_bytes(tracker, tracker.trial_runs(study.study_name)))

    with study.lock():  # one parent run, also when machines start together
        parent = tracker.reuse_or_start("parent", {STUDY_TAG: study.study_name}, name=learner,
                                        params=parent_params(config, learner),
                                        tags={"learner": learner, "n_trials_target": config.search.n_trials or "-"})
    objective = search.objective(parent, progress)
    try:
        tracker.log_json(parent, config.model_dump(mode="json"), "config.json")
        tracker.log_inputs(parent, list(search.datasets.values()))
        _search_until_done(search, objective, parent, progress)
        close_orphan_runs(tracker, study)
        with study.lock():  # one final test, also when workers on several machines finish together
            if config.checkpoints.keep == "best":
                delete_beaten_models(study, tracker)
            if not final_test_is_current(study, test.episodes, test.retrain, registry.enabled):
                result, model = final_test(study, search.setup, tracker, test, progress)
                tracker.log_metrics(parent, {"val_accuracy": result["val_accuracy"], "best_trial": result["trial"],
                                             "tested_model_step": result["model_step"],
                                             "tested_model_val_accuracy": result["model_val_accuracy"]})
                # test_accuracy and test_ci95 are logged with the model, linked to it.
                result = publish_tested_model(study, search.setup, tracker, parent, result, model, registered_name)
                card = protocol_card(search.setup, hparams_with_defaults(learner, model.hparams), result,
                                     study.study_name, training_seeds(config.seed, test.seeds))
                result = record_final_test_run(study, tracker, parent, result, model, search.datasets["test"], card)
                print(format_protocol(card), flush=True)
                tracker.set_tags(parent, {"tested_model": result["how"], "tested_trial": result["trial"],
                                          "tested_model_run": result["model_run_id"] or "-",
                                          "registered_model": _version_uri(result)})
                tracker.log_json(parent, best_complete_trial(study).user_attrs["hparams"], "best_hparams.json")
            if best_complete_trial(study) is not None:
                run_seeds(study, search.setup, tracker, parent, test, progress)
        _log_plots(tracker, parent, study)
        tracker.end(parent, "FINISHED")
    except KeyboardInterrupt:
        with interrupts_deferred():
            close_orphan_runs(tracker, study)
            # KILLED until a rerun reopens it (RUNNING) and finishes it (FINISHED).
            tracker.end(parent, "KILLED")
        raise
    except Exception:
        tracker.end(parent, "FAILED")  # never left RUNNING; a rerun reopens it
        raise
    return summarize(study, learner, searched, stored_bytes(tracker, tracker.trial_runs(study.study_name)))


def _search_until_done(search: LearnerSearch, objective: Objective, parent: str, progress: bool) -> None:
    """Run trials until the study's total is reached or ``search.timeout`` passes; then wait for the trials
    other workers still run, and run again when they leave work (a dead worker's trial queued again, a
    failed trial to replace)."""
    study = search.study
    deadline = deadline_after(search.config.search.timeout)
    bar = TrialsBar(study, progress)
    runner = trial_runner(search, objective, parent, lambda: bar.update(study))
    try:
        while True:
            reached = runner.run(deadline)
            if not reached or not _wait_for_running_trials(study, deadline, bar):
                return
            if not study.has_trials_left():
                return
    finally:
        bar.close()


def _wait_for_running_trials(study: CappedStudy, deadline: float | None, bar: TrialsBar) -> bool:
    """Until no trial of the study runs (True), or the deadline passes (False).

    Trials still running belong to workers elsewhere, or to a dead process until the stale-trial check
    fails them (after the heartbeat grace period) and queues them again.
    """
    while running_count(study):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        bar.update(study)
        time.sleep(WORKER_POLL_S)
        study.fail_stale_trials()
    return True


def _version_uri(result: dict) -> str:
    registered = result.get("registered")
    return f"models:/{registered['name']}/{registered['version']}" if registered else "-"


def _log_plots(tracker: Tracker, run_id: str, study: CappedStudy) -> None:
    with tempfile.TemporaryDirectory() as directory:
        for path in write_plots(study, Path(directory)):
            tracker.log_file(run_id, path, PLOTS_FOLDER)
