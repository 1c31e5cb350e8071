"""Warm start ("learning to tune"): the best configurations of an earlier study, queued before the sampler takes over.

``search.warm_start: {study, storage, top_k}`` reads the earlier study's COMPLETE trials (best first, the earliest
among equals), takes the ``top_k`` distinct configurations, and maps each onto this study's space: a value is kept
when the space can take it, clipped into a range (snapped to its step), or dropped (a categorical choice the space
lacks, a parameter the space does not search: the sampler draws it), and entries whose condition the point does not
meet are left out. The other study may be of another shape or dataset: only hyperparameter values travel.

The points are queued once per study (a study attribute records what was queued, so a rerun queues nothing), within
what is left of ``n_trials``, with ``skip_if_exists``; each queued trial carries where it came from (its MLflow run is
tagged ``warm_start_from``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import (CategoricalParam, FloatParam, IntParam, MilestonesParam, SpaceParam, StudyConfig, applies,
                        condition_order)
from hpo.errors import RunAborted
from hpo.execution._objective import WARM_START_ATTR
from hpo.redaction import redact
from hpo.storage import CappedStudy, get_storage


@dataclass
class WarmStartPoint:
    """One configuration of the earlier study, as this study's space takes it."""

    params: dict[str, Any]        # as Optuna stores them (encoded), for enqueue_trial
    source_trial: int
    source_value: float
    changes: list[str] = field(default_factory=list)  # "lr 0.02 clipped to 0.01", "train_ways 20 dropped"


def warm_start_points(trials: list[FrozenTrial], space: dict[str, SpaceParam], top_k: int) -> list[WarmStartPoint]:
    """The best ``top_k`` distinct configurations of ``trials`` (COMPLETE ones), mapped onto ``space``."""
    ranked = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number))
    points: list[WarmStartPoint] = []
    seen: set[str] = set()    # configurations of the earlier study
    queued: set[str] = set()  # points as this space takes them (two configurations may map onto one)
    for trial in ranked:
        # Every value it trained with; a study of another tool has only Optuna's params (lists as JSON text).
        source = trial.user_attrs.get("hparams") or {k: json.loads(v) if isinstance(v, str) and v.startswith("[")
                                                     else v for k, v in trial.params.items()}
        configuration = json.dumps(source, sort_keys=True)
        if configuration in seen:
            continue
        seen.add(configuration)
        point = WarmStartPoint({}, trial.number, float(trial.value))
        values: dict[str, Any] = {}  # decoded, for the conditions
        for name in condition_order(space):
            param = space[name]
            if not applies(param, values):
                continue
            if name not in source:
                continue  # the sampler draws it
            mapped = _mapped(name, param, source[name], point.changes)
            if mapped is not None:
                values[name] = _decoded(param, mapped)
                point.params.update(_encoded(name, param, mapped))
        key = json.dumps(point.params, sort_keys=True)
        if point.params and key not in queued:
            queued.add(key)
            points.append(point)
        if len(seen) == top_k:
            break
    return points


def _mapped(name: str, param: SpaceParam, value: Any, changes: list[str]) -> Any:
    """``value`` as ``param`` can take it (clipped into a range), or ``None`` (dropped), noting any change."""
    if isinstance(param, (FloatParam, IntParam)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            changes.append(f"{name} {value!r} dropped")
            return None
        clipped = min(max(value, param.low), param.high)
        if param.step is not None and not (isinstance(param, IntParam) and param.step == 1):
            clipped = param.low + round((clipped - param.low) / param.step) * param.step
        clipped = round(clipped) if isinstance(param, IntParam) else float(clipped)
        if not math.isclose(clipped, value, rel_tol=1e-12, abs_tol=0.0):
            changes.append(f"{name} {value} clipped to {clipped}")
        return clipped
    if isinstance(param, MilestonesParam) and param.count is not None:
        if len(value) != param.count:
            changes.append(f"{name} {list(value)} dropped ({param.count} milestones here)")
            return None
        clipped = sorted(min(max(m, param.low), param.high) for m in value)
        if clipped != sorted(value):
            changes.append(f"{name} {list(value)} clipped to {clipped}")
        return clipped
    choices = ([sorted(c) for c in param.choices] if isinstance(param, MilestonesParam) else param.choices)
    wanted = sorted(value) if isinstance(param, MilestonesParam) else list(value) if isinstance(value, tuple) else value
    if wanted not in choices:
        changes.append(f"{name} {json.dumps(wanted)} dropped (not a choice)")
        return None
    return wanted


def _encoded(name: str, param: SpaceParam, value: Any) -> dict[str, Any]:
    """The Optuna parameters of one value (see :func:`hpo.config.suggest`)."""
    if isinstance(param, MilestonesParam) and param.count is not None:
        return {f"{name}.{i}": m for i, m in enumerate(value)}
    if isinstance(value, list):
        return {name: json.dumps(value)}
    return {name: value}


def _decoded(param: SpaceParam, value: Any) -> Any:
    return tuple(value) if isinstance(param, MilestonesParam) else value


def queue_warm_start(config: StudyConfig, learner: str, study: CappedStudy) -> list[str]:
    """Queue the earlier study's best configurations, once; the lines that say what was queued and from where
    (none once done, or without ``warm_start``).

    Raises:
        RunAborted: the earlier study cannot be read.
    """
    source = config.search.warm_start
    if source is None or WARM_START_ATTR in study.user_attrs:
        return []
    name = source.study_of(learner)
    try:
        earlier = optuna.load_study(study_name=name, storage=get_storage(source.storage)).get_trials(deepcopy=False)
    except Exception as e:  # a missing study is KeyError; a lost database, SQLAlchemy's or Optuna's errors
        raise RunAborted(f"{study.study_name}: cannot read the warm-start study {name} at "
                         f"{redact(source.storage)}: {e}") from None
    points = warm_start_points(earlier, config.learners[learner].space, source.top_k)
    with study.lock():
        if WARM_START_ATTR in study.user_attrs:  # another worker queued them meanwhile
            return []
        room = len(points) if study.total is None else max(study.total - study.planned_trials(), 0)
        queued = points[:room]
        origin = f"{name} at {redact(source.storage)}"
        for point in queued:
            study.enqueue_trial(point.params, skip_if_exists=True, user_attrs={WARM_START_ATTR: {
                "study": name, "storage": redact(source.storage), "trial": point.source_trial,
                "value": point.source_value}})
        study.set_user_attr(WARM_START_ATTR, {"study": name, "storage": redact(source.storage),
                                              "queued": [p.source_trial for p in queued]})
    lines = [f"{study.study_name}: warm start from {origin}: queued {len(queued)} of its best {source.top_k} "
             f"configurations (trials {', '.join(str(p.source_trial) for p in queued) or 'none'})"]
    lines += [f"  trial {p.source_trial} ({p.source_value:.4f}): {'; '.join(p.changes)}" for p in queued if p.changes]
    if len(queued) < len(points):
        lines.append(f"  {len(points) - len(queued)} more left out: n_trials leaves room for {len(queued)}")
    return lines
