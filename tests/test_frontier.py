"""Accuracy against compute: each trial's recorded cpu_s, and the frontier, compute-to-reach table and plot built
from studies whose values and compute are set by hand."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy
import optuna
import pytest
from optuna.trial import TrialState, create_trial
from PIL import Image

from hpo.reporting import (compute_to_reach, frontier_csv, frontier_table, learner_frontiers,
                           write_frontier_plot)
from tests.helpers import LEARNER, TINY_BUDGET, run_in, study_dict, trials, write_study

pytestmark = pytest.mark.usefixtures("one_thread")
START = datetime(2026, 1, 1)


def study_of(*finished: tuple[TrialState, float | None, dict[str, Any] | None, int | None]) -> optuna.Study:
    """A study of these trials, each (state, value, timing, minute it completed at; None: still running)."""
    study = optuna.create_study(direction="maximize")
    for state, value, timing, minute in finished:
        trial = create_trial(state=state, value=value, user_attrs={"timing": timing} if timing else {})
        trial.datetime_start = START
        trial.datetime_complete = None if minute is None else START + timedelta(minutes=minute)
        study.add_trial(trial)
    return study


C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
# Trial numbers differ from the completion order; reaches 90% (72%) at trial 3, 95% (76%) at trial 4 and 99%
# (79.2%) only at its last complete trial 5. Trial 3 is from an older version (no cpu_s: counted by wall time),
# trial 6 was interrupted (no timing: counted as 0), trial 7 is still running (not counted).
PROTONET = study_of((C, 0.50, {"trial_s": 11.0, "cpu_s": 10.0}, 4),
                    (P, None, {"trial_s": 4.0, "cpu_s": 5.0}, 1),
                    (F, None, {"trial_s": 3.5, "cpu_s": 3.0}, 2),
                    (C, 0.73, {"trial_s": 20.0}, 3),
                    (C, 0.77, {"trial_s": 8.0, "cpu_s": 7.0}, 5),
                    (C, 0.80, {"trial_s": 3000.0, "cpu_s": 3630.0}, 6),
                    (F, None, None, 7),
                    (TrialState.RUNNING, None, {"cpu_s": 100.0}, None))
# Three trials of equal cumulative compute: the best of them dominates the others, and a tie keeps the earliest.
MAML = study_of((C, 0.60, {"cpu_s": 10.0}, 1), (C, 0.60, {"cpu_s": 0.0}, 2), (C, 0.70, {"cpu_s": 0.0}, 3))
REPTILE = study_of((P, None, {"cpu_s": 12.0}, 1))  # no complete trial
STUDIES = [("protonet", PROTONET), ("maml", MAML), ("reptile", REPTILE), ("finetune", study_of())]
TESTS = {"protonet": (0.78, 0.011), "reptile": (0.5, 0.01)}


def test_the_frontier_sums_every_finished_trial_in_completion_order() -> None:
    protonet = learner_frontiers(STUDIES, TESTS)[0]
    assert [(p.trial, p.state, p.compute_s, p.value, p.best) for p in protonet.points] == [
        (1, "PRUNED", 5.0, None, None), (2, "FAIL", 8.0, None, None), (3, "COMPLETE", 28.0, 0.73, 0.73),
        (0, "COMPLETE", 38.0, 0.50, 0.73), (4, "COMPLETE", 45.0, 0.77, 0.77), (5, "COMPLETE", 3675.0, 0.80, 0.80),
        (6, "FAIL", 3675.0, None, 0.80)]
    assert (protonet.total_compute_s, protonet.wall_counted, protonet.untimed) == (3675.0, 1, 1)
    assert (protonet.best_val_accuracy, protonet.test_accuracy, protonet.test_ci95) == (0.80, 0.78, 0.011)


def test_the_pareto_front_keeps_only_undominated_complete_trials() -> None:
    protonet, maml, reptile, finetune = learner_frontiers(STUDIES, TESTS)
    assert [p.trial for p in protonet.pareto] == [3, 4, 5]  # trial 0 costs more than trial 3 and is worse
    assert [p.trial for p in maml.pareto] == [2]
    assert reptile.pareto == finetune.pareto == []


def test_compute_to_reach_a_fraction_of_the_best() -> None:
    protonet, maml, reptile, finetune = learner_frontiers(STUDIES, TESTS)
    assert [compute_to_reach(protonet, f) for f in (0.9, 0.95, 0.99, 1.0)] == [28.0, 45.0, 3675.0, 3675.0]
    assert compute_to_reach(maml, 0.85) == 10.0 and compute_to_reach(maml, 0.9) == 10.0
    assert compute_to_reach(reptile, 0.9) is None and compute_to_reach(finetune, 0.9) is None
    assert (reptile.total_compute_s, reptile.test_accuracy, finetune.total_compute_s) == (12.0, 0.5, 0.0)


def test_the_frontier_table_in_markdown_and_csv() -> None:
    frontiers = learner_frontiers(STUDIES, TESTS)
    assert frontier_table(frontiers) == (
        "| learner | best val acc | total compute | to 90% | to 95% | to 99% |\n"
        "|---|---|---|---|---|---|\n"
        "| protonet | 80.00% | 1h01m15s | 0m28s | 0m45s | 1h01m15s |\n"
        "| maml | 70.00% | 0m10s | 0m10s | 0m10s | 0m10s |\n"
        "| reptile | - | 0m12s | - | - | - |\n"
        "| finetune | - | 0m00s | - | - | - |\n"
        "\n"
        "Compute: CPU time of the study's finished trials (complete, pruned and failed), summed in completion "
        "order; to N%: when the running best first reached N% of the best val acc.\n"
        "protonet: 1 trial(s) without cpu_s counted by wall time, 1 without timing counted as 0.\n")
    rows = list(csv.DictReader(io.StringIO(frontier_csv(frontiers))))
    assert rows[0] == {"learner": "protonet", "best_val_accuracy": "0.8", "total_compute_s": "3675.0",
                       "to_90_s": "28.0", "to_95_s": "45.0", "to_99_s": "3675.0", "test_accuracy": "0.78",
                       "test_ci95": "0.011", "finished_trials": "7", "wall_counted": "1", "untimed": "1"}
    assert [(r["learner"], r["best_val_accuracy"], r["to_90_s"], r["test_accuracy"]) for r in rows[1:]] == [
        ("maml", "0.7", "10.0", ""), ("reptile", "", "", "0.5"), ("finetune", "", "", "")]


def colour_pixels(image: numpy.ndarray, colour: tuple[float, float, float, float]) -> int:
    """How many pixels of an RGB(A) image are exactly this matplotlib colour."""
    rgb = numpy.round(numpy.array(colour[:3]) * 255).astype(numpy.uint8)
    return int((image[..., :3] == rgb).all(axis=-1).sum())


def test_the_frontier_plot_is_a_png_with_a_colour_per_learner_that_has_a_complete_trial(tmp_path: Path) -> None:
    from matplotlib import pyplot

    path = write_frontier_plot(learner_frontiers(STUDIES, TESTS), tmp_path / "frontier.png")
    assert path == tmp_path / "frontier.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1200, 480)
        pixels = numpy.asarray(image)
    tab10 = pyplot.get_cmap("tab10")
    # protonet and maml drawn; reptile (no complete trial) and finetune skipped, so no third colour.
    assert colour_pixels(pixels, tab10(0)) > 0 and colour_pixels(pixels, tab10(1)) > 0
    assert colour_pixels(pixels, tab10(2)) == 0


def test_a_frontier_plot_of_learners_without_complete_trials_is_still_written(tmp_path: Path) -> None:
    path = write_frontier_plot(learner_frontiers(STUDIES[2:], TESTS), tmp_path / "empty.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1200, 480)


def test_a_real_trial_records_its_cpu_seconds(tmp_path: Path) -> None:
    write_study(tmp_path, study_dict(name="cpu", budget=TINY_BUDGET))
    assert run_in(tmp_path) == 0
    done = trials(tmp_path, "cpu")
    timings = [t.user_attrs["timing"] for t in done]
    assert len(done) == 2 and all(t["cpu_s"] > 0 and t["gpu_s"] is None for t in timings)  # device: cpu
    [frontier] = learner_frontiers([(LEARNER, optuna.load_study(study_name=f"cpu/{LEARNER}",
                                                                   storage=f"sqlite:///{tmp_path}/optuna.db"))])
    assert frontier.total_compute_s == pytest.approx(sum(t["cpu_s"] for t in timings))
    assert (frontier.wall_counted, frontier.untimed) == (0, 0)
