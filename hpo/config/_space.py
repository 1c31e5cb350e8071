"""Search-space entries of a study file turned into Optuna suggestions, grids and one-line descriptions."""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from hpo.config._schema import CategoricalParam, FloatParam, IntParam, MilestonesParam, SpaceParam
from hpo.errors import ConfigError

if TYPE_CHECKING:
    import optuna


def suggest(trial: optuna.Trial, space: dict[str, SpaceParam]) -> dict[str, Any]:
    """One value per hyperparameter of ``space``, drawn by the trial's sampler."""
    return {name: _suggest_one(trial, name, param) for name, param in space.items()}


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


def grid_size(grid: dict[str, list[Any]]) -> int:
    return math.prod(len(values) for values in grid.values())


def describe(param: SpaceParam) -> str:
    """A short human description, e.g. ``float [0.0001, 0.01] log``."""
    if isinstance(param, (FloatParam, IntParam)):
        extras = (" log" if param.log else "") + (f" step {param.step}" if param.step not in (None, 1) else "")
        return f"{param.type} [{param.low}, {param.high}]{extras}"
    if isinstance(param, MilestonesParam) and param.count is not None:
        return f"milestones: {param.count} sorted fractions in [{param.low}, {param.high}]"
    return f"{param.type} {json.dumps(param.choices)}"
