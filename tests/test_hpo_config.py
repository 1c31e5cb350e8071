"""Study files: the dry-run plan, value types, the shipped studies, search spaces and grids, URLs.

Bad study files and command lines are in ``test_bad_input.py``.
"""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hpo.config import grid_search_space, load_config, suggest
from hpo.redaction import redact
from hpo.storage import resolved_url
from learners import LEARNERS
from tests.helpers import BASE_STUDY, REPO, assert_nothing_written, learner_study, main_in, write_study


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_study(tmp_path, BASE_STUDY)
    code = main_in(tmp_path, "study.yaml", "--dry-run", "--n-trials", "7")
    out = capsys.readouterr().out
    assert code == 0
    assert "n_trials 7 per learner" in out and "lr: float [0.0001, 0.01] log" in out
    assert f"storage   sqlite:///{tmp_path}/optuna.db" in out
    assert_nothing_written(tmp_path)


def test_values_are_coerced_to_the_hyperparameter_types(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-3 (no dot) as a string; the learner's field type decides.
    study = learner_study({"weight_decay": {"type": "categorical", "choices": ["1e-4", 0]}},
                          fixed={"lr": "1e-3", "milestones": [0.5]})
    config = load_config(write_study(tmp_path, study))
    assert config.learners["protonet"].fixed == {"lr": 0.001, "milestones": (0.5,)}
    assert config.learners["protonet"].space["weight_decay"].choices == [0.0001, 0.0]


def test_shipped_studies_are_valid() -> None:
    studies = {path.name: load_config(path) for path in sorted((REPO / "studies").glob("*.yaml"))}
    assert {"quickstart.yaml", "grid_example.yaml", "protonet.yaml", "maml.yaml"} <= set(studies)
    assert set(studies["quickstart.yaml"].learners) == set(LEARNERS)
    # The quickstart trades the confidence interval for speed; real studies test on >= 600 episodes.
    assert all(config.test.episodes >= 600 for name, config in studies.items() if name != "quickstart.yaml")


def test_milestones_and_list_choices_become_sorted_tuples_and_lists(tmp_path: Path) -> None:
    space = learner_study({
        "milestones": {"type": "milestones", "count": 3, "low": 0.2, "high": 0.9},
        "backbone": {"type": "categorical", "choices": ["conv4", "resnet12"]}})
    config = load_config(write_study(tmp_path, space))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    values = suggest(trial, config.learners["protonet"].space)
    assert len(values["milestones"]) == 3 and list(values["milestones"]) == sorted(values["milestones"])
    assert all(0.2 <= m <= 0.9 for m in values["milestones"])

    listed = learner_study({"milestones": {"type": "milestones", "choices": [[0.8, 0.4], [0.5]]}})
    grid = grid_search_space(load_config(write_study(tmp_path, listed)).learners["protonet"].space, "x")
    assert grid == {"milestones": ["[0.4, 0.8]", "[0.5]"]}


def test_grid_expands_stepped_ranges(tmp_path: Path) -> None:
    study = learner_study({"lr": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1},
                           "meta_batch": {"type": "int", "low": 1, "high": 5, "step": 2}})
    config = load_config(write_study(tmp_path, study))
    assert grid_search_space(config.learners["protonet"].space, "x") == {"lr": [0.1, 0.2, 0.3],
                                                                         "meta_batch": [1, 3, 5]}


def test_urls_are_redacted_and_resolved() -> None:
    assert redact("postgresql+psycopg2://bob:s3cret@db:5432/optuna") == "postgresql+psycopg2://bob:***@db:5432/optuna"
    assert resolved_url("sqlite:///optuna.db", Path("/work")) == "sqlite:////work/optuna.db"
    assert resolved_url("sqlite:////abs/optuna.db", Path("/work")) == "sqlite:////abs/optuna.db"
