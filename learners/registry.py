"""The one registry of learners. Adding a learner is one module plus one line here."""
from __future__ import annotations

from dataclasses import fields

from learners.base import HParams, Learner
from learners.baseline import ClassifierBaseline, MetaBaseline
from learners.data.episodes import TaskSpec
from learners.finetune import FineTuneBaseline
from learners.maml import MAML
from learners.protonet import ProtoNet
from learners.reptile import Reptile

LEARNERS: dict[str, type[Learner]] = {
    "protonet": ProtoNet,
    "classifier_baseline": ClassifierBaseline,
    "meta_baseline": MetaBaseline,
    "finetune": FineTuneBaseline,
    "maml": MAML,
    "reptile": Reptile,
}


def hparam_names(learner: str) -> list[str]:
    """Every hyperparameter the learner accepts, in declaration order."""
    return [f.name for f in fields(learner_class(learner).HParams)]


def learner_class(name: str) -> type[Learner]:
    if name not in LEARNERS:
        raise ValueError(f"unknown learner '{name}' (choose from {', '.join(LEARNERS)})")
    return LEARNERS[name]


def build_learner(name: str, hparams: dict, image_shape: tuple[int, int, int], spec: TaskSpec,
                  num_train_classes: int) -> Learner:
    """Build a learner from a plain dict of hyperparameters; unknown names raise ``ValueError``."""
    cls = learner_class(name)
    unknown = sorted(set(hparams) - set(hparam_names(name)))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) for {name}: {', '.join(unknown)} "
                         f"(accepted: {', '.join(hparam_names(name))})")
    return cls(cls.HParams(**hparams), image_shape, spec, num_train_classes)


__all__ = ["LEARNERS", "HParams", "Learner", "build_learner", "hparam_names", "learner_class"]
