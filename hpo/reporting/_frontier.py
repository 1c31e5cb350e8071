"""Accuracy against compute: how much of a study's compute each learner needed to reach its accuracy.

A study's compute is the CPU time of its finished trials (the ``timing`` user attr's ``cpu_s``),
summed in completion order: COMPLETE, PRUNED and FAIL trials all cost compute. A trial of an
older version, without ``cpu_s``, is counted by its wall time ``trial_s``; one without ``timing``
at all (interrupted by Ctrl-C, SIGTERM or a kill) is counted as 0. Each learner's result says how
many trials were counted so.

From that: each complete trial's validation accuracy against the compute spent so far, the running
best, its Pareto front, the compute at which the running best first reached 90%, 95% and 99% of
the learner's best (a table, Markdown and CSV) and one plot of it all with the final tests.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import optuna
from optuna.trial import TrialState

from hpo.reporting._summary import duration, percent

TIMING_ATTR = "timing"  # trial user attr: the trial's cost and where its wall time went (hpo.execution._timing)
REACH_FRACTIONS = (0.9, 0.95, 0.99)  # of the best validation accuracy, in the compute-to-reach table
FRONTIER_HEADER = ["learner", "best val acc", "total compute",
                   *(f"to {round(100 * f)}%" for f in REACH_FRACTIONS)]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class FrontierPoint:
    """One finished trial, with the study's compute up to and including it."""

    trial: int                # the trial's number
    state: str                # COMPLETE, PRUNED or FAIL
    compute_s: float          # cumulative study compute after this trial, CPU-seconds
    value: float | None       # the validation accuracy of a complete trial, else None
    best: float | None        # the running best validation accuracy, None before the first complete trial


@dataclass(frozen=True)
class LearnerFrontier:
    """A learner's study as accuracy against compute."""

    learner: str
    points: list[FrontierPoint]   # every finished trial, in completion order
    pareto: list[FrontierPoint]   # complete trials that no other beats in both less compute and higher accuracy
    total_compute_s: float        # the study's compute, CPU-seconds
    wall_counted: int             # trials without cpu_s, counted by their wall time trial_s
    untimed: int                  # trials without timing, counted as 0
    test_accuracy: float | None   # the final test, if the learner has one
    test_ci95: float | None

    @property
    def best_val_accuracy(self) -> float | None:
        return self.points[-1].best if self.points else None


def learner_frontiers(studies: Sequence[tuple[str, optuna.Study]],
                      tests: Mapping[str, tuple[float, float]] | None = None) -> list[LearnerFrontier]:
    """Each learner's frontier, in the given order.

    Args:
        studies: (learner, its Optuna study) pairs.
        tests: learner → (test accuracy, 95% CI half-width) of its final test; a learner not in it has none.
    """
    tests = tests or {}
    return [_frontier(learner, study, tests.get(learner)) for learner, study in studies]


def _frontier(learner: str, study: optuna.Study, test: tuple[float, float] | None) -> LearnerFrontier:
    finished = sorted(study.get_trials(deepcopy=False, states=FINISHED),
                      key=lambda t: (t.datetime_complete, t.number))
    points: list[FrontierPoint] = []
    compute, best, wall_counted, untimed = 0.0, None, 0, 0
    for trial in finished:
        timing = trial.user_attrs.get(TIMING_ATTR) or {}
        if timing.get("cpu_s") is not None:
            compute += timing["cpu_s"]
        elif timing.get("trial_s") is not None:
            compute += timing["trial_s"]
            wall_counted += 1
        else:
            untimed += 1
        value = trial.value if trial.state == TrialState.COMPLETE else None
        if value is not None and (best is None or value > best):
            best = value
        points.append(FrontierPoint(trial.number, trial.state.name, compute, value, best))
    return LearnerFrontier(learner, points, _pareto(points), compute, wall_counted, untimed,
                           *(test if test else (None, None)))


