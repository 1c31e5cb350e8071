"""Warm start: the best configurations of an earlier study queued first, mapped onto the new space, once."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpo.config import load_config
from hpo.execution import WARM_START_ATTR, warm_start_points
from tests.helpers import (CONV4, LEARNER, LR, TINY_BUDGET, assert_one_error_line, learner_study, run_in, trial_runs,
                           trials, write_study)

pytestmark = pytest.mark.usefixtures("one_thread")

EARLIER_VALUES = [0.30, 0.55, 0.40, 0.55, 0.20, 0.50]  # trials 1 and 3 tie: the earlier one ranks first


def earlier_trial(number: int, value: float, **hparams) -> FrozenTrial:
    trial = create_trial(state=TrialState.COMPLETE, value=value, user_attrs={"hparams": hparams})
    trial.number = number
    return trial


def write_earlier_study(directory: Path) -> list[float]:
    """An earlier study ``before/protonet`` in the folder's default storage, its lr a trial's index."""
    study = optuna.create_study(study_name=f"before/{LEARNER}", storage=f"sqlite:///{directory}/optuna.db",
                                direction="maximize")
    lrs = [1e-3 * (i + 1) for i in range(len(EARLIER_VALUES))]
    for lr, value in zip(lrs, EARLIER_VALUES):
        study.add_trial(create_trial(params={"lr": lr}, distributions={"lr": FloatDistribution(1e-4, 1e-2)},
                                     value=value, user_attrs={"hparams": {**CONV4, "lr": lr}}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 9e-3},
                                 distributions={"lr": FloatDistribution(1e-4, 1e-2)}))
    return lrs


def test_warm_start_queues_exactly_the_top_k_of_an_earlier_study_once_even_when_rerun(tmp_path: Path) -> None:
    lrs = write_earlier_study(tmp_path)
    lr = {"type": "float", "low": 1e-4, "high": 1e-2}
    write_study(tmp_path, learner_study({"lr": lr}, CONV4, name="after", budget=TINY_BUDGET,
                                        search={"sampler": "random", "pruner": "none", "n_trials": 4,
                                                "warm_start": {"study": "before", "top_k": 3}}))
    assert run_in(tmp_path) == 0
    done = trials(tmp_path, "after")
    # best first, the earlier of equals first: trials 1 (0.55), 3 (0.55), 5 (0.50); never the pruned one
    assert [t.params["lr"] for t in done[:3]] == [lrs[1], lrs[3], lrs[5]]
    assert [t.user_attrs[WARM_START_ATTR]["trial"] for t in done[:3]] == [1, 3, 5]
    assert WARM_START_ATTR not in done[3].user_attrs
    runs = trial_runs(tmp_path, "after")
    assert [runs[n].data.tags.get("warm_start_from", "-").split(" (")[0] for n in range(4)] == [
        "before/protonet trial 1", "before/protonet trial 3", "before/protonet trial 5", "-"]

    assert run_in(tmp_path, "--n-trials", "6") == 0  # a rerun tops the study up and queues nothing again
    again = trials(tmp_path, "after")
    assert len(again) == 6 and sum(WARM_START_ATTR in t.user_attrs for t in again) == 3


def test_values_outside_the_new_space_are_clipped_or_dropped(tmp_path: Path) -> None:
    space = learner_study({
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "train_ways": {"type": "int", "low": 5, "high": 20, "step": 5},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
        "milestones": {"type": "milestones", "count": 2, "low": 0.3, "high": 0.9},
    })
    config = load_config(write_study(tmp_path, space))
    earlier = [
        earlier_trial(0, 0.9, lr=0.05, train_ways=60, optimizer="adam", momentum=0.99, milestones=[0.2, 0.8]),
        earlier_trial(1, 0.8, lr=3e-3, train_ways=12, optimizer="rmsprop", milestones=[0.5]),
        earlier_trial(2, 0.7, lr=3e-3, train_ways=10, optimizer="sgd", momentum=0.99, milestones=[0.4, 0.6]),
    ]
    first, second, third = warm_start_points(earlier, config.learners[LEARNER].space, top_k=3)
    # momentum applies to sgd only: not queued for adam (the source value is of no use there)
    assert first.params == {"lr": 0.01, "milestones.0": 0.3, "milestones.1": 0.8, "optimizer": "adam",
                            "train_ways": 20}
    assert first.changes == ["lr 0.05 clipped to 0.01", "milestones [0.2, 0.8] clipped to [0.3, 0.8]",
                             "train_ways 60 clipped to 20"]
    assert second.params == {"lr": 3e-3, "train_ways": 10}  # rmsprop is no choice here: the sampler draws it
    assert second.changes == ["milestones [0.5] dropped (2 milestones here)", 'optimizer "rmsprop" dropped (not a choice)',
                              "train_ways 12 clipped to 10"]
    assert third.params["momentum"] == 0.9 and third.params["optimizer"] == "sgd"
    assert [p.source_trial for p in (first, second, third)] == [0, 1, 2]


def test_top_k_counts_distinct_configurations(tmp_path: Path) -> None:
    config = load_config(write_study(tmp_path, learner_study({"lr": {"type": "float", "low": 1e-4, "high": 1e-2}})))
    earlier = [earlier_trial(0, 0.9, lr=1e-3), earlier_trial(1, 0.9, lr=1e-3), earlier_trial(2, 0.8, lr=2e-3),
               earlier_trial(3, 0.1, lr=4e-3)]
    points = warm_start_points(earlier, config.learners[LEARNER].space, top_k=2)
    assert [(p.source_trial, p.params) for p in points] == [(0, {"lr": 1e-3}), (2, {"lr": 2e-3})]


def test_a_warm_start_from_a_study_the_storage_lacks_is_one_line(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    write_earlier_study(tmp_path)
    write_study(tmp_path, learner_study({"lr": LR}, name="after", search={"n_trials": 2,
                                                                          "warm_start": {"study": "befor"}}))
    assert run_in(tmp_path) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert err.strip() == (f"error: study.yaml: search.warm_start.study: no study befor/protonet in "
                           f"sqlite:///{tmp_path}/optuna.db (it holds: before/protonet)")
    assert not (tmp_path / "mlflow.db").exists() and trials(tmp_path, "before") and len(
        optuna.get_all_study_names(f"sqlite:///{tmp_path}/optuna.db")) == 1
