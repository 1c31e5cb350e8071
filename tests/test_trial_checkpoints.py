"""Trials keep their models: a killed trial's retry continues from its last checkpoint and ends bit-identical to
an uninterrupted trial, pruned trials keep nothing, and the final test scores the kept model (real processes,
real kills, SQLite and PostgreSQL).

Every trial of these studies has the same hyperparameters (a space of one choice), so each study holds its own
reference: the trials that were not interrupted.
"""
from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from hpo.config import load_config
from hpo.execution._final_test import final_test
from hpo.execution._objective import beaten_model
from hpo.execution._search import study_name, training_setup
from hpo.tracking import Tracker
from learners.checkpoint import load_checkpoint, load_model, save_checkpoint
from learners.data import load_dataset
from learners.registry import hparams_with_defaults
from tests.helpers import (CONV4, LEARNER, counted, finish, learner_study, load_trials, run_in, start_hpo,
                           tracking, trial_runs, trials, wait_for, write_study)

pytestmark = pytest.mark.usefixtures("one_thread")

ONE_LR = {"lr": {"type": "categorical", "choices": [0.003]}}
# Long enough (about 10 s a trial on one core) for a kill to land between the second validation and the end.
BUDGET = {"iterations": 150, "val_interval": 10, "val_episodes": 4}
SHORT_BUDGET = {"iterations": 60, "val_interval": 10, "val_episodes": 4}
FAST_HEARTBEAT = {"heartbeat_interval": 1, "grace_period": 2}


def study(name: str, n_trials: int = 2, keep: str = "all", budget: dict[str, int] = BUDGET,
          **search: Any) -> dict[str, Any]:
    return learner_study(ONE_LR, CONV4, name=name, budget=budget, checkpoints={"keep": keep},
                         search={"sampler": "random", "pruner": "none", "n_trials": n_trials, **FAST_HEARTBEAT,
                                 **search})


def checkpoints_in(directory: Path) -> list[Path]:
    return sorted(directory.glob("mlruns/**/checkpoints/*.pt"))


def past_second_validation(directory: Path) -> list[Path]:
    """The checkpoints of step 20 or later (each replaces the one before it)."""
    return [p for p in checkpoints_in(directory) if int(p.stem.split("-")[1]) >= 20]


def killed_after_second_validation(directory: Path) -> None:
    """Start the study ``resume`` in ``directory`` and ``kill -9`` it once a checkpoint of step 20 or later is stored."""
    write_study(directory, study("resume"))
    process = start_hpo(directory)
    wait_for(lambda: past_second_validation(directory), process, message="no checkpoint after the second validation")
    process.send_signal(signal.SIGKILL)
    finish(process)


def run_of(path: Path) -> str:
    """The MLflow run id of an artifact file (``mlruns/<experiment>/<run>/artifacts/...``)."""
    return path.parts[path.parts.index("artifacts") - 1]


def kept_weights(where: Path | str, run_id: str, tmp_path: Path) -> dict[str, torch.Tensor]:
    path = tracking(where).download_artifacts(run_id, "model.pt", str(tmp_path))
    return load_model(path).weights


def assert_retry_matches_an_uninterrupted_trial(where: Path | str, done: list[FrozenTrial], tmp_path: Path,
                                                budget: dict[str, int] = BUDGET) -> None:
    """The retried trial started at its checkpoint and ended as the trials never stopped; MLflow shows it one
    continuous curve, and the killed run is KILLED."""
    killed = [t for t in done if t.state == TrialState.FAIL]
    assert len(killed) == 1
    [retry] = [t for t in done if t.system_attrs.get("failed_trial") == killed[0].number]
    whole = [t for t in done if t.state == TrialState.COMPLETE and t.number != retry.number]
    assert retry.state == TrialState.COMPLETE and whole
    resumed_at = retry.user_attrs["resumed_from"]["step"]
    assert 20 <= resumed_at < budget["iterations"]
    assert min(retry.intermediate_values) == resumed_at + budget["val_interval"]  # no step trained twice
    reference = whole[0]
    assert retry.value == reference.value
    assert retry.intermediate_values == {s: v for s, v in reference.intermediate_values.items() if s > resumed_at}
    runs = trial_runs(where, "resume")
    assert runs[killed[0].number].info.status == "KILLED"
    retry_run = runs[retry.number]
    assert retry_run.data.tags["resumed_at_step"] == str(resumed_at)
    assert retry_run.data.tags["resumed_from_run"] == runs[killed[0].number].info.run_id
    client = tracking(where)
    curves = [[(m.step, m.value) for m in client.get_metric_history(runs[t.number].info.run_id, "val_accuracy")]
              for t in (retry, reference)]
    assert [step for step, _ in curves[0]] == list(range(10, budget["iterations"] + 1, 10))  # every step once
    assert curves[0] == curves[1]
    retried, uninterrupted = (kept_weights(where, runs[t.number].info.run_id, tmp_path / str(t.number))
                              for t in (retry, reference))
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, retried[name]), name


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_stopped_trial_continues_from_its_checkpoint_bit_identically(tmp_path: Path, signum: int) -> None:
    write_study(tmp_path, study("resume"))
    process = start_hpo(tmp_path)
    wait_for(lambda: past_second_validation(tmp_path), process, message="no checkpoint after the second validation")
    process.send_signal(signum)
    code, _ = finish(process)
    assert code == (-signal.SIGKILL if signum == signal.SIGKILL else 143)
    assert run_in(tmp_path) == 0
    done = trials(tmp_path, "resume")
    assert counted(done) == 2
    assert_retry_matches_an_uninterrupted_trial(tmp_path, done, tmp_path)
    assert checkpoints_in(tmp_path) == []  # the finished trials keep their models only


