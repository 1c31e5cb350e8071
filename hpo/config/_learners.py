"""A study's learners checked against the learners' own hyperparameters, before anything is written.

Every ``fixed`` and ``space`` entry must name a hyperparameter of its learner, fit its type and
pass the learner's own checks (``HParams.__post_init__``); fixed values and categorical choices
are coerced to the hyperparameter's type on the way (YAML reads ``1e-3`` as a string).
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from hpo.config._schema import CategoricalParam, LearnerConfig, MilestonesParam, StudyConfig
from hpo.config._space import condition_order, grid_search_space
from hpo.errors import ConfigError
from learners import BACKBONES
from learners.optimization import milestone_steps
from learners.data import DataError, ImageSplit, TaskSpec
from learners.registry import LEARNERS, coerce_value, hparam_names, hparam_types, learner_class, type_name

MLFLOW_PARAM_LIMIT = 6000  # MLflow's MAX_PARAM_VAL_LENGTH (not imported: validating a study stays light)


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
        _add_early_stopping(config, learner)
        learner.fixed = {key: _coerce(hints[key], key, value, f"{path}.fixed.{key}")
                         for key, value in learner.fixed.items()}
        _check_fixed(name, learner.fixed, f"{path}.fixed")
        iterations = config.budget.iterations
        if "milestones" in learner.fixed:
            _check_milestones(learner.fixed["milestones"], iterations, f"{path}.fixed.milestones")
        _check_conditions(name, learner, hints, f"{path}.space")
        for key, param in learner.space.items():
            context = {**learner.fixed, **_condition_values(param)}
            _check_param(name, context, hints[key], key, param, f"{path}.space.{key}")
            if isinstance(param, MilestonesParam) and param.count is not None:
                steps = milestone_steps((param.low, param.high), iterations)
                if steps[-1] - steps[0] + 1 < param.count:
                    raise ConfigError(f"{param.count} milestones cannot fall on distinct iterations of "
                                      f"budget.iterations = {iterations} between {param.low} and {param.high}",
                                      f"{path}.space.{key}.count")
            elif key == "milestones":
                for value, where in _values_to_check(param, f"{path}.space.{key}"):
                    _check_milestones(value, iterations, where)
        if config.search.sampler == "grid":
            grid_search_space(learner.space, f"{path}.space")


def _check_conditions(learner_name: str, learner: LearnerConfig, hints: dict[str, Any], path: str) -> None:
    """Each ``when`` names a categorical entry of the same space (not itself, not in a cycle) and values it can
    take, coerced to that hyperparameter's type; a conditional entry may not also be fixed (checked before)."""
    space = learner.space
    for key, param in space.items():
        for field, wanted in (param.when or {}).items():
            where = f"{path}.{key}.when.{field}"
            if field not in hints:
                raise ConfigError(f"unknown hyperparameter of {learner_name}", where)
            if field == key:
                raise ConfigError("an entry cannot depend on itself", where)
            target = space.get(field)
            if not isinstance(target, CategoricalParam):
                given = "fixed" if field in learner.fixed else "not searched" if target is None else target.type
                raise ConfigError(f"conditions name categorical entries of the space; {field} is {given}", where)
            values = [_coerce(hints[field], field, v, where) for v in wanted]
            choices = [_coerce(hints[field], field, c, where) for c in target.choices]
            for value in values:
                if value not in choices:
                    raise ConfigError(f"can never hold: {field} takes {', '.join(map(str, choices))}, never {value}",
                                      where)
            param.when[field] = values
    try:
        condition_order(space)
    except ConfigError as e:  # a cycle
        raise ConfigError(e.message, f"{path}.{e.field}") from None


def _condition_values(param: Any) -> dict[str, Any]:
    """Values under which a conditional entry applies (the first of each condition's), to check it with."""
    return {field: wanted[0] for field, wanted in (param.when or {}).items()}


def _add_early_stopping(config: StudyConfig, learner: LearnerConfig) -> None:
    """``budget.early_stopping`` as the learner's fixed ``patience`` and ``min_delta``, unless the learner
    sets or searches them itself (so they are logged, checked and searched like any hyperparameter)."""
    stopping = config.budget.early_stopping
    if stopping is not None:
        for key, value in stopping.model_dump().items():
            if key not in learner.fixed and key not in learner.space:
                learner.fixed[key] = value


