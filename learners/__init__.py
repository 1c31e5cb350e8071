"""Few-shot learners, backbones and episodic data. Knows nothing of Optuna or MLflow."""
from learners.allocator import reuse_freed_memory
from learners.backbones import BACKBONES, build_backbone
from learners.base import Budget, HParams, Learner, TrainingData, TrainingDiverged, fit
from learners.registry import (LEARNERS, build_learner, coerce_value, hparam_names, hparam_types, hparams_with_defaults,
                               learner_class)
from learners.statistics import CI_METHODS, Interval, mean_interval

# Process-wide, once: every entry point (CLIs, workers, benchmarks, tests) imports this package.
reuse_freed_memory()

__all__ = ["BACKBONES", "Budget", "HParams", "LEARNERS", "Learner", "TrainingData", "TrainingDiverged",
           "build_backbone", "build_learner", "coerce_value", "fit", "hparam_names", "hparam_types",
           "hparams_with_defaults", "learner_class", "mean_interval", "CI_METHODS", "Interval"]
