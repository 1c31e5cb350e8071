"""MAML (Finn et al. 2017): meta-learn an initialisation that one or a few SGD steps adapt to a task.

The tasks of a meta-batch are adapted together with ``torch.func`` (``grad`` under
``vmap``); :func:`per_task_meta_gradient` is the plain per-task loop it must agree with.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from learners.base import TrainingData
from learners.data.episodes import Episodes, TaskSpec
from learners.functional import FineTuningHParams, FineTuningLearner, Params, classification_loss


@dataclass
class MAMLHParams(FineTuningHParams):
    """Defaults (inner_lr 0.4, 1 step in training, 3 at test, 32 tasks, Adam 1e-3) follow the paper's Omniglot runs."""

    first_order: bool = False     # drop the second-order term (first-order MAML)
    # Query images per class in meta-training episodes; None = as evaluated. Finn et al. used
    # as many queries as shots (1 for 1-shot), which makes a meta-batch several times cheaper.
    train_queries: int | None = None
    # Support images per class in meta-training episodes; None = as evaluated. Training 1-shot
    # for a 5-shot test makes each inner loop five times cheaper.
    train_shots: int | None = None

    TRAINING_SHAPE_FIELDS = ("train_shots", "train_queries")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least_one("train_queries", "train_shots")

    def training_shape(self, spec: TaskSpec) -> TaskSpec:
        return TaskSpec(spec.ways, self.train_shots or spec.shots, self.train_queries or spec.queries)


class MAML(FineTuningLearner):
    """Model-agnostic meta-learning around a backbone and a linear head, second order unless ``first_order``.

    Each training step adapts every task of a meta-batch with ``inner_steps`` SGD steps of ``inner_lr`` on its
    support set and takes the optimiser step on the mean query loss of the adapted weights; at test time
    each episode is adapted with ``test_inner_steps`` steps. Batch norm uses the episode's statistics.

    References:
        Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
        ICML 2017. https://arxiv.org/abs/1703.03400

    Example (the whole flow is in :func:`learners.registry.build_learner`)::

        learner = build_learner("maml", {"inner_lr": 0.4, "first_order": False}, (1, 28, 28), TaskSpec(5, 1, 15), 4112)
    """

    HParams = MAMLHParams
    hparams: MAMLHParams

    def meta_loss(self, episodes: Episodes, inner_steps: int, first_order: bool) -> torch.Tensor:
        """Mean query loss after adapting to each support set; differentiable w.r.t. the parameters."""
        adapted, _ = self.adapt_tasks(episodes.support, episodes.support_labels, inner_steps, first_order)
        logits = self.task_logits(adapted, episodes.query)
        return F.cross_entropy(logits.flatten(0, 1), episodes.query_labels.flatten())

    def train_step(self, data: TrainingData, step: int, total_steps: int) -> float:
        h = self.hparams
        shape = h.training_shape(self.spec)
        episodes = data.episodes(h.meta_batch, queries=shape.queries, shots=shape.shots)
        loss = self.meta_loss(episodes, h.inner_steps, h.first_order)
        loss.backward()
        return loss.item()


def per_task_meta_gradient(learner: FineTuningLearner, episodes: Episodes, inner_steps: int,
                           first_order: bool) -> Params:
    """Reference MAML meta-gradient from a plain loop over tasks with ``torch.autograd.grad``.

    Slow but obviously right: tests and the speed benchmark compare :meth:`MAML.meta_loss` with it.
    """
    params = learner.meta_parameters()
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for task in range(episodes.num_tasks):
        fast = params
        for _ in range(inner_steps):
            loss = classification_loss(learner, fast, episodes.support[task], episodes.support_labels[task])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {name: p - learner.hparams.inner_lr * g for (name, p), g in zip(fast.items(), grads)}
        query_loss = classification_loss(learner, fast, episodes.query[task], episodes.query_labels[task])
        for name, g in zip(params, torch.autograd.grad(query_loss, list(params.values()))):
            total[name] += g / episodes.num_tasks
    return total
