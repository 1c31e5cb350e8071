"""Study files: every kind of bad input stops with one line naming the field, exit code 2, nothing written."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from hpo.config import load_config
from hpo.run import main
from hpo.config import grid_search_space, suggest
from hpo.redaction import redact
from hpo.storage import resolved_url as resolve_sqlite
from learners import LEARNERS

REPO = Path(__file__).resolve().parents[1]
WRITTEN = ("optuna.db", "mlflow.db", "mlruns")

BASE_STUDY: dict[str, Any] = {
    "name": "t",
    "seed": 0,
    "dataset": {"name": "synthetic", "ways": 5, "shots": 1, "queries": 5},
    "learners": {"protonet": {"fixed": {"backbone": "conv4"},
                              "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}},
    "search": {"sampler": "tpe", "n_trials": 2},
    "budget": {"iterations": 4, "val_interval": 2, "val_episodes": 4},
    "test": {"episodes": 8},
    "device": "cpu",
}


def study_dict(**sections: Any) -> dict[str, Any]:
    """``BASE_STUDY`` with whole top-level sections replaced."""
    return {**copy.deepcopy(BASE_STUDY), **sections}


def write_study(directory: Path, study: dict[str, Any], name: str = "study.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def with_learner(**learner: Any) -> dict[str, Any]:
    return study_dict(learners={"protonet": learner})


LR = {"type": "float", "low": 1e-4, "high": 1e-2}
BAD_STUDIES = {
    "unknown key": (study_dict(colour="red"), "colour: unknown key"),
    "unknown nested key": (study_dict(budget={**BASE_STUDY["budget"], "epochs": 3}), "budget.epochs: unknown key"),
    "wrong type": (study_dict(budget={**BASE_STUDY["budget"], "iterations": "many"}), "budget.iterations: "),
    "wrong type in space": (with_learner(space={"lr": {**LR, "low": "small"}}), "learners.protonet.space.lr.low: "),
    "typo in hyperparameter": (with_learner(fixed={"lrr": 0.1}, space={"lr": LR}),
                               "learners.protonet.fixed.lrr: unknown hyperparameter"),
    "fixed value of wrong type": (with_learner(fixed={"meta_batch": "two"}, space={"lr": LR}),
                                  "learners.protonet.fixed.meta_batch: "),
    "unknown learner": (study_dict(learners={"protonett": {"space": {"lr": LR}}}),
                        "learners.protonett: unknown learner"),
    "unknown sampler": (study_dict(search={"sampler": "bayes", "n_trials": 2}), "search.sampler: "),
    "empty space": (with_learner(fixed={"lr": 0.1}, space={}), "learners.protonet.space: empty"),
    "unknown space type": (with_learner(space={"lr": {**LR, "type": "floaty"}}), "learners.protonet.space.lr: "),
    "float range on an int": (with_learner(space={"meta_batch": {"type": "float", "low": 1, "high": 3}}),
                              "learners.protonet.space.meta_batch: meta_batch is int"),
    "unknown backbone": (with_learner(space={"backbone": {"type": "categorical", "choices": ["conv4", "vgg"]}}),
                         "learners.protonet.space.backbone.choices[1]: unknown backbone"),
    "learner's own check": (with_learner(fixed={"optimizer": "adamw"}, space={"lr": LR}),
                            "learners.protonet.fixed.optimizer: optimizer must be"),
    "milestone outside (0, 1)": (with_learner(space={"milestones": {"type": "milestones", "choices": [[0.5, 1.5]]}}),
                                 "learners.protonet.space.milestones: "),
    "grid of a continuous range": (study_dict(search={"sampler": "grid", "n_trials": 2}),
                                   "learners.protonet.space.lr: a grid needs"),
    "no trials nor timeout": (study_dict(search={"sampler": "tpe"}), "search: give n_trials and/or timeout"),
    "several workers": (study_dict(search={"n_trials": 2, "workers": 3}), "search.workers: "),
    "impossible ways": (study_dict(dataset={**BASE_STUDY["dataset"], "ways": 30}), "dataset: ways=30"),
    "missing data root": (study_dict(dataset={**BASE_STUDY["dataset"], "root": "nowhere/omniglot"}),
                          "dataset.root: no such directory"),
    "storage folder missing": (study_dict(storage="sqlite:///no/such/folder/optuna.db"), "storage: "),
    "unreachable storage": (study_dict(storage="postgresql+psycopg2://u:hunter2@127.0.0.1:1/db"),
                            "storage: cannot connect"),
    "unreachable tracking server": (study_dict(tracking_uri="http://127.0.0.1:1"), "tracking_uri: "),
}


def run_cli(directory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str
            ) -> tuple[int, str, str]:
    monkeypatch.chdir(directory)
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_nothing_written(directory: Path) -> None:
    assert not [name for name in WRITTEN if (directory / name).exists()], sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("case", list(BAD_STUDIES))
def test_bad_study_is_one_line_naming_the_field(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    study, expected = BAD_STUDIES[case]
    write_study(tmp_path, study)
    code, _, err = run_cli(tmp_path, monkeypatch, capsys, "study.yaml")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: study.yaml: {expected}"), err
    assert "hunter2" not in err
    assert_nothing_written(tmp_path)


def test_malformed_yaml_names_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "study.yaml").write_text("name: t\ndataset: {name: synthetic, ways: 5\n  shots: [1\n")
    code, _, err = run_cli(tmp_path, monkeypatch, capsys, "study.yaml")
    assert code == 2 and err.startswith("error: study.yaml: line 3, column 8: invalid YAML") and err.count("\n") == 1
    assert_nothing_written(tmp_path)


def test_command_line_overrides_are_validated_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    write_study(tmp_path, BASE_STUDY)
    for args, expected in ((["--n-trials", "0"], "search.n_trials: "), (["--learners", "maml2"], "--learners: "),
                           (["--workers", "2"], "search.workers: ")):
        code, _, err = run_cli(tmp_path, monkeypatch, capsys, "study.yaml", *args)
        assert code == 2 and err.startswith(f"error: study.yaml: {expected}"), err
    assert_nothing_written(tmp_path)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    write_study(tmp_path, BASE_STUDY)
    code, out, _ = run_cli(tmp_path, monkeypatch, capsys, "study.yaml", "--dry-run", "--n-trials", "7")
    assert code == 0
    assert "n_trials 7 per learner" in out and "lr: float [0.0001, 0.01] log" in out
    assert f"storage   sqlite:///{tmp_path}/optuna.db" in out
    assert_nothing_written(tmp_path)


def test_values_are_coerced_to_the_hyperparameter_types(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-3 (no dot) as a string; the learner's field type decides.
    study = with_learner(fixed={"lr": "1e-3", "milestones": [0.5]},
                         space={"weight_decay": {"type": "categorical", "choices": ["1e-4", 0]}})
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
    space = with_learner(space={
        "milestones": {"type": "milestones", "count": 3, "low": 0.2, "high": 0.9},
        "backbone": {"type": "categorical", "choices": ["conv4", "resnet12"]}})
    config = load_config(write_study(tmp_path, space))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    values = suggest(trial, config.learners["protonet"].space)
    assert len(values["milestones"]) == 3 and list(values["milestones"]) == sorted(values["milestones"])
    assert all(0.2 <= m <= 0.9 for m in values["milestones"])

    listed = with_learner(space={"milestones": {"type": "milestones", "choices": [[0.8, 0.4], [0.5]]}})
    grid = grid_search_space(load_config(write_study(tmp_path, listed)).learners["protonet"].space, "x")
    assert grid == {"milestones": ["[0.4, 0.8]", "[0.5]"]}


def test_grid_expands_stepped_ranges(tmp_path: Path) -> None:
    study = with_learner(space={"lr": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1},
                                "meta_batch": {"type": "int", "low": 1, "high": 5, "step": 2}})
    config = load_config(write_study(tmp_path, study))
    assert grid_search_space(config.learners["protonet"].space, "x") == {"lr": [0.1, 0.2, 0.3],
                                                                         "meta_batch": [1, 3, 5]}


def test_urls_are_redacted_and_resolved() -> None:
    assert redact("postgresql+psycopg2://bob:s3cret@db:5432/optuna") == "postgresql+psycopg2://bob:***@db:5432/optuna"
    assert resolve_sqlite("sqlite:///optuna.db", Path("/work")) == "sqlite:////work/optuna.db"
    assert resolve_sqlite("sqlite:////abs/optuna.db", Path("/work")) == "sqlite:////abs/optuna.db"
