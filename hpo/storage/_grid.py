"""A grid study's points: their order, and queueing the ones no trial has taken, within the total.

The grid itself (which points, each with the parameters whose conditions hold) comes from the search space
(:func:`hpo.config.grid_search_points`); this module only orders and queues them.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from hpo.storage._capped import CappedStudy

GRID_POINT_ATTR = "grid_point"  # user attr of a queued grid point: its parameters as sorted JSON


def grid_points(points: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The grid's ``points`` (:func:`hpo.config.grid_search_points`) in a seeded order: for a grid without
    conditions, the order Optuna's ``GridSampler(grid, seed)`` would run them in."""
    ordered = list(points)
    np.random.RandomState(seed).shuffle(ordered)
    return ordered


def queue_grid(study: CappedStudy, points: list[dict[str, Any]]) -> None:
    """Queue the grid points no trial has taken yet, within the study's total.

    A point counts as taken once any trial ran it, whatever its end: like Optuna's grid, a failed
    point is not run again (an interrupted one is, through its retry).
    """
    with study.lock():
        taken = {_point_key(t) for t in study.get_trials(deepcopy=False)}
        room = len(points) if study.total is None else study.total - study.planned_trials()
        fresh = [p for p in points if _key(p) not in taken][:max(room, 0)]
        for point in fresh:
            study.enqueue_trial(point, user_attrs={GRID_POINT_ATTR: _key(point)})


def _point_key(trial: FrozenTrial) -> str:
    return trial.user_attrs.get(GRID_POINT_ATTR) or _key(trial.params)


def _key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)
