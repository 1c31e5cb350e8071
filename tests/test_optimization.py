"""Optimisers, learning-rate schedules, L1 and the test heads: each trains, steps the rate as
:mod:`learners.optimization` documents, and costs what it says."""
from __future__ import annotations

import math

import pytest
import torch

from learners.base import Budget, evaluation_seed
from learners.data.episodes import TaskSpec
from learners.experiment import TrainingSetup
from learners.optimization import OPTIMIZERS, SCHEDULERS, Schedule, make_optimizer
from learners.registry import learner_class

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = TaskSpec(5, 1, 5)
LR = 0.01


def rates(iterations: int, validations: list[float] | None = None, **hparams) -> list[float]:
    """The rate each step 1..iterations runs at (validations: told after every step, in turn)."""
    h = learner_class("protonet").HParams(lr=LR, **hparams)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=h.lr)
    schedule = Schedule(optimizer, h, iterations)
    seen = []
    for step in range(iterations):
        seen.append(schedule.lr)
        optimizer.step()
        schedule.after_step()
        if validations is not None:
            schedule.after_validation(validations[step])
    return seen


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains_above_chance(optimizer: str, synthetic) -> None:
    lr = {"sgd": 0.3, "rmsprop": 3e-4}.get(optimizer, 3e-3)
    setup = TrainingSetup("protonet", synthetic, SPEC, Budget(40, 40, 40), 0, "cpu")
    _, result = setup.train({"optimizer": optimizer, "lr": lr}, progress=False)
    assert result.selected.val_accuracy > 1 / SPEC.ways + 0.08


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_trains_above_chance(scheduler: str, synthetic) -> None:
    setup = TrainingSetup("protonet", synthetic, SPEC, Budget(40, 10, 40), 0, "cpu")
    _, result = setup.train({"scheduler": scheduler, "lr": 3e-3, "warmup": 0.1}, progress=False)
    assert result.selected.val_accuracy > 1 / SPEC.ways + 0.08
    assert result.history[-1].lr <= 3e-3  # no schedule ends above the base rate


def test_multistep_drops_at_the_milestones() -> None:
    seen = rates(10, milestones=(0.3, 0.7), gamma=0.1)
    assert seen[:3] == [LR] * 3 and seen[3:7] == [pytest.approx(LR * 0.1)] * 4
    assert seen[7:] == [pytest.approx(LR * 0.01)] * 3


def test_step_drops_every_step_size_of_the_budget() -> None:
    seen = rates(20, scheduler="step", step_size=0.25, gamma=0.5)
    assert [seen[i] for i in (0, 4, 5, 10, 15, 19)] == pytest.approx([LR, LR, LR / 2, LR / 4, LR / 8, LR / 8])


def test_exponential_falls_by_gamma_over_the_budget() -> None:
    seen = rates(100, scheduler="exponential", gamma=0.01)
    assert seen[0] == LR and seen[50] == pytest.approx(LR * 0.01 ** 0.5)
    assert seen[-1] == pytest.approx(LR * 0.01 ** 0.99)  # the rate after the last step would be LR * gamma


def test_cosine_anneals_to_eta_min() -> None:
    seen = rates(100, scheduler="cosine", eta_min=1e-4)
    assert seen[0] == LR
    assert seen[50] == pytest.approx((LR + 1e-4) / 2)
    assert seen[-1] == pytest.approx(1e-4 + (LR - 1e-4) * (1 + math.cos(math.pi * 99 / 100)) / 2)


def test_warmup_rises_linearly_then_the_schedule_covers_the_rest() -> None:
    seen = rates(20, scheduler="multistep", warmup=0.2, milestones=(0.6,), gamma=0.1)
    assert seen[:4] == pytest.approx([LR / 4, LR / 2, 3 * LR / 4, LR])  # step k of 4 runs at lr * k / 4
    assert seen[4:12] == pytest.approx([LR] * 8) and seen[12:] == pytest.approx([LR * 0.1] * 8)  # milestone: step 12
    cosine = rates(20, scheduler="cosine", warmup=0.2)
    assert cosine[:4] == pytest.approx([LR / 4, LR / 2, 3 * LR / 4, LR]) and cosine[4] == pytest.approx(LR)
    assert cosine[12] == pytest.approx(LR / 2)  # half-way through the 16 steps after the warm-up


