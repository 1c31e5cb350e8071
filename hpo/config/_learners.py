"""A study's learners checked against the learners' own hyperparameters, before anything is written.

Every ``fixed`` and ``space`` entry must name a hyperparameter of its learner, fit its type and
pass the learner's own checks (``HParams.__post_init__``); fixed values and categorical choices
are coerced to the hyperparameter's type on the way (YAML reads ``1e-3`` as a string).
"""
from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from hpo.config._schema import CategoricalParam, MilestonesParam, StudyConfig
from hpo.config._space import grid_search_space
from hpo.errors import ConfigError
from learners import BACKBONES
from learners.registry import LEARNERS, coerce_value, hparam_names, hparam_types, learner_class, type_name


def check_learners(config: StudyConfig) -> None:
    """Check ``fixed`` and ``space`` of every learner against its hyperparameters; coerce fixed values
    and categorical choices to the hyperparameter's type.

    Raises:
        ConfigError: naming the first entry that does not fit (``learners.<name>.space.<key>...``).
    """
    for name, learner in config.learners.items():
        path = f"learners.{name}"
        if name not in LEARNERS:
            raise ConfigError(f"unknown learner '{name}' (choose from {', '.join(LEARNERS)})", path)
        hints = hparam_types(name)
        accepted = hparam_names(name)
        for section, keys in (("fixed", learner.fixed), ("space", learner.space)):
            for key in keys:
                if key not in accepted:
                    raise ConfigError(f"unknown hyperparameter of {name} (accepted: {', '.join(accepted)})",
                                      f"{path}.{section}.{key}")
        if not learner.space:
            raise ConfigError("empty: give at least one hyperparameter to search (fixed values go in 'fixed')",
                              f"{path}.space")
        both = sorted(learner.space.keys() & learner.fixed.keys())
        if both:
            raise ConfigError("given in both fixed and space", f"{path}.space.{both[0]}")
        learner.fixed = {key: _coerce(hints[key], key, value, f"{path}.fixed.{key}")
                         for key, value in learner.fixed.items()}
        for key, value in learner.fixed.items():
            _check_hparams(name, {key: value}, f"{path}.fixed.{key}")
        _check_hparams(name, learner.fixed, f"{path}.fixed")
        for key, param in learner.space.items():
            _check_param(name, learner.fixed, hints[key], key, param, f"{path}.space.{key}")
            if isinstance(param, MilestonesParam) and (param.count or 0) >= config.budget.iterations:
                raise ConfigError(f"{param.count} milestones cannot fall on distinct iterations of "
                                  f"budget.iterations = {config.budget.iterations}", f"{path}.space.{key}.count")
        if config.search.sampler == "grid":
            grid_search_space(learner.space, f"{path}.space")


def _check_param(learner: str, fixed: dict[str, Any], hint: Any, key: str, param: Any, path: str) -> None:
    if isinstance(param, CategoricalParam):
        param.choices = [_coerce(hint, key, choice, f"{path}.choices[{i}]") for i, choice in enumerate(param.choices)]
        for i, choice in enumerate(param.choices):
            _check_hparams(learner, {**fixed, key: choice}, f"{path}.choices[{i}]")
        return
    example = (0.5,) if isinstance(param, MilestonesParam) else param.low
    try:
        TypeAdapter(hint).validate_python(example, strict=True)
    except ValidationError:
        raise ConfigError(f"{key} is {type_name(hint)}: a {param.type} entry does not fit it", path) from None
    if not isinstance(param, MilestonesParam):
        for bound in (param.low, param.high):
            _check_hparams(learner, {**fixed, key: bound}, path)


def _coerce(hint: Any, key: str, value: Any, path: str) -> Any:
    try:
        return coerce_value(hint, value)
    except ValueError as e:
        raise ConfigError(f"{e} ({key} is {type_name(hint)})", path) from None


def _check_hparams(learner: str, values: dict[str, Any], path: str) -> None:
    """Run the learner's own checks (``HParams.__post_init__``) and check backbone names."""
    backbone = values.get("backbone")
    if backbone is not None and backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone '{backbone}' (choose from {', '.join(BACKBONES)})", path)
    try:
        learner_class(learner).HParams(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e), path) from None
