"""Early stopping and model selection in ``fit``: where a run stops, which model it keeps, and that both survive a
checkpoint (bit-identically) and a kept-model file."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learners import Budget, TrainingData, build_learner, fit
from learners.checkpoint import CheckpointError, SavedModel, load_checkpoint, load_model, save_checkpoint, save_model
from learners.data import TaskSpec
from learners.experiment import TrainingSetup
from learners.registry import hparams_with_defaults

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = TaskSpec(3, 1, 2)


def scripted_fit(synthetic, accuracies: list[float], budget: Budget, **hparams):
    """``fit`` a real protonet whose validations return ``accuracies`` in turn (the curve under test)."""
    torch.manual_seed(0)
    learner = build_learner("protonet", hparams, synthetic.train.image_shape, SPEC, synthetic.train.num_classes)
    curve = iter(accuracies)
    learner.evaluate = lambda split, episodes, seed: torch.tensor([next(curve)])
    weights = {}

    def remember(state) -> None:
        weights[state.step] = state.model

    result = fit(learner, TrainingData(synthetic.train, SPEC, seed=0), synthetic.val, budget, val_seed=1,
                 progress=False, on_checkpoint=remember)
    return learner, result, weights


def test_patience_stops_after_that_many_validations_without_improvement(synthetic) -> None:
    # Best at step 4; steps 6, 8 and 10 do not beat it by more than min_delta 0.05 (0.52 alone would beat 0.5).
    _, result, _ = scripted_fit(synthetic, [0.3, 0.5, 0.52, 0.54, 0.53, 0.9], Budget(20, 2, 1),
                                patience=3, min_delta=0.05)
    assert [p.step for p in result.history] == [2, 4, 6, 8, 10]
    assert (result.stop_reason, result.stopped_at, result.selected.step) == ("early_stopping", 10, 10)


def test_an_improvement_resets_the_count(synthetic) -> None:
    _, result, _ = scripted_fit(synthetic, [0.3, 0.2, 0.4, 0.3, 0.3], Budget(10, 2, 1, select="best"), patience=2)
    assert (result.stop_reason, result.stopped_at, result.selected.step) == ("budget", 10, 6)


def test_the_best_model_is_kept_with_select_best(synthetic) -> None:
    learner, result, weights = scripted_fit(synthetic, [0.3, 0.6, 0.5, 0.4, 0.2], Budget(10, 2, 1, select="best"),
                                            patience=2)
    assert (result.stop_reason, result.stopped_at, result.selected.step) == ("early_stopping", 8, 4)
    for name, tensor in learner.state_dict().items():
        assert torch.equal(tensor, weights[4][name]), name


def test_select_last_keeps_the_last_model_and_the_whole_budget(synthetic) -> None:
    learner, result, weights = scripted_fit(synthetic, [0.3, 0.6, 0.5], Budget(6, 2, 1))
    assert (result.stop_reason, result.stopped_at, result.selected.step) == ("budget", 6, 6)
    for name, tensor in learner.state_dict().items():
        assert torch.equal(tensor, weights[6][name]), name


class Stop(Exception):
    """Stands for a kill after a validation's checkpoint."""


def test_a_run_past_its_best_continues_bit_identically_and_keeps_the_same_model(synthetic, tmp_path: Path) -> None:
    # Real validations; measured: this run peaks at step 12 (of 20) and stops early at step 16, so the kill at
    # step 14 falls between its best and its stop.
    hparams = {"lr": 0.05, "patience": 2}
    run = TrainingSetup("protonet", synthetic, SPEC, Budget(20, 2, 4, select="best"), seed=5,
                        device=torch.device("cpu"))
    reference, expected = run.train(hparams, progress=False)
    assert expected.stop_reason == "early_stopping" and expected.selected.step < expected.stopped_at - 2
    every = hparams_with_defaults("protonet", hparams)
    path = tmp_path / "run.pt"

    def save(state) -> None:
        save_checkpoint(path, "protonet", every, run.trained_on(), state)
        if state.step == expected.stopped_at - 2:
            raise Stop()

    with pytest.raises(Stop):
        run.train(hparams, progress=False, on_checkpoint=save)
    torch.manual_seed(999)
    resumed, got = run.train(hparams, progress=False, resume=load_checkpoint(path, "protonet", every),
                             on_checkpoint=lambda state: save_checkpoint(path, "protonet", every, run.trained_on(), state))
    assert [(p.step, p.val_accuracy) for p in got.history] == [(p.step, p.val_accuracy) for p in expected.history]
    assert (got.stop_reason, got.stopped_at, got.selected.step) == (expected.stop_reason, expected.stopped_at,
                                                                    expected.selected.step)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    kept = load_model(path)  # the finished run's training checkpoint, read as a model
    assert kept.step == expected.selected.step
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, kept.weights[name]), name


def test_a_kept_model_file_loads_into_the_same_learner(synthetic, tmp_path: Path) -> None:
    run = TrainingSetup("protonet", synthetic, SPEC, Budget(4, 2, 4), seed=5, device=torch.device("cpu"))
    learner, result = run.train({}, progress=False)
    every = hparams_with_defaults("protonet", {})
    save_model(tmp_path / "model.pt", SavedModel("protonet", every, result.selected.step,
                                                  result.selected.val_accuracy, learner.state_dict(), run.trained_on()))
    loaded = run.load(load_model(tmp_path / "model.pt"))
    assert torch.equal(run.test(loaded, 8), run.test(learner, 8))
    # A kept model of an earlier version (format 2, without trained_on) still loads into its study's setup, and
    # alone it is a one-line error.
    earlier = {"format": 2, "kind": "model", "learner": "protonet", "hparams": every, "step": result.selected.step,
               "val_accuracy": result.selected.val_accuracy, "weights": learner.state_dict()}
    torch.save(earlier, tmp_path / "earlier.pt")
    assert torch.equal(run.test(run.load(load_model(tmp_path / "earlier.pt")), 8), run.test(learner, 8))
    with pytest.raises(CheckpointError, match="saved by an earlier version .format 2."):
        load_model(tmp_path / "earlier.pt").build()
    with pytest.raises(ValueError, match="holds a model without its training state"):
        load_checkpoint(tmp_path / "model.pt", "protonet", every)


@pytest.mark.parametrize("hparams, message", [({"patience": 0}, "patience must be at least 1, got 0"),
                                              ({"min_delta": -0.1}, "min_delta must be at least 0, got -0.1")])
def test_early_stopping_values_are_checked(hparams, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_learner("protonet", hparams, (1, 28, 28), SPEC, 10)
