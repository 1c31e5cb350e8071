"""One learner's training task: the same data, episode shape, budget, seed and device for every trial."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from learners import Budget, Learner, TrainingData, build_learner, fit
from learners.base import ValidationCallback, ValidationPoint, evaluation_seed
from learners.data import DatasetSplits, TaskSpec


@dataclass(frozen=True)
class LearnerTask:
    """Everything a trial needs besides its hyperparameters.

    Every trial (and the final re-training) uses the study's seed for initial weights and training
    episodes, so trials differ only by their hyperparameters and the final re-training reproduces
    the best trial.
    """

    learner: str
    data: DatasetSplits
    spec: TaskSpec
    budget: Budget
    seed: int
    device: torch.device

    def build(self, hparams: dict) -> Learner:
        torch.manual_seed(self.seed)
        train = self.data.train
        return build_learner(self.learner, hparams, train.image_shape, self.spec, train.num_classes).to(self.device)

    def train(self, hparams: dict, on_validation: ValidationCallback | None = None,
              progress: bool = True) -> tuple[Learner, list[ValidationPoint]]:
        """Build and train a learner; validation runs on the study's fixed validation episodes."""
        learner = self.build(hparams)
        history = fit(learner, TrainingData(self.data.train, self.spec, self.seed, self.device), self.data.val,
                      self.budget, evaluation_seed(self.seed, "val"), on_validation=on_validation, progress=progress)
        return learner, history