@pytest.mark.postgres
def test_a_killed_postgres_worker_trial_continues_from_its_checkpoint(tmp_path: Path, postgres_url: str) -> None:
    budget = {**BUDGET, "iterations": 400}
    write_study(tmp_path, study("resume", n_trials=3, workers=2, budget=budget))
    process = start_hpo(tmp_path, "--storage", postgres_url)

    def stopped_mid_trial() -> int | None:
        """The pid of a worker stopped (SIGSTOP) while its trial runs past its second validation. Stopping before
        checking makes the kill land mid-trial however slow this machine is: a CI run once found a checkpoint
        whose trial had ended by the time the kill came."""
        for path in past_second_validation(tmp_path):
            run_id = run_of(path)
            number = int(tracking(tmp_path).get_run(run_id).data.tags["optuna_trial_number"])
            [trial] = [t for t in load_trials("resume", postgres_url) if t.number == number]
            if trial.state != TrialState.RUNNING:
                continue
            pid = trial.user_attrs["worker"]["pid"]
            os.kill(pid, signal.SIGSTOP)
            [trial] = [t for t in load_trials("resume", postgres_url) if t.number == number]
            kept = [p for p in past_second_validation(tmp_path) if run_of(p) == run_id
                    and int(p.stem.split("-")[1]) < budget["iterations"]]
            if trial.state == TrialState.RUNNING and kept:
                return pid
            os.kill(pid, signal.SIGCONT)
        return None

    victim = wait_for(stopped_mid_trial, process, message="no worker past its second validation")
    os.kill(victim, signal.SIGKILL)
    code, err = finish(process, timeout=300)
    assert code == 0, err
    done = load_trials("resume", postgres_url)
    assert counted(done) == 3
    assert_retry_matches_an_uninterrupted_trial(tmp_path, done, tmp_path, budget)


def test_pruned_trials_keep_nothing_and_only_the_best_model_stays(tmp_path: Path) -> None:
    lr = {"lr": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True}}
    write_study(tmp_path, learner_study(lr, CONV4, name="prune", budget=SHORT_BUDGET,
                                        search={"sampler": "random", "n_trials": 6,
                                                "pruner": {"type": "median", "n_startup_trials": 1}}))
    assert run_in(tmp_path) == 0
    done = trials(tmp_path, "prune")
    states = {t.number: t.state for t in done}
    assert TrialState.PRUNED in states.values()
    runs = trial_runs(tmp_path, "prune")
    client = tracking(tmp_path)
    files = {number: {a.path for a in client.list_artifacts(runs[number].info.run_id)} for number in states}
    best = max((t for t in done if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.number))
    assert {n for n, names in files.items() if "model.pt" in names} == {best.number}
    assert checkpoints_in(tmp_path) == []
    # Disk: one model of weights only (conv4 protonet: 113k float32 weights and batch-norm statistics, 0.44 MiB;
    # its training checkpoint with Adam's two moments is three times that).
    [size] = [p.stat().st_size for p in tmp_path.glob(f"mlruns/**/{runs[best.number].info.run_id}/artifacts/model.pt")]
    assert size < 500_000
    # Besides it, only the registered model's copy of it (an MLflow model holds its own files).
    [registered] = tmp_path.glob("mlruns/*/models/*/artifacts/artifacts/model.pt")
    assert registered.read_bytes() == next(tmp_path.glob(f"mlruns/**/{runs[best.number].info.run_id}/artifacts/model.pt")
                                           ).read_bytes()
    assert sum(p.stat().st_size for p in tmp_path.glob("mlruns/**/*.pt")) == 2 * size


