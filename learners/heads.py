"""Test-time heads of the embedding learners (ProtoNet, Classifier-Baseline, Meta-Baseline): how an episode's query
embeddings are labelled from its support embeddings once training is over.

* ``centroid`` (the default): the learner's own rule, distance or cosine similarity to each class mean;
* ``logreg``: a logistic regression fitted to the L2-normalised support embeddings of each episode, as RFS
  evaluates (Tian et al., "Rethinking Few-Shot Image Classification: a Good Embedding Is All You Need?",
  ECCV 2020, https://arxiv.org/abs/2003.11539). scikit-learn's ``LogisticRegression`` (L2, ``C=1``, L-BFGS),
  one fit per episode on the CPU; its log-probabilities are the logits. Speed: docs/benchmarks.md#test-heads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TEST_HEADS = ("centroid", "logreg")


@dataclass
class TestHeadHParams:
    """The ``test_head`` hyperparameter, for the learners that label queries by their embeddings."""

    test_head: str = "centroid"  # centroid | logreg

    def __post_init__(self) -> None:
        super().__post_init__()  # the learner's HParams, after this class in its bases
        if self.test_head not in TEST_HEADS:
            raise ValueError(f"test_head must be one of {', '.join(TEST_HEADS)}, got '{self.test_head}'")


def logreg_logits(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                  ways: int) -> torch.Tensor:
    """Log-probabilities ``[tasks, queries, ways]`` (the logits of a softmax) of one logistic regression per
    task, fitted to its support features ``[tasks, shots * ways, dim]`` (labels ``0..ways-1``, each present) and
    applied to its query features."""
    from sklearn.linear_model import LogisticRegression  # imported on first use: a second of start-up otherwise

    support_np = F.normalize(support, dim=-1).double().cpu().numpy()
    query_np = F.normalize(query, dim=-1).double().cpu().numpy()
    labels = support_labels.cpu().numpy()
    logits = np.empty((query_np.shape[0], query_np.shape[1], ways))
    for task in range(support_np.shape[0]):
        model = LogisticRegression(C=1.0, max_iter=1000).fit(support_np[task], labels[task])
        logits[task] = model.predict_log_proba(query_np[task])
    return torch.from_numpy(logits).to(device=query.device, dtype=query.dtype)
