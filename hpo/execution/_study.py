"""A whole study: each selected learner in turn, then one summary of every learner of the study.

The summary run (``run_role=summary``) holds the summary table (``summary.md``, ``summary.csv``), the paired
comparison of the learners (``comparison.md``, ``comparison.csv``) and the accuracy-against-compute frontier
(``frontier.md``, ``frontier.csv``, ``frontier.png``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import optuna

from hpo.config import StudyConfig
from hpo.execution._learner_study import tune_learner
from hpo.execution._search import study_name
from hpo.reporting import (LearnerSummary, compare, comparison_csv, comparison_markdown, csv_table,
                           format_where_to_look, frontier_csv, frontier_table, learner_frontiers, markdown_table,
                           summarize, episode_scores, write_frontier_plot)
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
        The summary table (Markdown), the paired comparison and the compute frontier's table, all also logged to
        the study's summary run, and where to look at the results (:func:`format_where_to_look`).

    Raises:
        KeyboardInterrupt, RunAborted: as :func:`tune_learner`.
    """
    for learner in learners:
        tune_learner(config, learner, data, progress)
    tracker = Tracker(config.tracking_uri, config.name)
    studies = started_studies(config)
    rows = study_summaries(config, tracker, studies)
    comparison = compare([t for learner, study in studies if (t := episode_scores(study, learner))], config.test.ci)
    for row in rows:
        row.rank = comparison.ranks.get(row.learner)
    frontiers = learner_frontiers(studies, {r.learner: (r.test_accuracy, r.test_ci95) for r in rows
                                            if r.test_accuracy is not None})
    table, paired, frontier = markdown_table(rows), comparison_markdown(comparison), frontier_table(frontiers)
    with storage_kind(config.storage).trial_lock(config.name)():  # one summary run, also when commands end together
        run = tracker.reuse_or_start("summary", {SUMMARY_KEY: config.name}, name=f"{config.name}-summary", params={})
    tracker.log_text(run, table, "summary.md")
    tracker.log_text(run, csv_table(rows), "summary.csv")
    tracker.log_text(run, paired, "comparison.md")
    tracker.log_text(run, comparison_csv(comparison), "comparison.csv")
    tracker.log_text(run, frontier, "frontier.md")
    tracker.log_text(run, frontier_csv(frontiers), "frontier.csv")
    with tempfile.TemporaryDirectory() as directory:
        tracker.log_file(run, write_frontier_plot(frontiers, Path(directory) / "frontier.png"))
    tracker.end(run, "FINISHED")
    return (f"{table}\nPaired comparison on the same test episodes:\n{paired}\n"
            f"Compute to reach a share of each learner's best validation accuracy:\n{frontier}\n"
            f"{format_where_to_look(config, tracker.experiment_id)}")


def started_studies(config: StudyConfig) -> list[tuple[str, optuna.Study]]:
    """(learner, Optuna study) of every learner of the study that has been started (even if not selected now)."""
    storage = get_storage(config.storage)
    studies = []
    for learner in config.learners:
        try:
            studies.append((learner, optuna.load_study(study_name=study_name(config, learner), storage=storage)))
        except KeyError:  # never started
            continue
    return studies


def study_summaries(config: StudyConfig, tracker: Tracker,
                    studies: list[tuple[str, optuna.Study]]) -> list[LearnerSummary]:
    """One row per started learner (:func:`started_studies`), without ranks."""
    return [summarize(study, learner, list(config.learners[learner].space),
                      stored_bytes(tracker, tracker.trial_runs(study.study_name))) for learner, study in studies]
