"""Search-space entries of a study file turned into Optuna suggestions, grids and one-line descriptions."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from hpo.config._schema import CategoricalParam, FloatParam, IntParam, MilestonesParam, SpaceParam
from hpo.errors import ConfigError

if TYPE_CHECKING:
    import optuna


def suggest(trial: optuna.Trial, space: dict[str, SpaceParam]) -> dict[str, Any]:
    """One value per hyperparameter of ``space`` that applies to this trial, drawn by the trial's sampler
    (define-by-run: an entry whose ``when`` does not hold for the values drawn before it is not drawn)."""
    values: dict[str, Any] = {}
    for name in condition_order(space):
        if applies(space[name], values):
            values[name] = _suggest_one(trial, name, space[name])
    return {name: values[name] for name in space if name in values}


def applies(param: SpaceParam, values: dict[str, Any]) -> bool:
    """Whether ``param``'s ``when`` holds for these values (an entry without one always applies; a field that
    has no value, its own condition failing, never matches)."""
    return all(name in values and values[name] in wanted for name, wanted in (param.when or {}).items())


def condition_order(space: dict[str, SpaceParam]) -> list[str]:
    """The entries' names, sorted, each after the entries its ``when`` names (checked acyclic at validation)."""
    order: list[str] = []
    for name in sorted(space):
        _visit(name, space, order, ())
    return order


def _visit(name: str, space: dict[str, SpaceParam], order: list[str], path: tuple[str, ...]) -> None:
    if name in order or name not in space:
        return
    if name in path:
        cycle = " -> ".join((*path[path.index(name):], name))
        raise ConfigError(f"the conditions form a cycle: {cycle}", f"{path[0]}.when")
    for field in sorted(space[name].when or {}):
        _visit(field, space, order, (*path, name))
    order.append(name)


def is_conditional(space: dict[str, SpaceParam]) -> bool:
    return any(param.when for param in space.values())


def _suggest_one(trial: optuna.Trial, name: str, param: SpaceParam) -> Any:
    if isinstance(param, FloatParam):
        return trial.suggest_float(name, param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return trial.suggest_int(name, param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, MilestonesParam) and param.count is not None:
        # One fraction per milestone, sorted afterwards: the sampler sees independent coordinates.
        return tuple(sorted(trial.suggest_float(f"{name}.{i}", param.low, param.high) for i in range(param.count)))
    choices = _encoded_choices(param)
    return choices[trial.suggest_categorical(name, list(choices))]


def _encoded_choices(param: CategoricalParam | MilestonesParam) -> dict[Any, Any]:
    """Optuna stores only scalar choices, so list choices travel as their JSON text."""
    values = ([tuple(sorted(c)) for c in param.choices] if isinstance(param, MilestonesParam) else param.choices)
    return {json.dumps(list(v)) if isinstance(v, (list, tuple)) else v: v for v in values}


def grid_search_space(space: dict[str, SpaceParam], path: str) -> dict[str, list[Any]]:
    """The grid Optuna's ``GridSampler`` walks: choices as given, stepped ranges expanded.

    Raises :class:`ConfigError` naming the entry when no grid can be formed.
    """
    grid: dict[str, list[Any]] = {}
    for name, param in space.items():
        if isinstance(param, FloatParam):
            if param.step is None:
                raise ConfigError("a grid needs a float range with a step (or a categorical)", f"{path}.{name}")
            count = round((param.high - param.low) / param.step)
            grid[name] = [round(param.low + k * param.step, 12) for k in range(count + 1)]
        elif isinstance(param, IntParam):
            grid[name] = list(range(param.low, param.high + 1, param.step))
        elif isinstance(param, MilestonesParam) and param.count is not None:
            raise ConfigError("a grid needs milestones given as choices (lists of fractions)", f"{path}.{name}")
        else:
            grid[name] = list(_encoded_choices(param))
    return grid


def grid_search_points(space: dict[str, SpaceParam], path: str) -> list[dict[str, Any]]:
    """Every point of the grid (values as Optuna stores them), each with the entries that apply to it: without
    conditions the product of :func:`grid_search_space`, in ``itertools.product`` order over the sorted names.

    Raises :class:`ConfigError` naming the entry when no grid can be formed.
    """
    grid = grid_search_space(space, path)
    points: list[dict[str, Any]] = [{}]
    for name in condition_order(space):
        expanded: list[dict[str, Any]] = []
        for point in points:
            if applies(space[name], point):
                expanded.extend({**point, name: value} for value in grid[name])
            else:
                expanded.append(point)
        points = expanded
    return points


def describe(param: SpaceParam) -> str:
    """A short human description, e.g. ``float [0.0001, 0.01] log`` or ``float [1e-06, 0.0001] log, when
    scheduler=cosine``."""
    when = "".join(f", when {name}={'|'.join(map(str, wanted))}" for name, wanted in (param.when or {}).items())
    if isinstance(param, (FloatParam, IntParam)):
        extras = (" log" if param.log else "") + (f" step {param.step}" if param.step not in (None, 1) else "")
        return f"{param.type} [{param.low}, {param.high}]{extras}{when}"
    if isinstance(param, MilestonesParam) and param.count is not None:
        return f"milestones: {param.count} sorted fractions in [{param.low}, {param.high}]{when}"
    return f"{param.type} {json.dumps(param.choices)}{when}"