def _check_param(learner: str, fixed: dict[str, Any], hint: Any, key: str, param: Any, path: str) -> None:
    if isinstance(param, CategoricalParam):
        coerced = [_coerce(hint, key, choice, f"{path}.choices[{i}]") for i, choice in enumerate(param.choices)]
        param.choices = [list(c) if isinstance(c, tuple) else c for c in coerced]  # the schema's list choices
        seen: set[str] = set()
        for i, choice in enumerate(param.choices):
            text = json.dumps(choice)  # 1e-3 and 0.001 are one choice once coerced; true and 1 are two
            if text in seen:
                raise ConfigError(f"{text} is given twice (the sampler would favour it)", f"{path}.choices[{i}]")
            seen.add(text)
    else:
        example = (0.5,) if isinstance(param, MilestonesParam) else param.low
        try:
            TypeAdapter(hint).validate_python(example, strict=True)
        except ValidationError:
            raise ConfigError(f"{key} is {type_name(hint)}: a {param.type} entry does not fit it", path) from None
    for value, where in _values_to_check(param, path):
        _check_hparams(learner, {**fixed, key: value}, where)


def _check_milestones(milestones: Any, iterations: int, path: str) -> None:
    """Milestones that round to the same iteration would drop the learning rate once, not as often as written."""
    milestones = tuple(milestones)
    if len(milestone_steps(milestones, iterations)) < len(milestones):
        raise ConfigError(f"milestones {list(milestones)} fall on the same iteration of budget.iterations = "
                          f"{iterations} ({milestone_steps(milestones, iterations)})", path)


def _values_to_check(param: Any, path: str) -> list[tuple[Any, str]]:
    """The values of a space entry that stand for all it can take, with the field path of each: every choice,
    or both ends of a range (the learners' checks and episode shapes are monotone in a number)."""
    if isinstance(param, CategoricalParam):
        return [(choice, f"{path}.choices[{i}]") for i, choice in enumerate(param.choices)]
    if isinstance(param, MilestonesParam):
        return [(choice, f"{path}.choices[{i}]") for i, choice in enumerate(param.choices or [])]
    return [(param.low, path), (param.high, path)]


def check_training_shapes(config: StudyConfig, spec: TaskSpec, train: ImageSplit) -> None:
    """Every episode shape a learner will train on, from ``fixed`` and from every value its ``space`` can take,
    must be one the training split can form (``train_ways`` above its classes fails here, not after three
    failed trials).

    Raises:
        ConfigError: naming the ``fixed`` section or the space entry (and choice) that asks for the shape.
    """
    for name, learner in config.learners.items():
        hparams = learner_class(name).HParams
        candidates = [(learner.fixed, f"learners.{name}.fixed")]
        for key, param in learner.space.items():
            candidates += [({**learner.fixed, key: value}, where)
                           for value, where in _values_to_check(param, f"learners.{name}.space.{key}")]
        for values, where in candidates:
            try:
                hparams(**values).check_training_shape(spec, train)
            except DataError as e:
                raise ConfigError(str(e), where) from None


def _coerce(hint: Any, key: str, value: Any, path: str) -> Any:
    try:
        value = coerce_value(hint, value)
    except ValueError as e:
        raise ConfigError(f"{e} ({key} is {type_name(hint)})", path) from None
    if len(json.dumps(value)) > MLFLOW_PARAM_LIMIT:  # every value a trial trains with is an MLflow param
        raise ConfigError(f"longer than the {MLFLOW_PARAM_LIMIT} characters MLflow keeps of a param", path)
    return value


def _check_fixed(learner: str, fixed: dict[str, Any], path: str) -> None:
    """The fixed values together; an error that one of them causes alone names that field, one that only a
    combination causes (``eta_min`` above ``lr`` for cosine) names the section."""
    try:
        _check_hparams(learner, fixed, path)
    except ConfigError as together:
        for key, value in fixed.items():
            try:
                _check_hparams(learner, {key: value}, f"{path}.{key}")
            except ConfigError as alone:
                if alone.message == together.message:
                    raise alone from None
        raise


def _check_hparams(learner: str, values: dict[str, Any], path: str) -> None:
    """Run the learner's own checks (``HParams.__post_init__``) and check backbone names."""
    backbone = values.get("backbone")
    if backbone is not None and backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone '{backbone}' (choose from {', '.join(BACKBONES)})", path)
    try:
        learner_class(learner).HParams(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e), path) from None
