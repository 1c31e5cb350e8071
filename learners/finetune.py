"""Fine-tune baseline (Chen et al. 2019, "A Closer Look at Few-shot Classification", "Baseline").

Pre-training is Classifier-Baseline's. At test time the backbone is frozen and a new
linear head is fitted to each episode's support features, then applied to its queries.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from learners.baseline import ClassifierBaseline, PretrainingHParams
from learners.data.episodes import Episodes


@dataclass
class FineTuneHParams(PretrainingHParams):
    inner_lr: float = 0.01       # Adam step size of the test-time head
    inner_steps: int = 100       # full-batch Adam steps on the support set

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner_lr <= 0:
            raise ValueError(f"inner_lr must be positive, got {self.inner_lr}")
        self.require_at_least_one("inner_steps")


def apply_heads(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Logits ``[tasks, n, ways]`` of per-task linear heads."""
    return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))


def fit_linear_heads(support: torch.Tensor, support_labels: torch.Tensor, ways: int, lr: float,
                     steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``[tasks, ways, dim]`` and biases ``[tasks, ways]`` of one softmax head per task.

    All heads are optimised together on the sum of the per-task mean losses: each head's
    gradient is its own task's, and Adam's per-element steps keep the tasks independent.
    Heads start at zero, so the result is deterministic given the features.
    """
    support = support.detach()
    tasks, _, dim = support.shape
    with torch.enable_grad():  # predict() runs under no_grad
        weight = support.new_zeros(tasks, ways, dim, requires_grad=True)
        bias = support.new_zeros(tasks, ways, requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=lr)
        for _ in range(steps):
            logits = apply_heads(support, weight, bias)
            loss = F.cross_entropy(logits.flatten(0, 1), support_labels.flatten(), reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            (loss / support_labels.shape[1]).backward()
            optimizer.step()
    return weight.detach(), bias.detach()


class FineTuneBaseline(ClassifierBaseline):
    """Classifier pre-training; at test time a fresh linear head per episode on frozen features.

    References:
        Chen, Liu, Kira, Wang and Huang, "A Closer Look at Few-shot Classification", ICLR 2019.
        https://arxiv.org/abs/1904.04232

    Example (the whole flow is in :func:`learners.registry.build_learner`)::

        learner = build_learner("finetune", {"inner_steps": 100}, (1, 28, 28), TaskSpec(5, 1, 15), 4112)
    """

    HParams = FineTuneHParams

    def predict(self, episodes: Episodes, ways: int) -> torch.Tensor:
        support, query = self.embed(episodes)
        weight, bias = fit_linear_heads(support, episodes.support_labels, ways,
                                        self.hparams.inner_lr, self.hparams.inner_steps)
        return apply_heads(query, weight, bias)
