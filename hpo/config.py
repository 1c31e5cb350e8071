"""The study.yaml schema: one validated, typed description of a search.

Validation happens in two passes, both before anything is written: pydantic checks the
shape and types of the file, then :func:`check_learners` checks every ``fixed`` and
``space`` entry against the learner's own hyperparameters. Every problem becomes a
:class:`ConfigError` whose one-line message names the file and the field.
"""
from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, TypeAdapter,
                      ValidationError, model_validator)

from learners import BACKBONES, learner_class
from learners.registry import LEARNERS, hparam_names
from hpo.urls import is_postgresql, journal_path, redact, resolve_sqlite

Scalar = Union[None, bool, int, float, str]


class ConfigError(ValueError):
    """A user error in a study file or command line: ``<file>: <field.path>: <message>``."""

    def __init__(self, message: str, field: str | None = None, file: str | None = None):
        super().__init__(message)
        self.message, self.field, self.file = message, field, file

    def __str__(self) -> str:
        return ": ".join(part for part in (self.file, self.field, self.message) if part)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- search space entries

class FloatParam(Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: PositiveFloat | None = None

    @model_validator(mode="after")
    def _check(self) -> "FloatParam":
        _check_range(self.low, self.high)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.log and self.low <= 0:
            raise ValueError("log needs low > 0")
        if self.step is not None:
            count = (self.high - self.low) / self.step
            if abs(count - round(count)) > 1e-9:
                raise ValueError(f"high - low = {self.high - self.low:g} is not a multiple of step = {self.step:g}")
        return self


class IntParam(Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _check(self) -> "IntParam":
        _check_range(self.low, self.high)
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined")
        if self.log and self.low < 1:
            raise ValueError("log needs low >= 1")
        return self


class CategoricalParam(Strict):
    type: Literal["categorical"]
    # Lists are allowed as choices (e.g. milestone lists); they are passed to Optuna as JSON strings.
    choices: Annotated[list[Union[Scalar, list[Scalar]]], Field(min_length=1)]


class MilestonesParam(Strict):
    """Learning-rate milestones as fractions of the budget: explicit ``choices``, or ``count`` sorted
    fractions each drawn from ``[low, high]``."""

    type: Literal["milestones"]
    choices: Annotated[list[Annotated[list[float], Field(min_length=1)]], Field(min_length=1)] | None = None
    count: PositiveInt | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _check(self) -> "MilestonesParam":
        ranged = (self.count, self.low, self.high)
        if self.choices is None and None in ranged:
            raise ValueError("give either choices (lists of fractions) or count, low and high")
        if self.choices is not None and any(v is not None for v in ranged):
            raise ValueError("give either choices or count/low/high, not both")
        fractions = [f for c in self.choices for f in c] if self.choices else [self.low, self.high]
        if any(not 0.0 < f < 1.0 for f in fractions):
            raise ValueError("milestones are fractions of the budget strictly between 0 and 1")
        if self.choices is None:
            _check_range(self.low, self.high)
        return self


def _check_range(low: float, high: float) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be below high ({high}); put a single value in 'fixed'")


SpaceParam = Annotated[Union[FloatParam, IntParam, CategoricalParam, MilestonesParam], Field(discriminator="type")]
SPACE_TYPES = ("float", "int", "categorical", "milestones")


# --------------------------------------------------------------------------- sections

class DatasetConfig(Strict):
    name: str
    root: Path | None = None
    split: str = "default"
    ways: PositiveInt
    shots: PositiveInt
    queries: PositiveInt
    cache_dir: Path | None = None
    download: bool = False


class LearnerConfig(Strict):
    fixed: dict[str, Any] = {}
    space: dict[str, SpaceParam] = {}

    @model_validator(mode="before")
    @classmethod
    def _allow_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class PrunerConfig(Strict):
    type: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: NonNegativeInt = 5   # median: complete trials before pruning starts
    n_warmup_steps: NonNegativeInt = 0     # median: training iterations before a trial can be pruned
    reduction_factor: Annotated[int, Field(ge=2)] = 3  # hyperband

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value


class SearchConfig(Strict):
    sampler: Literal["tpe", "gp", "grid", "random"] = "tpe"
    pruner: PrunerConfig = PrunerConfig()
    n_trials: PositiveInt | None = None   # total per learner, over all runs (resume runs the remainder)
    timeout: PositiveFloat | None = None  # seconds per learner per run
    workers: PositiveInt = 1
    # A RUNNING trial whose process sent no heartbeat for grace_period seconds (killed, machine lost)
    # is failed and queued again by the next worker or the next start.
    heartbeat_interval: PositiveInt = 10
    grace_period: PositiveInt = 30
    # Failed trials do not count towards n_trials, so a study whose every trial fails would never end:
    # this many failures in a row stop the run (exit 1) instead.
    max_consecutive_failures: PositiveInt = 10

    @model_validator(mode="after")
    def _check(self) -> "SearchConfig":
        if self.n_trials is None and self.timeout is None:
            raise ValueError("give n_trials and/or timeout")
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must be longer than "
                             f"heartbeat_interval ({self.heartbeat_interval})")
        return self


class BudgetConfig(Strict):
    iterations: PositiveInt
    val_interval: PositiveInt
    val_episodes: PositiveInt


class TestConfig(Strict):
    episodes: PositiveInt = 600


class StudyConfig(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    seed: int = 0
    dataset: DatasetConfig
    learners: Annotated[dict[str, LearnerConfig], Field(min_length=1)]
    search: SearchConfig
    budget: BudgetConfig
    test: TestConfig = TestConfig()
    storage: str = "sqlite:///optuna.db"
    tracking_uri: str = "sqlite:///mlflow.db"
    device: Literal["auto", "cpu", "cuda"] = "auto"


# --------------------------------------------------------------------------- loading

def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read, override (``{"search.n_trials": 4, ...}``, ``None`` values ignored) and fully validate a study file."""
    file = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the study file ({e.strerror})", file=file) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise ConfigError(f"invalid YAML: {getattr(e, 'problem', None) or e}", where, file) from None
    if not isinstance(raw, dict):
        raise ConfigError("a study file is a mapping of fields (name, dataset, learners, ...)", file=file)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, dotted, value)
    try:
        config = StudyConfig.model_validate(raw)
        check_learners(config)
        check_workers(config)
    except ValidationError as e:
        error = e.errors()[0]
        raise ConfigError(_error_message(error), _dotted(error["loc"]), file) from None
    except ConfigError as e:
        e.file = file
        raise
    return config


def check_workers(config: StudyConfig) -> None:
    """Several workers need a storage many processes can write at once (SQLite is unsafe for that)."""
    workers = config.search.workers
    # The storages hpo.budget can lock, so that n_trials stays a total over all workers.
    if workers > 1 and journal_path(config.storage) is None and not is_postgresql(config.storage):
        raise ConfigError(f"{workers} workers need a storage that several processes can share: "
                          f"journal:///optuna.journal (this machine) or postgresql://user@host/db (many machines), "
                          f"not {redact(config.storage).split(':', 1)[0]}", "search.workers")


def selected_learners(config: StudyConfig, names: list[str] | None) -> list[str]:
    """The learners to run: ``names`` (from ``--learners``) in the given order, or all of the study's."""
    if not names:
        return list(config.learners)
    unknown = [n for n in names if n not in config.learners]
    if unknown:
        raise ConfigError(f"'{unknown[0]}' is not a learner of this study (it has: {', '.join(config.learners)})",
                          "--learners")
    return names


def resolve_paths(config: StudyConfig, cwd: Path | None = None) -> StudyConfig:
    """Relative data paths and SQLite files made absolute against the working directory."""
    cwd = cwd or Path.cwd()
    dataset = config.dataset.model_copy(update={
        "root": (cwd / config.dataset.root).resolve() if config.dataset.root else None,
        "cache_dir": (cwd / config.dataset.cache_dir).resolve() if config.dataset.cache_dir else None})
    return config.model_copy(update={"dataset": dataset, "storage": resolve_sqlite(config.storage, cwd),
                                     "tracking_uri": resolve_sqlite(config.tracking_uri, cwd)})


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        if not isinstance(raw.get(key), dict):
            raw[key] = {}
        raw = raw[key]
    raw[last] = value


def _dotted(loc: tuple) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        elif i >= 2 and loc[i - 2] == "space" and item in SPACE_TYPES:
            continue  # pydantic's discriminator tag, not a key in the file
        else:
            parts.append(str(item))
    return ".".join(parts)


def _error_message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return error["msg"].removeprefix("Value error, ")


# --------------------------------------------------------------------------- learner checks

def check_learners(config: StudyConfig) -> None:
    """Check ``fixed`` and ``space`` of every learner against its hyperparameters; coerce fixed values
    and categorical choices to the hyperparameter's type (YAML reads ``1e-3`` as a string)."""
    # Imported here: hpo.space imports this module for the parameter types.
    from hpo.space import grid_search_space

    for name, learner in config.learners.items():
        path = f"learners.{name}"
        if name not in LEARNERS:
            raise ConfigError(f"unknown learner '{name}' (choose from {', '.join(LEARNERS)})", path)
        hints = typing.get_type_hints(learner_class(name).HParams)
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
        raise ConfigError(f"{key} is {_type_name(hint)}: a {param.type} entry does not fit it", path) from None
    if not isinstance(param, MilestonesParam):
        for bound in (param.low, param.high):
            _check_hparams(learner, {**fixed, key: bound}, path)


def _coerce(hint: Any, key: str, value: Any, path: str) -> Any:
    try:
        return TypeAdapter(hint).validate_python(value)
    except ValidationError as e:
        raise ConfigError(f"{_error_message(e.errors()[0])} ({key} is {_type_name(hint)})", path) from None


def _check_hparams(learner: str, values: dict[str, Any], path: str) -> None:
    """Run the learner's own checks (``HParams.__post_init__``) and check backbone names."""
    backbone = values.get("backbone")
    if backbone is not None and backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone '{backbone}' (choose from {', '.join(BACKBONES)})", path)
    try:
        learner_class(learner).HParams(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e), path) from None


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)

