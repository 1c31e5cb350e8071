"""What a finished search says: one summary row per learner, as a Markdown table and as CSV.

Each row's test interval names its method (``test.ci``); ``seeds`` is the mean ± standard deviation of the test
accuracies of the chosen configuration trained with ``test.seeds`` seeds (the spread between training runs, which the
interval over episodes does not see); ``rank`` comes from the paired comparison (:mod:`hpo.reporting._comparison`).
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.reporting._comparison import EpisodeScores
from hpo.storage import best_complete_trial
from learners.registry import hparams_with_defaults

FINAL_TEST_ATTR = "final_test"  # study user attr recording the final test of the best trial
TEST_EPISODES_ATTR = "test_episodes"  # study user attr: that test's per-episode accuracies and their digest
SEED_RUNS_ATTR = "seed_runs"  # study user attr: the chosen configuration trained with further seeds, by seed


@dataclass
class LearnerSummary:
    learner: str
    best_val_accuracy: float | None
    test_accuracy: float | None
    test_ci95: float | None
    ci_method: str | None
    best_trial: int | None
    best_params: dict[str, Any] = field(default_factory=dict)
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    # Sum of trial durations plus the final test, over every run of the study.
    wall_seconds: float = 0.0
    # Kept models and checkpoints of the learner's trials in MLflow's artifact store.
    disk_bytes: int = 0
    # Test accuracies of the tested configuration over its training seeds (the tested model's first).
    seed_accuracies: list[float] = field(default_factory=list)
    rank: int | None = None  # set from the paired comparison of the study's learners

    @property
    def seed_sd(self) -> float | None:
        """The sample standard deviation of the test accuracy across training seeds (two seeds at least)."""
        return statistics.stdev(self.seed_accuracies) if len(self.seed_accuracies) > 1 else None


def summarize(study: optuna.Study, learner: str, searched: list[str], disk_bytes: int = 0) -> LearnerSummary:
    """The study's row (no rank yet); ``best_params`` shows only the searched hyperparameters of the best trial."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    best = best_complete_trial(study)
    test = study.user_attrs.get(FINAL_TEST_ATTR, {})
    wall = sum((t.datetime_complete - t.datetime_start).total_seconds()
               for t in trials if t.datetime_start and t.datetime_complete) + test.get("seconds", 0.0)
    hparams = best.user_attrs.get("hparams", {}) if best else {}
    # A test of an earlier best trial (the study grew since) is not this row's result.
    tested = best is not None and test.get("trial") == best.number
    return LearnerSummary(
        learner=learner, best_val_accuracy=best.value if best else None,
        test_accuracy=test["test_accuracy"] if tested else None, test_ci95=test["test_ci95"] if tested else None,
        # Records of versions before test.ci used the normal approximation.
        ci_method=test.get("ci_method", "normal") if tested else None, best_trial=best.number if best else None,
        best_params={k: hparams[k] for k in searched if k in hparams},
        complete=states.count(TrialState.COMPLETE), pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL), wall_seconds=wall, disk_bytes=disk_bytes,
        seed_accuracies=[test["test_accuracy"], *(r["test_accuracy"] for r in seed_results(study))] if tested else [])


def seed_results(study: optuna.Study) -> list[dict[str, Any]]:
    """The results of the further training seeds (``test.seeds``) of the tested configuration on the tested
    episodes, by seed; results of an earlier best trial or other episodes do not count."""
    test = study.user_attrs.get(FINAL_TEST_ATTR)
    if test is None:
        return []
    done = study.user_attrs.get(SEED_RUNS_ATTR, {}).values()
    current = (r for r in done if r["trial"] == test["trial"] and r["episode_digest"] == test.get("episode_digest"))
    return sorted(current, key=lambda r: r["training_seed"])


def episode_scores(study: optuna.Study, learner: str) -> EpisodeScores | None:
    """The learner's final test, for the paired comparison; ``None`` before its best trial is tested."""
    best = best_complete_trial(study)
    test = study.user_attrs.get(FINAL_TEST_ATTR)
    if best is None or test is None or test["trial"] != best.number:
        return None
    episodes = study.user_attrs.get(TEST_EPISODES_ATTR)
    current = episodes is not None and episodes["episode_digest"] == test.get("episode_digest")
    return EpisodeScores(learner, episodes["accuracies"] if current else None, test.get("episode_digest"),
                         hparams_with_defaults(learner, best.user_attrs["hparams"])["bn_at_test"])


TABLE_HEADER = ["learner", "rank", "best val acc", "test acc ± 95% CI", "seeds: mean ± sd", "best trial",
                "best hyperparameters", "complete/pruned/failed", "wall time", "models on disk"]


def markdown_table(rows: list[LearnerSummary]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for r in rows:
        test = (f"{percent(r.test_accuracy)} ± {percent(r.test_ci95)} ({r.ci_method})"
                if r.test_accuracy is not None else "-")
        seeds = (f"{percent(statistics.mean(r.seed_accuracies))} ± {percent(r.seed_sd)} ({len(r.seed_accuracies)})"
                 if r.seed_sd is not None else "-")
        cells = [r.learner, "-" if r.rank is None else str(r.rank), percent(r.best_val_accuracy), test, seeds,
                 "-" if r.best_trial is None else str(r.best_trial),
                 _params(r.best_params), f"{r.complete}/{r.pruned}/{r.failed}", duration(r.wall_seconds),
                 _size(r.disk_bytes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: list[LearnerSummary]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(asdict(rows[0])) if rows else ["learner"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**asdict(r), "best_params": json.dumps(r.best_params),
                         "seed_accuracies": json.dumps(r.seed_accuracies)})
    return out.getvalue()


def percent(value: float | None) -> str:
    """``84.54%``, or ``-`` for no value."""
    return "-" if value is None or value != value else f"{100 * value:.2f}%"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in params.items()) or "-"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)


def _size(size: int) -> str:
    return f"{size / 2**20:.2f} MiB"


def duration(seconds: float) -> str:
    """``3m05s`` or ``1h02m05s``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
