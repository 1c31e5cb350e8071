"""A whole study: each selected learner in turn, then one summary table for every learner of the study."""
from __future__ import annotations

import optuna

from hpo.config import StudyConfig
from hpo.execution._learner_study import tune_learner
from hpo.execution._search import study_name
from hpo.reporting import LearnerSummary, csv_table, format_where_to_look, markdown_table, summarize
from hpo.storage import get_storage, storage_kind
from hpo.tracking import Tracker, stored_bytes
from learners.data import DatasetSplits

SUMMARY_KEY = "study"  # tag naming the study on its summary run


def run_study(config: StudyConfig, learners: list[str], data: DatasetSplits, progress: bool = True) -> str:
    """Tune ``learners`` (a subset of the study's) in turn, then summarise every learner of the study.

    Args:
        config: the validated study (:func:`hpo.config.load_config`, paths resolved).
        learners: the learners to run now (:func:`hpo.config.selected_learners`).
        data: the dataset, loaded and checked (:func:`hpo.config.load_data`).
        progress: show progress bars.

    Returns:
        The summary table (Markdown), also logged to MLflow as ``summary.md`` and ``summary.csv`` on
        the study's summary run, and where to look at the results (:func:`format_where_to_look`).

    Raises:
        KeyboardInterrupt, RunAborted: as :func:`tune_learner`.
    """
    for learner in learners:
        tune_learner(config, learner, data, progress)
    tracker = Tracker(config.tracking_uri, config.name)
    rows = study_summaries(config, tracker)
    table = markdown_table(rows)
    with storage_kind(config.storage).trial_lock(config.name)():  # one summary run, also when commands end together
        run = tracker.reuse_or_start("summary", {SUMMARY_KEY: config.name}, name=f"{config.name}-summary", params={})
    tracker.log_text(run, table, "summary.md")
    tracker.log_text(run, csv_table(rows), "summary.csv")
    tracker.end(run, "FINISHED")
    return f"{table}\n{format_where_to_look(config, tracker.experiment_id)}"


def study_summaries(config: StudyConfig, tracker: Tracker) -> list[LearnerSummary]:
    """One row per learner of the study that has been started (even if not selected in this run)."""
    storage = get_storage(config.storage)
    rows = []
    for learner, learner_config in config.learners.items():
        try:
            study = optuna.load_study(study_name=study_name(config, learner), storage=storage)
        except KeyError:  # never started
            continue
        name = study_name(config, learner)
        rows.append(summarize(study, learner, list(learner_config.space), stored_bytes(tracker, tracker.trial_runs(name))))
    return rows
