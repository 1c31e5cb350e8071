"""Classifier-Baseline and Meta-Baseline (Chen et al. 2021, "Meta-Baseline: Exploring Simple Meta-Learning").

Classifier-Baseline pre-trains the backbone with an ordinary linear classifier over
all training classes and, at test time, labels each query by cosine similarity to
the mean support feature of each class. Meta-Baseline starts the same way and then
trains episodically on that same cosine-to-centroid classifier, scaled by a learnable
temperature.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from learners.base import HParams, Learner, TrainingData
from learners.data.episodes import Episodes, TaskSpec
from learners.heads import TestHeadHParams, logreg_logits
from learners.protonet import class_means


@dataclass
class PretrainingHParams(HParams):
    """The learners that pre-train a classifier over every training class (Classifier-Baseline's stage)."""

    batch_size: int = 128        # images per pre-training step, drawn from all training classes

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least_one("batch_size")

    def training_shape(self, spec: TaskSpec) -> TaskSpec | None:
        return None  # labelled batches, drawn with replacement: any batch_size can be formed


@dataclass
class ClassifierBaselineHParams(TestHeadHParams, PretrainingHParams):
    pass


def cosine_logits(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                  ways: int) -> torch.Tensor:
    """Cosine similarity ``[tasks, queries, ways]`` of each query feature to each class mean."""
    centroids = F.normalize(class_means(support, support_labels, ways), dim=-1)
    return F.normalize(query, dim=-1) @ centroids.transpose(1, 2)


class ClassifierBaseline(Learner):
    """Pre-train a linear classifier over every training class; test by cosine nearest centroid (``test_head:
    logreg``: by a logistic regression on the support embeddings, :mod:`learners.heads`).

    References:
        Chen, Liu, Xu, Darrell and Wang, "Meta-Baseline: Exploring Simple Meta-Learning for Few-Shot
        Learning", ICCV 2021. https://arxiv.org/abs/2003.04390

    Example (the whole flow is in :func:`learners.registry.build_learner`)::

        learner = build_learner("classifier_baseline", {"batch_size": 128}, (1, 28, 28), TaskSpec(5, 1, 15), 4112)
    """

    HParams = ClassifierBaselineHParams

    def __init__(self, hparams: ClassifierBaselineHParams, image_shape: tuple[int, int, int], spec: TaskSpec,
                 num_train_classes: int):
        super().__init__(hparams, image_shape, spec, num_train_classes)
        self.classifier = nn.Linear(self.feature_dim, num_train_classes)

    def classifier_step(self, data: TrainingData) -> float:
        """One cross-entropy step of the pre-training classifier; fills ``.grad`` and returns the loss."""
        images, labels = data.batch(self.hparams.batch_size)
        loss = F.cross_entropy(self.classifier(self._features(images)), labels)
        loss.backward()
        return loss.item()

    def train_step(self, data: TrainingData, step: int, total_steps: int) -> float:
        return self.classifier_step(data)

    def centroid_logits(self, episodes: Episodes, ways: int) -> torch.Tensor:
        support, query = self.embed(episodes)
        return cosine_logits(support, episodes.support_labels, query, ways)

    def predict(self, episodes: Episodes, ways: int) -> torch.Tensor:
        if self.hparams.test_head == "logreg":
            support, query = self.embed(episodes)
            return logreg_logits(support, episodes.support_labels, query, ways)
        return self.centroid_logits(episodes, ways)


@dataclass
class MetaBaselineHParams(ClassifierBaselineHParams):
    # Share of the iterations spent on classifier pre-training; the rest is episodic. With the
    # default milestone 0.5 the episodic stage runs at lr * gamma, as the paper's lower meta-stage lr.
    pretrain_fraction: float = 0.5
    init_temperature: float = 10.0   # learnable scale of the cosine logits
    meta_batch: int = 1              # episodes per episodic step

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.pretrain_fraction <= 1.0:
            raise ValueError(f"pretrain_fraction must be between 0 and 1, got {self.pretrain_fraction}")
        if self.init_temperature <= 0:
            raise ValueError(f"init_temperature must be positive, got {self.init_temperature}")
        self.require_at_least_one("meta_batch")

    def training_shape(self, spec: TaskSpec) -> TaskSpec:
        return spec  # the episodic stage


class MetaBaseline(ClassifierBaseline):
    """Classifier-Baseline followed by episodic training of the scaled cosine-to-centroid classifier.

    References:
        Chen et al., "Meta-Baseline: Exploring Simple Meta-Learning for Few-Shot Learning", ICCV 2021.
        https://arxiv.org/abs/2003.04390

    Example (the whole flow is in :func:`learners.registry.build_learner`)::

        learner = build_learner("meta_baseline", {"pretrain_fraction": 0.5}, (1, 28, 28), TaskSpec(5, 1, 15), 4112)

    Both stages share ``fit``'s single optimiser and schedule. Parameters a stage does not use get
    no gradient (``grad`` is ``None``), so the optimiser leaves them, and their weight decay, alone.
    """

    HParams = MetaBaselineHParams

    def __init__(self, hparams: MetaBaselineHParams, image_shape: tuple[int, int, int], spec: TaskSpec,
                 num_train_classes: int):
        super().__init__(hparams, image_shape, spec, num_train_classes)
        self.temperature = nn.Parameter(torch.tensor(float(hparams.init_temperature)))

    def train_step(self, data: TrainingData, step: int, total_steps: int) -> float:
        if step <= round(self.hparams.pretrain_fraction * total_steps):
            return self.classifier_step(data)
        episodes = data.episodes(self.hparams.meta_batch)
        logits = self.centroid_logits(episodes, self.spec.ways)
        loss = F.cross_entropy(logits.flatten(0, 1), episodes.query_labels.flatten())
        loss.backward()
        return loss.item()

    def centroid_logits(self, episodes: Episodes, ways: int) -> torch.Tensor:
        return self.temperature * super().centroid_logits(episodes, ways)
