"""Prototypical Networks (Snell et al. 2017): squared Euclidean distance to class means."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from learners.base import HParams, Learner, TrainingData
from learners.data.episodes import Episodes, TaskSpec
from learners.heads import TestHeadHParams, logreg_logits


@dataclass
class ProtoNetHParams(TestHeadHParams, HParams):
    meta_batch: int = 1          # episodes per optimiser step
    train_ways: int | None = None  # train on more ways than tested (Snell et al. used 60); None = test ways
    train_queries: int | None = None  # query images per class in training episodes; None = as evaluated

    TRAINING_SHAPE_FIELDS = ("train_ways", "train_queries")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least_one("meta_batch", "train_ways", "train_queries")

    def training_shape(self, spec: TaskSpec) -> TaskSpec:
        return TaskSpec(self.train_ways or spec.ways, spec.shots, self.train_queries or spec.queries)


def class_means(support: torch.Tensor, support_labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Mean support feature of each class ``[tasks, ways, dim]``, batched over tasks."""
    one_hot = F.one_hot(support_labels, ways).to(support.dtype)              # [T, S, W]
    return one_hot.transpose(1, 2) @ support / one_hot.sum(1).unsqueeze(-1)


def prototype_logits(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                     ways: int) -> torch.Tensor:
    """Negative squared Euclidean distance from each query feature to each class mean, batched over tasks."""
    return -torch.cdist(query, class_means(support, support_labels, ways)).pow(2)


class ProtoNet(Learner):
    """Prototypical Networks: each query takes the class whose mean support embedding is nearest (squared
    Euclidean distance); trained episodically on the query cross-entropy. ``test_head: logreg`` labels test
    queries with a logistic regression on the support embeddings instead (:mod:`learners.heads`).

    References:
        Snell, Swersky and Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017.
        https://arxiv.org/abs/1703.05175

    Example (the whole flow is in :func:`learners.registry.build_learner`)::

        learner = build_learner("protonet", {"train_ways": 60, "lr": 0.001}, (1, 28, 28), TaskSpec(5, 1, 15), 4112)
    """

    HParams = ProtoNetHParams

    def logits(self, episodes: Episodes, ways: int) -> torch.Tensor:
        support, query = self.embed(episodes)
        return prototype_logits(support, episodes.support_labels, query, ways)

    def train_step(self, data: TrainingData, step: int, total_steps: int) -> float:
        shape = self.hparams.training_shape(self.spec)
        episodes = data.episodes(self.hparams.meta_batch, shape.ways, shape.queries)
        logits = self.logits(episodes, shape.ways)
        loss = F.cross_entropy(logits.flatten(0, 1), episodes.query_labels.flatten())
        loss.backward()
        return loss.item()

    def predict(self, episodes: Episodes, ways: int) -> torch.Tensor:
        if self.hparams.test_head == "logreg":
            support, query = self.embed(episodes)
            return logreg_logits(support, episodes.support_labels, query, ways)
        return self.logits(episodes, ways)
