"""The one registry of learners. Adding a learner is one module plus one line here."""
from __future__ import annotations

import typing
from dataclasses import MISSING, fields
from typing import Any

from pydantic import TypeAdapter, ValidationError

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


def hparam_types(learner: str) -> dict[str, Any]:
    """Hyperparameter name → its type annotation (``float``, ``int | None``, ``tuple[float, ...]``, ...)."""
    return typing.get_type_hints(learner_class(learner).HParams)


def hparams_with_defaults(learner: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` completed with the learner's defaults: every value a run trains with."""
    defaults = {f.name: f.default for f in fields(learner_class(learner).HParams) if f.default is not MISSING}
    return {**defaults, **hparams}


def coerce_value(annotation: Any, value: Any) -> Any:
    """``value`` converted to a hyperparameter of type ``annotation``; the one conversion every value of a
    study file (YAML reads ``1e-3`` as a string) and of the command line goes through.

    Raises ``ValueError`` (``expected float, got 'fast'``) when it does not fit.
    """
    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError:
        raise ValueError(f"expected {type_name(annotation)}, got {value!r}") from None


def type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def learner_class(name: str) -> type[Learner]:
    if name not in LEARNERS:
        raise ValueError(f"unknown learner '{name}' (choose from {', '.join(LEARNERS)})")
    return LEARNERS[name]


def build_learner(name: str, hparams: dict, image_shape: tuple[int, int, int], spec: TaskSpec,
                  num_train_classes: int) -> Learner:
    """Build a learner from a plain dict of hyperparameters (the learner's defaults fill the rest).

    Args:
        name: a key of :data:`LEARNERS`.
        hparams: hyperparameter name → value, of the learner's ``HParams`` types.
        image_shape: ``(channels, height, width)`` of the images.
        spec: the episode shape it is evaluated on.
        num_train_classes: classes of the training split (the pre-training learners' classifier width).

    Raises:
        ValueError: an unknown learner or hyperparameter, or a value the learner's checks refuse.

    Example::

        data = load_dataset("omniglot", "../shared/data/omniglot", "vinyals")
        spec = TaskSpec(ways=5, shots=1, queries=15)
        learner = build_learner("protonet", {"lr": 0.001}, data.train.image_shape, spec, data.train.num_classes)
        fit(learner, TrainingData(data.train, spec, seed=0), data.val, Budget(2000), val_seed=1000)
        interval = mean_interval(learner.evaluate(data.test, episodes=600, seed=2000), "t")
    """
    cls = learner_class(name)
    unknown = sorted(set(hparams) - set(hparam_names(name)))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) for {name}: {', '.join(unknown)} "
                         f"(accepted: {', '.join(hparam_names(name))})")
    return cls(cls.HParams(**hparams), image_shape, spec, num_train_classes)


__all__ = ["LEARNERS", "HParams", "Learner", "build_learner", "coerce_value", "hparam_names", "hparam_types",
           "hparams_with_defaults", "learner_class", "type_name"]
