"""Conditional search spaces: an entry's ``when`` decides, trial by trial, whether it is drawn at all."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hpo.config import describe, grid_search_points, load_config, suggest
from hpo.execution import make_sampler
from tests.helpers import learner_study, write_study

SPACE = {
    "scheduler": {"type": "categorical", "choices": ["multistep", "cosine", "plateau"]},
    "milestones": {"type": "milestones", "choices": [[0.5], [0.3, 0.7]], "when": {"scheduler": "multistep"}},
    "eta_min": {"type": "float", "low": 1.0e-6, "high": 1.0e-4, "log": True, "when": {"scheduler": "cosine"}},
    "plateau_patience": {"type": "int", "low": 1, "high": 3, "when": {"scheduler": "plateau"}},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.95, "when": {"optimizer": ["sgd", "rmsprop"]}},
    # a condition on a conditional entry: nesterov only where momentum is drawn, and only for sgd
    "nesterov": {"type": "categorical", "choices": [True, False], "when": {"optimizer": "sgd"}},
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
}
BY_SCHEDULER = {"multistep": "milestones", "cosine": "eta_min", "plateau": "plateau_patience"}


def expected_names(params: dict) -> set[str]:
    names = {"scheduler", "optimizer", "lr", BY_SCHEDULER[params["scheduler"]]}
    if params["optimizer"] in ("sgd", "rmsprop"):
        names.add("momentum")
    if params["optimizer"] == "sgd":
        names.add("nesterov")
    return names


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp"])
def test_sampled_trials_carry_exactly_the_parameters_their_conditions_allow(sampler: str, tmp_path: Path) -> None:
    config = load_config(write_study(tmp_path, learner_study(SPACE, search={"sampler": sampler, "n_trials": 30})))
    study = optuna.create_study(direction="maximize", sampler=make_sampler(config, 0, conditional=True))
    space = config.learners["protonet"].space

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        assert set(values) == expected_names(values)
        return values["lr"] * (2 if values["scheduler"] == "cosine" else 1)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=30 if sampler != "gp" else 15)
    for trial in study.trials:
        assert set(trial.params) == expected_names(trial.params)
    assert {t.params["scheduler"] for t in study.trials} == {"multistep", "cosine", "plateau"}


def test_tpe_models_the_conditional_parameters_in_groups(tmp_path: Path) -> None:
    config = load_config(write_study(tmp_path, learner_study(SPACE, search={"sampler": "tpe", "n_trials": 5})))
    assert make_sampler(config, 0, conditional=True)._group is True
    assert make_sampler(config, 0)._group is False  # spaces without conditions draw as before


def test_a_grid_with_conditions_expands_exactly(tmp_path: Path) -> None:
    space = {
        "scheduler": {"type": "categorical", "choices": ["multistep", "cosine"]},
        "milestones": {"type": "milestones", "choices": [[0.5], [0.3, 0.7]], "when": {"scheduler": "multistep"}},
        "eta_min": {"type": "categorical", "choices": [0.0, 1.0e-5, 1.0e-4], "when": {"scheduler": "cosine"}},
        "lr": {"type": "categorical", "choices": [1.0e-3, 1.0e-2]},
    }
    config = load_config(write_study(tmp_path, learner_study(space, search={"sampler": "grid", "n_trials": 10})))
    points = grid_search_points(config.learners["protonet"].space, "x")
    expected = ([{"lr": lr, "milestones": m, "scheduler": "multistep"} for lr in (1e-3, 1e-2) for m in ("[0.5]", "[0.3, 0.7]")]
                + [{"eta_min": e, "lr": lr, "scheduler": "cosine"} for lr in (1e-3, 1e-2) for e in (0.0, 1e-5, 1e-4)])
    assert sorted(json.dumps(p, sort_keys=True) for p in points) == sorted(json.dumps(p, sort_keys=True) for p in expected)
    assert len(points) == 10


def test_the_plan_says_when_an_entry_applies(tmp_path: Path) -> None:
    config = load_config(write_study(tmp_path, learner_study(SPACE)))
    assert describe(config.learners["protonet"].space["momentum"]).endswith(", when optimizer=sgd|rmsprop")
