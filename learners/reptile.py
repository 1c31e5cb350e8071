"""Reptile (Nichol et al. 2018): move the initialisation towards the weights SGD reaches on each task.

The inner loop is plain SGD on mini-batches (the paper used Adam; SGD shares MAML's
batched adaptation code), vmapped over the tasks of a meta-batch. The meta-update is
written as a gradient, ``.grad = θ − mean(adapted θ)``, so the default outer optimiser,
SGD with ``lr`` ε and no momentum, performs the paper's step ``θ ← θ + ε (mean(adapted θ) − θ)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from learners.base import TrainingData
from learners.functional import FineTuningHParams, FineTuningLearner


@dataclass
class ReptileHParams(FineTuningHParams):
    """Defaults follow the paper's Omniglot settings (5 train / 50 test steps, 5 tasks, inner batch 10, ε = 1)."""

    optimizer: str = "sgd"
    lr: float = 1.0               # outer step size ε
    momentum: float = 0.0
    inner_lr: float = 0.1         # SGD (the paper's Adam lr 1e-3 does not carry over to SGD)
    inner_steps: int = 5
    test_inner_steps: int = 50
    meta_batch: int = 5
    inner_batch: int = 10         # images per inner step during meta-training

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least_one("inner_batch")


def inner_batches(images: int, batch: int, steps: int) -> torch.Tensor:
    """``[steps, batch]`` indices that cycle through shuffled passes over ``images`` (global RNG)."""
    passes = math.ceil(steps * batch / images)
    order = torch.cat([torch.randperm(images) for _ in range(passes)])
    return order[: steps * batch].view(steps, batch)


class Reptile(FineTuningLearner):
    """Reptile around a backbone and a linear head: SGD on each task, then a step towards the adapted weights.

    References:
        Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", 2018.
        https://arxiv.org/abs/1803.02999

    Example (the whole flow is in :func:`learners.registry.build_learner`)::

        learner = build_learner("reptile", {"inner_steps": 5}, (1, 28, 28), TaskSpec(5, 1, 15), 4112)
    """

    HParams = ReptileHParams
    hparams: ReptileHParams

    def train_step(self, data: TrainingData, step: int, total_steps: int) -> float:
        """Fill ``.grad`` with θ − mean(adapted θ); return the mean inner-loop loss."""
        h = self.hparams
        episodes = data.episodes(h.meta_batch)
        # Reptile needs no query split while meta-training: each task trains on all of its images.
        images = torch.cat([episodes.support, episodes.query], dim=1)
        labels = torch.cat([episodes.support_labels, episodes.query_labels], dim=1)
        batches = None if h.inner_batch >= images.shape[1] else \
            inner_batches(images.shape[1], h.inner_batch, h.inner_steps).to(images.device)
        with torch.no_grad():  # only the end points matter; torch.func.grad still runs inside
            adapted, losses = self.adapt_tasks(images, labels, h.inner_steps, first_order=True, batches=batches)
            for name, p in self.named_parameters():
                p.grad = p - adapted[name].mean(0)
        return losses.mean().item()