def test_plateau_drops_once_its_patience_of_validations_brings_no_improvement() -> None:
    curve = [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.65, 0.8, 0.8, 0.8, 0.8]
    seen = rates(len(curve), curve, scheduler="plateau", plateau_patience=2, gamma=0.5)
    # 0.6 twice more: a drop after the 4th validation; 0.7 then 0.65: the next after the 7th; 0.8 three
    # times more: after the 10th (the count starts again after a drop).
    assert seen == pytest.approx([LR] * 4 + [LR / 2] * 3 + [LR / 4] * 3 + [LR / 8])
    # Validations during the warm-up are not counted: the first after it (told after step 4) sets the best.
    warmed = rates(len(curve), [0.5] * len(curve), scheduler="plateau", plateau_patience=1, warmup=0.4)
    assert warmed[:5] == pytest.approx([LR / 4, LR / 2, 3 * LR / 4, LR, LR])
    assert warmed[5:] == pytest.approx([LR * 0.5 ** k for k in range(1, 7)])


def test_l1_adds_its_documented_amount_to_the_loss(synthetic) -> None:
    budget = Budget(1, 1, 4)
    plain = TrainingSetup("protonet", synthetic, SPEC, budget, 0, "cpu")
    _, without = plain.train({}, progress=False)
    _, with_l1 = plain.train({"l1": 1e-3}, progress=False)
    initial = plain.build({})  # the weights both runs started from (the setup's seed)
    with torch.no_grad():
        penalty = 1e-3 * sum(float(p.abs().sum()) for p in initial.parameters())
    assert with_l1.history[0].train_loss - without.history[0].train_loss == pytest.approx(penalty, rel=1e-6)
    assert penalty > 0.1  # a real difference, not rounding


def test_the_optimizer_gets_the_fields_that_apply_to_it() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    hparams = learner_class("protonet").HParams
    sgd = make_optimizer(params, hparams(optimizer="sgd", momentum=0.5, nesterov=True))
    assert (type(sgd).__name__, sgd.defaults["momentum"], sgd.defaults["nesterov"]) == ("SGD", 0.5, True)
    adamw = make_optimizer(params, hparams(optimizer="adamw", betas=(0.8, 0.99), weight_decay=0.1))
    assert (type(adamw).__name__, adamw.defaults["betas"], adamw.defaults["weight_decay"]) == ("AdamW", (0.8, 0.99), 0.1)
    rmsprop = make_optimizer(params, hparams(optimizer="rmsprop", momentum=0.3))
    assert (type(rmsprop).__name__, rmsprop.defaults["momentum"]) == ("RMSprop", 0.3)


@pytest.mark.parametrize("learner", ["protonet", "classifier_baseline", "meta_baseline"])
def test_the_logreg_head_scores_within_5_points_of_the_centroid_head(learner: str, synthetic) -> None:
    setup = TrainingSetup(learner, synthetic, SPEC, Budget(60, 60, 8), 0, "cpu")
    model, _ = setup.train({"lr": 3e-3, "batch_size": 32} if learner != "protonet" else {"lr": 3e-3}, progress=False)
    seed = evaluation_seed(0, "test")
    centroid = float(model.evaluate(synthetic.test, 100, seed).mean())
    model.hparams.test_head = "logreg"
    logreg = float(model.evaluate(synthetic.test, 100, seed).mean())
    assert centroid > 1 / SPEC.ways + 0.1  # trained: the comparison means something
    assert abs(logreg - centroid) <= 0.05, (logreg, centroid)
