"""A run's optimiser, learning-rate schedule and L1 penalty, built from its hyperparameters.

Schedules are set in fractions of the budget (as milestones are), so that a configuration means the same at any
number of iterations:

* ``multistep``: the rate is multiplied by ``gamma`` at each of ``milestones`` (the default, and the only schedule
  before there was a choice: its state in a checkpoint is still ``MultiStepLR``'s own);
* ``step``: multiplied by ``gamma`` every ``step_size`` of the budget;
* ``exponential``: falls smoothly by a factor ``gamma`` over the whole budget (``gamma ** (1 / iterations)`` a
  step);
* ``cosine``: cosine annealing from ``lr`` to ``eta_min`` over the budget;
* ``plateau``: multiplied by ``gamma`` once ``plateau_patience`` validations in a row did not improve the
  validation accuracy (``ReduceLROnPlateau``, stepped at each validation, not each step).

``warmup`` (a fraction of the budget, 0 = none) first raises the rate linearly: step ``k`` of ``w`` warm-up steps
runs at ``lr * k / w``; the schedule starts after it and covers the rest of the budget (multistep's milestones stay
where they are, so they must come after the warm-up).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import (CosineAnnealingLR, ExponentialLR, LinearLR, LRScheduler, MultiStepLR,
                                      ReduceLROnPlateau, SequentialLR, StepLR)

OPTIMIZERS = ("adam", "sgd", "adamw", "rmsprop")
SCHEDULERS = ("multistep", "step", "exponential", "cosine", "plateau")


def milestone_steps(milestones: tuple[float, ...], iterations: int) -> list[int]:
    """The iterations at which the learning rate drops: fractions of the budget, rounded (fractions that round
    to the same iteration drop it once)."""
    return sorted({max(1, round(m * iterations)) for m in milestones})


def warmup_steps(warmup: float, iterations: int) -> int:
    return round(warmup * iterations)


def make_optimizer(parameters: Iterable[nn.Parameter], h: Any) -> torch.optim.Optimizer:
    """The optimiser ``h.optimizer`` names, with the hyperparameters that apply to it (``h``: the learner's
    :class:`~learners.base.HParams`)."""
    parameters = list(parameters)
    if h.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=h.lr, momentum=h.momentum, nesterov=h.nesterov,
                               weight_decay=h.weight_decay)
    if h.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
    if h.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=h.lr, betas=h.betas, weight_decay=h.weight_decay)
    return torch.optim.Adam(parameters, lr=h.lr, betas=h.betas, weight_decay=h.weight_decay)


class Schedule:
    """The learning-rate schedule of one run: told after every optimiser step and after every validation.

    Args:
        optimizer: the run's optimiser (its rate is the one scheduled).
        h: the learner's hyperparameters (``scheduler`` and its fields, ``warmup``).
        iterations: the run's budget.

    Example::

        schedule = Schedule(optimizer, hparams, budget.iterations)
        for step in range(1, budget.iterations + 1):
            ...; optimizer.step(); schedule.after_step()
            if step % budget.val_interval == 0:
                schedule.after_validation(val_accuracy)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, h: Any, iterations: int):
        self.optimizer = optimizer
        warm = warmup_steps(h.warmup, iterations)
        self.warmup_steps = warm
        self.plateau: ReduceLROnPlateau | None = None
        self.steps: LRScheduler | None = None  # stepped after every optimiser step
        if warm > 0:
            warming = LinearLR(optimizer, start_factor=1.0 / warm, end_factor=1.0, total_iters=max(warm - 1, 1))
        rest = iterations - warm
        if h.scheduler == "plateau":
            self.steps = warming if warm > 0 else None
            self.plateau = ReduceLROnPlateau(optimizer, mode="max", factor=h.gamma, patience=h.plateau_patience - 1)
            return
        main: LRScheduler
        if h.scheduler == "step":
            main = StepLR(optimizer, step_size=max(1, round(h.step_size * iterations)), gamma=h.gamma)
        elif h.scheduler == "exponential":
            main = ExponentialLR(optimizer, gamma=h.gamma ** (1.0 / max(rest, 1)))
        elif h.scheduler == "cosine":
            main = CosineAnnealingLR(optimizer, T_max=max(rest, 1), eta_min=h.eta_min)
        else:
            main = MultiStepLR(optimizer, [m - warm for m in milestone_steps(h.milestones, iterations)], gamma=h.gamma)
        self.steps = SequentialLR(optimizer, [warming, main], milestones=[warm]) if warm > 0 else main

    @property
    def lr(self) -> float:
        """The rate the next step runs at."""
        return float(self.optimizer.param_groups[0]["lr"])

    def after_step(self) -> None:
        if self.steps is not None and (self.plateau is None or self.steps.last_epoch < self.warmup_steps):
            self.steps.step()

    def after_validation(self, val_accuracy: float) -> None:
        if self.plateau is not None and (self.steps is None or self.steps.last_epoch >= self.warmup_steps):
            self.plateau.step(val_accuracy)

    def state_dict(self) -> dict[str, Any]:
        # A lone per-step schedule saves its own state, as every checkpoint did before there were others.
        if self.plateau is None:
            return self.steps.state_dict()
        return {"steps": None if self.steps is None else self.steps.state_dict(),
                "plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.plateau is None:
            self.steps.load_state_dict(state)
            return
        if self.steps is not None:
            self.steps.load_state_dict(state["steps"])
        self.plateau.load_state_dict(state["plateau"])


def l1_penalty(module: nn.Module, l1: float) -> float:
    """Add ``l1 * sum(|w|)`` over the trainable parameters to their gradients (PyTorch's optimisers only do L2, as
    ``weight_decay``); return the penalty, which the step's loss includes."""
    if l1 == 0:
        return 0.0
    penalty = l1 * sum(p.abs().sum() for p in module.parameters() if p.requires_grad)
    penalty.backward()
    return float(penalty.detach())
