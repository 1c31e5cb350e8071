"""What a finished search says: one summary row per learner, as a Markdown table and as CSV."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.storage import best_complete_trial

FINAL_TEST_ATTR = "final_test"  # study user attr recording the final test of the best trial


@dataclass
class LearnerSummary:
    learner: str
    best_val_accuracy: float | None
    test_accuracy: float | None
    test_ci95: float | None
    best_trial: int | None
    best_params: dict[str, Any] = field(default_factory=dict)
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    # Sum of trial durations plus the final test, over every run of the study.
    wall_seconds: float = 0.0
    # Kept models and checkpoints of the learner's trials in MLflow's artifact store.
    disk_bytes: int = 0


def summarize(study: optuna.Study, learner: str, searched: list[str], disk_bytes: int = 0) -> LearnerSummary:
    """The study's row; ``best_params`` shows only the searched hyperparameters of the best trial."""
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
        best_trial=best.number if best else None,
        best_params={k: hparams[k] for k in searched if k in hparams},
        complete=states.count(TrialState.COMPLETE), pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL), wall_seconds=wall, disk_bytes=disk_bytes)


TABLE_HEADER = ["learner", "best val acc", "test acc ± 95% CI", "best trial", "best hyperparameters",
                "complete/pruned/failed", "wall time", "models on disk"]


def markdown_table(rows: list[LearnerSummary]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for r in rows:
        test = f"{_percent(r.test_accuracy)} ± {_percent(r.test_ci95)}" if r.test_accuracy is not None else "-"
        cells = [r.learner, _percent(r.best_val_accuracy), test, "-" if r.best_trial is None else str(r.best_trial),
                 _params(r.best_params), f"{r.complete}/{r.pruned}/{r.failed}", _duration(r.wall_seconds),
                 _size(r.disk_bytes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: list[LearnerSummary]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(asdict(rows[0])) if rows else ["learner"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**asdict(r), "best_params": json.dumps(r.best_params)})
    return out.getvalue()


def _percent(value: float | None) -> str:
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


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