def test_no_order_of_workers_finishing_together_deletes_the_model_the_final_test_picks() -> None:
    # Each trial's callback sees the trials completed before it, less any its view of the study does not show
    # yet (every combination), and never needs to see its own. The final test picks the earliest of the best.
    values = [0.2, 0.3, 0.3, 0.1, 0.3]
    completed = []
    for number, value in enumerate(values):
        trial = optuna.trial.create_trial(state=TrialState.COMPLETE, value=value)
        trial.number = number
        completed.append(trial)
    picked = max(completed, key=lambda t: (t.value, -t.number)).number
    for order in itertools.permutations(completed):
        for hidden in itertools.product([False, True], repeat=len(values)):
            deleted = set()
            for index, trial in enumerate(order):
                seen = [t for t in order[:index] if not hidden[t.number]]
                if (deletion := beaten_model(trial, seen)) is not None:
                    deleted.add(deletion[0].number)
                    assert deletion[1].value > deletion[0].value
            assert picked not in deleted, (order, hidden)
    # Seeing everything, every model but those of the best value is gone before the sweep.
    deleted = {d[0].number for i, t in enumerate(completed) if (d := beaten_model(t, completed[:i]))}
    assert deleted == {0, 3}


def test_the_final_test_of_the_kept_model_equals_the_retrained_one(tmp_path: Path) -> None:
    write_study(tmp_path, study("final", n_trials=2, keep="best", budget=SHORT_BUDGET))
    assert run_in(tmp_path) == 0
    kept = optuna.load_study(study_name=f"final/{LEARNER}", storage=f"sqlite:///{tmp_path}/optuna.db")
    recorded = kept.user_attrs["final_test"]
    assert recorded["how"] == "kept model" and recorded["model_step"] == SHORT_BUDGET["iterations"]
    config = load_config(tmp_path / "study.yaml")
    setup = training_setup(config, LEARNER, load_dataset("synthetic"))
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "final")
    assert study_name(config, LEARNER) == kept.study_name
    retrained, _ = final_test(kept, setup, tracker, config.test.model_copy(update={"retrain": True}), progress=False)
    assert retrained["how"] == "retrained"
    assert (retrained["test_accuracy"], retrained["test_ci95"]) == (recorded["test_accuracy"], recorded["test_ci95"])
    assert retrained["seconds"] > 5 * recorded["seconds"]  # the point of keeping models


def test_an_unreadable_newest_checkpoint_is_passed_over_for_the_one_before(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    killed_after_second_validation(tmp_path)
    [good] = checkpoints_in(tmp_path)
    # What a kill during an upload leaves: a newer name, truncated.
    (good.parent / "step-00000149.pt").write_bytes(good.read_bytes()[:5000])
    assert run_in(tmp_path) == 0
    assert "warning: passing over an unreadable checkpoint" in capsys.readouterr().err
    done = trials(tmp_path, "resume")
    assert counted(done) == 2
    assert_retry_matches_an_uninterrupted_trial(tmp_path, done, tmp_path)
    assert checkpoints_in(tmp_path) == []


def test_a_checkpoint_of_other_hyperparameters_is_refused_and_the_trial_fails_with_the_reason(tmp_path: Path) -> None:
    killed_after_second_validation(tmp_path)
    [path] = checkpoints_in(tmp_path)
    every = hparams_with_defaults(LEARNER, {**CONV4, "lr": 0.003})
    save_checkpoint(path, LEARNER, {**every, "lr": 0.004}, load_model(path).trained_on,
                    load_checkpoint(path, LEARNER, every))
    assert run_in(tmp_path) == 0
    done = trials(tmp_path, "resume")
    assert counted(done) == 2
    [refused] = [t for t in done if t.system_attrs.get("failed_trial") is not None]
    assert refused.state == TrialState.FAIL
    assert refused.user_attrs["failure_reason"].startswith("CheckpointMismatch: run ")
    assert refused.user_attrs["failure_reason"].endswith("is a checkpoint of protonet with other lr, not of this run")
    assert checkpoints_in(tmp_path) == []
