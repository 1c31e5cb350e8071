"""Checkpoints of a training run: a stopped run continues bit-identically, files are atomic and refuse other runs."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from learners import Budget
from learners.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from learners.data import TaskSpec
from learners.experiment import TrainingSetup
from learners.registry import hparams_with_defaults
from tests.helpers import REPO, environment

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET = Budget(iterations=6, val_interval=2, val_episodes=4)
# Every kind of random stream: episodes of another shape (protonet, maml), torch's global generator (reptile's
# inner batches), labelled batches and then episodes (meta_baseline).
RUNS = {"protonet": {"train_ways": 7, "train_queries": 3}, "maml": {"train_shots": 2, "meta_batch": 2},
        "reptile": {"meta_batch": 2, "inner_batch": 2}, "meta_baseline": {"batch_size": 16}}


class Stop(Exception):
    """Stands for a kill between a validation and the checkpoint after it."""


def setup(synthetic) -> TrainingSetup:
    return TrainingSetup("protonet", synthetic, TaskSpec(3, 1, 2), BUDGET, seed=3, device=torch.device("cpu"))


def train_with_file(run: TrainingSetup, hparams: dict, path: Path, on_validation=None):
    """Train, saving the state to ``path`` after every validation, and continuing from it when it exists."""
    every = hparams_with_defaults(run.learner, hparams)
    resume = load_checkpoint(path, run.learner, every) if path.exists() else None
    return run.train(hparams, on_validation, progress=False, resume=resume,
                     on_checkpoint=lambda state: save_checkpoint(path, run.learner, every, run.trained_on(), state))


def curve(history) -> list[tuple]:
    return [(p.step, p.val_accuracy, p.train_loss, p.lr) for p in history]  # seconds differ, of course


@pytest.mark.parametrize("learner", list(RUNS))
def test_a_stopped_run_continues_bit_identically(learner: str, synthetic, tmp_path: Path) -> None:
    run = TrainingSetup(learner, synthetic, TaskSpec(3, 1, 2), BUDGET, seed=3, device=torch.device("cpu"))
    reference, reference_run = run.train(RUNS[learner], progress=False)

    def stop_at_step_4(point) -> None:
        if point.step == 4:
            raise Stop()

    path = tmp_path / "run.pt"
    with pytest.raises(Stop):
        train_with_file(run, RUNS[learner], path, stop_at_step_4)
    assert load_checkpoint(path, learner, hparams_with_defaults(learner, RUNS[learner])).step == 2
    torch.manual_seed(12345)  # another process would start from another global state
    resumed, resumed_run = train_with_file(run, RUNS[learner], path)
    assert curve(resumed_run.history) == curve(reference_run.history)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_a_checkpoint_of_another_run_is_refused(synthetic, tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    train_with_file(setup(synthetic), {"lr": 0.002}, path)
    with pytest.raises(CheckpointError, match="is a checkpoint of protonet with other lr, not of this run"):
        train_with_file(setup(synthetic), {"lr": 0.003}, path)
    with pytest.raises(CheckpointError, match="is a checkpoint of protonet, not of this run"):
        load_checkpoint(path, "maml", hparams_with_defaults("maml", {}))


def test_a_truncated_checkpoint_is_one_line(synthetic, tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    train_with_file(setup(synthetic), {}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"cannot read the checkpoint {path}"):
        load_checkpoint(path, "protonet", hparams_with_defaults("protonet", {}))


def test_a_failed_save_leaves_the_previous_checkpoint(synthetic, tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    states = []
    train_with_file(setup(synthetic), {}, path)
    every = hparams_with_defaults("protonet", {})
    states.append(load_checkpoint(path, "protonet", every))
    states[0].data = {"unpicklable": lambda: None}  # torch.save fails halfway through
    with pytest.raises(Exception):
        save_checkpoint(path, "protonet", every, setup(synthetic).trained_on(), states[0])
    assert load_checkpoint(path, "protonet", every).step == BUDGET.iterations
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no partial file left


def train_command(save: Path) -> list[str]:
    return [sys.executable, "-m", "learners.train", "--learner", "protonet", "--dataset", "synthetic", "--ways", "3",
            "--queries", "2", "--iterations", "60", "--val-interval", "10", "--val-episodes", "4",
            "--test-episodes", "16", "--device", "cpu", "--json", "--save", str(save)]


def test_learners_train_killed_and_rerun_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = subprocess.run(train_command(tmp_path / "whole.pt"), env=environment(), capture_output=True, text=True,
                           cwd=REPO, timeout=300)
    assert whole.returncode == 0, whole.stderr
    killed = subprocess.Popen(train_command(tmp_path / "killed.pt"), env=environment(), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "killed.pt").exists():  # the first validation's checkpoint
        assert killed.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    step = load_checkpoint(tmp_path / "killed.pt", "protonet", hparams_with_defaults("protonet", {})).step
    assert step < 60  # killed mid-run
    rerun = subprocess.run(train_command(tmp_path / "killed.pt"), env=environment(), capture_output=True, text=True,
                           cwd=REPO, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    expected, got = json.loads(whole.stdout), json.loads(rerun.stdout)
    assert got["test_accuracy"] == expected["test_accuracy"]
    assert [{k: v for k, v in p.items() if k != "seconds"} for p in got["history"]] == \
        [{k: v for k, v in p.items() if k != "seconds"} for p in expected["history"]]