def _pareto(points: list[FrontierPoint]) -> list[FrontierPoint]:
    """The complete points not dominated in (less compute, higher accuracy), by compute; the earliest among equals."""
    front, best = [], None
    for point in sorted((p for p in points if p.value is not None), key=lambda p: (p.compute_s, -p.value)):
        if best is None or point.value > best:
            front.append(point)
            best = point.value
    return front


def compute_to_reach(frontier: LearnerFrontier, fraction: float) -> float | None:
    """The cumulative compute at which the running best first reached ``fraction`` × the best validation accuracy;
    None without a complete trial."""
    if frontier.best_val_accuracy is None:
        return None
    target = fraction * frontier.best_val_accuracy
    return next(p.compute_s for p in frontier.points if p.best is not None and p.best >= target)


def frontier_table(frontiers: Sequence[LearnerFrontier]) -> str:
    """The compute-to-reach table as Markdown, compute as CPU time in h/m/s, and a note on what it counts."""
    lines = ["| " + " | ".join(FRONTIER_HEADER) + " |", "|" + "---|" * len(FRONTIER_HEADER)]
    for f in frontiers:
        reach = [compute_to_reach(f, fraction) for fraction in REACH_FRACTIONS]
        cells = [f.learner, percent(f.best_val_accuracy), duration(f.total_compute_s),
                 *("-" if r is None else duration(r) for r in reach)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Compute: CPU time of the study's finished trials (complete, pruned and failed), summed in "
                  "completion order; to N%: when the running best first reached N% of the best val acc."]
    lines += [f"{f.learner}: {f.wall_counted} trial(s) without cpu_s counted by wall time, {f.untimed} without "
              f"timing counted as 0." for f in frontiers if f.wall_counted or f.untimed]
    return "\n".join(lines) + "\n"


def frontier_csv(frontiers: Sequence[LearnerFrontier]) -> str:
    """The compute-to-reach table as CSV, compute in CPU-seconds, with the final test and the counts of
    trials counted by wall time or as 0; empty cells where there is no value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["learner", "best_val_accuracy", "total_compute_s",
                     *(f"to_{round(100 * f)}_s" for f in REACH_FRACTIONS),
                     "test_accuracy", "test_ci95", "finished_trials", "wall_counted", "untimed"])
    for f in frontiers:
        writer.writerow([f.learner, f.best_val_accuracy, f.total_compute_s,
                         *(compute_to_reach(f, fraction) for fraction in REACH_FRACTIONS),
                         f.test_accuracy, f.test_ci95, len(f.points), f.wall_counted, f.untimed])
    return out.getvalue()


def write_frontier_plot(frontiers: Sequence[LearnerFrontier], path: Path) -> Path:
    """One PNG of two panels: each learner's complete trials and Pareto front against cumulative compute (left),
    its final test ± 95% CI against its study's total compute (right); learners without a complete trial left
    out, those without a final test only on the left."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot
    from matplotlib.ticker import PercentFormatter

    figure, (trials_axes, tests_axes) = pyplot.subplots(1, 2, figsize=(12, 4.8))
    colours = pyplot.get_cmap("tab10")
    for index, f in enumerate(f for f in frontiers if f.pareto):
        colour = colours(index % colours.N)
        complete = [p for p in f.points if p.value is not None]
        trials_axes.scatter([p.compute_s for p in complete], [p.value for p in complete], color=colour, label=f.learner)
        # The front as the best accuracy reached for a given compute, held until the study's end.
        trials_axes.step([p.compute_s for p in f.pareto] + [f.total_compute_s],
                         [p.value for p in f.pareto] + [f.pareto[-1].value], where="post", color=colour)
        if f.test_accuracy is not None:
            tests_axes.errorbar([f.total_compute_s], [f.test_accuracy], yerr=[f.test_ci95 or 0.0], fmt="o",
                                capsize=4, color=colour, label=f.learner)
    trials_axes.set(title="complete trials and their Pareto front", xlabel="cumulative study compute (CPU-s)",
                    ylabel="validation accuracy")
    tests_axes.set(title="final test", xlabel="study's total compute (CPU-s)", ylabel="test accuracy (± 95% CI)")
    for axes in (trials_axes, tests_axes):
        axes.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
